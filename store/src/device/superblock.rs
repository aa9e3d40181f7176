//! The superblock slot: parse and emit, smoltcp style (field ranges in `mod field`, nothing
//! reads past a length checked first).
//!
//! Every format, present and future, keeps the first 60 bytes' meaning for magic, format and
//! checksum: `magic` at 0..8, `format` at 8..12, and a CRC-32 at 56..60 over bytes 0..56. That is
//! what lets this build tell "a newer KaOS wrote this" from "this slot is damaged".

/// Bytes reserved for one slot; the fields use the first [`field::LEN`].
pub const SLOT_BYTES: usize = 4096;
/// Where the two slots live on the device.
pub const SLOT_OFFSETS: [u64; 2] = [0, 4096];
/// The first bytes of every slot.
pub const MAGIC: [u8; 8] = *b"KAOSSTOR";
/// The format this build writes and reads.
pub const FORMAT: u32 = 1;
/// Where redb's region starts, as written by [`crate::init_device`].
pub const DATA_OFFSET: u64 = 1024 * 1024;

/// Byte ranges of the fields (little-endian integers).
pub mod field {
    use core::ops::Range;

    /// `KAOSSTOR`.
    pub const MAGIC: Range<usize> = 0..8;
    /// Format version, u32.
    pub const FORMAT: Range<usize> = 8..12;
    /// Reserved, zero in format 1.
    pub const FLAGS: Range<usize> = 12..16;
    /// Host id.
    pub const HOST_ID: Range<usize> = 16..32;
    /// Start of redb's region, u64.
    pub const DATA_OFFSET: Range<usize> = 32..40;
    /// redb's logical length, u64.
    pub const DATA_LEN: Range<usize> = 40..48;
    /// Sequence number, u64: the higher valid slot wins.
    pub const SEQ: Range<usize> = 48..56;
    /// CRC-32 (IEEE) of bytes `0..CRC.start`.
    pub const CRC: Range<usize> = 56..60;
    /// Bytes a slot needs to be parsed.
    pub const LEN: usize = 60;
}

/// One decoded superblock slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Format version ([`FORMAT`] for anything [`parse_slot`] accepts).
    pub format: u32,
    /// The host this store belongs to.
    pub host_id: [u8; 16],
    /// Start of redb's region on the device.
    pub data_offset: u64,
    /// redb's logical length.
    pub data_len: u64,
    /// Sequence number.
    pub seq: u64,
}

/// Why a slot was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    /// Fewer bytes than [`field::LEN`].
    #[error("truncated superblock: {0} bytes")]
    Truncated(usize),
    /// No `KAOSSTOR` magic: not our slot at all.
    #[error("no KaOS magic")]
    NoMagic,
    /// Our magic, but the checksum does not match.
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// CRC found in the slot.
        stored: u32,
        /// CRC of its contents.
        computed: u32,
    },
    /// A valid slot written by a newer format.
    #[error("format {0} is newer than this build")]
    NewerFormat(u32),
    /// A checksummed slot whose fields make no sense (written by a bug, never by a crash).
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// Decodes a slot. Never panics, whatever the input; reads at most [`field::LEN`] bytes.
pub fn parse_slot(bytes: &[u8]) -> Result<Slot, SlotError> {
    let Some(bytes) = bytes.get(..field::LEN) else {
        return Err(SlotError::Truncated(bytes.len()));
    };
    if bytes[field::MAGIC] != MAGIC {
        return Err(SlotError::NoMagic);
    }
    let stored = u32::from_le_bytes(array(&bytes[field::CRC]));
    let computed = crc32(&bytes[..field::CRC.start]);
    if stored != computed {
        return Err(SlotError::Checksum { stored, computed });
    }
    let format = u32::from_le_bytes(array(&bytes[field::FORMAT]));
    if format > FORMAT {
        return Err(SlotError::NewerFormat(format));
    }
    if format == 0 {
        return Err(SlotError::Invalid("format 0"));
    }
    if bytes[field::FLAGS] != [0; 4] {
        return Err(SlotError::Invalid("flags"));
    }
    let slot = Slot {
        format,
        host_id: array(&bytes[field::HOST_ID]),
        data_offset: u64::from_le_bytes(array(&bytes[field::DATA_OFFSET])),
        data_len: u64::from_le_bytes(array(&bytes[field::DATA_LEN])),
        seq: u64::from_le_bytes(array(&bytes[field::SEQ])),
    };
    slot.check_layout()?;
    Ok(slot)
}

impl Slot {
    /// A first slot for a new store.
    pub fn new(host_id: [u8; 16]) -> Slot {
        Slot {
            format: FORMAT,
            host_id,
            data_offset: DATA_OFFSET,
            data_len: 0,
            seq: 1,
        }
    }

    /// The full [`SLOT_BYTES`] image of this slot, zero-padded, checksum included.
    pub fn emit(&self) -> [u8; SLOT_BYTES] {
        let mut bytes = [0; SLOT_BYTES];
        bytes[field::MAGIC].copy_from_slice(&MAGIC);
        bytes[field::FORMAT].copy_from_slice(&self.format.to_le_bytes());
        bytes[field::HOST_ID].copy_from_slice(&self.host_id);
        bytes[field::DATA_OFFSET].copy_from_slice(&self.data_offset.to_le_bytes());
        bytes[field::DATA_LEN].copy_from_slice(&self.data_len.to_le_bytes());
        bytes[field::SEQ].copy_from_slice(&self.seq.to_le_bytes());
        let crc = crc32(&bytes[..field::CRC.start]);
        bytes[field::CRC].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Where redb's region ends on the device, if that fits in a u64.
    pub fn data_end(&self) -> Option<u64> {
        self.data_offset.checked_add(self.data_len)
    }

    /// The data region must start after both slots, on a 4 KiB boundary, and end in range.
    fn check_layout(&self) -> Result<(), SlotError> {
        let slots_end = SLOT_OFFSETS[1] + SLOT_BYTES as u64;
        if self.data_offset < slots_end || !self.data_offset.is_multiple_of(4096) {
            return Err(SlotError::Invalid("data offset"));
        }
        if self.data_end().is_none() {
            return Err(SlotError::Invalid("data length"));
        }
        Ok(())
    }
}

/// Copies a field whose length the `field` ranges fix; the slices passed always match `N`.
fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(bytes);
    out
}

/// CRC-32/ISO-HDLC (the zlib/Ethernet CRC), table-driven.
pub fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |crc, &byte| {
        CRC_TABLE[usize::from(crc.to_le_bytes()[0] ^ byte)] ^ (crc >> 8)
    })
}

const CRC_TABLE: [u32; 256] = crc_table();

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut n: u32 = 0;
    while n < 256 {
        let mut crc = n;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                0xEDB8_8320 ^ (crc >> 1)
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[n as usize] = crc;
        n += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot() -> Slot {
        Slot {
            format: FORMAT,
            host_id: *b"0123456789abcdef",
            data_offset: DATA_OFFSET,
            data_len: 0x0003_0000,
            seq: 5,
        }
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn emit_then_parse_round_trips() {
        assert_eq!(parse_slot(&slot().emit()), Ok(slot()));
        assert_eq!(parse_slot(&slot().emit()[..field::LEN]), Ok(slot()));
    }

    /// The on-disk layout: these bytes must never change for format 1.
    #[test]
    fn slot_bytes_are_pinned() {
        let bytes = slot().emit();
        let mut expected = Vec::new();
        expected.extend_from_slice(b"KAOSSTOR");
        expected.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(b"0123456789abcdef");
        expected.extend_from_slice(&[0, 0, 0x10, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&[0, 0, 0x03, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&[5, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&crc32(&expected).to_le_bytes());
        assert_eq!(&bytes[..field::LEN], expected.as_slice());
        assert!(bytes[field::LEN..].iter().all(|&b| b == 0));
    }

    #[test]
    fn short_input_is_truncated() {
        assert_eq!(parse_slot(&[]), Err(SlotError::Truncated(0)));
        assert_eq!(
            parse_slot(&slot().emit()[..59]),
            Err(SlotError::Truncated(59))
        );
    }

    #[test]
    fn zeroes_have_no_magic() {
        assert_eq!(parse_slot(&[0; SLOT_BYTES]), Err(SlotError::NoMagic));
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let good = slot().emit();
        for bit in 0..(field::LEN * 8) {
            let mut bytes = good;
            bytes[bit / 8] ^= 1 << (bit % 8);
            assert!(
                parse_slot(&bytes).is_err(),
                "bit {bit} flipped went unnoticed"
            );
        }
    }

    #[test]
    fn newer_format_with_good_checksum_is_newer() {
        let newer = Slot {
            format: 2,
            ..slot()
        };
        assert_eq!(parse_slot(&newer.emit()), Err(SlotError::NewerFormat(2)));
    }

    #[test]
    fn nonsense_layout_is_invalid() {
        let inside_slots = Slot {
            data_offset: 4096,
            ..slot()
        };
        assert_eq!(
            parse_slot(&inside_slots.emit()),
            Err(SlotError::Invalid("data offset"))
        );
        let overflow = Slot {
            data_len: u64::MAX,
            ..slot()
        };
        assert_eq!(
            parse_slot(&overflow.emit()),
            Err(SlotError::Invalid("data length"))
        );
        let zero = Slot {
            format: 0,
            ..slot()
        };
        assert_eq!(
            parse_slot(&zero.emit()),
            Err(SlotError::Invalid("format 0"))
        );
    }
}
