//! [`FinishCreation`]: a database whose creation was cut short opens as a new one.
//!
//! redb creates a database by sizing the storage, writing its header, syncing, and only then
//! writing its magic number. Cut short in between (a crash, a failed write, a pulled disk), the
//! storage is no longer empty but not yet a redb database, and redb refuses it ("magic number
//! mismatch") on every later open: a host whose first boot was interrupted would run degraded
//! forever. `tests/faults.rs` found this.
//!
//! The rule: if the storage lacks redb's magic and every byte past the header page is zero,
//! nothing was ever committed there, so it is emptied and redb creates the database afresh.
//! Anything else (a damaged database, someone else's file) is left for redb to judge and report.
//! The check runs on redb's first `len()` call, which redb makes after taking its locks and
//! before reading anything, so it never races another process opening the same file.

use std::io;
use std::ops::Bound;
use std::sync::Mutex;

use redb::{BackendError, StorageBackend};

/// The first bytes of every redb database (redb's `MAGICNUMBER`; pinned by a test below).
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];
/// redb's header lives in the first page; a creation writes nothing else before the magic.
const HEADER_PAGE: u64 = 4096;
/// Bytes read at a time while looking for non-zero data.
const CHUNK: usize = 64 * 1024;

/// Wraps the backend redb opens; see the module documentation.
#[derive(Debug)]
pub(crate) struct FinishCreation<B> {
    inner: B,
    checked: Mutex<bool>,
}

impl<B: StorageBackend> FinishCreation<B> {
    pub(crate) fn new(inner: B) -> Self {
        FinishCreation {
            inner,
            checked: Mutex::new(false),
        }
    }

    /// Empties the storage if it holds an unfinished creation.
    fn check(&self) -> io::Result<()> {
        let len = self.inner.len()?;
        if len == 0 {
            return Ok(());
        }
        let mut magic = [0; REDB_MAGIC.len()];
        if len < magic.len() as u64 {
            return Ok(());
        }
        self.inner.read(0, &mut magic)?;
        if magic == REDB_MAGIC || !self.zero_from(HEADER_PAGE.min(len), len)? {
            return Ok(());
        }
        self.inner.set_len(0)?;
        self.inner.sync_data()
    }

    /// Whether every byte in `[from, to)` is zero.
    fn zero_from(&self, from: u64, to: u64) -> io::Result<bool> {
        let mut buffer = vec![0; CHUNK];
        let mut at = from;
        while at < to {
            let n = usize::try_from(to - at).map_or(CHUNK, |left| left.min(CHUNK));
            self.inner.read(at, &mut buffer[..n])?;
            if buffer[..n].iter().any(|&byte| byte != 0) {
                return Ok(false);
            }
            at += n as u64;
        }
        Ok(true)
    }
}

impl<B: StorageBackend> StorageBackend for FinishCreation<B> {
    fn len(&self) -> Result<u64, io::Error> {
        let mut checked = self
            .checked
            .lock()
            .map_err(|_| io::Error::other("a thread panicked while opening the store"))?;
        if !*checked {
            self.check()?;
            *checked = true;
        }
        drop(checked);
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use redb::backends::InMemoryBackend;

    use super::*;
    use crate::fault::FaultyBackend;

    #[test]
    fn redb_databases_start_with_the_magic() -> io::Result<()> {
        let memory = Arc::new(InMemoryBackend::new());
        drop(redb::Database::builder().create_with_backend(FaultyBackend::healthy(memory.clone())));
        let mut magic = [0; REDB_MAGIC.len()];
        memory.read(0, &mut magic)?;
        assert_eq!(magic, REDB_MAGIC);
        Ok(())
    }

    #[test]
    fn unfinished_creation_is_emptied() -> io::Result<()> {
        let backend = FinishCreation::new(InMemoryBackend::new());
        backend.inner.set_len(3 * HEADER_PAGE)?;
        backend.inner.write(9, &[1, 2, 3])?;
        assert_eq!(backend.len()?, 0);
        Ok(())
    }

    #[test]
    fn data_past_the_header_is_left_alone() -> io::Result<()> {
        let backend = FinishCreation::new(InMemoryBackend::new());
        backend.inner.set_len(3 * HEADER_PAGE)?;
        backend.inner.write(2 * HEADER_PAGE, &[1])?;
        assert_eq!(backend.len()?, 3 * HEADER_PAGE);
        Ok(())
    }

    #[test]
    fn a_database_is_left_alone() -> io::Result<()> {
        let backend = FinishCreation::new(InMemoryBackend::new());
        backend.inner.set_len(3 * HEADER_PAGE)?;
        backend.inner.write(0, &REDB_MAGIC)?;
        assert_eq!(backend.len()?, 3 * HEADER_PAGE);
        Ok(())
    }
}
