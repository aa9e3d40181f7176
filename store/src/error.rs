//! The store's one error type. Each message is the text `kaosctl store status` shows.

use std::io;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing the disk failed (the disk itself, not its contents).
    #[error("disk I/O failed: {0}")]
    Io(#[from] io::Error),
    /// The database or the superblock cannot be read as ours.
    #[error("store unreadable: {0}")]
    Corrupt(String),
    /// The device holds no KaOS store (the probe's verdict: blank or foreign content).
    #[error("not a KaOS store: {0}")]
    NotOurs(String),
    /// The device or database was written by a newer KaOS and is left untouched.
    #[error("store format {found} is newer than this build supports (up to {supported})")]
    NewerFormat {
        /// The version found on disk.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// The device is too small to hold a store.
    #[error("device too small: {size} bytes, a store needs at least {min}")]
    TooSmall {
        /// The device's capacity in bytes.
        size: u64,
        /// [`crate::MIN_DEVICE_BYTES`].
        min: u64,
    },
    /// Initialising was refused because the device is not blank; it needs force.
    #[error("device is not blank ({0}); initialising it needs force")]
    NonBlank(String),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(String),
    /// The write would break what the store holds (an address already leased, a VLAN still in
    /// use); nothing was written.
    #[error("{0}")]
    Conflict(String),
}

impl From<redb::Error> for StoreError {
    fn from(error: redb::Error) -> Self {
        match error {
            // redb's verdict on bytes it read ("not a redb database", a bad header), not the disk's.
            redb::Error::Io(error) if error.kind() == io::ErrorKind::InvalidData => {
                StoreError::Corrupt(error.to_string())
            }
            redb::Error::Io(error) => StoreError::Io(error),
            redb::Error::Corrupted(message) => StoreError::Corrupt(message),
            redb::Error::PreviousIo => StoreError::Io(io::Error::other(
                "an earlier disk error left the database closed until it is reopened",
            )),
            redb::Error::DatabaseAlreadyOpen => {
                StoreError::Database("the store is already open in another process".to_owned())
            }
            other => StoreError::Database(other.to_string()),
        }
    }
}

/// redb has one error type per operation; all of them convert into `redb::Error`.
macro_rules! from_redb {
    ($($error:ty),* $(,)?) => {$(
        impl From<$error> for StoreError {
            fn from(error: $error) -> Self {
                redb::Error::from(error).into()
            }
        }
    )*};
}

from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redb_io_errors_stay_io_errors() {
        let error: StoreError = redb::StorageError::Io(io::Error::other("gone")).into();
        assert!(matches!(error, StoreError::Io(_)), "{error:?}");
        let error: StoreError = redb::StorageError::Corrupted("bad page".into()).into();
        assert!(matches!(error, StoreError::Corrupt(_)), "{error:?}");
    }

    #[test]
    fn messages_read_as_sentences() {
        let error = StoreError::NewerFormat {
            found: 3,
            supported: 1,
        };
        assert_eq!(
            error.to_string(),
            "store format 3 is newer than this build supports (up to 1)"
        );
    }
}
