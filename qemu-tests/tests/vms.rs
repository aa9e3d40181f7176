//! Tier 3: vKaOS guests under the host image's own KVM (nested SVM under QEMU TCG), managed
//! over the protocol as an operator does: push the platform module, create VMs, read their
//! consoles, stop, restart, destroy, four at once, a crashing guest restarted by its policy,
//! and VMs that come back after a host reboot.
//!
//! One booted host serves every check that does not need a reboot, to keep the suite short.

use std::time::{Duration, Instant};

use kaos_protocol::{
    ErrorCode, ModuleKind, Request, Response, RestartPolicy, VmActRequest, VmAction, VmCreate,
    VmExitKind, VmInfo, VmSpec, VmState, truncated,
};
use kaos_qemu_tests::disk::DiskImage;
use kaos_qemu_tests::qemu::{self, QemuConfig, QemuHost};
use kaos_qemu_tests::skip;
use kaosctl::{Client, ClientError};

const BOOT: Duration = Duration::from_secs(120);
/// A vKaOS guest under nested KVM in TCG boots in about 5 s alone; four at once share two
/// emulated CPUs.
const GUEST_UP: Duration = Duration::from_secs(180);

fn unavailable() -> Option<String> {
    qemu::unavailable().or_else(|| qemu::platform_module_from_env().err())
}

fn boot(hostname: &str, disks: &[&DiskImage]) -> QemuHost {
    let image = qemu::image_from_env().expect("checked by unavailable()");
    let mut config = QemuConfig::new(&image).expect("config");
    config.append = format!("kaos.hostname={hostname}");
    config.disks = disks.iter().map(|d| d.path().to_owned()).collect();
    // Room for four guests of 96 MiB beside the host.
    config.memory_mib = 1536;
    QemuHost::launch(&config).expect("launch QEMU")
}

fn ask(c: &mut Client, request: Request) -> Response {
    c.request(request)
        .unwrap_or_else(|e| panic!("request failed: {e}"))
}

/// The refusal a request must meet.
fn refusal(c: &mut Client, request: Request) -> (ErrorCode, String) {
    match c.request(request) {
        Err(ClientError::Refused { code, message }) => (code, message),
        other => panic!("accepted, but should have been refused: {other:?}"),
    }
}

fn push_platform(c: &mut Client, host: &QemuHost) {
    let path = qemu::platform_module_from_env().expect("checked by unavailable()");
    let bytes = std::fs::read(&path).expect("read the platform module");
    let started = Instant::now();
    let mut last_report = Instant::now();
    let module = kaosctl::upload::push(c, &bytes, |received| {
        if last_report.elapsed() > Duration::from_secs(2) {
            eprintln!("push: {received} bytes after {:?}", started.elapsed());
            last_report = Instant::now();
        }
    })
    .unwrap_or_else(|e| panic!("push the platform module: {e}\n{}", host.console()));
    eprintln!(
        "pushed {} ({} bytes) in {:?}",
        path.display(),
        bytes.len(),
        started.elapsed()
    );
    assert_eq!(module.name.as_str(), "vkaos");
    assert_eq!(module.kind, ModuleKind::Platform);
    assert_eq!(module.size, bytes.len() as u64);
    // A second push of the same file is recognised without sending it again.
    let again = kaosctl::upload::push(c, &bytes, |_| {}).expect("push again");
    assert_eq!(again, module);
}

fn spec(name: &str, memory_mib: u32, cmdline: &str, restart: RestartPolicy) -> VmSpec {
    VmSpec {
        name: truncated(name),
        vcpus: 1,
        memory_mib,
        cmdline: truncated(cmdline),
        platform: truncated("vkaos"),
        restart,
        nics: Default::default(),
    }
}

fn create(c: &mut Client, spec: VmSpec, start: bool) -> VmInfo {
    match ask(c, Request::VmCreate(VmCreate { spec, start })) {
        Response::Vm(info) => info,
        other => panic!("vm create: {other:?}"),
    }
}

fn act(c: &mut Client, name: &str, action: VmAction) -> Response {
    ask(
        c,
        Request::VmAct(VmActRequest {
            name: truncated(name),
            action,
        }),
    )
}

fn inspect(c: &mut Client, name: &str) -> VmInfo {
    match ask(c, Request::VmInspect(truncated(name))) {
        Response::Vm(info) => info,
        other => panic!("vm inspect {name}: {other:?}"),
    }
}

/// The console the host holds for `name`, as `kaosctl vm logs` prints it.
fn logs(c: &mut Client, name: &str) -> String {
    let bytes = c.console(name).expect("vm logs");
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Polls `vm inspect` until `pred` holds.
fn wait_vm(
    c: &mut Client,
    host: &QemuHost,
    name: &str,
    what: &str,
    pred: impl Fn(&VmInfo) -> bool,
) -> VmInfo {
    let deadline = Instant::now() + GUEST_UP;
    loop {
        let info = inspect(c, name);
        if pred(&info) {
            return info;
        }
        if Instant::now() > deadline {
            let console = logs(c, name);
            panic!(
                "VM {name}: not {what} after {GUEST_UP:?}: {info:?}\nguest console:\n{console}\nhost:\n{}",
                host.tail()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn ready_line(name: &str) -> String {
    format!("kattach guest: {name} up")
}

#[test]
fn vkaos_guests_boot_are_managed_and_restarted_by_policy() {
    if let Some(reason) = unavailable() {
        return skip(
            "vkaos_guests_boot_are_managed_and_restarted_by_policy",
            &reason,
        );
    }
    let host = boot("kaos-vms", &[]);
    let mut c = host.wait_ready(BOOT).expect("endpoint");

    // Before the platform is pushed, a VM cannot be defined, and the error says what to do.
    let (code, message) = refusal(
        &mut c,
        Request::VmCreate(VmCreate {
            spec: spec("early", 96, "", RestartPolicy::Never),
            start: true,
        }),
    );
    assert_eq!(code, ErrorCode::NotFound);
    assert!(message.contains("kaosctl module push"), "{message}");
    push_platform(&mut c, &host);

    // Bad parameters are refused before anything starts.
    for (bad, why) in [
        (
            VmSpec {
                vcpus: 0,
                ..spec("bad", 96, "", RestartPolicy::Never)
            },
            "vCPUs",
        ),
        (spec("bad", 1 << 20, "", RestartPolicy::Never), "memory"),
    ] {
        let request = Request::VmCreate(VmCreate {
            spec: bad,
            start: true,
        });
        let (code, message) = refusal(&mut c, request);
        assert_eq!(code, ErrorCode::InvalidArgument);
        assert!(message.contains(why), "{message}");
    }
    assert!(
        matches!(ask(&mut c, Request::VmList), Response::Vms(l) if l.entries.is_empty()),
        "refused VMs leave nothing behind"
    );

    // One guest: it boots to the guest kattach, whose console we read.
    // Two vCPUs: the guest kernel finds both through the VMM's MP table.
    let g1_spec = VmSpec {
        vcpus: 2,
        ..spec("g1", 96, "", RestartPolicy::OnFailure)
    };
    let first = create(&mut c, g1_spec, true);
    assert!(
        matches!(first.state, VmState::Starting | VmState::Running),
        "{first:?}"
    );
    let booted = Instant::now();
    let g1 = wait_vm(&mut c, &host, "g1", "up", |i| i.guest_up);
    eprintln!("g1: create → guest up in {:?}", booted.elapsed());
    let console = logs(&mut c, "g1");
    assert!(console.contains("Linux version"), "{console}");
    assert!(console.contains(&ready_line("g1")), "{console}");
    assert!(console.contains("Brought up 1 node, 2 CPUs"), "{console}");
    assert!(console.contains("2 vCPUs"), "{console}");

    // Three more: four guests at once.
    for name in ["g2", "g3", "g4"] {
        create(
            &mut c,
            spec(name, 96, "quiet", RestartPolicy::OnFailure),
            true,
        );
    }
    for name in ["g2", "g3", "g4"] {
        wait_vm(&mut c, &host, name, "up", |i| i.guest_up);
        assert!(logs(&mut c, name).contains(&ready_line(name)));
    }
    // Four VMMs run at once. Each guest was seen up above; under TCG a guest may since have
    // reset and be booting again (on-failure), so its state is printed, not required to be up.
    let Response::Vms(list) = ask(&mut c, Request::VmList) else {
        panic!("vm list")
    };
    let running = list
        .entries
        .iter()
        .filter(|v| v.state == VmState::Running)
        .count();
    for v in list
        .entries
        .iter()
        .filter(|v| v.restarts > 0 || !v.guest_up)
    {
        let info = inspect(&mut c, &v.name);
        eprintln!("{} restarted or booting again: {info:?}", v.name);
    }
    assert_eq!(running, 4, "four VMMs at once: {list:?}");

    // Stop: the VMM is gone and the VM stays stopped.
    assert!(inspect(&mut c, "g2").pid.is_some(), "g2 has a VMM");
    match act(&mut c, "g2", VmAction::Stop) {
        Response::Vm(info) => {
            assert_eq!(info.state, VmState::Stopped, "{info:?}");
            assert_eq!(info.pid, None);
            assert!(!info.desired_running);
        }
        other => panic!("vm stop: {other:?}"),
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(inspect(&mut c, "g2").state, VmState::Stopped);
    let status = ask(&mut c, Request::Status);
    let Response::Status(_) = status else {
        panic!("{status:?}")
    };

    // Restart: a new VMM, and the guest comes up again.
    let old = inspect(&mut c, "g3").pid;
    act(&mut c, "g3", VmAction::Restart);
    let again = wait_vm(&mut c, &host, "g3", "up again", |i| {
        i.guest_up && i.pid.is_some() && i.pid != old
    });
    assert_eq!(again.state, VmState::Running);

    // Destroy: gone from the list.
    assert_eq!(act(&mut c, "g4", VmAction::Destroy), Response::Accepted);
    let (code, _) = refusal(&mut c, Request::VmInspect(truncated("g4")));
    assert_eq!(code, ErrorCode::NotFound, "a destroyed VM is gone");

    // The platform cannot be removed while VMs boot it.
    let (code, message) = refusal(&mut c, Request::ModuleRemove(truncated("vkaos")));
    assert_eq!(code, ErrorCode::Conflict, "{message}");

    // A guest whose kernel panics (no init) resets (panic=-1) and is restarted by on-failure.
    create(
        &mut c,
        spec(
            "crasher",
            64,
            "quiet rdinit=/no/such/init",
            RestartPolicy::OnFailure,
        ),
        true,
    );
    let crashed = wait_vm(&mut c, &host, "crasher", "restarted", |i| i.restarts >= 1);
    let exit = crashed.last_exit.expect("a last exit");
    assert_eq!(exit.kind, VmExitKind::Reset, "{exit:?}");
    assert!(logs(&mut c, "crasher").contains("Kernel panic"));
    // The other guests never noticed.
    assert!(inspect(&mut c, "g1").guest_up);
    assert_eq!(
        inspect(&mut c, "g1").pid,
        g1.pid,
        "g1's VMM is the same process"
    );
    act(&mut c, "crasher", VmAction::Destroy);
}

#[test]
fn running_vms_come_back_after_a_host_reboot() {
    if let Some(reason) = unavailable() {
        return skip("running_vms_come_back_after_a_host_reboot", &reason);
    }
    let disk = DiskImage::blank("vms-store", 64).expect("disk");
    kaos_store::init_device(disk.path(), false, [6; 16]).expect("init store image");
    let host = boot("kaos-vms-reboot", &[&disk]);
    let mut c = host.wait_ready(BOOT).expect("endpoint");
    push_platform(&mut c, &host);
    create(
        &mut c,
        spec("keeper", 96, "quiet", RestartPolicy::Never),
        true,
    );
    create(
        &mut c,
        spec("idle", 96, "quiet", RestartPolicy::Never),
        false,
    );
    wait_vm(&mut c, &host, "keeper", "up", |i| i.guest_up);
    let Response::Status(before) = ask(&mut c, Request::Status) else {
        panic!("status")
    };
    assert_eq!(ask(&mut c, Request::Reboot), Response::Accepted);
    drop(c);
    host.wait_next_boot(kaos_qemu_tests::keys::admin(), before.boot_id, BOOT)
        .expect("the host reboots");
    let mut c = host.client().expect("connect after the reboot");
    let keeper = wait_vm(&mut c, &host, "keeper", "up after the reboot", |i| {
        i.guest_up
    });
    assert!(keeper.desired_running);
    assert!(logs(&mut c, "keeper").contains(&ready_line("keeper")));
    let idle = inspect(&mut c, "idle");
    assert_eq!(idle.state, VmState::Stopped, "a stopped VM stays stopped");
}
