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
usage: kattach vmm run --kernel FILE [--initrd FILE]... --vcpus N --memory SIZE [--cmdline TEXT]
                       [--no-sandbox]
       SIZE is bytes or a number with K, M or G (e.g. 128M); N is 1 to 8";

/// Exit status for a usage error or a configuration refused before the guest starts.
const EXIT_USAGE: i32 = 2;
/// Exit status for a guest stopped by a triple fault or a VMM error (the VMM process killed, by
/// seccomp or otherwise, included).
const EXIT_GUEST_FAILED: i32 = 1;
/// Exit status base when this process was told to stop: 128 + the signal, as shells report it.
const EXIT_SIGNALLED: i32 = 128;

/// What `vmm run` was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    config: VmConfig,
    sandbox: bool,
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
    let mut vm = Vm::new(&run.config, Unbuffered(io::stdout()))
        .unwrap_or_else(|e| fail(EXIT_USAGE, &e.to_string()));
    let filters = run.sandbox.then(|| {
        let filters =
            Filters::new(&vm.device_fds()).unwrap_or_else(|e| fail(EXIT_USAGE, &e.to_string()));
        sandbox::confine().unwrap_or_else(|e| fail(EXIT_USAGE, &e.to_string()));
        filters
    });
    match vm.run_confined(filters.as_ref()) {
        ExitReason::Reset | ExitReason::PowerOff => std::process::exit(0),
        reason => fail(EXIT_GUEST_FAILED, &format!("guest stopped: {reason}")),
    }
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
    let mut sandbox = true;
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
    Ok(Run { config, sandbox })
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
                sandbox: true
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
        ];
        let c = parse_run(&strings(&args)).map(|r| r.sandbox);
        assert_eq!(c, Ok(false));
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
