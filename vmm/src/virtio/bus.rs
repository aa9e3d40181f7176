//! Where virtio-mmio devices sit: one 4 KiB window each from [`MMIO_BASE`], in the 32-bit hole
//! between the end of low RAM ([`crate::memory::MMIO_HOLE_START`]) and the I/O APIC, one
//! interrupt line each from [`GSIS`], and the kernel command-line fragment that tells Linux
//! (`CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`) where to find them.
//!
//! Each device has its own lock: two vCPUs touching two devices never wait for each other, and
//! an access outside every window takes no lock at all.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{MmioTransport, VirtioError};
use crate::memory::MMIO_HOLE_START;
use crate::mptable::IOAPIC_ADDR;

/// Guest-physical address of the first device window.
pub const MMIO_BASE: u64 = 0xd000_0000;
/// Bytes of one device window.
pub const WINDOW: u64 = 0x1000;
/// The interrupt lines devices get, in order: ISA IRQs (which the MP table routes to the I/O
/// APIC pin of the same number, edge-triggered) from 5, leaving out 0–2 (PIT, keyboard, the
/// PIC cascade), 3–4 (the COM ports) and 8 (the CMOS clock, which Linux's driver claims
/// unshared).
pub const GSIS: [u32; 10] = [5, 6, 7, 9, 10, 11, 12, 13, 14, 15];

const _: () = assert!(
    MMIO_BASE >= MMIO_HOLE_START,
    "windows below the hole overlap RAM"
);
const _: () = assert!(
    MMIO_BASE + GSIS.len() as u64 * WINDOW <= IOAPIC_ADDR as u64,
    "windows reach the I/O APIC"
);

/// Guest-physical address of device `index`'s window.
pub fn window(index: usize) -> u64 {
    MMIO_BASE + index as u64 * WINDOW
}

/// The command-line fragment naming a device at `base` on line `gsi`.
pub fn cmdline_fragment(base: u64, gsi: u32) -> String {
    format!("virtio_mmio.device=4K@{base:#x}:{gsi}")
}

#[derive(Debug)]
struct Slot {
    base: u64,
    gsi: u32,
    transport: Mutex<MmioTransport>,
}

/// The virtio devices of one VM.
#[derive(Debug, Default)]
pub struct MmioBus {
    slots: Vec<Slot>,
}

impl MmioBus {
    /// The window base and GSI device `index` gets, if there is a line for it.
    pub fn slot(index: usize) -> Option<(u64, u32)> {
        GSIS.get(index).map(|&gsi| (window(index), gsi))
    }

    /// Adds a device at the next window; its interrupt must already be wired to the GSI of
    /// [`MmioBus::slot`] for the current [`MmioBus::len`].
    ///
    /// # Errors
    /// [`VirtioError::TooMany`] when every line is taken.
    pub fn add(&mut self, transport: MmioTransport) -> Result<(u64, u32), VirtioError> {
        let (base, gsi) =
            Self::slot(self.slots.len()).ok_or(VirtioError::TooMany(self.slots.len() + 1))?;
        self.slots.push(Slot {
            base,
            gsi,
            transport: Mutex::new(transport),
        });
        Ok((base, gsi))
    }

    /// How many devices the bus has.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the bus has no device.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The kernel command-line fragments of every device, space-separated.
    pub fn cmdline(&self) -> String {
        let parts: Vec<_> = self
            .slots
            .iter()
            .map(|s| cmdline_fragment(s.base, s.gsi))
            .collect();
        parts.join(" ")
    }

    /// The devices' irqfds, which vCPU threads write (for the seccomp filter).
    pub fn irqfds(&self) -> Vec<RawFd> {
        self.slots
            .iter()
            .map(|s| lock(&s.transport).interrupt().irqfd().as_raw_fd())
            .collect()
    }

    /// The sockets devices talk on from vCPU threads (for the seccomp filter).
    pub fn socket_fds(&self) -> Vec<RawFd> {
        self.slots
            .iter()
            .flat_map(|s| lock(&s.transport).device().socket_fds())
            .collect()
    }

    /// Device `index`'s transport, locked.
    pub fn transport(&self, index: usize) -> Option<MutexGuard<'_, MmioTransport>> {
        self.slots.get(index).map(|s| lock(&s.transport))
    }

    /// A guest read at `addr`; false (and `data` untouched) when no device has the address.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        self.find(addr)
            .map(|(slot, offset)| lock(&slot.transport).read(offset, data))
            .is_some()
    }

    /// A guest write at `addr`; false when no device has the address.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        self.find(addr)
            .map(|(slot, offset)| lock(&slot.transport).write(offset, data))
            .is_some()
    }

    fn find(&self, addr: u64) -> Option<(&Slot, u64)> {
        let offset = addr.checked_sub(MMIO_BASE)?;
        let slot = self.slots.get(usize::try_from(offset / WINDOW).ok()?)?;
        Some((slot, offset % WINDOW))
    }
}

fn lock(m: &Mutex<MmioTransport>) -> MutexGuard<'_, MmioTransport> {
    // Poisoned only if a device model panicked; its registers are still the best we have.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_lines_and_the_command_line() {
        assert_eq!(MmioBus::slot(0), Some((0xd000_0000, 5)));
        assert_eq!(
            MmioBus::slot(3),
            Some((0xd000_3000, 9)),
            "line 8 is skipped"
        );
        assert_eq!(MmioBus::slot(GSIS.len()), None);
        assert_eq!(
            cmdline_fragment(0xd000_0000, 5),
            "virtio_mmio.device=4K@0xd0000000:5"
        );
        assert!(!GSIS.contains(&4), "COM1");
        let bus = MmioBus::default();
        assert!(bus.is_empty());
        assert_eq!(bus.cmdline(), "");
        let mut d = [7u8; 4];
        assert!(!bus.read(MMIO_BASE, &mut d));
        assert_eq!(d, [7; 4], "untouched: the caller answers");
        assert!(!bus.write(MMIO_BASE, &d));
    }
}
