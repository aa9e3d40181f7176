//! Writing newc archives: entries in the order given, inode numbers from 1, owner root, mtime 0,
//! so the same inputs always give the same bytes.

use super::{HEADER_LEN, MAGIC, PathProblem, S_IFCHR, S_IFDIR, S_IFREG, TRAILER, check_path};

/// Why an entry could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The name is not a relative normal path.
    #[error("cannot write cpio entry {name:?}: {problem}")]
    BadPath {
        /// The name.
        name: String,
        /// What is wrong with it.
        problem: PathProblem,
    },
    /// newc stores sizes in 32 bits.
    #[error("cannot write cpio entry {name:?}: {size} bytes (newc holds at most 4 GiB - 1)")]
    TooLarge {
        /// The name.
        name: String,
        /// The data's size.
        size: usize,
    },
}

/// Builds a newc archive in memory.
#[derive(Debug, Default)]
pub struct Writer {
    out: Vec<u8>,
    next_ino: u32,
}

/// The header fields of one entry, in header order after `ino`.
struct Fields {
    mode: u32,
    nlink: u32,
    filesize: u32,
    rdev: (u32, u32),
}

impl Writer {
    /// An empty archive.
    pub fn new() -> Self {
        Self {
            out: Vec::new(),
            next_ino: 1,
        }
    }

    /// Adds a directory with permissions `perm` (e.g. `0o755`).
    pub fn dir(&mut self, name: &str, perm: u32) -> Result<(), WriteError> {
        let fields = Fields {
            mode: S_IFDIR | (perm & 0o7777),
            nlink: 2,
            filesize: 0,
            rdev: (0, 0),
        };
        self.entry(name, &fields, &[])
    }

    /// Adds a regular file with permissions `perm` and contents `data`.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> Result<(), WriteError> {
        let filesize = u32::try_from(data.len()).map_err(|_| WriteError::TooLarge {
            name: name.to_owned(),
            size: data.len(),
        })?;
        let fields = Fields {
            mode: S_IFREG | (perm & 0o7777),
            nlink: 1,
            filesize,
            rdev: (0, 0),
        };
        self.entry(name, &fields, data)
    }

    /// Adds a character device node `major:minor` (e.g. `/dev/console`, 5:1).
    pub fn char_device(
        &mut self,
        name: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), WriteError> {
        let fields = Fields {
            mode: S_IFCHR | (perm & 0o7777),
            nlink: 1,
            filesize: 0,
            rdev: (major, minor),
        };
        self.entry(name, &fields, &[])
    }

    /// Appends the trailer and returns the archive.
    pub fn finish(mut self) -> Vec<u8> {
        let trailer = Fields {
            mode: 0,
            nlink: 1,
            filesize: 0,
            rdev: (0, 0),
        };
        self.raw(0, TRAILER, &trailer, &[]);
        self.out
    }

    fn entry(&mut self, name: &str, fields: &Fields, data: &[u8]) -> Result<(), WriteError> {
        check_path(name).map_err(|problem| WriteError::BadPath {
            name: name.to_owned(),
            problem,
        })?;
        let ino = self.next_ino;
        self.next_ino = self.next_ino.wrapping_add(1);
        self.raw(ino, name, fields, data);
        Ok(())
    }

    /// `name` is at most `MAX_NAME` bytes (checked, or the trailer), so `namesize` fits.
    fn raw(&mut self, ino: u32, name: &str, f: &Fields, data: &[u8]) {
        let namesize = u32::try_from(name.len() + 1).unwrap_or(u32::MAX);
        let header = [
            ino, f.mode, 0, 0, f.nlink, 0, f.filesize, 0, 0, f.rdev.0, f.rdev.1, namesize, 0,
        ];
        self.out.reserve(HEADER_LEN + name.len() + data.len() + 8);
        self.out.extend_from_slice(MAGIC);
        for field in header {
            self.out
                .extend_from_slice(format!("{field:08X}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    /// Zeros up to the next multiple of 4 (the archive starts at offset 0).
    fn pad(&mut self) {
        let len = self.out.len().next_multiple_of(4);
        self.out.resize(len, 0);
    }
}
