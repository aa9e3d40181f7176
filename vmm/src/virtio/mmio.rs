//! The virtio-mmio register file (VIRTIO 1.2, 4.2.2, version 2) of one device.
//!
//! **Widths.** Registers below 0x100 are 32 bits wide and aligned; the configuration space from
//! 0x100 takes 1, 2, 4 or 8 bytes at any offset and belongs to the device. Anything else, and
//! any unknown offset, is counted and logged, reads give 0 and writes are dropped.
//!
//! **The driver's sequence** (3.1.1): reset (0), `ACKNOWLEDGE`, `DRIVER`, features,
//! `FEATURES_OK`, queues, `DRIVER_OK`. A `Status` write adds the next step; a write that clears
//! a bit, skips a step, adds more than one, or sets an undefined bit is refused and the status
//! stays as it was. Tolerated: `ACKNOWLEDGE | DRIVER` in one write from 0, which changes nothing
//! the device sees, and `DEVICE_NEEDS_RESET` in a write, taken as the driver's echo of what it
//! read and dropped. `FEATURES_OK` and `DRIVER_OK` each need a write of their own: the driver
//! must read `FEATURES_OK` back and set up its queues in between. `FEATURES_OK` is set only if the driver took `VIRTIO_F_VERSION_1`,
//! nothing the device did not offer, and a set the device accepts; otherwise the driver reads
//! it back clear, as the spec requires. `DRIVER_OK` activates the device only if `FEATURES_OK`
//! is set and every ready queue passes its checks; if activation fails the status shows
//! `DEVICE_NEEDS_RESET` instead. Writing 0 resets the device and all its queues. `FAILED` may be
//! added at any time and blocks further steps until a reset.
//!
//! **Setup windows.** Driver features are taken between `DRIVER` and `FEATURES_OK`; queue
//! registers between `FEATURES_OK` and `DRIVER_OK`, and only for a queue that is not ready;
//! `QueueReady` = 1 checks the queue ([`QueueRegs::check`]) and stays 0 if it fails.

use vm_memory::GuestMemoryMmap;

use virtio_bindings::virtio_mmio as reg;
use virtio_queue::{Queue, QueueT};

use super::queue::{QueueRegs, set_half};
use super::status::{ACKNOWLEDGE, DRIVER, DRIVER_OK, FAILED, FEATURES_OK, NEEDS_RESET};
use super::{ActivateError, Activation, F_VERSION_1, Interrupt, VirtioDevice, VirtioError};

/// `MagicValue`: "virt" in little-endian.
pub const MAGIC: u32 = 0x7472_6976;
/// `Version`: 2, the modern transport.
pub const VERSION: u32 = 2;
/// `VendorID`: "KaOS" in little-endian.
pub const VENDOR_ID: u32 = u32::from_le_bytes(*b"KaOS");
/// Where the device-specific configuration space starts.
pub const CONFIG_START: u64 = reg::VIRTIO_MMIO_CONFIG as u64;

/// The bits a driver may write to `Status`, and the order of the steps among them.
const DRIVER_BITS: u32 = ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK | FAILED;
const SEQUENCE: [u32; 5] = [
    0,
    ACKNOWLEDGE,
    ACKNOWLEDGE | DRIVER,
    ACKNOWLEDGE | DRIVER | FEATURES_OK,
    ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
];

/// Whether adding `steps` to `old` (neither holding `FAILED`) is the driver's next step, or
/// `ACKNOWLEDGE | DRIVER` from 0.
fn next_step(old: u32, steps: u32) -> bool {
    let target = old | steps;
    let step = |s| SEQUENCE.iter().position(|&x| x == s);
    match (step(old), step(target)) {
        (Some(from), Some(to)) => to == from + 1 || (old == 0 && target == ACKNOWLEDGE | DRIVER),
        _ => false,
    }
}

/// The registers of `device`'s queues after reset.
///
/// # Errors
/// [`VirtioError::QueueMaxSize`] for a queue maximum `virtio_queue` would refuse.
pub fn queue_regs(device: &dyn VirtioDevice) -> Result<Vec<QueueRegs>, VirtioError> {
    let sizes = device.queue_max_sizes();
    for (queue, &size) in sizes.iter().enumerate() {
        if !QueueRegs::valid_max(size) {
            let device = device.device_type();
            return Err(VirtioError::QueueMaxSize {
                device,
                queue,
                size,
            });
        }
    }
    Ok(sizes.iter().map(|&max| QueueRegs::new(max)).collect())
}

/// One device's transport: the registers, its queues' setup, and the device behind them.
#[derive(Debug)]
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    interrupt: Interrupt,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    /// The driver set a feature bit beyond 64: nothing we offer, so `FEATURES_OK` is refused.
    driver_features_beyond: bool,
    queue_sel: u32,
    queues: Vec<QueueRegs>,
    active: bool,
    ignored: u64,
}

impl MmioTransport {
    /// Puts `device` behind a transport whose queues live in `mem` and whose line is
    /// `interrupt`.
    ///
    /// # Errors
    /// [`VirtioError::QueueMaxSize`] for a queue maximum `virtio_queue` would refuse.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        interrupt: Interrupt,
    ) -> Result<Self, VirtioError> {
        let queues = queue_regs(device.as_ref())?;
        Ok(MmioTransport {
            device,
            mem,
            interrupt,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            driver_features_beyond: false,
            queue_sel: 0,
            queues,
            active: false,
            ignored: 0,
        })
    }

    /// `Status` as the driver reads it.
    pub fn status(&self) -> u32 {
        self.status
            | if self.interrupt.needs_reset() {
                NEEDS_RESET
            } else {
                0
            }
    }

    /// Whether the device was activated and not reset since.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Accesses and requests logged and ignored: wrong width, unknown offset, a write out of
    /// its window, a refused status step or queue.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    /// The device's interrupt.
    pub fn interrupt(&self) -> &Interrupt {
        &self.interrupt
    }

    /// The device behind the registers.
    pub fn device(&self) -> &dyn VirtioDevice {
        self.device.as_ref()
    }

    /// A guest read at `offset` in the window.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_START {
            if matches!(data.len(), 1 | 2 | 4 | 8) {
                self.device.read_config(offset - CONFIG_START, data);
            } else {
                self.ignore("config read", offset, data.len());
                data.fill(0);
            }
            return;
        }
        match (data.len() == 4 && offset.is_multiple_of(4))
            .then(|| self.register(offset))
            .flatten()
        {
            Some(value) => data.copy_from_slice(&value.to_le_bytes()),
            None => {
                self.ignore("read", offset, data.len());
                data.fill(0);
            }
        }
    }

    /// A guest write at `offset` in the window.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_START {
            if matches!(data.len(), 1 | 2 | 4 | 8) {
                self.device.write_config(offset - CONFIG_START, data);
            } else {
                self.ignore("config write", offset, data.len());
            }
            return;
        }
        let value = match <[u8; 4]>::try_from(data) {
            Ok(bytes) if offset.is_multiple_of(4) => u32::from_le_bytes(bytes),
            _ => return self.ignore("write", offset, data.len()),
        };
        let Ok(reg) = u32::try_from(offset) else {
            return self.ignore("write", offset, 4);
        };
        match reg {
            reg::VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_sel = value,
            reg::VIRTIO_MMIO_DRIVER_FEATURES => self.write_driver_features(value),
            reg::VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            reg::VIRTIO_MMIO_QUEUE_SEL => self.queue_sel = value,
            reg::VIRTIO_MMIO_QUEUE_NUM => self.setup_queue(reg, |q| q.size = value),
            reg::VIRTIO_MMIO_QUEUE_READY => self.write_queue_ready(value),
            reg::VIRTIO_MMIO_QUEUE_NOTIFY => self.notify(value),
            reg::VIRTIO_MMIO_INTERRUPT_ACK => self.interrupt.ack(value),
            reg::VIRTIO_MMIO_STATUS => self.write_status(value),
            reg::VIRTIO_MMIO_QUEUE_DESC_LOW | reg::VIRTIO_MMIO_QUEUE_DESC_HIGH => {
                let high = reg == reg::VIRTIO_MMIO_QUEUE_DESC_HIGH;
                self.setup_queue(reg, |q| set_half(&mut q.desc, high, value));
            }
            reg::VIRTIO_MMIO_QUEUE_AVAIL_LOW | reg::VIRTIO_MMIO_QUEUE_AVAIL_HIGH => {
                let high = reg == reg::VIRTIO_MMIO_QUEUE_AVAIL_HIGH;
                self.setup_queue(reg, |q| set_half(&mut q.driver, high, value));
            }
            reg::VIRTIO_MMIO_QUEUE_USED_LOW | reg::VIRTIO_MMIO_QUEUE_USED_HIGH => {
                let high = reg == reg::VIRTIO_MMIO_QUEUE_USED_HIGH;
                self.setup_queue(reg, |q| set_half(&mut q.device, high, value));
            }
            // No shared memory regions: selecting one changes nothing (their lengths read -1).
            reg::VIRTIO_MMIO_SHM_SEL => {}
            _ => self.ignore("write", offset, 4),
        }
    }

    /// The value of a readable register.
    fn register(&self, offset: u64) -> Option<u32> {
        let selected = self.selected();
        Some(match u32::try_from(offset).ok()? {
            reg::VIRTIO_MMIO_MAGIC_VALUE => MAGIC,
            reg::VIRTIO_MMIO_VERSION => VERSION,
            reg::VIRTIO_MMIO_DEVICE_ID => self.device.device_type(),
            reg::VIRTIO_MMIO_VENDOR_ID => VENDOR_ID,
            reg::VIRTIO_MMIO_DEVICE_FEATURES => self.device_features_page(),
            reg::VIRTIO_MMIO_QUEUE_NUM_MAX => selected.map_or(0, |q| u32::from(q.max_size)),
            reg::VIRTIO_MMIO_QUEUE_READY => selected.map_or(0, |q| u32::from(q.ready)),
            reg::VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt.status(),
            reg::VIRTIO_MMIO_STATUS => self.status(),
            reg::VIRTIO_MMIO_CONFIG_GENERATION => self.interrupt.generation(),
            reg::VIRTIO_MMIO_SHM_LEN_LOW
            | reg::VIRTIO_MMIO_SHM_LEN_HIGH
            | reg::VIRTIO_MMIO_SHM_BASE_LOW
            | reg::VIRTIO_MMIO_SHM_BASE_HIGH => u32::MAX,
            _ => return None,
        })
    }

    fn offered(&self) -> u64 {
        self.device.features() | F_VERSION_1
    }

    fn device_features_page(&self) -> u32 {
        let offered = self.offered();
        match self.device_features_sel {
            0 => u32::try_from(offered & 0xffff_ffff).unwrap_or(0),
            1 => u32::try_from(offered >> 32).unwrap_or(0),
            _ => 0,
        }
    }

    fn selected(&self) -> Option<&QueueRegs> {
        self.queues.get(usize::try_from(self.queue_sel).ok()?)
    }

    fn ignore(&mut self, what: &str, offset: u64, len: usize) {
        self.ignored += 1;
        log::debug!(
            "virtio-mmio (type {}): ignored {what} at {offset:#x}, {len} bytes",
            self.device.device_type()
        );
    }

    fn refuse(&mut self, why: std::fmt::Arguments<'_>) {
        self.ignored += 1;
        log::debug!(
            "virtio-mmio (type {}): refused: {why}",
            self.device.device_type()
        );
    }

    fn write_driver_features(&mut self, value: u32) {
        if self.status & (DRIVER | FEATURES_OK | FAILED) != DRIVER {
            return self.refuse(format_args!("driver features outside negotiation"));
        }
        match self.driver_features_sel {
            0 => set_half(&mut self.driver_features, false, value),
            1 => set_half(&mut self.driver_features, true, value),
            _ => self.driver_features_beyond |= value != 0,
        }
    }

    /// Applies `change` to the selected queue if the driver may set it up now.
    fn setup_queue(&mut self, reg: u32, change: impl FnOnce(&mut QueueRegs)) {
        let phase = self.status & (FEATURES_OK | DRIVER_OK | FAILED) == FEATURES_OK;
        let sel = self.queue_sel;
        match self
            .queues
            .get_mut(usize::try_from(sel).unwrap_or(usize::MAX))
        {
            Some(q) if phase && !q.ready => change(q),
            _ => self.refuse(format_args!("queue register {reg:#x} of queue {sel} now")),
        }
    }

    fn write_queue_ready(&mut self, value: u32) {
        let setup = self.status & (FEATURES_OK | DRIVER_OK | FAILED) == FEATURES_OK;
        let sel = self.queue_sel;
        let Some(q) = self.queues.get(usize::try_from(sel).unwrap_or(usize::MAX)) else {
            return self.refuse(format_args!(
                "QueueReady of queue {sel}, which does not exist"
            ));
        };
        let ready = match value {
            0 if self.status & DRIVER_OK == 0 => false,
            1 if setup => match q.check(&self.mem) {
                Ok(_) => true,
                Err(e) => return self.refuse(format_args!("queue {sel}: {e}")),
            },
            _ => return self.refuse(format_args!("QueueReady {value} of queue {sel} now")),
        };
        if let Some(q) = self
            .queues
            .get_mut(usize::try_from(sel).unwrap_or(usize::MAX))
        {
            q.ready = ready;
        }
    }

    fn notify(&mut self, value: u32) {
        let ready = usize::try_from(value)
            .ok()
            .and_then(|i| self.queues.get(i))
            .is_some_and(|q| q.ready);
        match u16::try_from(value) {
            Ok(queue) if self.active && ready => self.device.queue_notify(queue),
            _ => self.refuse(format_args!("notify of queue {value:#x}")),
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            return self.reset();
        }
        // A driver that adds a bit by read-modify-write echoes DEVICE_NEEDS_RESET: not its own.
        let value = value & !NEEDS_RESET;
        let old = self.status;
        if value & !DRIVER_BITS != 0 || value & old != old {
            return self.refuse(format_args!("status {value:#x} from {old:#x}"));
        }
        let added = value & !old;
        if added & FAILED != 0 {
            log::debug!("virtio-mmio: the driver gave up (status {value:#x})");
            self.status |= FAILED;
        }
        let steps = added & !FAILED;
        if steps == 0 {
            return;
        }
        if self.status & FAILED != 0 || self.interrupt.needs_reset() || !next_step(old, steps) {
            return self.refuse(format_args!("status {value:#x} from {old:#x}"));
        }
        self.status |= steps & (ACKNOWLEDGE | DRIVER);
        if steps & FEATURES_OK != 0 {
            if !self.features_acceptable() {
                let features = self.driver_features;
                return self.refuse(format_args!("features {features:#x}"));
            }
            self.status |= FEATURES_OK;
        }
        if steps & DRIVER_OK != 0 {
            match self.activate() {
                Ok(()) => self.status |= DRIVER_OK,
                Err(e) => {
                    log::debug!("virtio-mmio: activation failed: {e}");
                    self.ignored += 1;
                    self.interrupt.mark_needs_reset();
                }
            }
        }
    }

    fn features_acceptable(&self) -> bool {
        let f = self.driver_features;
        !self.driver_features_beyond
            && f & !self.offered() == 0
            && f & F_VERSION_1 != 0
            && self.device.accepts(f)
    }

    fn activate(&mut self) -> Result<(), ActivateError> {
        let mut queues = Vec::with_capacity(self.queues.len());
        for (i, q) in self.queues.iter().enumerate() {
            let queue = if q.ready {
                q.check(&self.mem)
                    .map_err(|e| ActivateError::Device(format!("queue {i}: {e}")))?
            } else {
                Queue::new(q.max_size).map_err(|e| ActivateError::Device(format!("{e:?}")))?
            };
            queues.push(queue);
        }
        self.device.activate(Activation {
            features: self.driver_features,
            queues,
            mem: self.mem.clone(),
            interrupt: self.interrupt.clone(),
        })?;
        self.active = true;
        Ok(())
    }

    /// Device reset: everything back to its state at power-on, the device told.
    fn reset(&mut self) {
        self.device.reset();
        self.active = false;
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.driver_features_beyond = false;
        self.queue_sel = 0;
        self.queues.iter_mut().for_each(QueueRegs::reset);
        self.interrupt.reset();
    }
}
