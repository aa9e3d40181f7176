//! Store figures for `cargo xtask bench`, each beside its peer from the same run.
//!
//! | figure | anchor |
//! |---|---|
//! | durable commits/s, store on a file | plain redb, same writes, same disk |
//! | durable commits/s, store on a raw device (a file standing in) | the same |
//! | open of a 100 MiB store (integrity check included) | reading the same file |
//! | recovery open of a 100 MiB store after a crash | the same |
//! | durable `host set` round trips/s on a virtio disk in QEMU | `status` round trips/s, same boot |

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use kaos_protocol::{HostSet, Request, Response, truncated};
use kaos_qemu_tests::qemu::{QemuConfig, QemuHost};
use kaos_store::{Location, Store};

/// Commits per sample.
const COMMITS: usize = 300;
/// Samples per figure (median reported).
const RUNS: usize = 3;

/// Appends the store rows to `rows`.
pub fn rows(rows: &mut Vec<[String; 3]>, image: &Path) -> Result<()> {
    let dir = crate::paths::target_dir().join("kaos").join("bench-store");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;

    let (mut file, mut device, mut plain) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..RUNS {
        let f = Location::File(dir.join(format!("file-{run}.redb")));
        file.push(per_sec(kaos_store::bench::bench_commits(&f, COMMITS)?));
        let dev = dir.join(format!("device-{run}.img"));
        std::fs::File::create(&dev)?.set_len(64 << 20)?;
        kaos_store::init_device(&dev, false, [1; 16])?;
        device.push(per_sec(kaos_store::bench::bench_commits(
            &Location::Device(dev),
            COMMITS,
        )?));
        let p = dir.join(format!("plain-{run}.redb"));
        plain.push(per_sec(kaos_store::bench::bench_plain_redb(&p, COMMITS)?));
    }
    let anchor = format!(
        "plain redb, same writes: {}",
        crate::bench::stats(&mut plain, "/s")
    );
    rows.push([
        "store: durable commits, file".into(),
        crate::bench::stats(&mut file, "/s"),
        anchor.clone(),
    ]);
    rows.push([
        "store: durable commits, raw device".into(),
        crate::bench::stats(&mut device, "/s"),
        anchor,
    ]);

    let store = dir.join("big.redb");
    let crashed = dir.join("big-crashed.redb");
    kaos_store::bench::bench_fill(&Location::File(store.clone()), 100 << 20, &crashed)?;
    let size = std::fs::metadata(&store)?.len() >> 20;
    let (mut clean, mut recovery, mut read) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..RUNS {
        clean.push(ms(time(|| {
            Store::open(&Location::File(store.clone())).map(drop)
        })?));
        // Each recovery starts from a fresh copy: a recovered file is clean afterwards.
        let copy = dir.join(format!("crashed-{run}.redb"));
        std::fs::copy(&crashed, &copy)?;
        recovery.push(ms(time(|| {
            Store::open(&Location::File(copy.clone())).map(drop)
        })?));
        read.push(ms(time(|| std::fs::read(&store).map(drop))?));
    }
    let anchor = format!("reading the file: {}", crate::bench::stats(&mut read, "ms"));
    rows.push([
        format!("store: open, {size} MiB"),
        crate::bench::stats(&mut clean, "ms"),
        anchor.clone(),
    ]);
    rows.push([
        format!("store: recovery open, {size} MiB"),
        crate::bench::stats(&mut recovery, "ms"),
        anchor,
    ]);

    let (mut sets, mut statuses) = qemu_round_trips(image, &dir)?;
    rows.push([
        "store: durable host set over the protocol, virtio disk".into(),
        crate::bench::stats(&mut sets, "/s"),
        format!(
            "status round trips, same boot: {} (TCG)",
            crate::bench::stats(&mut statuses, "/s")
        ),
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn time<E>(f: impl FnOnce() -> std::result::Result<(), E>) -> std::result::Result<Duration, E> {
    let start = Instant::now();
    f()?;
    Ok(start.elapsed())
}

fn per_sec(d: Duration) -> f64 {
    // COMMITS is small: exact.
    #[allow(clippy::cast_precision_loss)]
    let n = COMMITS as f64;
    n / d.as_secs_f64()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Durable `host set` and plain `status` round trips per second against a booted image whose
/// store is a raw virtio disk.
fn qemu_round_trips(image: &Path, dir: &Path) -> Result<(Vec<f64>, Vec<f64>)> {
    let disk = dir.join("qemu-disk.img");
    std::fs::File::create(&disk)?.set_len(64 << 20)?;
    kaos_store::init_device(&disk, false, [2; 16])?;
    let mut config = QemuConfig::new(image)?;
    config.disks = vec![disk];
    let host = QemuHost::launch(&config)?;
    let mut client = host.wait_ready(Duration::from_secs(120))?;
    // Wait until the disk is the store.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Response::StoreStatus(r) = client.request(Request::StoreStatus)?
            && r.mode == kaos_protocol::StoreMode::Disk
        {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the bench disk was never adopted"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (mut sets, mut statuses) = (Vec::new(), Vec::new());
    for run in 0..RUNS {
        let n = 100;
        let start = Instant::now();
        for i in 0..n {
            let name = format!("bench-{run}-{i}");
            let req = Request::HostSet(HostSet {
                key: truncated("hostname"),
                value: truncated(&name),
            });
            client.request(req).context("host set")?;
        }
        sets.push(f64::from(n) / start.elapsed().as_secs_f64());
        let start = Instant::now();
        for _ in 0..n {
            client.request(Request::Status).context("status")?;
        }
        statuses.push(f64::from(n) / start.elapsed().as_secs_f64());
    }
    Ok((sets, statuses))
}
