//! [`DeviceBackend`]: redb's storage on a raw device, behind our superblock.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use redb::StorageBackend;

use super::{Slot, examine, open_locked, refusal, write_slot};
use crate::StoreError;

/// Zeroing newly exposed storage is done in pieces this large.
const ZERO_CHUNK: usize = 256 * 1024;

/// redb's region of a device: offsets are relative to the slot's data offset, the length is the
/// one the superblock records.
#[derive(Debug)]
pub struct DeviceBackend {
    file: File,
    path: PathBuf,
    capacity: u64,
    state: Mutex<State>,
}

/// The newest superblock and where it is.
#[derive(Debug, Clone, Copy)]
struct State {
    /// Index into `SLOT_OFFSETS` of the slot holding `slot`.
    active: usize,
    slot: Slot,
}

impl DeviceBackend {
    /// Opens the store on `path`, locked against other processes; refused (and nothing written)
    /// unless the probe finds our superblock. Returns the superblock in use as well.
    pub fn open(path: &Path) -> Result<(DeviceBackend, Slot), StoreError> {
        let file = open_locked(path)?;
        let examined = examine(&file)?;
        let Some((active, slot)) = examined.chosen else {
            return Err(refusal(examined.probe));
        };
        let backend = DeviceBackend::new(file, path, examined.capacity, active, slot);
        Ok((backend, slot))
    }

    pub(super) fn new(
        file: File,
        path: &Path,
        capacity: u64,
        active: usize,
        slot: Slot,
    ) -> DeviceBackend {
        DeviceBackend {
            file,
            path: path.to_owned(),
            capacity,
            state: Mutex::new(State { active, slot }),
        }
    }

    /// The most redb may use: the device past the data offset.
    fn room(&self, slot: &Slot) -> u64 {
        self.capacity.saturating_sub(slot.data_offset)
    }

    fn state(&self) -> io::Result<MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| io::Error::other("a thread panicked while resizing the store"))
    }

    /// The device offset of `len` bytes at redb offset `offset`, if they lie within its length.
    fn locate(&self, offset: u64, len: usize) -> io::Result<u64> {
        let slot = self.state()?.slot;
        let end = u64::try_from(len)
            .ok()
            .and_then(|len| offset.checked_add(len));
        match end {
            Some(end) if end <= slot.data_len => Ok(slot.data_offset + offset),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} bytes at {offset} lie beyond the store's length {}",
                    len, slot.data_len
                ),
            )),
        }
    }

    /// Writes zeroes over `[from, to)` of the device.
    fn zero(&self, from: u64, to: u64) -> io::Result<()> {
        let zeroes = vec![0; ZERO_CHUNK];
        let mut at = from;
        while at < to {
            let n = usize::try_from(to - at).map_or(ZERO_CHUNK, |left| left.min(ZERO_CHUNK));
            self.file.write_all_at(&zeroes[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }
}

impl StorageBackend for DeviceBackend {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.state()?.slot.data_len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let at = self.locate(offset, out.len())?;
        self.file.read_exact_at(out, at)
    }

    /// Zeroes newly exposed bytes, then records the length in the other slot and syncs, then in
    /// the first slot and syncs: a torn slot write always leaves one valid slot with a length redb
    /// can live with (see the crate documentation).
    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut state = self.state()?;
        let old = state.slot;
        let room = self.room(&old);
        if len > room {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!(
                    "store full: the database needs {len} bytes, {} has room for {room}",
                    self.path.display()
                ),
            ));
        }
        if len > old.data_len {
            self.zero(old.data_offset + old.data_len, old.data_offset + len)?;
        }
        let other = 1 - state.active;
        let next = Slot {
            data_len: len,
            seq: old.seq + 1,
            ..old
        };
        write_slot(&self.file, other, &next)?;
        self.file.sync_data()?;
        // From here the new length is durable: keep the state true to the disk whatever follows.
        *state = State {
            active: other,
            slot: next,
        };
        let mirror = Slot {
            seq: next.seq + 1,
            ..next
        };
        write_slot(&self.file, 1 - other, &mirror)?;
        self.file.sync_data()?;
        *state = State {
            active: 1 - other,
            slot: mirror,
        };
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let at = self.locate(offset, data.len())?;
        self.file.write_all_at(data, at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MIN_DEVICE_BYTES;
    use crate::device::{SLOT_OFFSETS, parse_slot};

    /// A device full of 0xFF with a fresh superblock: what a forced init over old data leaves.
    fn dirty_device() -> Result<(tempfile::TempDir, PathBuf), StoreError> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("disk");
        let size = usize::try_from(MIN_DEVICE_BYTES).expect("16 MiB fits in usize");
        std::fs::write(&path, vec![0xFF; size])?;
        let file = File::options().write(true).open(&path)?;
        write_slot(&file, 0, &Slot::new([1; 16]))?;
        write_slot(&file, 1, &Slot::new([1; 16]))?;
        Ok((dir, path))
    }

    #[test]
    fn grown_storage_reads_as_zero() -> Result<(), StoreError> {
        let (_dir, path) = dirty_device()?;
        let (backend, _) = DeviceBackend::open(&path)?;
        backend.set_len(300_000)?;
        let mut bytes = vec![0xAA; 300_000];
        backend.read(0, &mut bytes)?;
        assert!(
            bytes.iter().all(|&b| b == 0),
            "redb requires new storage to be zero"
        );
        backend.write(299_999, &[7])?;
        backend.set_len(1000)?;
        backend.set_len(300_000)?;
        backend.read(299_999, &mut bytes[..1])?;
        assert_eq!(bytes[0], 0, "shrunk and regrown storage is zero again");
        Ok(())
    }

    #[test]
    fn access_is_bounded_by_the_length() -> Result<(), StoreError> {
        let (_dir, path) = dirty_device()?;
        let (backend, slot) = DeviceBackend::open(&path)?;
        assert_eq!(backend.len()?, 0);
        backend.set_len(4096)?;
        assert!(backend.read(4095, &mut [0; 2]).is_err());
        assert!(backend.write(4096, &[0]).is_err());
        assert!(backend.read(u64::MAX, &mut [0; 2]).is_err());
        assert!(backend.write(4095, &[0]).is_ok());
        let room = MIN_DEVICE_BYTES - slot.data_offset;
        assert!(backend.set_len(room).is_ok());
        let full = backend.set_len(room + 1).expect_err("beyond the device");
        assert_eq!(full.kind(), io::ErrorKind::StorageFull);
        assert_eq!(backend.len()?, room, "a refused resize changes nothing");
        Ok(())
    }

    #[test]
    fn every_resize_is_recorded_in_both_slots() -> Result<(), StoreError> {
        let (_dir, path) = dirty_device()?;
        let (backend, _) = DeviceBackend::open(&path)?;
        backend.set_len(8192)?;
        drop(backend);
        let (_, slot) = DeviceBackend::open(&path)?;
        assert_eq!((slot.data_len, slot.seq), (8192, 3));
        let head = std::fs::read(&path)?;
        for offset in SLOT_OFFSETS {
            let at = usize::try_from(offset).expect("slot offsets are small");
            let copy = parse_slot(&head[at..]).map_err(io::Error::other)?;
            assert_eq!(copy.data_len, 8192);
        }
        Ok(())
    }
}
