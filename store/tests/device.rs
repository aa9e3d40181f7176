//! The device format on regular files standing in for block devices: what the probe says about
//! each kind of content, that a device not ours is never written, and the A/B superblock.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use kaos_store::device::{DATA_OFFSET, FORMAT, SLOT_BYTES, SLOT_OFFSETS, Slot, parse_slot};
use kaos_store::{Location, MIN_DEVICE_BYTES, Probe, Store, StoreError, init_device, probe};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

const HOST: [u8; 16] = *b"host-id-01234567";

/// A sparse file of `size` bytes in a fresh directory.
fn device(size: u64) -> io::Result<(TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("disk");
    File::create(&path)?.set_len(size)?;
    Ok((dir, path))
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all_at(bytes, offset)
}

fn read_at(path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0; len];
    File::open(path)?.read_exact_at(&mut bytes, offset)?;
    Ok(bytes)
}

fn sha256(path: &Path) -> io::Result<Vec<u8>> {
    Ok(Sha256::digest(std::fs::read(path)?).to_vec())
}

/// A device with `bytes` written at `offset`.
fn device_with(offset: u64, bytes: &[u8]) -> io::Result<(TempDir, PathBuf)> {
    let (dir, path) = device(MIN_DEVICE_BYTES)?;
    write_at(&path, offset, bytes)?;
    Ok((dir, path))
}

fn foreign(probe: Probe) -> String {
    match probe {
        Probe::Foreign(what) => what,
        other => panic!("expected a foreign device, probe says {other:?}"),
    }
}

#[test]
fn blank_device_is_blank() -> io::Result<()> {
    let (_dir, path) = device(MIN_DEVICE_BYTES)?;
    assert_eq!(probe(&path), Probe::Blank);
    Ok(())
}

#[test]
fn known_signatures_are_named() -> io::Result<()> {
    let cases: &[(u64, &[u8], &str)] = &[
        (1080, &[0x53, 0xEF], "ext2/3/4 filesystem"),
        (510, &[0x55, 0xAA], "MBR partition table or boot sector"),
        (512, b"EFI PART", "GPT partition table"),
        (0, b"XFSB", "XFS filesystem"),
        (4086, b"SWAPSPACE2", "swap space"),
        (512, b"LABELONE", "LVM physical volume"),
    ];
    for &(offset, magic, name) in cases {
        let (_dir, path) = device_with(offset, magic)?;
        assert_eq!(foreign(probe(&path)), name);
    }
    // A GPT disk also carries a protective MBR: the GPT is what it is.
    let (_dir, path) = device_with(510, &[0x55, 0xAA])?;
    write_at(&path, 512, b"EFI PART")?;
    assert_eq!(foreign(probe(&path)), "GPT partition table");
    Ok(())
}

#[test]
fn other_data_at_either_end_is_non_zero_data() -> io::Result<()> {
    let (_dir, path) = device_with(123_456, b"garbage")?;
    assert_eq!(foreign(probe(&path)), "non-zero data");
    let (_dir, path) = device_with(MIN_DEVICE_BYTES - 10, b"tail")?;
    assert_eq!(foreign(probe(&path)), "non-zero data");
    Ok(())
}

#[test]
fn small_missing_and_odd_paths_are_reported() -> io::Result<()> {
    let (dir, path) = device(MIN_DEVICE_BYTES - 1)?;
    assert_eq!(probe(&path), Probe::TooSmall(MIN_DEVICE_BYTES - 1));
    assert!(matches!(
        probe(&dir.path().join("absent")),
        Probe::Unreadable(_)
    ));
    assert!(matches!(probe(dir.path()), Probe::Unreadable(_)));
    Ok(())
}

#[test]
fn newer_format_is_recognised_and_refused() -> io::Result<()> {
    let newer = Slot {
        format: FORMAT + 1,
        ..Slot::new(HOST)
    };
    let (_dir, path) = device_with(0, &newer.emit())?;
    assert_eq!(probe(&path), Probe::NewerFormat(FORMAT + 1));
    let before = sha256(&path)?;
    let error = Store::open(&Location::Device(path.clone())).expect_err("newer format");
    assert!(
        matches!(
            error,
            StoreError::NewerFormat {
                found: 2,
                supported: 1
            }
        ),
        "{error:?}"
    );
    assert_eq!(sha256(&path)?, before, "open wrote to a newer store");
    Ok(())
}

#[test]
fn both_slots_damaged_is_corrupt() -> Result<(), StoreError> {
    let (_dir, path) = device(MIN_DEVICE_BYTES)?;
    init_device(&path, false, HOST)?;
    for offset in SLOT_OFFSETS {
        write_at(&path, offset + 20, b"rot")?;
    }
    assert!(matches!(probe(&path), Probe::Corrupt(why) if why.contains("checksum")));
    let error = Store::open(&Location::Device(path)).expect_err("corrupt");
    assert!(matches!(error, StoreError::Corrupt(_)), "{error:?}");
    Ok(())
}

#[test]
fn a_superblock_longer_than_the_device_is_corrupt() -> Result<(), StoreError> {
    let (_dir, path) = device(MIN_DEVICE_BYTES)?;
    let slot = Slot {
        data_len: MIN_DEVICE_BYTES,
        ..Slot::new(HOST)
    };
    write_at(&path, 0, &slot.emit())?;
    assert!(matches!(probe(&path), Probe::Corrupt(why) if why.contains("truncated")));
    Ok(())
}

#[test]
fn init_refuses_anything_not_blank_and_writes_nothing() -> Result<(), StoreError> {
    let cases: &[(u64, &[u8], &str)] = &[
        (1080, &[0x53, 0xEF], "ext2/3/4"),
        (510, &[0x55, 0xAA], "MBR"),
        (512, b"EFI PART", "GPT"),
        (77, b"data", "non-zero data"),
    ];
    for &(offset, magic, name) in cases {
        let (_dir, path) = device_with(offset, magic)?;
        let before = sha256(&path)?;
        let error = init_device(&path, false, HOST).expect_err("not blank");
        assert!(
            matches!(&error, StoreError::NonBlank(what) if what.contains(name)),
            "{error}"
        );
        let error = Store::open(&Location::Device(path.clone())).expect_err("not ours");
        assert!(
            matches!(&error, StoreError::NotOurs(what) if what.contains(name)),
            "{error}"
        );
        assert_eq!(sha256(&path)?, before, "{name}: the device was written");
    }
    Ok(())
}

#[test]
fn init_refuses_a_store_and_a_small_device_even_forced() -> Result<(), StoreError> {
    let (_dir, path) = device(MIN_DEVICE_BYTES)?;
    init_device(&path, false, HOST)?;
    let error = init_device(&path, false, [9; 16]).expect_err("already a store");
    assert!(matches!(&error, StoreError::NonBlank(what) if what.contains("KaOS store")));

    let (_dir, path) = device(MIN_DEVICE_BYTES / 2)?;
    let error = init_device(&path, true, HOST).expect_err("too small");
    assert!(matches!(error, StoreError::TooSmall { size, min } if size * 2 == min));
    Ok(())
}

#[test]
fn forced_init_replaces_what_was_there() -> Result<(), StoreError> {
    let (_dir, path) = device_with(1080, &[0x53, 0xEF])?;
    write_at(&path, MIN_DEVICE_BYTES - 512, b"backup GPT")?;
    write_at(&path, 4 * DATA_OFFSET, &[0xFF; 4096])?;
    init_device(&path, true, HOST)?;
    assert!(matches!(probe(&path), Probe::Ours { host_id: HOST, .. }));
    assert_eq!(read_at(&path, MIN_DEVICE_BYTES - 512, 10)?, [0; 10]);
    let store = Store::open(&Location::Device(path))?;
    store.set_setting("hostname", "kaos-1")?;
    assert_eq!(store.settings()?.len(), 1);
    Ok(())
}

#[test]
fn init_then_open_survives_reopen() -> Result<(), StoreError> {
    let (_dir, path) = device(MIN_DEVICE_BYTES)?;
    init_device(&path, false, HOST)?;
    let Probe::Ours {
        host_id,
        format,
        data_len,
    } = probe(&path)
    else {
        panic!("init did not make the device ours: {:?}", probe(&path));
    };
    assert_eq!((host_id, format), (HOST, FORMAT));
    assert!(data_len > 0, "the database was created");
    let location = Location::Device(path.clone());
    {
        let store = Store::open(&location)?;
        assert_eq!(store.host_id(), Some(HOST));
        assert_eq!(store.location(), &location);
        let error = Store::open(&location).expect_err("second open");
        assert!(
            matches!(&error, StoreError::Database(why) if why.contains("in use")),
            "{error}"
        );
        for i in 0..50 {
            store.set_setting(&format!("k{i}"), &format!("v{i}"))?;
        }
    }
    let store = Store::open(&location)?;
    assert_eq!(store.settings()?.len(), 50);
    assert_eq!(store.setting("k49")?.as_deref(), Some("v49"));
    Ok(())
}

/// After every length change both slots carry the same length, so either one may rot.
#[test]
fn either_slot_alone_carries_the_store() -> Result<(), StoreError> {
    let (_dir, path) = device(MIN_DEVICE_BYTES)?;
    init_device(&path, false, HOST)?;
    {
        let store = Store::open(&Location::Device(path.clone()))?;
        // Enough to make redb grow its storage, so the slots have moved on since init.
        store.set_setting("big", &"x".repeat(3 * 1024 * 1024))?;
        store.set_setting("hostname", "kaos-1")?;
    }
    let slot = |offset| -> Result<Slot, StoreError> {
        let bytes = read_at(&path, offset, SLOT_BYTES)?;
        parse_slot(&bytes).map_err(|error| StoreError::Corrupt(error.to_string()))
    };
    let (a, b) = (slot(SLOT_OFFSETS[0])?, slot(SLOT_OFFSETS[1])?);
    assert!(a.seq > 2 && b.seq > 2, "the length never changed");
    assert_eq!(a.data_len, b.data_len);
    for damaged in SLOT_OFFSETS {
        let original = read_at(&path, damaged, SLOT_BYTES)?;
        write_at(&path, damaged + 40, &[0xFF; 8])?;
        assert!(matches!(probe(&path), Probe::Ours { .. }));
        let store = Store::open(&Location::Device(path.clone()))?;
        assert_eq!(store.setting("hostname")?.as_deref(), Some("kaos-1"));
        drop(store);
        write_at(&path, damaged, &original)?;
    }
    Ok(())
}

/// A torn write of the slot being updated: garbage with our magic. The other slot wins.
#[test]
fn a_torn_slot_write_loses_nothing() -> Result<(), StoreError> {
    let (_dir, path) = device(MIN_DEVICE_BYTES)?;
    init_device(&path, false, HOST)?;
    Store::open(&Location::Device(path.clone()))?.set_setting("hostname", "kaos-1")?;
    let torn = Slot {
        seq: u64::MAX,
        ..Slot::new(HOST)
    }
    .emit();
    write_at(&path, SLOT_OFFSETS[1], &torn[..30])?;
    let store = Store::open(&Location::Device(path))?;
    assert_eq!(store.setting("hostname")?.as_deref(), Some("kaos-1"));
    Ok(())
}

/// redb asks for more room than the device has: the write fails with "store full", the store
/// stays usable for what fits, and everything acknowledged survives.
#[test]
fn a_full_device_refuses_growth_and_keeps_its_data() -> Result<(), StoreError> {
    let (_dir, path) = device(MIN_DEVICE_BYTES)?;
    init_device(&path, false, HOST)?;
    let location = Location::Device(path);
    let mut written = 0;
    {
        let store = Store::open(&location)?;
        let value = "v".repeat(512 * 1024);
        let error = loop {
            match store.set_setting(&format!("k{written}"), &value) {
                Ok(()) => written += 1,
                Err(error) => break error,
            }
            assert!(written < 64, "16 MiB took {written} values of 512 KiB");
        };
        assert!(
            matches!(&error, StoreError::Io(e) if e.kind() == io::ErrorKind::StorageFull),
            "{error:?}"
        );
        assert!(error.to_string().contains("store full"), "{error}");
    }
    let store = Store::open(&location)?;
    assert_eq!(store.settings()?.len(), written);
    store.set_setting("small", "fits")?;
    Ok(())
}
