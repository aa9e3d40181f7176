//! The cpio "newc" format (`070701`, what the Linux kernel unpacks as an initramfs and what
//! `cpio -H newc` writes): a [`Writer`] for the archives we make and a bounded [`Reader`] for the
//! ones we are handed.
//!
//! ```text
//! header  110 bytes: "070701" + 13 fields of 8 hex digits
//!         ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
//! name    namesize bytes, NUL included, then zeros up to a multiple of 4 (counting from the header)
//! data    filesize bytes (file contents, or a symlink's target), then zeros up to a multiple of 4
//! ...     more entries, then one named `TRAILER!!!`
//! ```
//!
//! Both sides agree on what a path is ([`check_path`]): relative, `/`-separated, no empty, `.` or
//! `..` component, no NUL, at most [`MAX_NAME`] bytes. So whatever the writer produces the reader
//! accepts, and nothing the reader accepts can name a place outside the directory it is unpacked
//! into.

mod read;
mod write;

pub use read::{Entry, Policy, Reader};
pub use write::{WriteError, Writer};

/// The newc magic.
pub const MAGIC: &[u8; 6] = b"070701";
/// Bytes of a header, magic included.
pub const HEADER_LEN: usize = 110;
/// The name of the last entry.
pub const TRAILER: &str = "TRAILER!!!";
/// The longest name (NUL excluded) either side handles; Linux's `PATH_MAX` is 4096 with the NUL.
pub const MAX_NAME: usize = 4095;

/// `st_mode` file-type bits.
pub(crate) const S_IFMT: u32 = 0o170_000;
pub(crate) const S_IFSOCK: u32 = 0o140_000;
pub(crate) const S_IFLNK: u32 = 0o120_000;
pub(crate) const S_IFREG: u32 = 0o100_000;
pub(crate) const S_IFBLK: u32 = 0o060_000;
pub(crate) const S_IFDIR: u32 = 0o040_000;
pub(crate) const S_IFCHR: u32 = 0o020_000;
pub(crate) const S_IFIFO: u32 = 0o010_000;

/// What an entry is, from its mode's file-type bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file; the data is its contents.
    File,
    /// A directory.
    Dir,
    /// A symbolic link; the data is its target.
    Symlink,
    /// A character device node.
    CharDevice,
    /// A block device node.
    BlockDevice,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
}

impl FileKind {
    /// The kind of `mode`, or `None` for a file type that does not exist.
    pub fn from_mode(mode: u32) -> Option<Self> {
        Some(match mode & S_IFMT {
            S_IFREG => Self::File,
            S_IFDIR => Self::Dir,
            S_IFLNK => Self::Symlink,
            S_IFCHR => Self::CharDevice,
            S_IFBLK => Self::BlockDevice,
            S_IFIFO => Self::Fifo,
            S_IFSOCK => Self::Socket,
            _ => return None,
        })
    }
}

/// Why a path is refused (by the reader and the writer alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathProblem {
    /// Empty name.
    Empty,
    /// Longer than [`MAX_NAME`].
    TooLong,
    /// Starts with `/`.
    Absolute,
    /// Has a `..` component.
    Traversal,
    /// Has an empty (`a//b`, trailing `/`) or `.` component, or a NUL byte.
    NotNormal,
}

impl core::fmt::Display for PathProblem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Empty => "empty path",
            Self::TooLong => "path longer than 4095 bytes",
            Self::Absolute => "absolute path",
            Self::Traversal => "path traversal (`..` component)",
            Self::NotNormal => "path not in normal form (empty or `.` component, or a NUL byte)",
        })
    }
}

/// Checks that `path` is relative and normal: no empty, `.` or `..` component, no NUL.
pub fn check_path(path: &str) -> Result<(), PathProblem> {
    if path.is_empty() {
        return Err(PathProblem::Empty);
    }
    if path.len() > MAX_NAME {
        return Err(PathProblem::TooLong);
    }
    if path.starts_with('/') {
        return Err(PathProblem::Absolute);
    }
    if path.split('/').any(|c| c == "..") {
        return Err(PathProblem::Traversal);
    }
    if path.contains('\0') || path.split('/').any(|c| c.is_empty() || c == ".") {
        return Err(PathProblem::NotNormal);
    }
    Ok(())
}

/// Why a cpio archive was refused. Every variant names the byte offset of the entry's header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CpioError {
    /// The input ended inside an entry or before the trailer.
    #[error("cpio archive truncated at byte {offset}: {what}")]
    Truncated {
        /// Where the missing part should start.
        offset: usize,
        /// What is missing.
        what: &'static str,
    },
    /// The header does not start with `070701`.
    #[error("not a cpio newc header at byte {offset} (expected magic 070701)")]
    BadMagic {
        /// The header's offset.
        offset: usize,
    },
    /// A header field is not 8 hex digits.
    #[error("cpio header at byte {offset}: field `{field}` is not 8 hex digits")]
    BadField {
        /// The header's offset.
        offset: usize,
        /// The field's name.
        field: &'static str,
    },
    /// `namesize` is zero or beyond the policy's limit.
    #[error("cpio entry at byte {offset}: name size {size} is outside 1..={max}")]
    NameSize {
        /// The header's offset.
        offset: usize,
        /// `namesize` (NUL included).
        size: u32,
        /// The largest allowed (NUL included).
        max: usize,
    },
    /// The name does not end with its NUL, or holds another one.
    #[error("cpio entry at byte {offset}: name is not NUL-terminated")]
    NameNotTerminated {
        /// The header's offset.
        offset: usize,
    },
    /// The name is not UTF-8.
    #[error("cpio entry at byte {offset}: name is not UTF-8")]
    NameNotUtf8 {
        /// The header's offset.
        offset: usize,
    },
    /// The name is not a relative normal path.
    #[error("cpio entry {name:?} at byte {offset}: {problem}")]
    BadPath {
        /// The entry's name.
        name: String,
        /// The header's offset.
        offset: usize,
        /// What is wrong with it.
        problem: PathProblem,
    },
    /// `filesize` is beyond the policy's limit.
    #[error("cpio entry {name:?} at byte {offset}: {size} bytes of data exceed the limit of {max}")]
    TooLarge {
        /// The entry's name.
        name: String,
        /// The header's offset.
        offset: usize,
        /// `filesize`.
        size: u32,
        /// The limit.
        max: u32,
    },
    /// `filesize` runs past the end of the input.
    #[error(
        "cpio entry {name:?} at byte {offset}: {size} bytes of data but only {remaining} left in \
         the archive"
    )]
    BeyondEnd {
        /// The entry's name.
        name: String,
        /// The header's offset.
        offset: usize,
        /// `filesize`.
        size: u32,
        /// Bytes left after the name.
        remaining: usize,
    },
    /// The mode's file type is refused by the policy (symlink, device node, fifo, socket) or
    /// does not exist.
    #[error("cpio entry {name:?} at byte {offset}: {what} (mode {mode:o}) not allowed here")]
    Refused {
        /// The entry's name.
        name: String,
        /// The header's offset.
        offset: usize,
        /// The entry's mode.
        mode: u32,
        /// What it is.
        what: &'static str,
    },
    /// A directory or node with data, or a regular file with several links (newc stores a hard
    /// link's data only with its last name, so each name cannot be read on its own).
    #[error("cpio entry {name:?} at byte {offset}: {what}")]
    Malformed {
        /// The entry's name.
        name: String,
        /// The header's offset.
        offset: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// More entries than the policy allows.
    #[error("cpio archive has more than {max} entries (entry at byte {offset})")]
    TooManyEntries {
        /// The header's offset.
        offset: usize,
        /// The limit.
        max: usize,
    },
}

#[cfg(test)]
mod tests;
