//! `cargo xtask bench`: the walking skeleton's figures, each beside its anchor.
//!
//! | figure | anchor |
//! |---|---|
//! | host image size | the 4 MiB budget; KaOS advertised < 10 MB |
//! | `kattach` size | the 3 MiB budget |
//! | boot: kernel → init exec | (is itself the anchor for kattach's part) |
//! | boot: init exec → endpoint ready | kernel → init exec, same boots |
//! | hosted: spawn → endpoint answers a hello | spawn → exit of `kattach --version`, same wrapper |
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
    let info = image::build_image(image::DEFAULT_PROFILE, None)?;
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
        Some(reason) => rows.push([
            "hosted: spawn → endpoint answers".into(),
            "skipped".into(),
            reason,
        ]),
        None => {
            let (mut ready, mut floor) = hosted_start(&info.kattach, hosted_runs)?;
            rows.push([
                "hosted: spawn → endpoint answers".into(),
                stats(&mut ready, "ms"),
                format!(
                    "spawn → exit of `kattach --version`: {}",
                    stats(&mut floor, "ms")
                ),
            ]);
        }
    }
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
fn hosted_start(kattach: &Path, runs: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut ready = Vec::new();
    let mut floor = Vec::new();
    for _ in 0..runs {
        let host = HostedHost::launch(kattach, "bench")?;
        host.wait_ready(Duration::from_secs(10))?;
        ready.push(host.spawned().elapsed().as_secs_f64() * 1000.0);

        // The same wrapper (`ip netns exec`), the same binary, nothing to serve.
        let t = Instant::now();
        let status = host
            .ns()
            .command(&kattach.to_string_lossy())
            .arg("--version")
            .stdout(Stdio::null())
            .status()?;
        floor.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(status.success(), "kattach --version failed");
    }
    Ok((ready, floor))
}

fn stats(values: &mut [f64], unit: &str) -> String {
    values.sort_by(f64::total_cmp);
    let median = values[values.len() / 2];
    format!(
        "{median:.0} {unit} (min {:.0}, max {:.0}, n={})",
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
