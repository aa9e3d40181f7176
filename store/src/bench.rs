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
