//! The store on a raw block device: our superblock, the probe that decides whether a device is
//! ours, initialisation, and the redb backend.
//!
//! [`probe`] only reads. [`init_device`] is the only function that writes to a device that is not
//! (yet) ours, and it does so only on a blank device or when forced.

mod backend;
mod superblock;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::Path;

pub use backend::DeviceBackend;
pub use superblock::{
    DATA_OFFSET, FORMAT, MAGIC, SLOT_BYTES, SLOT_OFFSETS, Slot, SlotError, crc32, field, parse_slot,
};

use crate::StoreError;

/// The smallest device a store is created on.
pub const MIN_DEVICE_BYTES: u64 = 16 * 1024 * 1024;
/// The probe reads this much from the start (partition tables, filesystem superblocks, ours).
const HEAD_BYTES: usize = 1024 * 1024;
/// … and this much from the end (backup GPT, RAID and LVM metadata that live there).
const TAIL_BYTES: usize = 64 * 1024;

/// What a device holds, as far as the store is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A KaOS store.
    Ours {
        /// The host it belongs to.
        host_id: [u8; 16],
        /// Its format version.
        format: u32,
        /// redb's logical length.
        data_len: u64,
    },
    /// The regions a filesystem or partition table would use are all zero.
    Blank,
    /// Something else lives here, e.g. "ext2/3/4 filesystem", "GPT partition table".
    Foreign(String),
    /// Our magic, written by a newer format than this build reads.
    NewerFormat(u32),
    /// Our magic, but no slot is usable (checksums fail, or the device is shorter than it says).
    Corrupt(String),
    /// Smaller than [`MIN_DEVICE_BYTES`].
    TooSmall(u64),
    /// Opening or reading failed.
    Unreadable(String),
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::Ours {
                host_id, data_len, ..
            } => {
                write!(f, "KaOS store of host {} ({data_len} bytes)", hex(host_id))
            }
            Probe::Blank => f.write_str("blank device"),
            Probe::Foreign(what) => f.write_str(what),
            Probe::NewerFormat(format) => write!(f, "KaOS store of newer format {format}"),
            Probe::Corrupt(why) => write!(f, "damaged KaOS store: {why}"),
            Probe::TooSmall(size) => write!(f, "device of {size} bytes is too small"),
            Probe::Unreadable(why) => write!(f, "unreadable: {why}"),
        }
    }
}

/// Says what `path` holds. Only reads; never panics on any content.
pub fn probe(path: &Path) -> Probe {
    let examined = File::open(path).and_then(|file| examine(&file));
    match examined {
        Ok(examined) => examined.probe,
        Err(error) => Probe::Unreadable(format!("{}: {error}", path.display())),
    }
}

/// Makes `path` a store of `host_id`: writes both superblock slots and creates the database.
///
/// A blank device is initialised. Anything else (a filesystem, a partition table, other data, a
/// KaOS store, even a damaged one) is refused with [`StoreError::NonBlank`] naming what was found,
/// and nothing is written, unless `force`. A device that is too small or unreadable is always
/// refused. When forced, the first MiB and the last 64 KiB are zeroed first, so no old signature
/// survives beside ours.
pub fn init_device(path: &Path, force: bool, host_id: [u8; 16]) -> Result<(), StoreError> {
    let file = open_locked(path)?;
    let examined = examine(&file)?;
    match examined.probe {
        Probe::Blank => {}
        Probe::TooSmall(size) => return Err(too_small(size)),
        Probe::Unreadable(why) => return Err(StoreError::Io(io::Error::other(why))),
        found if !force => return Err(StoreError::NonBlank(found.to_string())),
        _ => wipe(&file, examined.capacity)?,
    }
    let slot = Slot::new(host_id);
    write_slot(&file, 1, &slot)?;
    let slot = Slot { seq: 2, ..slot };
    write_slot(&file, 0, &slot)?;
    file.sync_data()?;
    let backend = DeviceBackend::new(file, path, examined.capacity, 0, slot);
    crate::Store::open_backend(backend).map(drop)
}

/// The probe's verdict plus what opening needs.
struct Examined {
    probe: Probe,
    capacity: u64,
    /// For [`Probe::Ours`]: which slot won, and its contents.
    chosen: Option<(usize, Slot)>,
}

fn examine(file: &File) -> io::Result<Examined> {
    let capacity = capacity(file)?;
    let verdict = |probe| Examined {
        probe,
        capacity,
        chosen: None,
    };
    if capacity < MIN_DEVICE_BYTES {
        return Ok(verdict(Probe::TooSmall(capacity)));
    }
    let mut head = vec![0; HEAD_BYTES];
    file.read_exact_at(&mut head, 0)?;
    match choose_slot(&head, capacity) {
        Chosen::NoMagic => {}
        Chosen::Slot(index, slot) => {
            return Ok(Examined {
                probe: Probe::Ours {
                    host_id: slot.host_id,
                    format: slot.format,
                    data_len: slot.data_len,
                },
                capacity,
                chosen: Some((index, slot)),
            });
        }
        Chosen::Newer(format) => return Ok(verdict(Probe::NewerFormat(format))),
        Chosen::Corrupt(why) => return Ok(verdict(Probe::Corrupt(why))),
    }
    if let Some(what) = signature(&head) {
        return Ok(verdict(Probe::Foreign(what.to_owned())));
    }
    let mut tail = vec![0; TAIL_BYTES];
    file.read_exact_at(&mut tail, capacity - TAIL_BYTES as u64)?;
    if head.iter().chain(&tail).any(|&byte| byte != 0) {
        return Ok(verdict(Probe::Foreign("non-zero data".to_owned())));
    }
    Ok(verdict(Probe::Blank))
}

enum Chosen {
    NoMagic,
    Slot(usize, Slot),
    Newer(u32),
    Corrupt(String),
}

/// The valid slot with the highest sequence number that fits on the device.
fn choose_slot(head: &[u8], capacity: u64) -> Chosen {
    let parsed = SLOT_OFFSETS.map(|offset| {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let bytes = head.get(start..).unwrap_or_default();
        parse_slot(bytes.get(..SLOT_BYTES).unwrap_or(bytes))
    });
    if parsed.iter().all(|slot| slot == &Err(SlotError::NoMagic)) {
        return Chosen::NoMagic;
    }
    let newer = parsed.iter().filter_map(|slot| match slot {
        Err(SlotError::NewerFormat(format)) => Some(*format),
        _ => None,
    });
    if let Some(format) = newer.max() {
        return Chosen::Newer(format);
    }
    let fits = |slot: &Slot| slot.data_end().is_some_and(|end| end <= capacity);
    let best = parsed
        .iter()
        .enumerate()
        .filter_map(|(index, slot)| slot.as_ref().ok().map(|slot| (index, *slot)))
        .filter(|(_, slot)| fits(slot))
        .max_by_key(|(_, slot)| slot.seq);
    match best {
        Some((index, slot)) => Chosen::Slot(index, slot),
        None => {
            let why = |slot: &Result<Slot, SlotError>| match slot {
                Ok(slot) => format!(
                    "ends at byte {} but the device holds {capacity} (truncated)",
                    slot.data_offset.saturating_add(slot.data_len)
                ),
                Err(error) => error.to_string(),
            };
            Chosen::Corrupt(format!(
                "slot A: {}; slot B: {}",
                why(&parsed[0]),
                why(&parsed[1])
            ))
        }
    }
}

/// Well-known signatures in the first MiB: (offset, bytes, what). Checked in order; the MBR
/// signature comes last because GPT disks and many filesystems carry one too.
const SIGNATURES: &[(usize, &[u8], &str)] = &[
    (0, b"XFSB", "XFS filesystem"),
    (0, b"LUKS\xba\xbe", "LUKS encrypted volume"),
    (512, b"EFI PART", "GPT partition table"),
    (512, b"LABELONE", "LVM physical volume"),
    (1080, &[0x53, 0xEF], "ext2/3/4 filesystem"),
    (4086, b"SWAPSPACE2", "swap space"),
    (4086, b"SWAP-SPACE", "swap space"),
    (32769, b"CD001", "ISO 9660 filesystem"),
    (65600, b"_BHRfS_M", "btrfs filesystem"),
    (510, &[0x55, 0xAA], "MBR partition table or boot sector"),
];

fn signature(head: &[u8]) -> Option<&'static str> {
    SIGNATURES.iter().find_map(|&(offset, magic, what)| {
        let found = head.get(offset..offset + magic.len())?;
        (found == magic).then_some(what)
    })
}

/// Bytes on the device: the file length, or for a block device (whose metadata says 0) the
/// position of its end.
fn capacity(file: &File) -> io::Result<u64> {
    let kind = file.metadata()?.file_type();
    if !kind.is_file() && !kind.is_block_device() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "neither a block device nor a regular file",
        ));
    }
    let mut file = file;
    file.seek(SeekFrom::End(0))
}

/// Opens `path` for reading and writing and takes an exclusive lock, so two processes never
/// write one store. A kernel built without file locking (`CONFIG_FILE_LOCKING=n`) answers
/// ENOSYS: the device is used unlocked, as on such a host PID 1 is its only possible writer.
fn open_locked(path: &Path) -> Result<File, StoreError> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::Error(error)) if error.kind() == io::ErrorKind::Unsupported => {
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Database(format!(
            "{} is in use by another process",
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(error)) => Err(error.into()),
    }
}

fn write_slot(file: &File, index: usize, slot: &Slot) -> io::Result<()> {
    file.write_all_at(&slot.emit(), SLOT_OFFSETS[index])
}

/// Zeroes the regions the probe looks at.
fn wipe(file: &File, capacity: u64) -> io::Result<()> {
    file.write_all_at(&vec![0; HEAD_BYTES], 0)?;
    file.write_all_at(&vec![0; TAIL_BYTES], capacity - TAIL_BYTES as u64)
}

fn too_small(size: u64) -> StoreError {
    StoreError::TooSmall {
        size,
        min: MIN_DEVICE_BYTES,
    }
}

/// The error for opening a device the probe did not find ours.
fn refusal(probe: Probe) -> StoreError {
    match probe {
        Probe::NewerFormat(found) => StoreError::NewerFormat {
            found,
            supported: FORMAT,
        },
        Probe::Corrupt(why) => StoreError::Corrupt(why),
        Probe::TooSmall(size) => too_small(size),
        Probe::Unreadable(why) => StoreError::Io(io::Error::other(why)),
        other => StoreError::NotOurs(other.to_string()),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
