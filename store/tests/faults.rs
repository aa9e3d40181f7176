//! Every I/O call of a workload fails in turn; nothing acknowledged may be lost.
//!
//! Guards against: a disk error in the middle of a commit (or of opening) leaving a database
//! that no longer opens, that lost a write `set_setting` had acknowledged, or that holds a value
//! nobody wrote. The model is a `BTreeMap` updated only for operations that returned `Ok`; the
//! one operation that failed may or may not have reached the disk.

use std::collections::BTreeMap;
use std::sync::Arc;

use kaos_store::fault::{FailMode, FaultyBackend};
use kaos_store::{Store, StoreError};
use redb::StorageBackend;
use redb::backends::InMemoryBackend;

type Model = BTreeMap<String, String>;

/// ~30 writes: new keys, overwrites, a longer value that makes redb grow its storage.
fn workload() -> Vec<(String, String)> {
    (0..30)
        .map(|i| {
            let key = format!("key{}", i % 11);
            let value = if i == 17 {
                "x".repeat(64 * 1024)
            } else {
                format!("value{i}")
            };
            (key, value)
        })
        .collect()
}

/// What one faulty run saw.
struct Run {
    model: Model,
    /// The write that failed, if the failure was not during open.
    failed: Option<(String, String)>,
    /// Whether any operation returned an error.
    saw_error: bool,
}

/// Opens a store on `backend` and runs the workload until the first error; returns the store
/// still open, so that the calls its closing makes can be told apart.
fn run(backend: impl StorageBackend) -> (Run, Option<Store>) {
    let mut run = Run {
        model: Model::new(),
        failed: None,
        saw_error: false,
    };
    let Ok(store) = Store::open_backend(backend) else {
        run.saw_error = true;
        return (run, None);
    };
    for (key, value) in workload() {
        match store.set_setting(&key, &value) {
            Ok(()) => {
                run.model.insert(key, value);
            }
            Err(_) => {
                run.saw_error = true;
                run.failed = Some((key, value));
                break;
            }
        }
    }
    (run, Some(store))
}

fn settings(store: &Store) -> Result<Model, StoreError> {
    Ok(store.settings()?.into_iter().collect())
}

/// The counted backend calls of the workload when nothing fails: up to the last write, and in
/// all (closing the store included).
fn calls_in_workload() -> (u64, u64) {
    let backend = FaultyBackend::healthy(Arc::new(InMemoryBackend::new()));
    let counter = backend.counter();
    let (clean, store) = run(backend);
    assert!(!clean.saw_error, "the workload succeeds without faults");
    assert_eq!(clean.model.len(), 11);
    let writing = counter.get();
    drop(store);
    (writing, counter.get())
}

fn check_every_fault(mode: FailMode) -> Result<(), StoreError> {
    let (writing, calls) = calls_in_workload();
    assert!(
        writing > 60,
        "the workload makes {writing} calls: too few to mean much"
    );
    let mut both_outcomes = [0u32; 2];
    for fail_at in 0..calls {
        let memory = Arc::new(InMemoryBackend::new());
        let (run, store) = run(FaultyBackend::new(memory.clone(), fail_at, mode));
        // A fault while closing is not reported (drop cannot fail), but must not lose anything.
        drop(store);
        assert_eq!(
            run.saw_error,
            fail_at < writing,
            "{mode:?} fault at call {fail_at} of {writing}"
        );

        let reopened = Store::open_backend(FaultyBackend::healthy(memory))
            .unwrap_or_else(|error| panic!("{mode:?} fault at {fail_at}: reopen failed: {error}"));
        let found = settings(&reopened)?;
        let mut with_failed = run.model.clone();
        if let Some((key, value)) = run.failed {
            with_failed.insert(key, value);
        }
        if found == run.model {
            both_outcomes[0] += 1;
        } else if found == with_failed {
            both_outcomes[1] += 1;
        } else {
            panic!(
                "{mode:?} fault at call {fail_at}: found {:?}, acknowledged {:?}",
                found.keys().collect::<Vec<_>>(),
                run.model.keys().collect::<Vec<_>>()
            );
        }
        // The reopened store works.
        reopened.set_setting("after", "fault")?;
    }
    println!(
        "{mode:?}: {calls} faults ({} while closing), outcomes (model, model + failed op) = \
         {both_outcomes:?}",
        calls - writing
    );
    Ok(())
}

#[test]
fn one_transient_fault_loses_nothing_acknowledged() -> Result<(), StoreError> {
    check_every_fault(FailMode::Once)
}

#[test]
fn a_dying_disk_loses_nothing_acknowledged() -> Result<(), StoreError> {
    check_every_fault(FailMode::FromThenOn)
}
