//! The `vmm` role: `kattach vmm run …` boots one VM in the foreground, serial on stdout, and exits
//! with the guest. No sandbox yet: the process runs with the caller's privileges.

use std::io::{self, Write};

use kaos_vmm::{ExitReason, InitrdPart, Vm, VmConfig, memory};

const USAGE: &str = "\
usage: kattach vmm run --kernel FILE [--initrd FILE] --vcpus N --memory SIZE [--cmdline TEXT]
       SIZE is bytes or a number with K, M or G (e.g. 128M)";

/// Exit status for a usage error or a configuration refused before the guest starts.
const EXIT_USAGE: i32 = 2;
/// Exit status for a guest stopped by a triple fault or a VMM error.
const EXIT_GUEST_FAILED: i32 = 1;

/// Entry point of the role; `args` follow the word `vmm`.
pub fn main(args: &[String]) -> ! {
    let config = match args.split_first() {
        Some((cmd, rest)) if cmd == "run" => parse_run(rest),
        _ => Err("expected a subcommand: run".to_owned()),
    };
    let config = config.unwrap_or_else(|e| fail(EXIT_USAGE, &format!("{e}\n{USAGE}")));
    let mut vm = Vm::new(&config, Unbuffered(io::stdout()))
        .unwrap_or_else(|e| fail(EXIT_USAGE, &e.to_string()));
    match vm.run() {
        ExitReason::Reset | ExitReason::PowerOff => std::process::exit(0),
        reason => fail(EXIT_GUEST_FAILED, &format!("guest stopped: {reason}")),
    }
}

fn fail(code: i32, message: &str) -> ! {
    eprintln!("kattach vmm: {message}");
    std::process::exit(code)
}

/// Parses the options of `vmm run`.
fn parse_run(args: &[String]) -> Result<VmConfig, String> {
    let (mut kernel, mut initrd, mut vcpus, mut memory, mut cmdline) =
        (None, Vec::new(), None, None, String::new());
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
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(VmConfig {
        kernel: kernel.ok_or("--kernel is required")?,
        initrd,
        vcpus: vcpus.ok_or("--vcpus is required")?,
        memory: memory.ok_or("--memory is required")?,
        cmdline,
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
        ]));
        assert_eq!(
            c,
            Ok(VmConfig {
                kernel: "k.elf".into(),
                initrd: Vec::new(),
                vcpus: 1,
                memory: 128 << 20,
                cmdline: "a b".into(),
            })
        );
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
