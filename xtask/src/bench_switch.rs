//! `cargo xtask bench switch` (or `KAOS_BENCH_ONLY=switch cargo xtask bench`): the switch's
//! datapath between two guests' virtqueues in shared memory, in one process, built in release
//! (`kaos-vswitch`'s `switch_bench` example, see `kaos_vswitch::bench`).
//!
//! | figure | anchor |
//! |---|---|
//! | 64 B frames guest to guest, Mpps | memcpy of the same frames (header + bytes), same run |
//! | 64 B frames of 256 flows, none twice in a row, Mpps | the same |
//! | 64 B frames to drivers that want an interrupt per batch, Mpps | the same |
//! | 1514 B frames, Gbit/s | the same |
//! | 64 KiB TSO frames (GSO header passed through), Gbit/s | the same |
//! | 64 B frames with the flow cache, Mpps | the same switch without it, same run |
//! | 64 B and 1514 B, the same, from DPDK 22.11's vhost-user library (testpmd io forwarding, one core) | the switch's rows, same run |
//!
//! Except in the third row the emulated drivers poll and ask for no interrupts, as DPDK's
//! virtio driver does (and Linux's under load). Medians of `KAOS_BENCH_RUNS` runs (default 5).
//! Issue 6's goals: 15 Mpps per core at 64 B, at least 0.7× memcpy at 1514 B and 64 KiB.
//!
//! The peer rows (see [`bench_dpdk`]) run only where `dpdk-testpmd` is installed and the bench
//! runs as root; the peer reserves hugepages for its run and gives them back.

use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::{bench_dpdk, paths};

/// Builds and runs the bench; one row per figure.
pub fn rows(rows: &mut Vec<[String; 3]>) -> Result<()> {
    println!("building the switch bench (release)...");
    let status = Command::new(paths::cargo())
        .current_dir(paths::workspace_root())
        .args([
            "build",
            "--release",
            "-p",
            "kaos-vswitch",
            "--example",
            "switch_bench",
        ])
        .status()
        .context("cargo build")?;
    if !status.success() {
        bail!("building the switch bench failed");
    }
    let exe = paths::target_dir().join("release/examples/switch_bench");
    println!("running {} ...", exe.display());
    let out = Command::new(&exe)
        .output()
        .with_context(|| format!("running {}", exe.display()))?;
    if !out.status.success() {
        bail!(
            "the switch bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let first = rows.len();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut f = line.splitn(3, '\t');
        if let (Some(a), Some(b), Some(c)) = (f.next(), f.next(), f.next()) {
            rows.push([a.to_owned(), b.to_owned(), c.to_owned()]);
        }
    }
    // The peer, anchored on the switch's rows just collected; it never fails the bench.
    let switch = rows[first..].to_vec();
    bench_dpdk::rows(rows, &switch)
}
