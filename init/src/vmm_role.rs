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
                       [--cmdline TEXT] [--no-sandbox]
       --guest-init: an initrd whose /init is this kattach (the vKaOS guest role), before any
       --initrd; exit status 0 power-off, 3 reset, 1 guest or VMM failure, 2 refused
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
    let mut vm = Vm::new(&config, Unbuffered(io::stdout()))
        .unwrap_or_else(|e| fail(EXIT_USAGE, &e.to_string()));
    let filters = run.sandbox.then(|| {
        let filters =
            Filters::new(&vm.device_fds()).unwrap_or_else(|e| fail(EXIT_USAGE, &e.to_string()));
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
        ] {
            assert!(parse_run(&strings(bad)).is_err(), "{bad:?} accepted");
        }
    }
}
