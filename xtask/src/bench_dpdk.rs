//! The switch bench's peer: DPDK's vhost-user library, the packet path OVS-DPDK uses for VM
//! ports, measured in the same run as the switch (see [`crate::bench_switch`]).
//!
//! Setup: one `dpdk-testpmd` process with two vhost-user ports (`net_vhost0`, `net_vhost1`,
//! ports 0 and 1) and two virtio-user ports attached to their sockets (ports 2 and 3), which
//! stand in for the two guests. One forwarding core runs all four ports in io mode, unchanged
//! frames from port 0 to 1 and back, and from port 2 to 3 and back: what one guest receives,
//! the other sends again. `start tx_first 32` puts 32 bursts in flight; the figure is the sum of
//! the two vhost ports' received frames per second (testpmd's `Rx-pps`), the median of one
//! sample per second over 10 seconds (`SAMPLES`). io forwarding does no lookup at all, so it is a
//! lower bound on the per-frame cost of any switch built on the vhost library.
//!
//! What differs from the switch bench: the DPDK core also runs the two virtio-user guest
//! drivers, which do more per frame than the switch bench's emulated drivers; and vhost copies
//! each frame twice (guest to mbuf, mbuf to guest) where the switch copies it once.
//!
//! It runs only where `dpdk-testpmd` is on `PATH` (Debian: `apt-get install dpdk-dev`) and the
//! bench runs as root. It reserves hugepages if too few are free and gives back what it
//! reserved afterwards; it mounts hugetlbfs on `/dev/hugepages` if none is mounted and
//! unmounts it afterwards. Any failure becomes a "peer skipped" row, never a failed bench.

use std::fs;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread::{self, JoinHandle, sleep};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

const TESTPMD: &str = "dpdk-testpmd";
/// Frame lengths measured, as the switch bench's 64 B and 1514 B cases.
const LENS: [usize; 2] = [64, 1514];
/// One-second stats samples per frame length (after one discarded sample).
const SAMPLES: usize = 10;
/// Memory testpmd is given (`-m`), MiB.
const MEM_MIB: u64 = 1024;
/// Hugepage memory to have free before starting, MiB (`-m` plus slack).
const HUGE_MIB: u64 = MEM_MIB + 128;
/// EAL file prefix: names the runtime directory and the hugepage files.
const FILE_PREFIX: &str = "kaosbench";
const HUGE_MOUNT: &str = "/dev/hugepages";
const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

/// Measures the peer and pushes its rows; `switch` holds the switch's rows of the same run for
/// the anchors. Never fails: a peer that cannot run gives a "peer skipped" row.
pub fn rows(rows: &mut Vec<[String; 3]>, switch: &[[String; 3]]) -> Result<()> {
    let reason = match ready() {
        Ok(None) => match measure(rows, switch) {
            Ok(()) => return Ok(()),
            Err(e) => format!("{e:#}"),
        },
        Ok(Some(reason)) => reason,
        Err(e) => format!("{e:#}"),
    };
    println!("DPDK peer skipped: {reason}");
    rows.push([format!("peer skipped: {reason}"), "-".into(), "-".into()]);
    Ok(())
}

/// Why the peer cannot run here, if it cannot.
fn ready() -> Result<Option<String>> {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(TESTPMD).is_file()));
    if !on_path {
        return Ok(Some(format!(
            "{TESTPMD} not installed (apt-get install dpdk-dev)"
        )));
    }
    if !crate::deps::is_root()? {
        return Ok(Some(
            "not root (testpmd needs hugepages and the bench reserves them)".into(),
        ));
    }
    Ok(None)
}

fn measure(rows: &mut Vec<[String; 3]>, switch: &[[String; 3]]) -> Result<()> {
    let huge = Hugepages::reserve(HUGE_MIB)?;
    let dir = TempDir::new()?;
    for len in LENS {
        println!("running the DPDK peer ({TESTPMD}, {len} B frames, {SAMPLES} s)...");
        let started = Instant::now();
        let (pps, version) = run_testpmd(&dir.0, &huge.dir, len)
            .with_context(|| format!("{TESTPMD} at {len} B frames"))?;
        println!(
            "  {:.2} Mpps in {:.0} s",
            pps / 1e6,
            started.elapsed().as_secs_f64()
        );
        rows.push(row(len, pps, version.as_deref(), switch));
    }
    Ok(())
}

/// One row in the style of the switch's: name, figure, the switch's figure as the anchor.
fn row(len: usize, pps: f64, version: Option<&str>, switch: &[[String; 3]]) -> [String; 3] {
    let version = version.unwrap_or("DPDK");
    let name = format!(
        "peer: {version} vhost-user io forwarding, {len} B frames, \
         virtio-user guests on the same core"
    );
    let mpps = pps / 1e6;
    let gbit = |mpps: f64| mpps * len as f64 * 8.0 / 1000.0;
    let figure = if len <= 64 {
        format!("{mpps:.2} Mpps")
    } else {
        format!("{:.1} Gbit/s ({mpps:.2} Mpps)", gbit(mpps))
    };
    let prefix = format!("switch, {len} B frames, guest to guest");
    // The switch's figure as printed, with the ratio: `16.20 Mpps (1.88x)`,
    // `76.9 Gbit/s (6.35 Mpps, 1.44x)`.
    let anchor = match switch.iter().find(|r| r[0].starts_with(&prefix)) {
        Some(r) => match (switch_mpps(&r[1]), r[1].strip_suffix(')')) {
            (Some(sw), Some(open)) => format!("the switch: {open}, {:.2}x)", sw / mpps),
            (Some(sw), None) => format!("the switch: {} ({:.2}x)", r[1], sw / mpps),
            (None, _) => format!("the switch: {}", r[1]),
        },
        None => "the switch's row is missing".into(),
    };
    [name, figure, anchor]
}

/// The Mpps number of a switch figure: `16.20 Mpps` or `76.9 Gbit/s (6.35 Mpps)`.
fn switch_mpps(figure: &str) -> Option<f64> {
    let before = &figure[..figure.find(" Mpps")?];
    before.rsplit([' ', '(']).next()?.parse().ok()
}

/// Runs testpmd once at `len` B frames, sockets in `dir`, hugepage files in `huge_dir`;
/// returns the median frames per second through the two vhost ports, and the DPDK version
/// from the EAL banner.
fn run_testpmd(dir: &Path, huge_dir: &Path, len: usize) -> Result<(f64, Option<String>)> {
    let sock = |i: usize| dir.join(format!("s{i}.sock"));
    for i in 0..2 {
        let _ = fs::remove_file(sock(i));
    }
    let mut cmd = Command::new(TESTPMD);
    cmd.args(["-v", "-l", "0,1", "--main-lcore", "0", "-m"])
        .arg(MEM_MIB.to_string())
        .args(["--single-file-segments", "--no-pci"])
        .arg(format!("--huge-dir={}", huge_dir.display()))
        .arg(format!("--file-prefix={FILE_PREFIX}"));
    for i in 0..2 {
        cmd.arg("--vdev")
            .arg(format!("net_vhost{i},iface={},queues=1", sock(i).display()));
    }
    cmd.args([
        "--",
        "-i",
        "--forward-mode=io",
        "--nb-cores=1",
        "--rxq=1",
        "--txq=1",
    ])
    .arg(format!("--txpkts={len}"))
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());

    let runtime_dir = Path::new("/var/run/dpdk").join(FILE_PREFIX);
    let had_runtime_dir = runtime_dir.exists();
    let mut pmd = Testpmd::spawn(&mut cmd)?;
    let result = drive(&mut pmd, dir);
    let output = pmd.finish();
    if !had_runtime_dir {
        let _ = fs::remove_dir_all(&runtime_dir);
    }
    // testpmd leaves its hugepage file (`kaosbenchmap_0`) behind, and the pages in it in use.
    let map = format!("{FILE_PREFIX}map_");
    for entry in fs::read_dir(huge_dir).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&map) {
            let _ = fs::remove_file(entry.path());
        }
    }
    if let Err(e) = result {
        let tail: Vec<&str> = output
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let tail = tail[tail.len().saturating_sub(3)..].join(" / ");
        bail!("{e:#} (testpmd's last lines: {tail})");
    }
    let samples = vhost_pps(&output);
    // The first sample follows the previous `show port stats` by however long start-up took;
    // testpmd reports it as 0. Drop it.
    let mut samples: Vec<f64> = samples.into_iter().skip(1).collect();
    if samples.len() < SAMPLES / 2 {
        bail!(
            "{} stats samples in testpmd's output, expected {SAMPLES}",
            samples.len()
        );
    }
    let pps = median(&mut samples);
    if pps <= 0.0 {
        bail!("no frames forwarded");
    }
    Ok((pps, eal_version(&output)))
}

/// Feeds testpmd its commands (see the module doc), one sample per second.
fn drive(pmd: &mut Testpmd, dir: &Path) -> Result<()> {
    let stdin = pmd.stdin.as_mut().context("testpmd's stdin")?;
    let mut say = |line: String, wait: f64| -> Result<()> {
        writeln!(stdin, "{line}").context("writing to testpmd (did it exit?)")?;
        stdin.flush().context("writing to testpmd")?;
        sleep(Duration::from_secs_f64(wait));
        Ok(())
    };
    sleep(Duration::from_secs(4));
    for i in 0..2 {
        let path = dir.join(format!("s{i}.sock"));
        say(
            format!(
                "port attach net_virtio_user{i},path={},queues=1",
                path.display()
            ),
            2.0,
        )?;
    }
    say("port start all".into(), 2.0)?;
    say("start tx_first 32".into(), 3.0)?;
    // One discarded sample, then SAMPLES one second apart.
    say("show port stats all".into(), 1.0)?;
    for _ in 0..SAMPLES {
        say("show port stats all".into(), 1.0)?;
    }
    say("stop".into(), 1.0)?;
    say("quit".into(), 0.0)?;
    Ok(())
}

/// Per `show port stats all`: the sum of `Rx-pps` of ports 0 and 1 (the vhost ports). A block
/// whose lines came out garbled (testpmd's prompt cut into them) is left out.
fn vhost_pps(output: &str) -> Vec<f64> {
    let mut samples = Vec::new();
    let mut port = None;
    let mut cur: [Option<u64>; 2] = [None, None];
    let flush = |cur: &mut [Option<u64>; 2], samples: &mut Vec<f64>| {
        if let [Some(a), Some(b)] = *cur {
            samples.push((a + b) as f64);
        }
        *cur = [None, None];
    };
    for line in output.lines() {
        if let Some(rest) = line.split("NIC statistics for port ").nth(1) {
            port = rest
                .split_whitespace()
                .next()
                .and_then(|p| p.parse::<usize>().ok());
            if port == Some(0) {
                flush(&mut cur, &mut samples);
            }
        } else if let Some(rest) = line.split("Rx-pps:").nth(1)
            && let Some(p @ (0 | 1)) = port
        {
            cur[p] = rest.split_whitespace().next().and_then(|v| v.parse().ok());
        }
    }
    flush(&mut cur, &mut samples);
    samples
}

/// `DPDK 22.11.11` from the EAL's `RTE Version: 'DPDK 22.11.11'` (printed with `-v`).
fn eal_version(output: &str) -> Option<String> {
    let rest = output.split("RTE Version: '").nth(1)?;
    Some(rest[..rest.find('\'')?].to_owned())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A running testpmd whose stdout and stderr are read by two threads (so that a full pipe
/// never stalls it). Dropped, it is killed if it still runs.
struct Testpmd {
    child: Child,
    stdin: Option<ChildStdin>,
    readers: Vec<JoinHandle<String>>,
}

impl Testpmd {
    fn spawn(cmd: &mut Command) -> Result<Self> {
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", crate::cmd::display(cmd)))?;
        let stdin = child.stdin.take();
        let mut readers = Vec::new();
        let streams: [Option<Box<dyn std::io::Read + Send>>; 2] = [
            child.stdout.take().map(|s| Box::new(s) as _),
            child.stderr.take().map(|s| Box::new(s) as _),
        ];
        for mut s in streams.into_iter().flatten() {
            readers.push(thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = s.read_to_end(&mut buf);
                String::from_utf8_lossy(&buf).into_owned()
            }));
        }
        Ok(Self {
            child,
            stdin,
            readers,
        })
    }

    /// Closes stdin, waits up to 10 s for testpmd to exit (killing it after that), and returns
    /// its stdout followed by its stderr.
    fn finish(mut self) -> String {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            sleep(Duration::from_millis(100));
        }
        self.stop();
        let mut out = String::new();
        for r in self.readers.drain(..) {
            out.push_str(&r.join().unwrap_or_default());
        }
        out
    }

    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            println!("  testpmd did not exit after quit; killing it");
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        drop(self.stdin.take());
        self.stop();
    }
}

/// Free hugepages (of the default size) for the run, in the hugetlbfs mount `dir`; dropped,
/// gives back what it changed: the previous `nr_hugepages`, and the mount (and its directory)
/// if it made them.
#[derive(Debug, Default)]
struct Hugepages {
    dir: PathBuf,
    previous_nr: Option<String>,
    mounted: bool,
    made_dir: bool,
}

impl Hugepages {
    fn reserve(mib: u64) -> Result<Self> {
        let mut guard = Self::default();
        let page_kib = meminfo("Hugepagesize:")?;
        let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
        // A hugetlbfs mount of the default page size.
        let size_opt = if page_kib % (1024 * 1024) == 0 {
            format!("pagesize={}G", page_kib / (1024 * 1024))
        } else {
            format!("pagesize={}M", page_kib / 1024)
        };
        let existing = mounts.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let default_size = f
                .get(3)
                .is_some_and(|o| !o.contains("pagesize=") || o.split(',').any(|o| o == size_opt));
            (f.get(2) == Some(&"hugetlbfs") && default_size).then(|| PathBuf::from(f[1]))
        });
        if let Some(dir) = existing {
            guard.dir = dir;
        } else {
            guard.dir = PathBuf::from(HUGE_MOUNT);
            if !Path::new(HUGE_MOUNT).exists() {
                fs::create_dir_all(HUGE_MOUNT).with_context(|| format!("creating {HUGE_MOUNT}"))?;
                guard.made_dir = true;
            }
            crate::cmd::run(Command::new("mount").args(["-t", "hugetlbfs", "nodev", HUGE_MOUNT]))?;
            guard.mounted = true;
        }
        let need = (mib * 1024).div_ceil(page_kib.max(1));
        let free = available()?;
        if free < need {
            let previous = fs::read_to_string(NR_HUGEPAGES)
                .with_context(|| format!("reading {NR_HUGEPAGES}"))?;
            let nr: u64 = previous
                .trim()
                .parse()
                .with_context(|| format!("{NR_HUGEPAGES}: {previous:?}"))?;
            guard.previous_nr = Some(previous.trim().to_owned());
            fs::write(NR_HUGEPAGES, (nr + need - free).to_string())
                .with_context(|| format!("writing {NR_HUGEPAGES}"))?;
            let free = available()?;
            if free < need {
                bail!("only {free} of {need} hugepages free after raising {NR_HUGEPAGES}");
            }
        }
        Ok(guard)
    }
}

impl Drop for Hugepages {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(HUGE_MOUNT).status();
        }
        if self.made_dir {
            let _ = fs::remove_dir(HUGE_MOUNT);
        }
        if let Some(nr) = &self.previous_nr
            && let Err(e) = fs::write(NR_HUGEPAGES, nr)
        {
            println!("could not put {NR_HUGEPAGES} back to {nr}: {e}");
        }
    }
}

/// Hugepages free and not reserved by a mapping.
fn available() -> Result<u64> {
    Ok(meminfo("HugePages_Free:")?.saturating_sub(meminfo("HugePages_Rsvd:")?))
}

/// A number field of `/proc/meminfo`.
fn meminfo(field: &str) -> Result<u64> {
    let text = fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {field} in /proc/meminfo"))
}

/// A fresh directory under /tmp for the vhost-user sockets, removed when dropped.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = PathBuf::from(format!(
            "/tmp/kaos-dpdk-peer-{}-{nanos}",
            std::process::id()
        ));
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_switch_figures() {
        assert_eq!(switch_mpps("16.20 Mpps"), Some(16.20));
        assert_eq!(switch_mpps("76.9 Gbit/s (6.35 Mpps)"), Some(6.35));
        assert_eq!(switch_mpps("76.9 Gbit/s"), None);
    }

    #[test]
    fn parses_stats() {
        let block = |a: &str, b: &str| {
            format!(
                "  ######## NIC statistics for port 0  ########\n  Rx-pps:  {a}  Rx-bps: 1\n\
                 ######## NIC statistics for port 1  ########\n  Rx-pps:  {b}  Rx-bps: 1\n\
                 ######## NIC statistics for port 2  ########\n  Rx-pps:  7  Rx-bps: 1\n\
                 ######## NIC statistics for port 3  ########\n  Rx-pps:  testpmd> show\n"
            )
        };
        let out = format!(
            "EAL: RTE Version: 'DPDK 22.11.11'\n{}{}{}",
            block("0", "0"),
            block("100", "200"),
            block("testpmd>", "5")
        );
        assert_eq!(vhost_pps(&out), vec![0.0, 300.0]);
        assert_eq!(eal_version(&out).as_deref(), Some("DPDK 22.11.11"));
    }

    #[test]
    fn rows_carry_the_switch_anchor() {
        let switch = [
            [
                "switch, 64 B frames, guest to guest".into(),
                "16.20 Mpps".into(),
                String::new(),
            ],
            [
                "switch, 1514 B frames, guest to guest".into(),
                "76.9 Gbit/s (6.35 Mpps)".into(),
                String::new(),
            ],
        ];
        let r = row(64, 8.61e6, Some("DPDK 22.11.11"), &switch);
        assert_eq!(r[1], "8.61 Mpps");
        assert_eq!(r[2], "the switch: 16.20 Mpps (1.88x)");
        let r = row(1514, 4.4e6, None, &switch);
        assert_eq!(r[1], "53.3 Gbit/s (4.40 Mpps)");
        assert!(r[2].starts_with("the switch: 76.9 Gbit/s (6.35 Mpps, 1.44x)"));
    }
}
