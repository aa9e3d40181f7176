//! The `guest` role: `kattach` as PID 1 inside a vKaOS VM, chosen by `kaos.role=guest` on the
//! kernel command line. The VMM packs the host's own `kattach` as the guest's `/init`
//! (`kaos_module::guest_initrd`), so host and guest are always the same build.
//!
//! What it does: mount the pseudo-filesystems (the host's [`crate::early`] list, plus a tmpfs on
//! `/tmp`), announce itself on the console with one line the host waits for,
//!
//! ```text
//! kattach guest: <name> up (kernel <release>, <N> vCPUs, <M> MiB)
//! ```
//!
//! report the IPv4 address the kernel's `ip=` autoconfiguration set, run the App Modules of the
//! image the VM is an instance of ([`guest_apps`]), reap children, and on
//! `SIGTERM`/`SIGINT`/`SIGPWR`/`SIGUSR2` power off in order. Nothing of the host role runs
//! here: no management endpoint, no store, no keys.
//!
//! | key | value | default |
//! |---|---|---|
//! | `kaos.role=` | `guest` selects this role (read before anything else, in `main`) | host |
//! | `kaos.name=` | the guest's name (1–63 of `a-z 0-9 -`), also its host name | `vkaos` |
//! | `kaos.guest.exit=` | `poweroff` or `reboot` right after the readiness line (tests) | none |
//! | `kaos.guest.echo=`, `.probe=`, `.forge=` | network diagnostics, see [`guest_diag`] | none |
//!
//! **Power-off** is `sync`, then one byte written to I/O port `0xf4`: kattach's VMM ends the VM
//! as powered off on it, as QEMU does with `-device isa-debug-exit,iobase=0xf4`. The guest
//! kernel has no ACPI, so `reboot(POWER_OFF)` would only halt the vCPUs; if the port cannot be
//! written or the VM goes on running, the guest resets instead (`reboot(RESTART)`, through the
//! keyboard controller), which ends the VM too. PID 1 never exits: if even that fails, it logs
//! and keeps reaping.

use std::io::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::fs::Mode;
use rustix::mount::{MountFlags, UnmountFlags, mount, unmount};
use rustix::process::{Pid, Signal, WaitOptions, kill_process, waitpid};
use rustix::system::RebootCommand;

use crate::{early, guest_apps, guest_diag, logger, procs, supervisor, sys};

/// The kernel command-line word that selects this role.
const ROLE_WORD: &str = "kaos.role=guest";
/// The guest's name when `kaos.name=` is absent or invalid.
const DEFAULT_NAME: &str = "vkaos";
/// The VMM's exit port: a byte written there ends the VM as powered off.
const EXIT_PORT: u16 = 0xf4;
/// Time granted to other processes between SIGTERM and SIGKILL (as on the host).
const STOP_GRACE: Duration = Duration::from_secs(3);
/// Time the VM gets to end after the exit port was written, before the guest resets instead.
const EXIT_PORT_GRACE: Duration = Duration::from_secs(1);

/// Whether the kernel command line asks for the guest role. Called by PID 1 before anything
/// else: `/proc` is not mounted yet, so it is mounted for the read and unmounted again (the
/// kernel passes no dotted `key=value` to init's environment, so `/proc/cmdline` is the only
/// place to look).
pub fn requested() -> bool {
    if let Ok(cmdline) = std::fs::read_to_string("/proc/cmdline") {
        return is_guest(&cmdline);
    }
    let _ = rustix::fs::mkdir("/proc", Mode::from_raw_mode(0o555));
    let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    if mount("proc", "/proc", "proc", flags, None).is_err() {
        return false;
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let _ = unmount("/proc", UnmountFlags::empty());
    is_guest(&cmdline)
}

fn is_guest(cmdline: &str) -> bool {
    cmdline.split_ascii_whitespace().any(|w| w == ROLE_WORD)
}

/// What to do right after the readiness line (tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    PowerOff,
    Reboot,
}

/// The guest's settings, from `kaos.*` keys.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Settings {
    name: String,
    exit: Option<Exit>,
    diag: guest_diag::Plan,
}

impl Settings {
    /// Parses the command line; a bad value is reported and replaced by the default.
    fn from_cmdline(cmdline: &str) -> (Self, Vec<String>) {
        let mut s = Self {
            name: DEFAULT_NAME.into(),
            exit: None,
            diag: guest_diag::Plan::default(),
        };
        let mut problems = Vec::new();
        for word in cmdline.split_ascii_whitespace() {
            if let Some((key, value)) = word.split_once('=')
                && let Some(taken) = s.diag.take(key, value)
            {
                problems.extend(taken.err());
                continue;
            }
            match word.split_once('=') {
                Some(("kaos.name", v)) if valid_name(v) => s.name = v.into(),
                Some(("kaos.guest.exit", "poweroff")) => s.exit = Some(Exit::PowerOff),
                Some(("kaos.guest.exit", "reboot")) => s.exit = Some(Exit::Reboot),
                Some((key @ ("kaos.name" | "kaos.guest.exit"), v)) => {
                    problems.push(format!("ignoring {key}={v}: invalid value"));
                }
                _ => {}
            }
        }
        (s, problems)
    }
}

fn valid_name(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 63
        && !v.starts_with('-')
        && !v.ends_with('-')
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// One-line messages on the console: `/dev/kmsg` (timestamped, in order with the kernel's own
/// lines, kept in its ring), or stderr (the console the kernel gave init) until that is open.
struct Console {
    kmsg: Option<Mutex<std::fs::File>>,
}

impl Console {
    fn open() -> Self {
        let kmsg = std::fs::OpenOptions::new().write(true).open("/dev/kmsg");
        Self {
            kmsg: kmsg.ok().map(Mutex::new),
        }
    }

    /// `priority` is the syslog level (6 info, 4 warning, 3 error).
    fn line(&self, priority: u8, text: &str) {
        let line = match priority {
            0..=3 => format!("kattach guest: error: {text}\n"),
            4 => format!("kattach guest: warning: {text}\n"),
            _ => format!("kattach guest: {text}\n"),
        };
        if let Some(kmsg) = &self.kmsg {
            let mut kmsg = kmsg
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if kmsg
                .write_all(format!("<{priority}>{line}").as_bytes())
                .is_ok()
            {
                return;
            }
        }
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    fn info(&self, text: &str) {
        self.line(6, text);
    }

    /// A line for the host, written to the console device itself: the kernel's `quiet` (or
    /// any console log level) must not hide it, as the host waits for it.
    fn announce(&self, text: &str) {
        let _ = std::io::stderr().write_all(format!("kattach guest: {text}\n").as_bytes());
    }

    fn warn(&self, text: &str) {
        self.line(4, text);
    }

    /// A line about the App Modules (see [`guest_apps::Say`]): on the console device, as the
    /// host reads the reports among them.
    fn app(&self, error: bool, text: &str) {
        if error {
            self.announce(&format!("error: {text}"));
        } else {
            self.announce(text);
        }
    }

    fn error(&self, text: &str) {
        self.line(3, text);
    }
}

/// Entry point of the role (PID 1). Never returns.
pub fn main() -> ! {
    // Before any thread exists, so every thread inherits the mask.
    let blocked = sys::block(&sys::supervised_signals());
    supervisor::install_panic_hook(true);
    logger::init(log::LevelFilter::Info);
    let mut problems = early::mount_all();
    problems.extend(mount_tmp());
    if let Err(e) = logger::use_kmsg() {
        problems.push(format!("/dev/kmsg: {e}"));
    }
    if let Err(e) = blocked {
        problems.push(format!("blocking signals: {e}"));
    }
    let console = Console::open();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_else(|e| {
        problems.push(format!("/proc/cmdline: {e}"));
        String::new()
    });
    let (settings, bad_keys) = Settings::from_cmdline(&cmdline);
    for p in problems.iter().chain(&bad_keys) {
        console.warn(p);
    }
    // Ctrl-Alt-Del becomes SIGINT to us instead of an immediate reset.
    let _ = rustix::system::reboot(RebootCommand::CadOff);
    if let Err(e) = rustix::system::sethostname(settings.name.as_bytes()) {
        console.warn(&format!("sethostname: {e}"));
    }

    console.announce(&ready_line(&settings.name));
    let fib = std::fs::read_to_string("/proc/net/fib_trie").unwrap_or_default();
    for address in local_addresses(&fib) {
        // Beside the readiness line, whatever the log level: the operator's first question.
        console.announce(&format!("{} address {address}", settings.name));
    }
    if !settings.diag.is_empty() {
        settings.diag.start(|line| {
            let _ = std::io::stderr().write_all(format!("kattach guest: {line}\n").as_bytes());
        });
    }
    let root = guest_apps::Root("/".into());
    let apps = guest_apps::Apps::start(&root, &settings.name, &|e, t| console.app(e, t));
    match settings.exit {
        Some(Exit::PowerOff) => power_off(&console),
        Some(Exit::Reboot) => reboot(&console),
        None => {}
    }
    run(&console, &root, apps)
}

/// `tmpfs` on `/tmp` (the host has none; guests' applications expect one).
fn mount_tmp() -> Option<String> {
    let _ = rustix::fs::mkdir("/tmp", Mode::from_raw_mode(0o1777));
    let flags = MountFlags::NOSUID | MountFlags::NODEV;
    mount("tmpfs", "/tmp", "tmpfs", flags, Some(c"mode=1777,size=50%"))
        .err()
        .map(|e| format!("mount tmpfs on /tmp: {e}"))
}

/// `<name> up (kernel <release>, <N> vCPUs, <M> MiB)`.
fn ready_line(name: &str) -> String {
    let uname = rustix::system::uname();
    let release = uname.release().to_string_lossy();
    let vcpus = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|list| count_cpus(&list))
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1);
    let info = rustix::system::sysinfo();
    let total = u64::from(info.mem_unit.max(1)).saturating_mul(info.totalram);
    format!(
        "{name} up (kernel {release}, {vcpus} vCPUs, {} MiB)",
        total >> 20
    )
}

/// Counts the CPUs of a kernel CPU list (`0-3,5`).
fn count_cpus(list: &str) -> Option<usize> {
    let mut n = 0usize;
    for part in list.trim().split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
        n = n.checked_add(b.checked_sub(a)?.checked_add(1)?)?;
    }
    (n > 0).then_some(n)
}

/// The IPv4 addresses of this guest's interfaces (not loopback), from `/proc/net/fib_trie`:
/// each `|-- A.B.C.D` leaf followed by `/32 host LOCAL` is an address the kernel owns.
pub(crate) fn local_addresses(fib_trie: &str) -> Vec<std::net::Ipv4Addr> {
    let mut out = Vec::new();
    let mut leaf = None;
    for line in fib_trie.lines().map(str::trim) {
        if let Some(addr) = line.strip_prefix("|-- ") {
            leaf = addr.parse::<std::net::Ipv4Addr>().ok();
        } else if line.starts_with("/32 host LOCAL")
            && let Some(addr) = leaf
            && !addr.is_loopback()
            && !out.contains(&addr)
        {
            out.push(addr);
        }
    }
    out
}

/// The supervisor loop: signals in, power-off out, children reaped, App Modules' entrypoints
/// restarted when their back-off is over.
fn run(console: &Console, root: &guest_apps::Root, mut apps: guest_apps::Apps) -> ! {
    let set = sys::supervised_signals();
    let say = |error: bool, text: &str| console.app(error, text);
    loop {
        let timeout = apps.next_due().map_or(Duration::from_secs(5), |d| {
            d.clamp(Duration::from_millis(10), Duration::from_secs(5))
        });
        match sys::wait(&set, timeout) {
            Ok(Some(Signal::TERM | Signal::INT | Signal::POWER | Signal::USR2)) => {
                power_off(console);
            }
            Ok(Some(Signal::CHILD) | None) => {}
            Ok(Some(other)) => console.info(&format!("ignoring signal {}", other.as_raw())),
            Err(e) => {
                console.error(&format!("sigtimedwait: {e}"));
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        for (pid, status) in guest_apps::reap_all() {
            apps.reaped(pid, status, &say);
        }
        apps.start_due(root, &say);
    }
}

/// Reaps every exited child without blocking.
fn reap() {
    while let Ok(Some(_)) = waitpid(None, WaitOptions::NOHANG) {}
}

/// SIGTERM to every other process, SIGKILL to what is left after [`STOP_GRACE`], then `sync`.
/// (The host's supervisor does the same; its helpers are private to it.)
fn stop_all() {
    let me = rustix::process::getpid();
    let others = || {
        procs::userspace_pids()
            .into_iter()
            .filter_map(Pid::from_raw)
            .filter(|p| *p != me)
            .collect::<Vec<_>>()
    };
    let first = others();
    for pid in &first {
        let _ = kill_process(*pid, Signal::TERM);
    }
    let deadline = Instant::now() + STOP_GRACE;
    while !first.is_empty() && Instant::now() < deadline && !others().is_empty() {
        reap();
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in others() {
        let _ = kill_process(pid, Signal::KILL);
    }
    reap();
    rustix::fs::sync();
}

/// Orderly power-off: stop, sync, the exit port; a reset if the VM is still running after it.
/// Returns only if every way to stop failed.
fn power_off(console: &Console) {
    console.info("powering off");
    stop_all();
    drain_console();
    match write_exit_port() {
        Ok(()) => {
            std::thread::sleep(EXIT_PORT_GRACE);
            console.warn("the VM is still running after the exit port write; resetting");
        }
        Err(e) => console.warn(&format!("exit port {EXIT_PORT:#x}: {e}; resetting")),
    }
    restart(console);
}

/// Orderly reboot: stop, sync, reset.
fn reboot(console: &Console) {
    console.info("rebooting");
    stop_all();
    restart(console);
}

/// Waits until the serial console has sent what was written to it: lines announced on the
/// console device itself (readiness, address) must not be cut by the end of the VM.
fn drain_console() {
    // SAFETY: tcdrain on the standard error descriptor; an error (not a terminal) is ignored.
    unsafe { libc::tcdrain(libc::STDERR_FILENO) };
}

fn restart(console: &Console) {
    drain_console();
    if let Err(e) = rustix::system::reboot(RebootCommand::Restart) {
        // Without a way to stop, keep reaping: PID 1 must not exit.
        console.error(&format!("reboot: {e}"));
    }
}

/// Writes one zero byte to [`EXIT_PORT`] from this thread.
#[cfg(target_arch = "x86_64")]
fn write_exit_port() -> std::io::Result<()> {
    // SAFETY: ioperm only changes this thread's I/O permission bitmap; the arguments name one
    // port and ask for access to it.
    if unsafe { libc::ioperm(libc::c_ulong::from(EXIT_PORT), 1, 1) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: ioperm above granted this thread access to EXIT_PORT, so `out` cannot fault. It
    // touches no memory, stack or flags of this process: the write goes to the VMM (or QEMU's
    // isa-debug-exit), which ends the VM, or to nothing, in which case execution continues.
    unsafe {
        core::arch::asm!(
            "out dx, al",
            in("dx") EXIT_PORT,
            in("al") 0u8,
            options(nomem, nostack, preserves_flags)
        );
    }
    Ok(())
}

#[cfg(not(target_arch = "x86_64"))]
fn write_exit_port() -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "no exit port on this architecture",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_word_is_exact() {
        assert!(is_guest("console=ttyS0 kaos.role=guest panic=-1"));
        assert!(is_guest("kaos.role=guest"));
        assert!(!is_guest("console=ttyS0 panic=-1"));
        assert!(!is_guest("kaos.role=guest2 kaos.role=host"));
        assert!(!is_guest("xkaos.role=guest"));
    }

    #[test]
    fn settings_and_bad_values() {
        let (s, p) = Settings::from_cmdline("console=ttyS0 kaos.role=guest");
        assert_eq!((s.name.as_str(), s.exit, p.len()), ("vkaos", None, 0));
        let (s, p) = Settings::from_cmdline("kaos.name=web-1 kaos.guest.exit=poweroff");
        assert_eq!(
            (s.name.as_str(), s.exit, p.len()),
            ("web-1", Some(Exit::PowerOff), 0)
        );
        let (s, _) = Settings::from_cmdline("kaos.guest.exit=reboot");
        assert_eq!(s.exit, Some(Exit::Reboot));
        let (s, p) = Settings::from_cmdline("kaos.name=Web_1 kaos.guest.exit=halt kaos.name=-x");
        assert_eq!((s.name.as_str(), s.exit), ("vkaos", None));
        assert_eq!(
            p,
            [
                "ignoring kaos.name=Web_1: invalid value",
                "ignoring kaos.guest.exit=halt: invalid value",
                "ignoring kaos.name=-x: invalid value"
            ]
        );
        assert!(!valid_name(&"a".repeat(64)) && valid_name(&"a".repeat(63)));
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(count_cpus("0\n"), Some(1));
        assert_eq!(count_cpus("0-3\n"), Some(4));
        assert_eq!(count_cpus("0,2-3,7"), Some(4));
        assert_eq!(count_cpus(""), None);
        assert_eq!(count_cpus("3-1"), None);
        assert_eq!(count_cpus("x"), None);
    }

    #[test]
    fn addresses_from_fib_trie() {
        let fib = "\
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 10.0.2.0/24 2 0 2
        |-- 10.0.2.0
           /24 link UNICAST
        |-- 10.0.2.15
           /32 host LOCAL
        |-- 10.0.2.255
           /32 link BROADCAST
     +-- 127.0.0.0/8 2 0 2
        |-- 127.0.0.1
           /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
        |-- 10.0.2.15
           /32 host LOCAL
";
        assert_eq!(
            local_addresses(fib),
            [std::net::Ipv4Addr::new(10, 0, 2, 15)]
        );
        assert!(local_addresses("").is_empty());
        assert!(local_addresses("|-- bogus\n/32 host LOCAL\n").is_empty());
    }
}
