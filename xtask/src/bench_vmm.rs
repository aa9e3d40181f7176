//! VMM start-up figures for `cargo xtask bench`, beside Firecracker's from the same run when its
//! binary is given (`KAOS_BENCH_FIRECRACKER=/path/to/firecracker`).
//!
//! | figure | anchor |
//! |---|---|
//! | tiny guest, process start → exit: median wall, CPU (user+sys), peak RSS, sandboxed | Firecracker `--no-api --config-file`, same guest; else the figures |
//! | the same with `--no-sandbox` | the sandboxed row (what the sandbox costs) |
//! | VM starts per second, one at a time | Firecracker's published 5 per core per second |
//!
//! The guest is the issue's: an ELF that writes one byte to COM1 and resets through the i8042,
//! run with `--memory 128M --vcpus 1` on this machine's `/dev/kvm`. Wall time and CPU come from
//! runs started here (CPU from `wait4`'s rusage, which covers the sandboxed VMM, a grandchild
//! reaped by kattach, too). Peak RSS comes from runs under GNU `time -f %M`, as it is usually
//! measured: a process inherits the peak of the address space it was started from (`exec` keeps
//! the old one's high-water mark, and a `vfork` child's old one is this bench's own), so
//! `ru_maxrss` of a child of this bench reads as this bench's RSS; `time` forks from a small one.
//! `KAOS_BENCH_ONLY=vmm cargo xtask bench` runs only these rows (no host image build).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use crate::bench::stats;

/// Runs per series.
const RUNS: usize = 30;
/// The environment variable naming a Firecracker binary to compare with.
pub const FIRECRACKER_ENV: &str = "KAOS_BENCH_FIRECRACKER";
/// GNU time, for peak RSS.
const GNU_TIME: &str = "/usr/bin/time";
/// The Firecracker figures on the machine it was measured on.
const FIRECRACKER_TARGET: &str = "issue target: 12 ms wall, 3 ms CPU, 4.3 MB RSS";

/// One process run: wall, CPU (user + sys) in ms, peak RSS in MiB.
#[derive(Debug, Default)]
struct Samples {
    wall: Vec<f64>,
    cpu: Vec<f64>,
    rss: Vec<f64>,
}

impl Samples {
    fn row(&mut self, name: &str, anchor: String) -> [String; 3] {
        let wall = stats(&mut self.wall, "ms");
        let cpu = stats(&mut self.cpu, "ms")
            .split(" (")
            .next()
            .unwrap_or("")
            .to_owned();
        let rss = stats(&mut self.rss, "MiB")
            .split(" (")
            .next()
            .unwrap_or("")
            .to_owned();
        [
            name.to_owned(),
            format!("{wall}; CPU {cpu}; RSS {rss}"),
            anchor,
        ]
    }
}

/// Appends the VMM rows to `rows`, running `kattach` (the release build).
pub fn rows(rows: &mut Vec<[String; 3]>, kattach: &Path) -> Result<()> {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        rows.push([
            "vmm: tiny guest start → exit".into(),
            "skipped".into(),
            format!("cannot open /dev/kvm: {e}"),
        ]);
        return Ok(());
    }
    let dir = crate::paths::target_dir().join("kaos").join("bench-vmm");
    std::fs::create_dir_all(&dir)?;
    let guest = dir.join("tiny.elf");
    std::fs::write(&guest, tiny_guest())?;

    eprintln!("[bench] VMM: {RUNS} sandboxed and {RUNS} unsandboxed tiny-guest runs...");
    let vmm = |extra: &[&str]| -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![kattach.into()];
        args.extend(["vmm", "run", "--kernel"].map(OsString::from));
        args.push(guest.clone().into());
        args.extend(["--memory", "128M", "--vcpus", "1"].map(OsString::from));
        args.extend(extra.iter().map(OsString::from));
        args
    };
    let has_time = Path::new(GNU_TIME).exists();
    // Interleaved, so drift on this shared machine hits both series alike.
    let (mut sandboxed, mut plain) = (Samples::default(), Samples::default());
    let started = Instant::now();
    for _ in 0..RUNS {
        measure(&vmm(&[]), &mut sandboxed, 3)?;
        measure(&vmm(&["--no-sandbox"]), &mut plain, 3)?;
    }
    let sequential = RUNS as f64 * 2.0 / started.elapsed().as_secs_f64();
    if has_time {
        for _ in 0..RUNS {
            sandboxed.rss.push(peak_rss(&vmm(&[]), 3)?);
            plain.rss.push(peak_rss(&vmm(&["--no-sandbox"]), 3)?);
        }
    }

    let firecracker = match std::env::var_os(FIRECRACKER_ENV) {
        Some(fc) => Some(firecracker(Path::new(&fc), &guest, &dir, has_time)?),
        None => None,
    };
    let anchor = match &firecracker {
        Some(fc) => format!("Firecracker, same guest, same run: {}", fc[1]),
        None => format!("Firecracker: set {FIRECRACKER_ENV} ({FIRECRACKER_TARGET})"),
    };
    let sandbox_row = sandboxed.row("vmm: tiny guest start → exit, sandboxed", anchor);
    let plain_anchor = format!("sandboxed: {}", sandbox_row[1]);
    rows.push(sandbox_row);
    rows.push(plain.row("vmm: tiny guest start → exit, --no-sandbox", plain_anchor));
    if let Some(fc) = firecracker {
        rows.push(fc);
    }
    rows.push([
        "vmm: VM starts per second, one at a time".into(),
        format!("{sequential:.0} /s"),
        "Firecracker publishes 5 per core per second".into(),
    ]);
    Ok(())
}

/// Runs `argv` once with stdout discarded; records wall time and CPU from wait4's rusage.
fn measure(argv: &[OsString], into: &mut Samples, expect: i32) -> Result<()> {
    let (bin, args) = argv.split_first().context("empty command")?;
    let t = Instant::now();
    let child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the VMM")?;
    let pid = i32::try_from(child.id())?;
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not reaped elsewhere (the Child handle is never waited on);
    // both pointers are to live locals.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = t.elapsed().as_secs_f64() * 1000.0;
    if rc != pid {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != expect {
        let mut err = String::new();
        if let Some(mut e) = child.stderr {
            std::io::Read::read_to_string(&mut e, &mut err).ok();
        }
        bail!("the VMM ended with status {status:#x}, not exit {expect}: {err}");
    }
    let ms = |tv: libc::timeval| tv.tv_sec as f64 * 1000.0 + tv.tv_usec as f64 / 1000.0;
    into.wall.push(wall);
    into.cpu.push(ms(usage.ru_utime) + ms(usage.ru_stime));
    Ok(())
}

/// Peak RSS in MiB of `argv` run under GNU time.
fn peak_rss(argv: &[OsString], expect: i32) -> Result<f64> {
    let out = Command::new(GNU_TIME)
        .args(["-f", "%x %M"])
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .context("running GNU time")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    let mut words = last.split_whitespace();
    let code: i32 = words.next().and_then(|w| w.parse().ok()).unwrap_or(-1);
    let kib: f64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0.0);
    if code != expect || kib == 0.0 {
        bail!("under time, the VMM printed {stderr}");
    }
    Ok(kib / 1024.0)
}

/// Firecracker with the same guest: `--no-api --config-file`, 1 vCPU, 128 MiB.
fn firecracker(bin: &Path, guest: &Path, dir: &Path, has_time: bool) -> Result<[String; 3]> {
    let config = dir.join("firecracker.json");
    let json = serde_json::json!({
        "boot-source": {
            "kernel_image_path": guest,
            "boot_args": "console=ttyS0 reboot=k panic=1",
        },
        "drives": [],
        "machine-config": { "vcpu_count": 1, "mem_size_mib": 128 },
    });
    std::fs::write(&config, serde_json::to_vec_pretty(&json)?)?;
    eprintln!(
        "[bench] VMM: {RUNS} Firecracker runs ({})...",
        bin.display()
    );
    let mut samples = Samples::default();
    for i in 0..RUNS {
        let argv: Vec<OsString> = vec![
            bin.into(),
            "--no-api".into(),
            "--config-file".into(),
            config.clone().into(),
            "--id".into(),
            format!("kaos-bench-{i}").into(),
        ];
        measure(&argv, &mut samples, 0).context("running Firecracker")?;
        if has_time {
            samples
                .rss
                .push(peak_rss(&argv, 0).context("running Firecracker")?);
        }
    }
    Ok(samples.row(
        "vmm: Firecracker, same guest",
        format!("{} (--no-api --config-file)", bin.display()),
    ))
}

/// The guest: writes `K` to COM1, then resets through the i8042, in one `PT_LOAD`
/// segment at 1 MiB.
pub fn tiny_guest() -> Vec<u8> {
    kaos_vmm::tiny::tiny_elf(b"K")
}

/// The release kattach for `KAOS_BENCH_ONLY=vmm`: built as the image step builds it.
pub fn kattach() -> Result<PathBuf> {
    crate::kattach::build_static()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_tiny_guest_is_one_load_segment_at_1_mib() {
        let f = super::tiny_guest();
        assert_eq!(f.len(), 120 + 14);
        assert_eq!(&f[..5], b"\x7fELF\x02");
        assert_eq!(f[24..32], 0x10_0000u64.to_le_bytes());
        assert_eq!(f[56..58], 1u16.to_le_bytes());
    }
}
