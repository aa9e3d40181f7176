//! Every I/O call of a workload fails in turn; nothing acknowledged may be lost.
//!
//! Guards against: a disk error in the middle of a commit (or of opening) leaving a database
//! that no longer opens, that lost a write `set_setting` had acknowledged, or that holds a value
//! nobody wrote. The model is a `BTreeMap` updated only for operations that returned `Ok`; the
//! one operation that failed may or may not have reached the disk.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use kaos_store::device::DeviceBackend;
use kaos_store::fault::{FailMode, FaultyBackend};
use kaos_store::{Location, MIN_DEVICE_BYTES, Store, StoreError, init_device};
use redb::StorageBackend;
use redb::backends::InMemoryBackend;
use tempfile::TempDir;

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

/// Where the bytes live between a faulty run and the healthy reopen.
trait Medium {
    type Backend: StorageBackend;
    /// A fresh medium, and the backend redb will reach it through.
    fn fresh(&mut self) -> Result<Arc<Self::Backend>, StoreError>;
    /// Opens what the last run left, without faults, the way the host would.
    fn reopen(&mut self, backend: Arc<Self::Backend>) -> Result<Store, StoreError>;
}

/// redb's in-memory backend, shared so the same bytes can be reopened.
struct Memory;

impl Medium for Memory {
    type Backend = InMemoryBackend;

    fn fresh(&mut self) -> Result<Arc<InMemoryBackend>, StoreError> {
        Ok(Arc::new(InMemoryBackend::new()))
    }

    fn reopen(&mut self, backend: Arc<InMemoryBackend>) -> Result<Store, StoreError> {
        Store::open_backend(FaultyBackend::healthy(backend))
    }
}

/// Our device backend on a freshly initialised sparse file; reopened through `Store::open`, so
/// the superblock the faulty run left is what is read.
struct Device {
    _dir: TempDir,
    path: PathBuf,
}

impl Device {
    fn new() -> Result<Device, StoreError> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("disk");
        Ok(Device { _dir: dir, path })
    }
}

impl Medium for Device {
    type Backend = DeviceBackend;

    fn fresh(&mut self) -> Result<Arc<DeviceBackend>, StoreError> {
        File::create(&self.path)?.set_len(MIN_DEVICE_BYTES)?;
        init_device(&self.path, false, [3; 16])?;
        Ok(Arc::new(DeviceBackend::open(&self.path)?.0))
    }

    fn reopen(&mut self, backend: Arc<DeviceBackend>) -> Result<Store, StoreError> {
        drop(backend); // the last handle: closes the device and releases its lock
        Store::open(&Location::Device(self.path.clone()))
    }
}

/// The counted backend calls of the workload when nothing fails: up to the last write, and in
/// all (closing the store included).
fn calls_in_workload(medium: &mut impl Medium) -> Result<(u64, u64), StoreError> {
    let backend = FaultyBackend::healthy(medium.fresh()?);
    let counter = backend.counter();
    let (clean, store) = run(backend);
    assert!(!clean.saw_error, "the workload succeeds without faults");
    assert_eq!(clean.model.len(), 11);
    let writing = counter.get();
    drop(store);
    Ok((writing, counter.get()))
}

/// Fails each call the workload makes in turn, and checks each reopen.
fn check_every_fault(medium: &mut impl Medium, mode: FailMode) -> TestResult {
    let (writing, calls) = calls_in_workload(medium)?;
    assert!(
        writing > 60,
        "the workload makes {writing} calls: too few to mean much"
    );
    let mut both_outcomes = [0u32; 2];
    for fail_at in 0..calls {
        let backend = medium.fresh()?;
        let (run, store) = run(FaultyBackend::new(backend.clone(), fail_at, mode));
        // A fault while closing is not reported (drop cannot fail), but must not lose anything.
        drop(store);
        assert_eq!(
            run.saw_error,
            fail_at < writing,
            "{mode:?} fault at call {fail_at} of {writing}"
        );

        let reopened = medium
            .reopen(backend)
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
        "{mode:?}: {calls} faults ({} while closing); outcomes (model, model + failed op) = \
         {both_outcomes:?}",
        calls - writing
    );
    Ok(())
}

type TestResult = Result<(), StoreError>;

#[test]
fn one_transient_fault_loses_nothing_acknowledged() -> TestResult {
    check_every_fault(&mut Memory, FailMode::Once)
}

#[test]
fn a_dying_disk_loses_nothing_acknowledged() -> TestResult {
    check_every_fault(&mut Memory, FailMode::FromThenOn)
}

/// The same on our device backend, whose superblock records every length change redb makes or
/// rolls back.
#[test]
fn a_dying_device_loses_nothing_acknowledged() -> TestResult {
    check_every_fault(&mut Device::new()?, FailMode::FromThenOn)
}

#[test]
fn a_transient_device_fault_loses_nothing_acknowledged() -> TestResult {
    check_every_fault(&mut Device::new()?, FailMode::Once)
}
