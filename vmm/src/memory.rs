//! Guest memory: one memfd, mapped into the VMM and registered with KVM.
//!
//! The memfd is what a later switch process maps to serve virtio queues; the VMM never forms a
//! Rust reference into it and goes through `vm-memory`'s volatile accessors.

use std::fs::File;

use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap};

/// Start of the 32-bit MMIO hole; RAM above this address continues at [`HIGH_RAM_START`].
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// Where RAM resumes above 4 GiB when the guest has more than [`MMIO_HOLE_START`] bytes.
pub const HIGH_RAM_START: u64 = 0x1_0000_0000;
/// The smallest guest this VMM accepts: room for the boot structures and a kernel.
pub const MIN_MEMORY: u64 = 2 << 20;

/// Errors from sizing or creating guest memory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemoryError {
    /// The size string is not a number with an optional K, M or G suffix.
    #[error("memory size {0:?} is not a number with an optional K, M or G suffix")]
    BadSize(String),
    /// The size is below the minimum.
    #[error("memory size {0} bytes is below the minimum of {MIN_MEMORY} bytes")]
    TooSmall(u64),
    /// The size exceeds the host's RAM.
    #[error("memory size {requested} bytes exceeds the host's RAM of {host} bytes")]
    BeyondHost {
        /// Bytes asked for.
        requested: u64,
        /// Bytes of RAM the host has.
        host: u64,
    },
    /// The memfd could not be created or sized.
    #[error("cannot create the guest memory file: {0}")]
    Memfd(#[source] std::io::Error),
    /// The memfd could not be mapped.
    #[error("cannot map guest memory: {0}")]
    Map(String),
}

/// Parses `128M`, `1G`, `65536K` or a plain byte count.
///
/// # Errors
/// [`MemoryError::BadSize`] when the string is not a size or overflows 64 bits.
pub fn parse_size(text: &str) -> Result<u64, MemoryError> {
    let bad = || MemoryError::BadSize(text.to_owned());
    let t = text.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 10),
        Some((i, 'M' | 'm')) => (&t[..i], 20),
        Some((i, 'G' | 'g')) => (&t[..i], 30),
        _ => (t, 0),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(1 << shift).ok_or_else(bad)
}

/// The host's total RAM in bytes.
pub fn host_ram() -> u64 {
    let info = rustix::system::sysinfo();
    info.totalram.saturating_mul(u64::from(info.mem_unit))
}

/// Checks a requested size against the minimum and the host's RAM.
///
/// # Errors
/// [`MemoryError::TooSmall`] or [`MemoryError::BeyondHost`].
pub fn check_size(bytes: u64, host: u64) -> Result<(), MemoryError> {
    if bytes < MIN_MEMORY {
        return Err(MemoryError::TooSmall(bytes));
    }
    if bytes > host {
        return Err(MemoryError::BeyondHost {
            requested: bytes,
            host,
        });
    }
    Ok(())
}

/// Guest-physical ranges for `bytes` of RAM: below the MMIO hole, then above 4 GiB.
///
/// Each item is (guest address, length, offset in the memfd).
pub fn ram_ranges(bytes: u64) -> Vec<(u64, u64, u64)> {
    let low = bytes.min(MMIO_HOLE_START);
    let mut ranges = vec![(0, low, 0)];
    if bytes > low {
        ranges.push((HIGH_RAM_START, bytes - low, low));
    }
    ranges
}

/// Creates a memfd of `bytes` and maps it as guest memory laid out by [`ram_ranges`].
///
/// # Errors
/// [`MemoryError::Memfd`] or [`MemoryError::Map`].
pub fn create(bytes: u64) -> Result<(GuestMemoryMmap, File), MemoryError> {
    let fd = rustix::fs::memfd_create("kaos-guest-ram", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| MemoryError::Memfd(e.into()))?;
    rustix::fs::ftruncate(&fd, bytes).map_err(|e| MemoryError::Memfd(e.into()))?;
    let file = File::from(fd);
    let mut regions = Vec::new();
    for (gpa, len, offset) in ram_ranges(bytes) {
        let clone = file.try_clone().map_err(MemoryError::Memfd)?;
        let len = usize::try_from(len).map_err(|e| MemoryError::Map(e.to_string()))?;
        regions.push((GuestAddress(gpa), len, Some(FileOffset::new(clone, offset))));
    }
    let mem = GuestMemoryMmap::from_ranges_with_files(regions)
        .map_err(|e| MemoryError::Map(e.to_string()))?;
    Ok((mem, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("128M").ok(), Some(128 << 20));
        assert_eq!(parse_size("2g").ok(), Some(2 << 30));
        assert_eq!(parse_size("64K").ok(), Some(64 << 10));
        assert_eq!(parse_size("4096").ok(), Some(4096));
        for bad in ["", "M", "12X", "-1M", "1.5G", "99999999999999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sizes_are_checked_against_host_and_minimum() {
        assert!(matches!(
            check_size(0, 1 << 30),
            Err(MemoryError::TooSmall(0))
        ));
        assert!(matches!(
            check_size(2 << 30, 1 << 30),
            Err(MemoryError::BeyondHost { .. })
        ));
        assert!(check_size(128 << 20, 1 << 30).is_ok());
    }

    #[test]
    fn ram_skips_the_mmio_hole() {
        assert_eq!(ram_ranges(128 << 20), vec![(0, 128 << 20, 0)]);
        assert_eq!(
            ram_ranges(4 << 30),
            vec![
                (0, MMIO_HOLE_START, 0),
                (HIGH_RAM_START, (4 << 30) - MMIO_HOLE_START, MMIO_HOLE_START)
            ]
        );
    }

    #[test]
    fn guest_memory_is_the_memfd() -> Result<(), MemoryError> {
        use std::os::unix::fs::FileExt;
        use vm_memory::Bytes;

        let (mem, file) = create(MIN_MEMORY)?;
        let written = mem.write_obj(0x1234_5678u32, GuestAddress(0x1000));
        assert!(written.is_ok(), "{written:?}");
        let mut buf = [0u8; 4];
        file.read_exact_at(&mut buf, 0x1000)
            .map_err(MemoryError::Memfd)?;
        assert_eq!(u32::from_le_bytes(buf), 0x1234_5678);
        assert_eq!(
            file.metadata().map_err(MemoryError::Memfd)?.len(),
            MIN_MEMORY
        );
        Ok(())
    }
}
