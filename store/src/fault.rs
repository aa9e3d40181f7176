//! [`FaultyBackend`]: any redb backend, with one chosen call failing. For tests.
//!
//! The inner backend is shared (`Arc`), so a test can run a workload through a faulty backend,
//! drop the store, and reopen the very same bytes through a healthy one
//! ([`FaultyBackend::healthy`]), the way redb's own `fuzz_redb` injects I/O failures.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::StorageBackend;

/// Which calls fail once the chosen one is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Only the chosen call fails (a transient error).
    Once,
    /// The chosen call and every later one fail (the disk is gone).
    FromThenOn,
}

/// How many counted calls (`read`, `write`, `set_len`, `sync_data`) a backend has seen; shared
/// with the backend, so it stays readable after the backend moved into a store.
#[derive(Debug, Clone, Default)]
pub struct CallCounter(Arc<AtomicU64>);

impl CallCounter {
    /// Calls so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    /// Counts one call and returns its index (from 0).
    fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst)
    }
}

/// Wraps `B` and fails call number `fail_at` (counting from 0) with an `io::Error`.
#[derive(Debug)]
pub struct FaultyBackend<B> {
    inner: Arc<B>,
    fail_at: Option<u64>,
    mode: FailMode,
    calls: CallCounter,
}

impl<B: StorageBackend> FaultyBackend<B> {
    /// Fails call `fail_at` (and, with [`FailMode::FromThenOn`], every later one).
    pub fn new(inner: Arc<B>, fail_at: u64, mode: FailMode) -> Self {
        FaultyBackend {
            inner,
            fail_at: Some(fail_at),
            mode,
            calls: CallCounter::default(),
        }
    }

    /// Never fails; still counts.
    pub fn healthy(inner: Arc<B>) -> Self {
        FaultyBackend {
            inner,
            fail_at: None,
            mode: FailMode::Once,
            calls: CallCounter::default(),
        }
    }

    /// A handle on this backend's call count.
    pub fn counter(&self) -> CallCounter {
        self.calls.clone()
    }

    /// Counts a call and decides whether it fails.
    fn call(&self, what: &str) -> io::Result<()> {
        let index = self.calls.next();
        let fails = match (self.fail_at, self.mode) {
            (Some(at), FailMode::Once) => index == at,
            (Some(at), FailMode::FromThenOn) => index >= at,
            (None, _) => false,
        };
        if fails {
            return Err(io::Error::other(format!(
                "injected fault: {what} (call {index})"
            )));
        }
        Ok(())
    }
}

impl<B: StorageBackend> StorageBackend for FaultyBackend<B> {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.call("read")?;
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.call("set_len")?;
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.call("sync_data")?;
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.call("write")?;
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::backends::InMemoryBackend;

    #[test]
    fn fails_exactly_the_chosen_call() {
        let backend = FaultyBackend::new(Arc::new(InMemoryBackend::new()), 1, FailMode::Once);
        assert!(backend.set_len(8).is_ok());
        assert!(backend.write(0, &[1]).is_err());
        assert!(backend.sync_data().is_ok());
        assert_eq!(backend.counter().get(), 3);
    }

    #[test]
    fn from_then_on_keeps_failing() {
        let backend = FaultyBackend::new(Arc::new(InMemoryBackend::new()), 0, FailMode::FromThenOn);
        assert!(backend.set_len(8).is_err());
        assert!(backend.sync_data().is_err());
        assert_eq!(
            backend.len().ok(),
            Some(0),
            "len is not counted and never fails"
        );
    }
}
