//! Superblock slot parsing of bytes read from a disk that may be anyone's: never panics, and a
//! slot that parses re-emits to bytes that parse to the same slot. Each input is tried as is and
//! with our magic and a correct checksum patched in, so the field checks behind the CRC are
//! reached too.
#![no_main]

use kaos_store::device::{MAGIC, crc32, field, parse_slot};
use libfuzzer_sys::fuzz_target;

fn check(data: &[u8]) {
    if let Ok(slot) = parse_slot(data) {
        let bytes = slot.emit();
        assert_eq!(bytes[..field::LEN], data[..field::LEN], "accepted a non-canonical slot");
        assert_eq!(parse_slot(&bytes), Ok(slot));
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() >= field::LEN {
        let mut patched = data.to_vec();
        patched[field::MAGIC].copy_from_slice(&MAGIC);
        let crc = crc32(&patched[..field::CRC.start]);
        patched[field::CRC].copy_from_slice(&crc.to_le_bytes());
        check(&patched);
    }
});
