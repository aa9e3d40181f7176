//! The 16550 console: `vm-superio`'s UART on COM1, its output kept in a bounded ring and copied to
//! a writer (stdout for a standalone run; later the stream to PID 1).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

/// COM1's first port.
pub const COM1_BASE: u16 = 0x3f8;
/// COM1's eight ports.
pub const COM1_LEN: u16 = 8;
/// COM1's interrupt line.
pub const COM1_IRQ: u32 = 4;

/// The last bytes a guest wrote to its console; older bytes are dropped first.
#[derive(Debug)]
pub struct Ring {
    bytes: VecDeque<u8>,
    capacity: usize,
    dropped: u64,
}

impl Ring {
    /// A ring that keeps at most `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Ring {
            bytes: VecDeque::with_capacity(capacity.min(4096)),
            capacity,
            dropped: 0,
        }
    }

    /// Appends, dropping the oldest bytes beyond the capacity.
    pub fn push(&mut self, data: &[u8]) {
        for &b in data {
            if self.capacity == 0 {
                self.dropped += 1;
                continue;
            }
            if self.bytes.len() == self.capacity {
                self.bytes.pop_front();
                self.dropped += 1;
            }
            self.bytes.push_back(b);
        }
    }

    /// The bytes kept, oldest first.
    pub fn contents(&self) -> Vec<u8> {
        self.bytes.iter().copied().collect()
    }

    /// How many bytes were dropped to respect the bound.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// A shared handle on a console ring.
pub type SharedRing = Arc<Mutex<Ring>>;

/// The UART's output: every byte goes to the ring, then to the sink (errors there are counted,
/// never fatal: a closed stdout must not stop the guest).
#[derive(Debug)]
pub struct ConsoleOut<W: Write> {
    ring: SharedRing,
    sink: W,
    sink_errors: u64,
}

impl<W: Write> Write for ConsoleOut<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Ok(mut ring) = self.ring.lock() {
            ring.push(buf);
        }
        if self.sink.write_all(buf).is_err() {
            self.sink_errors += 1;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.sink.flush().is_err() {
            self.sink_errors += 1;
        }
        Ok(())
    }
}

/// Raises the UART's interrupt through an irqfd on [`COM1_IRQ`].
#[derive(Debug)]
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// COM1 with its ring.
#[derive(Debug)]
pub struct Console<W: Write> {
    uart: Serial<IrqTrigger, vm_superio::serial::NoEvents, ConsoleOut<W>>,
}

impl<W: Write> Console<W> {
    /// A UART raising `irq` and writing to `ring` and `sink`.
    pub fn new(irq: EventFd, ring: SharedRing, sink: W) -> Self {
        let out = ConsoleOut {
            ring,
            sink,
            sink_errors: 0,
        };
        Console {
            uart: Serial::new(IrqTrigger(irq), out),
        }
    }

    /// A guest read of `COM1_BASE + offset`.
    pub fn read(&mut self, offset: u8) -> u8 {
        self.uart.read(offset)
    }

    /// A guest write of `COM1_BASE + offset`; a failed interrupt is logged, not fatal.
    pub fn write(&mut self, offset: u8, value: u8) {
        if let Err(e) = self.uart.write(offset, value) {
            log::warn!("serial: {e:?}");
        }
    }

    /// Flushes the sink.
    pub fn flush(&mut self) {
        self.uart.writer_mut().flush().ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_newest_bytes() {
        let mut r = Ring::new(4);
        r.push(b"ab");
        assert_eq!(r.contents(), b"ab");
        r.push(b"cdef");
        assert_eq!(r.contents(), b"cdef");
        assert_eq!(r.dropped(), 2);
        let mut z = Ring::new(0);
        z.push(b"xyz");
        assert!(z.contents().is_empty());
        assert_eq!(z.dropped(), 3);
    }

    #[test]
    fn uart_output_reaches_ring_and_sink() -> Result<(), io::Error> {
        let ring = Arc::new(Mutex::new(Ring::new(16)));
        let mut c = Console::new(EventFd::new(0)?, ring.clone(), Vec::new());
        for b in b"hi\n" {
            c.write(0, *b);
        }
        assert_eq!(
            ring.lock().map(|r| r.contents()).ok(),
            Some(b"hi\n".to_vec())
        );
        assert_eq!(c.uart.writer().sink, b"hi\n");
        Ok(())
    }
}
