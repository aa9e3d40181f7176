//! Port I/O dispatch: COM1, the i8042 reset line, the exit port, and a log-and-ignore policy for
//! the rest.
//!
//! **The exit port** ([`EXIT_PORT`], 0xf4, where QEMU puts its `isa-debug-exit`): a one-byte
//! write powers the VM off, whatever the value. A Linux guest without ACPI has no other way to
//! power off; the guest's `kattach` writes here after its orderly shutdown.

use std::io::Write;

use crate::serial::{COM1_BASE, COM1_LEN, Console};

/// The i8042 command port.
pub const I8042_COMMAND: u16 = 0x64;
/// The i8042 command that pulses the CPU reset line.
pub const I8042_RESET: u8 = 0xfe;

/// The exit port: a one-byte write ends the VM as a power-off.
pub const EXIT_PORT: u16 = 0xf4;

/// What a port write asks of the VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PioAction {
    /// Keep running.
    Continue,
    /// The guest pulsed the reset line.
    Reset,
    /// The guest wrote the exit port.
    PowerOff,
}

/// Whether a write is the i8042 reset command.
pub fn is_i8042_reset(port: u16, data: &[u8]) -> bool {
    port == I8042_COMMAND && data.first() == Some(&I8042_RESET)
}

/// The port devices of one VM and counters of accesses nobody handles.
#[derive(Debug)]
pub struct PioBus<W: Write> {
    /// COM1.
    pub console: Console<W>,
    /// Reads of ports without a device (answered with all ones).
    pub unhandled_reads: u64,
    /// Writes to ports without a device (ignored).
    pub unhandled_writes: u64,
}

impl<W: Write> PioBus<W> {
    /// A bus with COM1.
    pub fn new(console: Console<W>) -> Self {
        PioBus {
            console,
            unhandled_reads: 0,
            unhandled_writes: 0,
        }
    }

    fn com1_offset(port: u16) -> Option<u8> {
        let off = port.checked_sub(COM1_BASE).filter(|o| *o < COM1_LEN)?;
        u8::try_from(off).ok()
    }

    /// A guest `in`: fills `data`.
    pub fn read(&mut self, port: u16, data: &mut [u8]) {
        match (Self::com1_offset(port), data) {
            (Some(off), [b]) => *b = self.console.read(off),
            (_, [b]) if port == I8042_COMMAND => *b = 0, // status: no data, input buffer empty
            (_, data) => {
                self.unhandled_reads += 1;
                log::debug!("unhandled in from port {port:#x}, {} bytes", data.len());
                data.fill(0xff);
            }
        }
    }

    /// A guest `out`.
    pub fn write(&mut self, port: u16, data: &[u8]) -> PioAction {
        if is_i8042_reset(port, data) {
            return PioAction::Reset;
        }
        if port == EXIT_PORT && data.len() == 1 {
            return PioAction::PowerOff;
        }
        match (Self::com1_offset(port), data) {
            (Some(off), [b]) => self.console.write(off, *b),
            _ => {
                self.unhandled_writes += 1;
                log::debug!("unhandled out to port {port:#x}: {data:x?}");
            }
        }
        PioAction::Continue
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use vmm_sys_util::eventfd::EventFd;

    use super::*;
    use crate::serial::Ring;

    #[test]
    fn i8042_reset_is_decoded() {
        assert!(is_i8042_reset(0x64, &[0xfe]));
        assert!(!is_i8042_reset(0x64, &[0xd1]));
        assert!(!is_i8042_reset(0x60, &[0xfe]));
        assert!(!is_i8042_reset(0x64, &[]));
    }

    #[test]
    fn bus_routes_com1_and_ignores_the_rest() -> Result<(), std::io::Error> {
        let ring = Arc::new(Mutex::new(Ring::new(8)));
        let mut bus = PioBus::new(Console::new(EventFd::new(0)?, ring.clone(), Vec::new()));
        assert_eq!(bus.write(0x3f8, b"K"), PioAction::Continue);
        assert_eq!(bus.write(0x80, &[1]), PioAction::Continue);
        assert_eq!(bus.write(0x64, &[0xfe]), PioAction::Reset);
        assert_eq!(bus.write(EXIT_PORT, &[0]), PioAction::PowerOff);
        assert_eq!(bus.write(EXIT_PORT, &[0x31]), PioAction::PowerOff);
        assert_eq!(
            bus.write(EXIT_PORT, &[0, 0]),
            PioAction::Continue,
            "only a one-byte write"
        );
        let mut d = [0u8; 2];
        bus.read(0x1234, &mut d);
        assert_eq!(d, [0xff, 0xff]);
        assert_eq!((bus.unhandled_reads, bus.unhandled_writes), (1, 2));
        assert_eq!(ring.lock().map(|r| r.contents()).ok(), Some(b"K".to_vec()));
        Ok(())
    }
}
