//! Commit-rate benchmarks for `cargo xtask bench`: our store on each backend beside plain redb
//! doing the same individual durable writes, so the figure printed is next to its peer.

use std::path::Path;
use std::time::{Duration, Instant};

use redb::{Database, Durability, TableDefinition};

use crate::{Location, Store, StoreError};

/// The one table of the plain redb run.
const PLAIN: TableDefinition<&str, &str> = TableDefinition::new("bench");

/// Time for `n` durable [`Store::set_setting`] commits at `location` (opening is not timed).
///
/// A device must already be initialised ([`crate::init_device`]); a file is created if absent.
/// Keys are `bench/0` … `bench/{n-1}`, so a rerun overwrites rather than grows.
pub fn bench_commits(location: &Location, n: usize) -> Result<Duration, StoreError> {
    let store = Store::open(location)?;
    let start = Instant::now();
    for i in 0..n {
        store.set_setting(&format!("bench/{i}"), "value")?;
    }
    Ok(start.elapsed())
}

/// Time for `n` individual `Durability::Immediate` commits with redb's own file backend and no
/// store on top: the peer figure for [`bench_commits`].
pub fn bench_plain_redb(path: &Path, n: usize) -> Result<Duration, StoreError> {
    let db = Database::create(path)?;
    let start = Instant::now();
    for i in 0..n {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.open_table(PLAIN)?
            .insert(format!("bench/{i}").as_str(), "value")?;
        txn.commit()?;
    }
    Ok(start.elapsed())
}

/// Fills the file store at `location` with 64 KiB module chunks (in 16 MiB transactions) until
/// the file is at least `bytes` long, then makes two copies of it next to `crashed`'s directory: `crashed` is taken
/// while the database is open after a commit, so opening it runs redb's recovery, as after a
/// power cut. Returns nothing; time [`Store::open`] on both afterwards.
pub fn bench_fill(location: &Location, bytes: u64, crashed: &Path) -> Result<(), StoreError> {
    const CHUNK: usize = 64 * 1024;
    const PER_TXN: u64 = 64;
    let store = Store::open(location)?;
    let chunk = vec![0x5au8; CHUNK];
    let Location::File(path) = location else {
        return Err(StoreError::Database("bench_fill fills a file store".into()));
    };
    let mut written = 0u64;
    while std::fs::metadata(path)?.len() < bytes {
        let txn = store.database().begin_write()?;
        {
            let mut table = txn.open_table(crate::schema::MODULE_CHUNKS)?;
            for i in written..written + PER_TXN {
                let mut key = [0u8; 32];
                key[..8].copy_from_slice(&i.to_le_bytes());
                table.insert(key, chunk.as_slice())?;
            }
        }
        txn.commit()?;
        written += PER_TXN;
    }
    store.set_setting("bench/filled", "yes")?;
    let Location::File(path) = location else {
        return Err(StoreError::Database(
            "bench_fill copies a file store".into(),
        ));
    };
    // Copied while open: the copy is marked as not cleanly closed.
    std::fs::copy(path, crashed)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn benches_run_and_write_what_they_say() -> Result<(), StoreError> {
        let dir = tempfile::tempdir()?;
        let location = Location::File(dir.path().join("store.redb"));
        bench_commits(&location, 3)?;
        assert_eq!(Store::open(&location)?.settings()?.len(), 3);
        bench_plain_redb(&dir.path().join("plain.redb"), 3)?;
        Ok(())
    }
}
