//! Reading newc archives that may come from anyone: every length is checked against the input
//! and the [`Policy`] before it is used, every offset is computed with checked arithmetic, and no
//! slice is indexed directly, so no input can make the reader panic or read out of bounds.
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use super::{CpioError, FileKind, HEADER_LEN, MAGIC, MAX_NAME, TRAILER, check_path};

/// What a reader accepts beyond well-formed regular files and directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Longest name in bytes, NUL excluded (at most [`MAX_NAME`]).
    pub max_name: usize,
    /// Largest data of one entry in bytes.
    pub max_file_size: u32,
    /// Most entries, trailer excluded.
    pub max_entries: usize,
    /// Whether symbolic links are accepted.
    pub allow_symlinks: bool,
    /// Whether device nodes, fifos and sockets are accepted.
    pub allow_special: bool,
}

impl Policy {
    /// Regular files and directories only, the largest sizes newc can express.
    pub const STRICT: Self = Self {
        max_name: MAX_NAME,
        max_file_size: u32::MAX,
        max_entries: 1 << 16,
        allow_symlinks: false,
        allow_special: false,
    };

    /// Also device nodes: an initramfs (`/dev/console`).
    pub const INITRAMFS: Self = Self {
        allow_special: true,
        ..Self::STRICT
    };
}

impl Default for Policy {
    fn default() -> Self {
        Self::STRICT
    }
}

/// One member of an archive, borrowing from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Byte offset of the entry's header.
    pub offset: usize,
    /// The path, relative and normal (see [`super::check_path`]).
    pub name: &'a str,
    /// `st_mode`: file type and permissions.
    pub mode: u32,
    /// The file type.
    pub kind: FileKind,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time (seconds since the epoch).
    pub mtime: u32,
    /// Device number of a device node (major, minor).
    pub rdev: (u32, u32),
    /// A regular file's contents or a symlink's target; empty for the rest.
    pub data: &'a [u8],
    /// Byte offset of `data` in the archive.
    pub data_offset: usize,
}

/// Iterates over the entries of a newc archive. Yields at most one error, then stops; stops
/// without error at the trailer. An archive without a trailer ends with a
/// [`CpioError::Truncated`].
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
    policy: Policy,
    entries: usize,
    end: Option<usize>,
    failed: bool,
}

/// Header field names, in order after the magic.
const FIELDS: [&str; 13] = [
    "ino",
    "mode",
    "uid",
    "gid",
    "nlink",
    "mtime",
    "filesize",
    "devmajor",
    "devminor",
    "rdevmajor",
    "rdevminor",
    "namesize",
    "check",
];

impl<'a> Reader<'a> {
    /// A reader of `bytes` (one archive, starting at offset 0) under `policy`.
    pub fn new(bytes: &'a [u8], policy: Policy) -> Self {
        Self {
            bytes,
            offset: 0,
            policy,
            entries: 0,
            end: None,
            failed: false,
        }
    }

    /// Once the trailer was read: the offset just past it and its padding. Anything from there
    /// on is not part of the archive (tools pad archives with zeros to a block size).
    pub fn end(&self) -> Option<usize> {
        self.end
    }

    fn truncated(&self, offset: usize, what: &'static str) -> CpioError {
        CpioError::Truncated { offset, what }
    }

    fn fields(&self, header: &[u8]) -> Result<[u32; 13], CpioError> {
        let offset = self.offset;
        let mut out = [0u32; 13];
        for ((value, name), hex) in out.iter_mut().zip(FIELDS).zip(header.chunks_exact(8)) {
            *value = parse_hex(hex).ok_or(CpioError::BadField {
                offset,
                field: name,
            })?;
        }
        Ok(out)
    }

    fn read_entry(&mut self) -> Result<Option<Entry<'a>>, CpioError> {
        let offset = self.offset;
        let header_end = offset
            .checked_add(HEADER_LEN)
            .ok_or_else(|| self.truncated(offset, "header"))?;
        let header = self.bytes.get(offset..header_end).ok_or_else(|| {
            let what = if offset >= self.bytes.len() {
                "no TRAILER!!! entry"
            } else {
                "header"
            };
            self.truncated(offset, what)
        })?;
        let (magic, fields) = header.split_at_checked(MAGIC.len()).unwrap_or_default();
        if magic != MAGIC {
            return Err(CpioError::BadMagic { offset });
        }
        let [
            _ino,
            mode,
            uid,
            gid,
            nlink,
            mtime,
            filesize,
            _,
            _,
            rmaj,
            rmin,
            namesize,
            _check,
        ] = self.fields(fields)?;

        let max_name = self.policy.max_name.min(MAX_NAME);
        let name_len = usize::try_from(namesize).unwrap_or(usize::MAX);
        if name_len == 0 || name_len > max_name.max(TRAILER.len()).saturating_add(1) {
            return Err(CpioError::NameSize {
                offset,
                size: namesize,
                max: max_name.saturating_add(1),
            });
        }
        let name_end = header_end
            .checked_add(name_len)
            .ok_or_else(|| self.truncated(header_end, "name"))?;
        let raw = self
            .bytes
            .get(header_end..name_end)
            .ok_or_else(|| self.truncated(header_end, "name"))?;
        let name = match raw.split_last() {
            Some((0, name)) if !name.contains(&0) => name,
            _ => return Err(CpioError::NameNotTerminated { offset }),
        };
        let name = core::str::from_utf8(name).map_err(|_| CpioError::NameNotUtf8 { offset })?;
        let data_offset = name_end
            .checked_next_multiple_of(4)
            .ok_or_else(|| self.truncated(name_end, "name padding"))?;

        if name == TRAILER {
            if filesize != 0 {
                return Err(malformed(name, offset, "trailer with data"));
            }
            self.end = Some(data_offset.min(self.bytes.len()));
            return Ok(None);
        }
        if self.entries >= self.policy.max_entries {
            return Err(CpioError::TooManyEntries {
                offset,
                max: self.policy.max_entries,
            });
        }
        if name.len() > max_name {
            return Err(CpioError::NameSize {
                offset,
                size: namesize,
                max: max_name.saturating_add(1),
            });
        }
        check_path(name).map_err(|problem| CpioError::BadPath {
            name: name.to_owned(),
            offset,
            problem,
        })?;
        let kind = self.kind(name, offset, mode)?;
        if filesize > self.policy.max_file_size {
            return Err(CpioError::TooLarge {
                name: name.to_owned(),
                offset,
                size: filesize,
                max: self.policy.max_file_size,
            });
        }
        let size = usize::try_from(filesize).unwrap_or(usize::MAX);
        let data = data_offset
            .checked_add(size)
            .and_then(|end| self.bytes.get(data_offset..end))
            .ok_or_else(|| CpioError::BeyondEnd {
                name: name.to_owned(),
                offset,
                size: filesize,
                remaining: self.bytes.len().saturating_sub(data_offset),
            })?;
        match kind {
            FileKind::File if nlink > 1 => {
                return Err(malformed(
                    name,
                    offset,
                    "hard link (nlink > 1) not supported",
                ));
            }
            FileKind::File | FileKind::Symlink => {}
            _ if !data.is_empty() => {
                return Err(malformed(
                    name,
                    offset,
                    "data on an entry that is not a file",
                ));
            }
            _ => {}
        }
        if kind == FileKind::Symlink && data.is_empty() {
            return Err(malformed(name, offset, "symlink without a target"));
        }
        self.entries = self.entries.saturating_add(1);
        // `data` is inside the input, so this neither overflows nor goes backwards.
        self.offset = data_offset
            .saturating_add(size)
            .checked_next_multiple_of(4)
            .unwrap_or(usize::MAX);
        Ok(Some(Entry {
            offset,
            name,
            mode,
            kind,
            uid,
            gid,
            mtime,
            rdev: (rmaj, rmin),
            data,
            data_offset,
        }))
    }

    fn kind(&self, name: &str, offset: usize, mode: u32) -> Result<FileKind, CpioError> {
        let refused = |what| CpioError::Refused {
            name: name.to_owned(),
            offset,
            mode,
            what,
        };
        let kind = FileKind::from_mode(mode).ok_or_else(|| refused("unknown file type"))?;
        match kind {
            FileKind::File | FileKind::Dir => Ok(kind),
            FileKind::Symlink if self.policy.allow_symlinks => Ok(kind),
            FileKind::Symlink => Err(refused("symbolic link")),
            _ if self.policy.allow_special => Ok(kind),
            FileKind::CharDevice | FileKind::BlockDevice => Err(refused("device node")),
            FileKind::Fifo | FileKind::Socket => Err(refused("fifo or socket")),
        }
    }
}

fn malformed(name: &str, offset: usize, what: &'static str) -> CpioError {
    CpioError::Malformed {
        name: name.to_owned(),
        offset,
        what,
    }
}

/// Eight hex digits, nothing else (no sign, no spaces: `from_str_radix` would accept `+`).
fn parse_hex(field: &[u8]) -> Option<u32> {
    if field.len() != 8 {
        return None;
    }
    field.iter().try_fold(0u32, |acc, &b| {
        let digit = char::from(b).to_digit(16)?;
        Some((acc << 4) | digit)
    })
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<Entry<'a>, CpioError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.end.is_some() {
            return None;
        }
        match self.read_entry() {
            Ok(Some(entry)) => Some(Ok(entry)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}
