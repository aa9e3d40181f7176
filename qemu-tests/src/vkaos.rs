//! An operator's steps with vKaOS guests on a QEMU host, shared by the tier-3 tests: push the
//! platform module, define VMs, read their consoles, wait for what they print.

use std::time::{Duration, Instant};

use kaos_protocol::{
    ErrorCode, ModuleKind, Request, Response, RestartPolicy, VmActRequest, VmAction, VmCreate,
    VmInfo, VmSpec, truncated,
};
use kaosctl::{Client, ClientError};

use crate::qemu::{self, QemuHost};

/// How long a guest may take to come up: a vKaOS guest under nested KVM in TCG boots in about
/// 5 s alone; four at once share two emulated CPUs.
pub const GUEST_UP: Duration = Duration::from_secs(180);

/// Why the tier-3 guest tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    qemu::unavailable().or_else(|| qemu::platform_module_from_env().err())
}

/// Sends `request`; a refusal fails the test.
pub fn ask(c: &mut Client, request: Request) -> Response {
    c.request(request)
        .unwrap_or_else(|e| panic!("request failed: {e}"))
}

/// The refusal a request must meet.
pub fn refusal(c: &mut Client, request: Request) -> (ErrorCode, String) {
    match c.request(request) {
        Err(ClientError::Refused { code, message }) => (code, message),
        other => panic!("accepted, but should have been refused: {other:?}"),
    }
}

/// `kaosctl module push` of the platform module the suite built; checks what the host says of it
/// and that a second push is recognised without sending the bytes again.
pub fn push_platform(c: &mut Client, host: &QemuHost) {
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
    let again = kaosctl::upload::push(c, &bytes, |_| {}).expect("push again");
    assert_eq!(again, module);
}

/// A one-vCPU vKaOS VM without NICs.
pub fn spec(name: &str, memory_mib: u32, cmdline: &str, restart: RestartPolicy) -> VmSpec {
    VmSpec {
        name: truncated(name),
        vcpus: 1,
        memory_mib,
        cmdline: truncated(cmdline),
        platform: truncated("vkaos"),
        restart,
        nics: heapless::Vec::new(),
    }
}

/// `kaosctl vm create`.
pub fn create(c: &mut Client, spec: VmSpec, start: bool) -> VmInfo {
    match ask(c, Request::VmCreate(VmCreate { spec, start })) {
        Response::Vm(info) => info,
        other => panic!("vm create: {other:?}"),
    }
}

/// `kaosctl vm start|stop|restart|destroy`.
pub fn act(c: &mut Client, name: &str, action: VmAction) -> Response {
    ask(
        c,
        Request::VmAct(VmActRequest {
            name: truncated(name),
            action,
        }),
    )
}

/// `kaosctl vm inspect`.
pub fn inspect(c: &mut Client, name: &str) -> VmInfo {
    match ask(c, Request::VmInspect(truncated(name))) {
        Response::Vm(info) => info,
        other => panic!("vm inspect {name}: {other:?}"),
    }
}

/// The console the host holds for `name`, as `kaosctl vm logs` prints it.
pub fn logs(c: &mut Client, name: &str) -> String {
    let bytes = c.console(name).expect("vm logs");
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Polls `vm inspect` until `pred` holds, for at most [`GUEST_UP`].
pub fn wait_vm(
    c: &mut Client,
    host: &QemuHost,
    name: &str,
    what: &str,
    pred: impl Fn(&VmInfo) -> bool,
) -> VmInfo {
    let deadline = Instant::now() + GUEST_UP;
    loop {
        let info = match c.request(Request::VmInspect(truncated(name))) {
            Ok(Response::Vm(info)) => info,
            other => panic!(
                "vm inspect {name}: {other:?}\nQEMU: {:?}\nhost:\n{}",
                host.try_exit(),
                host.tail()
            ),
        };
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

/// Waits until `name`'s console holds a whole line containing `needle`; returns that line.
pub fn wait_log_line(c: &mut Client, host: &QemuHost, name: &str, needle: &str) -> String {
    let deadline = Instant::now() + GUEST_UP;
    loop {
        let console = logs(c, name);
        if let Some(line) = complete_lines(&console).find(|l| l.contains(needle)) {
            return line.trim().to_owned();
        }
        if Instant::now() > deadline {
            panic!(
                "VM {name}: no line with {needle:?} after {GUEST_UP:?}\nguest console:\n{console}\nhost:\n{}",
                host.tail()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The lines of a console that are whole (a line still being written is not one yet).
pub fn complete_lines(console: &str) -> impl Iterator<Item = &str> {
    console
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .map(str::trim_end)
}

/// The readiness line of the guest `kattach`.
pub fn ready_line(name: &str) -> String {
    format!("kattach guest: {name} up")
}

/// The reboots a scenario asked for, so that [`tolerating_tcg_trouble`] can tell an unasked
/// one from them.
#[derive(Debug, Default)]
pub struct Reboots(std::cell::Cell<usize>);

impl Reboots {
    /// Asks the host to reboot (counted first: a refusal fails the scenario anyway).
    pub fn ask(&self, c: &mut Client) {
        self.0.set(self.0.get() + 1);
        assert_eq!(ask(c, Request::Reboot), Response::Accepted, "reboot");
    }
}

/// How many hosts a scenario gets before [`tolerating_tcg_trouble`] gives up on TCG.
const ATTEMPTS: usize = 2;

/// Boots a host with `boot` and runs `scenario` against it. Two known failures of nested KVM
/// under QEMU TCG are told apart from the product's: the scenario starts again on a freshly
/// booted host (at most [`ATTEMPTS`] in all), and if the trouble comes back the test prints
/// `SKIPPED` instead of failing. Everything else (any assertion about the product, any panic
/// on the host's console) fails the test at once.
///
/// - QEMU 7.2's emulated SVM sometimes resets the whole emulated host when a nested guest
///   triple-faults: the host's kernel prints nothing (no panic, no oops), the machine simply
///   starts again. A boot is unasked when the console holds more boots than the first plus
///   the reboots the scenario asked for so far ([`Reboots::ask`]).
/// - Not yet explained: the emulated host stops answering its management port for 20 s (a
///   timeout, or the connection dropped) without any panic. Said loudly, with the console's
///   tail, the request, and whether a fresh session is answered right after.
///
/// `B` is what one attempt owns (the host, and whatever must be fresh with it, such as its
/// store disk); `host` finds the host in it. It is dropped (QEMU killed) before the next boot.
pub fn tolerating_tcg_trouble<B>(
    test: &str,
    mut boot: impl FnMut() -> B,
    host: impl Fn(&B) -> &QemuHost,
    scenario: impl Fn(&B, &Reboots),
) {
    for attempt in 1..=ATTEMPTS {
        let booted = boot();
        let Err(trouble) = attempt_once(host(&booted), |r| scenario(&booted, r)) else {
            return;
        };
        if attempt == ATTEMPTS {
            return crate::skip(test, &format!("{trouble} (on each of {ATTEMPTS} hosts)"));
        }
        crate::say(&format!(
            "{test}: {trouble}; starting again on a fresh host"
        ));
    }
}

/// One attempt: `Err` with what the TCG trouble was (its evidence printed); any other failure
/// is resumed.
fn attempt_once(host: &QemuHost, scenario: impl FnOnce(&Reboots)) -> Result<(), String> {
    let reboots = Reboots::default();
    let run = std::panic::AssertUnwindSafe(|| scenario(&reboots));
    let Err(failure) = std::panic::catch_unwind(run) else {
        return Ok(());
    };
    let console = host.console();
    let boots = console.matches("Linux version").count();
    // The reboots asked for before the failure: one the scenario would only ask for later
    // must not hide an unasked one before it.
    let expected_boots = 1 + reboots.0.get();
    let panicked = console.contains("Kernel panic") || console.contains("panic: ");
    if boots > expected_boots && !panicked {
        // What the host said last before it started again: the evidence for the reset's cause.
        if let Some(at) = console.match_indices("Linux version").nth(expected_boots) {
            let before: Vec<&str> = console[..at.0].lines().collect();
            let from = before.len().saturating_sub(25);
            crate::say(&format!(
                "--- the host's console before its unasked reset ---\n{}",
                before[from..].join("\n")
            ));
        }
        return Err(
            "the emulated host reset itself mid-test (QEMU TCG's nested SVM after a \
                    guest's triple fault; no panic on its console)"
                .to_owned(),
        );
    }
    let message = failure
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| failure.downcast_ref::<&str>().copied())
        .unwrap_or("");
    let stalled = message.contains("Resource temporarily unavailable")
        || message.contains("Closed(")
        || message.contains("closed the connection");
    if stalled && !panicked {
        crate::say(&host.tail());
        // The evidence this trouble lacks: is the host gone, or only the test's session? A
        // fresh session tells them apart; its answer goes into the line.
        let fresh = match host.wait_ready(Duration::from_secs(30)) {
            Ok(mut c) => match c.request(Request::Status) {
                Ok(_) => "a fresh session was answered at once".to_owned(),
                Err(e) => format!("a fresh session connected, then: {e}"),
            },
            Err(e) => {
                let e = e.to_string();
                let first = e.lines().next().unwrap_or_default();
                format!("no fresh session either within 30 s: {first}")
            }
        };
        return Err(format!(
            "the emulated host stopped answering its management port mid-test (nested KVM \
             under QEMU TCG; no panic on its console; see the tail above); the request: {}; \
             after it: {fresh}",
            message.lines().next().unwrap_or_default()
        ));
    }
    // A real failure: the host's own panic lines, if any, are the first thing to read.
    let panics: Vec<&str> = console.lines().filter(|l| l.contains("panic")).collect();
    if !panics.is_empty() {
        crate::say(&format!(
            "--- panic lines on the host's console ---\n{}",
            panics.join("\n")
        ));
    }
    crate::say(&host.tail());
    std::panic::resume_unwind(failure);
}

/// VLAN `id` on 10.0.10.0/24 (every test VLAN shares the subnet: only the switch keeps them
/// apart), no gateway, its pool 10.0.10.`pool.0` to 10.0.10.`pool.1`.
pub fn vlan(id: u16, pool: (u8, u8)) -> kaos_protocol::VlanSpec {
    use core::net::Ipv4Addr;
    kaos_protocol::VlanSpec {
        id,
        subnet: kaos_protocol::Ipv4Cidr {
            addr: [10, 0, 10, 0],
            prefix: 24,
        },
        gateway: None,
        pool: Some((
            Ipv4Addr::new(10, 0, 10, pool.0),
            Ipv4Addr::new(10, 0, 10, pool.1),
        )),
        dns: heapless::Vec::new(),
    }
}
