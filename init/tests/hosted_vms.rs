//! Tier 2: the VM control plane of a hosted `kattach` on this machine's own `/dev/kvm`, with
//! hand-made guests packed as platform modules (Linux guests cannot run on this machine's
//! paravirtual nested KVM; `qemu-tests/tests/vms.rs` runs real vKaOS guests under QEMU).
//!
//! Module upload, create/start/stop/destroy, console logs (whole and followed), restart
//! policies with back-off, a killed VMM, and refusals that leave nothing behind.

use std::path::Path;
use std::time::{Duration, Instant};

use kaos_protocol::{
    ErrorCode, Request, Response, RestartPolicy, VmActRequest, VmAction, VmCreate, VmExitKind,
    VmInfo, VmLogsQuery, VmSpec, VmState, truncated,
};
use kaos_qemu_tests::hosted::HostedHost;
use kaos_qemu_tests::{netns, skip};
use kaos_vmm::tiny;
use kaosctl::{Client, ClientError};

const KATTACH: &str = env!("CARGO_BIN_EXE_kattach");
const READY: Duration = Duration::from_secs(10);
const SETTLE: Duration = Duration::from_secs(30);

fn launch(test: &str) -> Option<HostedHost> {
    launch_with(test, "kaos-vms", &[])
}

/// A hosted host named `name` with these extra arguments, ready; `None` (the skip said) where
/// it cannot run.
fn launch_with(test: &str, name: &str, args: &[&str]) -> Option<HostedHost> {
    if let Some(reason) = netns::unavailable() {
        skip(test, &reason);
        return None;
    }
    if !tiny::kvm_usable(test) {
        return None;
    }
    let host = HostedHost::launch_with(Path::new(KATTACH), name, args).expect("launch");
    drop(host.wait_ready(READY).expect("ready"));
    Some(host)
}

/// A platform module whose "kernel" is a hand-made ELF guest running `code`, padded to `size`
/// bytes so the upload is as long as a real platform's.
fn module(name: &str, code: &[u8], size: usize) -> Vec<u8> {
    let mut elf = tiny::tiny_elf_with_code(code);
    elf.resize(size.max(elf.len()), 0);
    kaos_module::pack_platform(name, "1.0-test", "tiny", &elf).expect("pack")
}

fn spec(name: &str, platform: &str, restart: RestartPolicy) -> VmSpec {
    VmSpec {
        name: truncated(name),
        vcpus: 1,
        memory_mib: 64,
        cmdline: truncated(""),
        platform: truncated(platform),
        restart,
        nics: Default::default(),
    }
}

fn create(c: &mut Client, spec: VmSpec) -> VmInfo {
    match c.request(Request::VmCreate(VmCreate { spec, start: true })) {
        Ok(Response::Vm(info)) => info,
        other => panic!("vm create: {other:?}"),
    }
}

fn act(c: &mut Client, name: &str, action: VmAction) -> Result<Response, ClientError> {
    c.request(Request::VmAct(VmActRequest {
        name: truncated(name),
        action,
    }))
}

fn inspect(c: &mut Client, name: &str) -> VmInfo {
    match c.request(Request::VmInspect(truncated(name))) {
        Ok(Response::Vm(info)) => info,
        other => panic!("vm inspect {name}: {other:?}"),
    }
}

fn wait_vm(
    c: &mut Client,
    host: &HostedHost,
    name: &str,
    pred: impl Fn(&VmInfo) -> bool,
) -> VmInfo {
    let deadline = Instant::now() + SETTLE;
    loop {
        let info = inspect(c, name);
        if pred(&info) {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "VM {name} never got there: {info:?}\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The console the host holds for `name`, as `kaosctl vm logs` prints it.
fn logs(c: &mut Client, name: &str) -> String {
    let bytes = c.console(name).expect("vm logs");
    String::from_utf8_lossy(&bytes).into_owned()
}

fn refusal(result: Result<Response, ClientError>) -> (ErrorCode, String) {
    match result {
        Err(ClientError::Refused { code, message }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn modules_upload_and_vms_run_stop_restart_and_are_destroyed() {
    let Some(host) = launch("modules_upload_and_vms_run_stop_restart_and_are_destroyed") else {
        return;
    };
    let mut c = host.client().expect("client");

    // A platform-sized upload (1.5 MiB), timed; then the same file again is recognised at once.
    let idle = module(
        "tiny-idle",
        &tiny::idle_code(b"kattach guest: idle up (tiny)\n"),
        1_500_000,
    );
    let started = Instant::now();
    let stored = kaosctl::upload::push(&mut c, &idle, |_| {}).expect("push");
    let took = started.elapsed();
    eprintln!(
        "upload of {} bytes: {took:?} ({:.1} MB/s)",
        idle.len(),
        idle.len() as f64 / took.as_secs_f64() / 1e6
    );
    assert_eq!(stored.name.as_str(), "tiny-idle");
    assert_eq!(
        kaosctl::upload::push(&mut c, &idle, |_| {}).expect("again"),
        stored
    );
    let reset = module(
        "tiny-reset",
        &tiny::tiny_code(b"kattach guest: r up (tiny)\n"),
        0,
    );
    kaosctl::upload::push(&mut c, &reset, |_| {}).expect("push tiny-reset");

    // A bad archive is refused with its reason, and nothing is stored.
    let (code, message) = match kaosctl::upload::push(&mut c, b"not an archive at all", |_| {}) {
        Err(ClientError::Refused { code, message }) => (code, message),
        other => panic!("garbage stored: {other:?}"),
    };
    assert_eq!(code, ErrorCode::InvalidArgument, "{message}");
    let Ok(Response::Modules(list)) = c.request(Request::ModuleList) else {
        panic!("module list")
    };
    let names: Vec<&str> = list.entries.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["tiny-idle", "tiny-reset"]);

    // A guest that stays up: its console, followed and whole.
    let first = create(&mut c, spec("idle", "tiny-idle", RestartPolicy::OnFailure));
    assert!(
        matches!(first.state, VmState::Starting | VmState::Running),
        "{first:?}"
    );
    let up = wait_vm(&mut c, &host, "idle", |i| i.guest_up);
    assert!(logs(&mut c, "idle").contains("kattach guest: idle up (tiny)"));
    let follow = c
        .send(Request::VmLogs(VmLogsQuery {
            name: truncated("idle"),
            follow: true,
        }))
        .expect("follow");
    let frame = c.next_frame().expect("first followed chunk");
    assert_eq!(frame.id, follow);
    assert!(!frame.last, "a followed console stays open");
    let cancel = c.cancel(follow).expect("cancel");
    let mut ended = false;
    loop {
        let frame = c.next_frame().expect("end of the stream");
        ended |= frame.id == follow && frame.last;
        if frame.id == cancel {
            break;
        }
    }
    assert!(ended, "the followed stream ends when cancelled");

    // A killed VMM is a crash: the host records it and on-failure starts the VM again.
    let pid = up.pid.expect("a VMM pid");
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    let again = wait_vm(&mut c, &host, "idle", |i| i.restarts >= 1 && i.guest_up);
    let exit = again.last_exit.clone().expect("the crash is recorded");
    assert_eq!(exit.kind, VmExitKind::Crash, "{exit:?}");
    assert_ne!(again.pid, Some(pid));
    assert!(matches!(
        c.request(Request::Status),
        Ok(Response::Status(_))
    ));

    // Stop, then start.
    let Ok(Response::Vm(stopped)) = act(&mut c, "idle", VmAction::Stop) else {
        panic!("stop")
    };
    assert_eq!((stopped.state, stopped.pid), (VmState::Stopped, None));
    assert_eq!(stopped.last_exit.map(|e| e.kind), Some(VmExitKind::Stopped));
    act(&mut c, "idle", VmAction::Start).expect("start");
    wait_vm(&mut c, &host, "idle", |i| {
        i.guest_up && i.state == VmState::Running
    });

    // Restart policies on a guest that resets at once.
    create(&mut c, spec("never", "tiny-reset", RestartPolicy::Never));
    create(&mut c, spec("always", "tiny-reset", RestartPolicy::Always));
    let never = wait_vm(&mut c, &host, "never", |i| i.state == VmState::Exited);
    assert_eq!(never.last_exit.map(|e| e.kind), Some(VmExitKind::Reset));
    assert_eq!(never.restarts, 0);
    let t = Instant::now();
    let always = wait_vm(&mut c, &host, "always", |i| i.restarts >= 2);
    // Back-off: 1 s, then 2 s.
    assert!(t.elapsed() >= Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(always.last_exit.map(|e| e.kind), Some(VmExitKind::Reset));
    act(&mut c, "always", VmAction::Stop).expect("stop a backing-off VM");
    assert_eq!(inspect(&mut c, "always").state, VmState::Stopped);

    // Refusals.
    let (code, _) = refusal(c.request(Request::VmCreate(VmCreate {
        spec: spec("idle", "tiny-idle", RestartPolicy::Never),
        start: false,
    })));
    assert_eq!(code, ErrorCode::Conflict, "names are unique");
    let (code, _) = refusal(c.request(Request::VmCreate(VmCreate {
        spec: spec("other", "no-such-platform", RestartPolicy::Never),
        start: false,
    })));
    assert_eq!(code, ErrorCode::NotFound);
    let (code, _) = refusal(act(&mut c, "ghost", VmAction::Start));
    assert_eq!(code, ErrorCode::NotFound);
    let (code, _) = refusal(c.request(Request::ModuleRemove(truncated("tiny-idle"))));
    assert_eq!(code, ErrorCode::Conflict, "a module in use stays");

    // Destroy everything; then the modules can go.
    for name in ["idle", "never", "always"] {
        assert!(matches!(
            act(&mut c, name, VmAction::Destroy),
            Ok(Response::Accepted)
        ));
    }
    let Ok(Response::Vms(list)) = c.request(Request::VmList) else {
        panic!("vm list")
    };
    assert!(list.entries.is_empty(), "{list:?}");
    for name in ["tiny-idle", "tiny-reset"] {
        c.request(Request::ModuleRemove(truncated(name)))
            .expect("remove an unused module");
    }
    // No VMM is left running.
    std::thread::sleep(Duration::from_millis(300));
    let ps = std::process::Command::new("pgrep")
        .args(["-f", "kattach vmm run"])
        .output()
        .expect("pgrep");
    let mine: Vec<String> = String::from_utf8_lossy(&ps.stdout)
        .lines()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .is_ok_and(|s| s.contains(&format!("PPid:\t{}", host.pid())))
        })
        .map(str::to_owned)
        .collect();
    assert!(mine.is_empty(), "VMMs left: {mine:?}");
}

/// The processes whose parent is `parent` and whose command line contains `needle`.
fn children_running(parent: u32, needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // pid (comm) state ppid …: the fields after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if ppid == Some(parent) && cmdline.contains(needle) {
            found.push(pid);
        }
    }
    found
}

/// `kaos.vm_cpus=` (`--vm-cpus` hosted): every VMM, and every thread it has (threads inherit
/// the mask), may run only on the listed CPUs; the host itself is not confined.
#[test]
fn a_vm_cpu_list_confines_every_vmm_thread() {
    let test = "a_vm_cpu_list_confines_every_vmm_thread";
    let Some(host) = launch_with(test, "kaos-cpus", &["--vm-cpus", "0"]) else {
        return;
    };
    let mut c = host.client().expect("client");
    let idle = module(
        "tiny-idle",
        &tiny::idle_code(b"kattach guest: pinned up (tiny)\n"),
        0,
    );
    kaosctl::upload::push(&mut c, &idle, |_| {}).expect("push");
    create(&mut c, spec("pinned", "tiny-idle", RestartPolicy::Never));
    let up = wait_vm(&mut c, &host, "pinned", |i| i.guest_up);
    let vmm = up.pid.expect("a VMM pid");
    let allowed = |path: String| {
        let status = std::fs::read_to_string(&path).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no Cpus_allowed_list in {path}"))
    };
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{vmm}/task"))
        .expect("the VMM's threads")
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .collect();
    assert!(!threads.is_empty());
    for t in &threads {
        assert_eq!(
            allowed(format!("/proc/{vmm}/task/{t}/status")),
            "0",
            "thread {t}"
        );
    }
    let online = std::thread::available_parallelism().map_or(1, usize::from);
    if online > 1 {
        assert_ne!(allowed(format!("/proc/{}/status", host.pid())), "0");
    }
}

fn nic_on(vlan: u16) -> kaos_protocol::NicSpec {
    kaos_protocol::NicSpec {
        vlan,
        ipv4: None,
        publish: Default::default(),
    }
}

fn net_stats(c: &mut Client) -> kaos_protocol::NetStats {
    match c.request(Request::NetStats(kaos_protocol::NetStatsQuery::default())) {
        Ok(Response::NetStats(s)) => s,
        other => panic!("net stats: {other:?}"),
    }
}

#[test]
fn a_vm_with_a_nic_gets_a_switch_port_and_survives_the_switch() {
    const TEST: &str = "a_vm_with_a_nic_gets_a_switch_port_and_survives_the_switch";
    if let Some(reason) = netns::unavailable() {
        return skip(TEST, &reason);
    }
    if !tiny::kvm_usable(TEST) {
        return;
    }
    // The switch's uplink: one end of a veth pair in the host's namespace (the switch opens it
    // when the first VM with a NIC starts, sandboxed with the uplink thread under its filter).
    let host = HostedHost::launch_with(Path::new(KATTACH), "kaos-nic", &["--uplink", "up0"])
        .expect("launch");
    host.ns()
        .ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up1"])
        .expect("veth");
    host.ns().ip(&["link", "set", "up1", "up"]).expect("up1 up");
    drop(host.wait_ready(READY).expect("ready"));
    let mut c = host.client().expect("client");
    let idle = module(
        "tiny-idle",
        &tiny::idle_code(b"kattach guest: n1 up (tiny)\n"),
        0,
    );
    kaosctl::upload::push(&mut c, &idle, |_| {}).expect("push");
    assert!(
        children_running(host.pid(), "switch --control-fd").is_empty(),
        "no NIC, no switch"
    );
    assert!(net_stats(&mut c).ports.is_empty());
    let vlan = kaos_qemu_tests::vkaos::vlan(10, (10, 50));
    assert!(matches!(
        c.request(Request::VlanCreate(vlan)),
        Ok(Response::Vlan(_))
    ));
    let mut with_nic = spec("n1", "tiny-idle", RestartPolicy::OnFailure);
    with_nic.nics.push(nic_on(10)).expect("room");
    let created = create(&mut c, with_nic);
    let address = created.nics[0].ipv4;
    let up = wait_vm(&mut c, &host, "n1", |i| i.guest_up);

    // The VMM was given the NIC's socket and the guest its address.
    let vmm = up.pid.expect("a VMM");
    let cmdline = std::fs::read(format!("/proc/{vmm}/cmdline")).expect("the VMM's command line");
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    let mac: Vec<String> = created.nics[0]
        .mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(
        cmdline.contains(&format!("--nic fd=3,mac={}", mac.join(":"))),
        "{cmdline}"
    );
    assert!(cmdline.contains(&format!("ip={address}::")), "{cmdline}");

    // One switch, sandboxed like the VMMs, with the VM's port.
    let switches = children_running(host.pid(), "switch --control-fd");
    assert_eq!(switches.len(), 1, "one switch: {switches:?}");
    // Frames from outside reach the uplink thread: the switch keeps running.
    let _ = host
        .ns()
        .command("ping")
        .args(["-c", "2", "-W", "1", "-I", "up1", "10.0.10.1"])
        .output();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        children_running(host.pid(), "switch --control-fd"),
        switches,
        "the switch survives uplink traffic\n{}",
        host.log()
    );
    let uplink = net_stats(&mut c);
    assert!(
        uplink.ports.iter().any(|p| p.name.as_str() == "uplink:up0"),
        "{uplink:?}"
    );
    let stats = net_stats(&mut c);
    let port = stats.ports.iter().find(|p| p.name.as_str() == "n1/0");
    assert!(
        port.is_some_and(|p| p.vlans.as_slice() == [10]),
        "{stats:?}"
    );

    // The switch dies: the VM, which lost its NIC, is started again with a new switch.
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &switches[0].to_string()])
        .status();
    let again = wait_vm(&mut c, &host, "n1", |i| {
        i.guest_up && i.pid.is_some_and(|p| p != vmm)
    });
    let new_switches = children_running(host.pid(), "switch --control-fd");
    assert_eq!(new_switches.len(), 1, "{new_switches:?}\n{}", host.log());
    assert_ne!(new_switches, switches, "a new switch");
    assert!(
        net_stats(&mut c)
            .ports
            .iter()
            .any(|p| p.name.as_str() == "n1/0"),
        "the port is back"
    );
    assert_eq!(again.nics[0].ipv4, address, "the same address");

    // Destroyed, the VM's port goes.
    assert!(matches!(
        act(&mut c, "n1", VmAction::Destroy),
        Ok(Response::Accepted)
    ));
    assert!(
        net_stats(&mut c)
            .ports
            .iter()
            .all(|p| p.name.as_str() != "n1/0")
    );
}
