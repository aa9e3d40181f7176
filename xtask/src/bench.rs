//! `cargo xtask bench`: the walking skeleton's figures, each beside its anchor.
//!
//! | figure | anchor |
//! |---|---|
//! | host image size | the 4 MiB budget; KaOS advertised < 10 MB |
//! | `kattach` size | the 3 MiB budget |
//! | boot: kernel → init exec | (is itself the anchor for kattach's part) |
//! | boot: init exec → endpoint ready | kernel → init exec, same boots |
//! | hosted: spawn → endpoint ready (logged) | spawn → exit of `kattach --version`, same wrapper |
//! | hosted: spawn → first answered hello | the line above (client started once ready is logged) |
//! | management protocol: round trips, bytes, handshakes | see [`crate::bench_mgmt`] |
//! | VMM start → exit, sandboxed and not; VM starts per second | see [`crate::bench_vmm`] |
//! | VM start through the protocol, hosted and under QEMU | see [`crate::bench_vms`] |
//! | switch datapath guest to guest (`cargo xtask bench switch`) | see [`crate::bench_switch`] |
//!
//! Every timing is the median of several runs; min and max are printed beside it.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use kaos_protocol::{Request, Response};
use kaos_qemu_tests::hosted::HostedHost;
use kaos_qemu_tests::netns;
use kaos_qemu_tests::qemu::{QemuConfig, QemuHost};

use crate::image;

const MIB: f64 = 1024.0 * 1024.0;

/// Runs every bench and prints the table.
pub fn run(boots: usize, hosted_runs: usize) -> Result<()> {
    if let Some(kattach) = std::env::var_os(crate::bench_mgmt::CHILD_ENV) {
        // A debug xtask asked this release build for the management figures only.
        return crate::bench_mgmt::child(Path::new(&kattach));
    }
    if std::env::var("KAOS_BENCH_ONLY").is_ok_and(|only| only == "switch") {
        let mut rows = Vec::new();
        crate::bench_switch::rows(&mut rows)?;
        print_table(&rows);
        return Ok(());
    }
    if std::env::var("KAOS_BENCH_ONLY").is_ok_and(|only| only == "vmm") {
        let mut rows = Vec::new();
        crate::bench_vmm::rows(&mut rows, &crate::bench_vmm::kattach()?)?;
        print_table(&rows);
        return Ok(());
    }
    let info = image::build_image(image::DEFAULT_PROFILE, None)?;
    if std::env::var("KAOS_BENCH_ONLY").is_ok_and(|only| only == "vms") {
        let mut rows = Vec::new();
        let platform = image::build_platform_module(image::VKAOS_PROFILE, None)?;
        crate::bench_vms::rows(&mut rows, &info.kattach, &info.image, &platform.module)?;
        print_table(&rows);
        return Ok(());
    }
    let mut rows: Vec<[String; 3]> = Vec::new();
    rows.push([
        "host image size".into(),
        format!("{:.2} MiB", bytes(info.image_size) / MIB),
        "budget 4 MiB; KaOS advertised < 10 MB".into(),
    ]);
    rows.push([
        "kattach size (static, stripped)".into(),
        format!("{:.2} MiB", bytes(info.kattach_size) / MIB),
        "budget 3 MiB".into(),
    ]);

    println!("booting the image {boots} times under QEMU TCG...");
    let mut kernel = Vec::new();
    let mut init_to_ready = Vec::new();
    for _ in 0..boots {
        let (k, r) = boot_timeline(&info.image)?;
        kernel.push(k);
        init_to_ready.push(r);
    }
    rows.push([
        "boot: kernel start → init exec".into(),
        stats(&mut kernel, "ms"),
        "-".into(),
    ]);
    rows.push([
        "boot: init exec → endpoint ready".into(),
        stats(&mut init_to_ready, "ms"),
        format!("kernel → init exec above ({boots} boots, TCG, DHCP)"),
    ]);

    match netns::unavailable() {
        Some(reason) => rows.push(["hosted start-up".into(), "skipped".into(), reason]),
        None => {
            let mut h = hosted_start(&info.kattach, hosted_runs)?;
            rows.push([
                "hosted: spawn → endpoint ready".into(),
                stats(&mut h.spawn_to_ready, "ms"),
                format!(
                    "spawn → exit of `kattach --version`: {}",
                    stats(&mut h.floor, "ms")
                ),
            ]);
            rows.push([
                "hosted: spawn → first answer".into(),
                stats(&mut h.first_answer, "ms"),
                "client started once ready is logged (one started before the TAP is up waits ~1 s for its kernel's ARP retry)".into(),
            ]);
        }
    }
    crate::bench_mgmt::rows(&mut rows, &info.kattach)?;
    crate::bench_store::rows(&mut rows, &info.image)?;
    crate::bench_vmm::rows(&mut rows, &info.kattach)?;
    let platform = image::build_platform_module(image::VKAOS_PROFILE, None)?;
    crate::bench_vms::rows(&mut rows, &info.kattach, &info.image, &platform.module)?;
    print_table(&rows);
    Ok(())
}

fn bytes(n: u64) -> f64 {
    // Sizes are far below 2^52: exact.
    #[allow(clippy::cast_precision_loss)]
    let f = n as f64;
    f
}

/// One boot: (kernel → init exec, init exec → endpoint ready) in ms, from the host's status.
fn boot_timeline(image: &Path) -> Result<(f64, f64)> {
    let host = QemuHost::launch(&QemuConfig::new(image)?)?;
    let mut client = host.wait_ready(Duration::from_secs(120))?;
    let Response::Status(s) = client.request(Request::Status)? else {
        anyhow::bail!("no status");
    };
    let t = s.timeline;
    let ready = t.endpoint_ready_ms.context("endpoint_ready_ms missing")?;
    Ok((f64::from(t.init_exec_ms), f64::from(ready - t.init_exec_ms)))
}

/// Hosted start-up: spawn → first answered hello, and the exec floor, `runs` times each.
fn hosted_start(kattach: &Path, runs: usize) -> Result<Hosted> {
    let mut h = Hosted::default();
    for _ in 0..runs {
        let host = HostedHost::launch(kattach, "bench")?;
        let ready = host.wait_log("management endpoint ready", Duration::from_secs(10))?;
        h.spawn_to_ready.push(ready.as_secs_f64() * 1000.0);
        let mut client = host.wait_ready(Duration::from_secs(10))?;
        h.first_answer
            .push(host.spawned().elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(
            matches!(client.request(Request::Status)?, Response::Status(_)),
            "no status"
        );

        // The same wrapper (`ip netns exec`), the same binary, nothing to serve.
        let t = Instant::now();
        let status = host
            .ns()
            .command(&kattach.to_string_lossy())
            .arg("--version")
            .stdout(Stdio::null())
            .status()?;
        h.floor.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(status.success(), "kattach --version failed");
    }
    Ok(h)
}

/// Hosted start-up samples, ms.
#[derive(Debug, Default)]
struct Hosted {
    /// spawn → kattach logs that the endpoint is ready (log polled every 0.2 ms).
    spawn_to_ready: Vec<f64>,
    /// spawn → first answered hello, for a client that starts connecting at spawn.
    first_answer: Vec<f64>,
    /// spawn → exit of `kattach --version`.
    floor: Vec<f64>,
}

/// `median unit (min, max, n)`.
pub fn stats(values: &mut [f64], unit: &str) -> String {
    values.sort_by(f64::total_cmp);
    let median = values[values.len() / 2];
    // Sub-10 figures keep a decimal; larger ones are whole.
    let p = usize::from(median < 10.0);
    format!(
        "{median:.p$} {unit} (min {:.p$}, max {:.p$}, n={})",
        values[0],
        values[values.len() - 1],
        values.len()
    )
}

fn print_table(rows: &[[String; 3]]) {
    let w0 = rows.iter().map(|r| r[0].len()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r[1].len()).max().unwrap_or(0);
    println!("\n{:<w0$}  {:<w1$}  anchor", "figure", "median");
    for [a, b, c] in rows {
        println!("{a:<w0$}  {b:<w1$}  {c}");
    }
}
