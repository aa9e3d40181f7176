//! Durable commits per second: the store on a file, on a device (a regular file standing in),
//! and plain redb on a file doing the same individual durable writes.
//!
//! `cargo run --release -p kaos-store --example bench -- [N] [DIR]` (default 500 commits in a
//! temporary directory; pass a DIR on the disk you want measured).

use std::path::PathBuf;
use std::time::Duration;

use kaos_store::bench::{bench_commits, bench_plain_redb};
use kaos_store::{Location, StoreError, init_device};

fn main() -> Result<(), StoreError> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(500);
    let temp = tempfile::tempdir()?;
    let dir = args
        .next()
        .map_or_else(|| temp.path().to_owned(), PathBuf::from);
    let disk = dir.join("bench-disk");
    std::fs::File::create(&disk)?.set_len(64 * 1024 * 1024)?;
    init_device(&disk, true, [0xBE; 16])?;

    let runs = [
        (
            "store, file",
            bench_commits(&Location::File(dir.join("bench-store.redb")), n)?,
        ),
        (
            "store, device on a file",
            bench_commits(&Location::Device(disk.clone()), n)?,
        ),
        (
            "plain redb, file",
            bench_plain_redb(&dir.join("bench-plain.redb"), n)?,
        ),
        ("store, memory", bench_commits(&Location::Memory, n)?),
    ];
    println!("{n} durable single-setting commits in {}", dir.display());
    for (name, elapsed) in runs {
        println!(
            "  {name:<24} {:>8.0} commits/s  ({elapsed:.2?})",
            rate(n, elapsed)
        );
    }
    for name in ["bench-disk", "bench-store.redb", "bench-plain.redb"] {
        std::fs::remove_file(dir.join(name))?;
    }
    Ok(())
}

fn rate(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
}
