//! The `vmm` role: `kattach vmm run …` boots one VM in the foreground, serial on stdout, and exits
//! with the guest.
//!
//! Sandboxed by default (`kaos_vmm::sandbox`): before any KVM object exists the process enters
//! new namespaces and forks; the child (PID 1 of its own PID namespace) builds the VM, enters an
//! empty root, drops every capability, and runs each thread under its seccomp filter. This
//! process stays outside as the child's parent, turns `SIGTERM`/`SIGINT` into a `SIGKILL` of
//! the child, and exits with the child's status. `--no-sandbox` runs the VM in this process with
//! the caller's privileges, for debugging.

use std::io::{self, Write};

use kaos_vmm::sandbox::{self, ChildEnd, Side};
use kaos_vmm::seccomp::Filters;
use kaos_vmm::{ExitReason, InitrdPart, Vm, VmConfig, memory};

const USAGE: &str = "\
usage: kattach vmm run --kernel FILE [--initrd FILE]... [--guest-init] --vcpus N --memory SIZE
                       [--cmdline TEXT] [--nic fd=N,mac=XX:XX:XX:XX:XX:XX]... [--no-sandbox]
       --guest-init: an initrd whose /init is this kattach (the vKaOS guest role), before any
       --initrd; exit status 0 power-off, 3 reset, 1 guest or VMM failure, 2 refused
       --nic: a virtio-net card whose backend is the vhost-user socket inherited as fd N
       (the switch's end is `kattach switch`), with the MAC the host assigned
       SIZE is bytes or a number with K, M or G (e.g. 128M); N is 1 to 8";

/// Exit status for a usage error or a configuration refused before the guest starts.
const EXIT_USAGE: i32 = crate::vms::exit_code::START_FAILED;
/// Exit status for a guest stopped by a triple fault or a VMM error (the VMM process killed, by
/// seccomp or otherwise, included).
const EXIT_GUEST_FAILED: i32 = crate::vms::exit_code::GUEST_FAILED;
/// Exit status base when this process was told to stop: 128 + the signal, as shells report it.
const EXIT_SIGNALLED: i32 = 128;

/// What `vmm run` was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    config: VmConfig,
    sandbox: bool,
    guest_init: bool,
    nics: Vec<Nic>,
}

/// A `--nic`: an inherited vhost-user socket and the card's MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Nic {
    fd: i32,
    mac: [u8; 6],
}

/// Most NICs a VM gets (each takes one of the VMM's interrupt lines).
const MAX_NICS: usize = 4;

impl Nic {
    fn parse(text: &str) -> Result<Nic, String> {
        let (mut fd, mut mac) = (None, None);
        for part in text.split(',') {
            match part.split_once('=') {
                Some(("fd", v)) => {
                    fd =
                        Some(v.parse::<i32>().ok().filter(|&n| n > 2).ok_or_else(|| {
                            format!("--nic fd={v:?} is not a descriptor above 2")
                        })?);
                }
                Some(("mac", v)) => mac = Some(parse_mac(v)?),
                _ => {
                    return Err(format!(
                        "--nic {text:?}: expected fd=N,mac=XX:XX:XX:XX:XX:XX"
                    ));
                }
            }
        }
        Ok(Nic {
            fd: fd.ok_or_else(|| format!("--nic {text:?} needs fd=N"))?,
            mac: mac.ok_or_else(|| format!("--nic {text:?} needs mac=XX:XX:XX:XX:XX:XX"))?,
        })
    }

    /// The device, on the inherited socket (checked to be one before it is adopted).
    fn device(self) -> Result<Box<dyn kaos_vmm::virtio::VirtioDevice>, String> {
        use std::os::fd::{BorrowedFd, FromRawFd};
        // SAFETY: only inspected; an fd that is not open makes fstat fail.
        let borrowed = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let stat = rustix::fs::fstat(borrowed)
            .map_err(|e| format!("--nic fd={}: not an open descriptor: {e}", self.fd))?;
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::Socket {
            return Err(format!("--nic fd={}: not a socket", self.fd));
        }
        // SAFETY: the descriptor is open, a socket, inherited for this NIC alone, and adopted
        // once (duplicate fds are refused by `parse_run`).
        let stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(self.fd) };
        let net = kaos_vmm::virtio::net::VhostUserNet::connect(stream, self.mac)
            .map_err(|e| format!("--nic fd={}: {e}", self.fd))?;
        Ok(Box::new(net))
    }
}

fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let bad = || format!("{text:?} is not a MAC address like 02:00:00:00:00:01");
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let p = parts.next().filter(|p| p.len() == 2).ok_or_else(bad)?;
        *byte = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(mac)
}

/// Entry point of the role; `args` follow the word `vmm`.
pub fn main(args: &[String]) -> ! {
    let run = match args.split_first() {
        Some((cmd, rest)) if cmd == "run" => parse_run(rest),
        _ => Err("expected a subcommand: run".to_owned()),
    };
    let run = run.unwrap_or_else(|e| fail(EXIT_USAGE, &format!("{e}\n{USAGE}")));
    if let Err(e) = run.config.validate(memory::host_ram()) {
        fail(EXIT_USAGE, &e.to_string());
    }
    if run.sandbox {
        match sandbox::isolate() {
            Ok(Side::Child) => {}
            Ok(Side::Parent(end)) => {
                let (code, message) = parent_exit(end);
                if let Some(m) = message {
                    eprintln!("kattach vmm: {m}");
                }
                std::process::exit(code)
            }
            Err(e) => fail(EXIT_USAGE, &e.to_string()),
        }
    }
    let mut config = run.config;
    if run.guest_init {
        // This very binary becomes the guest's init: host and guest never disagree.
        let initrd = guest_init().unwrap_or_else(|e| fail(EXIT_USAGE, &e));
        config.initrd.insert(0, InitrdPart::Bytes(initrd));
    }
    let devices = run
        .nics
        .iter()
        .map(|nic| nic.device())
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| fail(EXIT_USAGE, &e));
    let mut vm = Vm::with_devices(&config, Unbuffered(io::stdout()), devices)
        .unwrap_or_else(|e| fail(EXIT_USAGE, &e.to_string()));
    let filters = run.sandbox.then(|| {
        let filters = Filters::new(&vm.device_fds(), &vm.socket_fds())
            .unwrap_or_else(|e| fail(EXIT_USAGE, &e.to_string()));
        sandbox::confine().unwrap_or_else(|e| fail(EXIT_USAGE, &e.to_string()));
        filters
    });
    match vm.run_confined(filters.as_ref()) {
        ExitReason::PowerOff => std::process::exit(crate::vms::exit_code::POWER_OFF),
        ExitReason::Reset => std::process::exit(crate::vms::exit_code::RESET),
        reason => fail(EXIT_GUEST_FAILED, &format!("guest stopped: {reason}")),
    }
}

/// The guest's init archive: this very executable as `/init`, so host and guest never disagree.
fn guest_init() -> Result<Vec<u8>, String> {
    let exe = std::fs::read("/proc/self/exe").map_err(|e| format!("cannot read kattach: {e}"))?;
    kaos_module::guest_initrd(&exe).map_err(|e| format!("cannot pack the guest init: {e}"))
}

/// The parent's exit status for how the sandboxed child ended, and what to say about it.
fn parent_exit(end: ChildEnd) -> (i32, Option<String>) {
    match end {
        ChildEnd::Exited(code) => (code, None),
        ChildEnd::Killed(libc::SIGSYS) => (
            EXIT_GUEST_FAILED,
            Some(
                "VMM failure: the VMM process was killed by SIGSYS (a system call outside its \
                 seccomp allowlist)"
                    .to_owned(),
            ),
        ),
        ChildEnd::Killed(sig) => (
            EXIT_GUEST_FAILED,
            Some(format!(
                "VMM failure: the VMM process was killed by signal {sig}"
            )),
        ),
        ChildEnd::Stopped(sig) => (EXIT_SIGNALLED + sig, None),
    }
}

fn fail(code: i32, message: &str) -> ! {
    eprintln!("kattach vmm: {message}");
    std::process::exit(code)
}

/// Parses the options of `vmm run`.
fn parse_run(args: &[String]) -> Result<Run, String> {
    let (mut kernel, mut initrd, mut vcpus, mut memory, mut cmdline) =
        (None, Vec::new(), None, None, String::new());
    let (mut sandbox, mut guest_init) = (true, false);
    let mut nics: Vec<Nic> = Vec::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--kernel" => kernel = Some(value()?),
            "--initrd" => initrd.push(InitrdPart::File(value()?)),
            "--vcpus" => {
                let v = value()?;
                vcpus = Some(
                    v.parse()
                        .map_err(|_| format!("--vcpus {v:?} is not a number"))?,
                );
            }
            "--memory" => memory = Some(memory::parse_size(&value()?).map_err(|e| e.to_string())?),
            "--cmdline" => cmdline = value()?,
            "--no-sandbox" => sandbox = false,
            "--guest-init" => guest_init = true,
            "--nic" => {
                let nic = Nic::parse(&value()?)?;
                if nics.iter().any(|n| n.fd == nic.fd) {
                    return Err(format!("--nic fd={} given twice", nic.fd));
                }
                if nics.len() == MAX_NICS {
                    return Err(format!("at most {MAX_NICS} --nic"));
                }
                nics.push(nic);
            }
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    let config = VmConfig {
        kernel: kernel.ok_or("--kernel is required")?,
        initrd,
        vcpus: vcpus.ok_or("--vcpus is required")?,
        memory: memory.ok_or("--memory is required")?,
        cmdline,
    };
    Ok(Run {
        config,
        sandbox,
        guest_init,
        nics,
    })
}

/// Stdout without line buffering: a console shows each byte as the guest writes it.
struct Unbuffered(io::Stdout);

impl Write for Unbuffered {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut out = self.0.lock();
        out.write_all(buf)?;
        out.flush()?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl std::fmt::Debug for Unbuffered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Unbuffered(stdout)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn run_options_parse() {
        let c = parse_run(&strings(&[
            "--kernel",
            "k.elf",
            "--vcpus",
            "1",
            "--memory",
            "128M",
            "--cmdline",
            "a b",
            "--initrd",
            "one",
            "--initrd",
            "two",
        ]));
        let config = VmConfig {
            kernel: "k.elf".into(),
            initrd: vec![
                InitrdPart::File("one".into()),
                InitrdPart::File("two".into()),
            ],
            vcpus: 1,
            memory: 128 << 20,
            cmdline: "a b".into(),
        };
        assert_eq!(
            c,
            Ok(Run {
                config: config.clone(),
                sandbox: true,
                guest_init: false,
                nics: Vec::new(),
            })
        );
        let args = [
            "--kernel",
            "k.elf",
            "--vcpus",
            "1",
            "--memory",
            "128M",
            "--no-sandbox",
            "--guest-init",
        ];
        let c = parse_run(&strings(&args)).map(|r| (r.sandbox, r.guest_init));
        assert_eq!(c, Ok((false, true)));
        let mut with_nic = strings(&args);
        with_nic.extend(strings(&["--nic", "fd=5,mac=02:00:0a:00:0A:ff"]));
        let nics = parse_run(&with_nic).map(|r| r.nics);
        assert_eq!(
            nics,
            Ok(vec![Nic {
                fd: 5,
                mac: [2, 0, 10, 0, 10, 0xff]
            }])
        );
    }

    #[test]
    fn the_parent_reports_how_the_sandboxed_vmm_ended() {
        assert_eq!(parent_exit(ChildEnd::Exited(0)), (0, None));
        assert_eq!(parent_exit(ChildEnd::Exited(2)), (2, None));
        let (code, m) = parent_exit(ChildEnd::Killed(libc::SIGSYS));
        assert_eq!(code, EXIT_GUEST_FAILED);
        assert!(m.is_some_and(|m| m.contains("SIGSYS") && m.contains("seccomp")));
        let (code, m) = parent_exit(ChildEnd::Killed(libc::SIGSEGV));
        assert_eq!(code, EXIT_GUEST_FAILED);
        assert!(m.is_some_and(|m| m.contains("VMM failure")));
        assert_eq!(parent_exit(ChildEnd::Stopped(libc::SIGTERM)), (143, None));
    }

    #[test]
    fn bad_run_options_are_refused() {
        for bad in [
            &["--vcpus", "1", "--memory", "1M"][..],
            &["--kernel", "k", "--vcpus", "x", "--memory", "1M"],
            &["--kernel", "k", "--vcpus", "1", "--memory", "lots"],
            &["--kernel", "k", "--vcpus", "1", "--memory", "1M", "--bogus"],
            &["--kernel"],
            &[
                "--kernel", "k", "--vcpus", "1", "--memory", "1M", "--nic", "fd=5",
            ],
            &[
                "--kernel",
                "k",
                "--vcpus",
                "1",
                "--memory",
                "1M",
                "--nic",
                "mac=02:00:00:00:00:01",
            ],
            &[
                "--kernel",
                "k",
                "--vcpus",
                "1",
                "--memory",
                "1M",
                "--nic",
                "fd=1,mac=02:00:00:00:00:01",
            ],
            &[
                "--kernel",
                "k",
                "--vcpus",
                "1",
                "--memory",
                "1M",
                "--nic",
                "fd=5,mac=02:00:00:00:01",
            ],
            &[
                "--kernel",
                "k",
                "--vcpus",
                "1",
                "--memory",
                "1M",
                "--nic",
                "fd=5,mac=02:00:00:00:00:01:02",
            ],
            &[
                "--kernel",
                "k",
                "--vcpus",
                "1",
                "--memory",
                "1M",
                "--nic",
                "fd=5,mac=02:00:00:00:00:0g",
            ],
        ] {
            assert!(parse_run(&strings(bad)).is_err(), "{bad:?} accepted");
        }
    }
}
