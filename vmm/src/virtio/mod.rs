//! Virtio devices on the virtio-mmio transport (VIRTIO 1.2, section 4.2.2: version 2, "modern").
//!
//! Three layers, each testable without KVM:
//! - [`VirtioDevice`]: what a device model implements (its type, features, configuration space,
//!   and what it does once the driver has set it up). Issue 6's virtio-net is one.
//! - [`MmioTransport`] (`mmio.rs`): the register file the guest's driver programs: feature
//!   negotiation, queue setup, status, interrupts. It checks the driver's sequence and the
//!   queues against guest memory, and activates the device only after a valid one.
//! - [`MmioBus`] (`bus.rs`): where devices sit in guest-physical space (4 KiB windows from
//!   [`MMIO_BASE`]), their interrupt lines (GSIs from 5, delivered by irqfd), and the kernel
//!   command line that tells Linux about them (`virtio_mmio.device=4K@0xd0000000:5`).
//!
//! The guest is hostile: any offset, width or value is logged and ignored (reads give 0), never
//! a panic, and a device sees guest queues only after they were checked ([`queue`]).

mod bus;
mod interrupt;
mod mmio;
pub mod net;
pub mod queue;

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

pub use bus::{GSIS, MMIO_BASE, MmioBus, WINDOW, cmdline_fragment, window};
pub use interrupt::Interrupt;
pub use mmio::{CONFIG_START, MAGIC, MmioTransport, VENDOR_ID, VERSION, queue_regs};
pub use virtio_queue::{Queue, QueueT};

/// Status bits (VIRTIO 1.2, 2.1) and feature bits the transport itself deals in.
pub mod status {
    use virtio_bindings::virtio_config as c;

    /// The guest noticed the device.
    pub const ACKNOWLEDGE: u32 = c::VIRTIO_CONFIG_S_ACKNOWLEDGE;
    /// The guest knows how to drive it.
    pub const DRIVER: u32 = c::VIRTIO_CONFIG_S_DRIVER;
    /// The driver finished feature negotiation (set by the device only if it accepts them).
    pub const FEATURES_OK: u32 = c::VIRTIO_CONFIG_S_FEATURES_OK;
    /// The driver is ready: the device may use its queues.
    pub const DRIVER_OK: u32 = c::VIRTIO_CONFIG_S_DRIVER_OK;
    /// The device failed and needs a reset (set by the device).
    pub const NEEDS_RESET: u32 = c::VIRTIO_CONFIG_S_NEEDS_RESET;
    /// The driver gave up on the device.
    pub const FAILED: u32 = c::VIRTIO_CONFIG_S_FAILED;
}

/// `VIRTIO_F_VERSION_1` (bit 32): the device is modern. Always offered, and required.
pub const F_VERSION_1: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;

/// What a device gets when the driver sets `DRIVER_OK` after a valid sequence.
#[derive(Debug)]
#[non_exhaustive]
pub struct Activation {
    /// The features both sides agreed on (always with [`F_VERSION_1`]).
    pub features: u64,
    /// One per queue the device declared, in order; [`QueueT::ready`] says whether the driver
    /// set it up. A ready queue's size and rings were checked against guest memory.
    pub queues: Vec<Queue>,
    /// Guest memory, to map the queues (or share with a backend: it is one memfd).
    pub mem: GuestMemoryMmap,
    /// The device's interrupt line and `InterruptStatus`.
    pub interrupt: Interrupt,
}

/// Why a device refused to start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ActivateError {
    /// A queue the device needs was not set up by the driver.
    #[error("queue {0} is not ready")]
    QueueNotReady(u16),
    /// The device's own reason.
    #[error("{0}")]
    Device(String),
}

/// Why a device cannot be put on the bus.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VirtioError {
    /// A queue's maximum size is zero, above 32768 or not a power of two.
    #[error("device type {device}: queue {queue} has a bad maximum size {size}")]
    QueueMaxSize {
        /// The device type.
        device: u32,
        /// The queue.
        queue: usize,
        /// Its declared maximum.
        size: u16,
    },
    /// More devices than [`GSIS`] has interrupt lines.
    #[error("{0} virtio devices; this VMM has interrupt lines for {n}", n = GSIS.len())]
    TooMany(usize),
}

/// A virtio device model behind the transport. The transport calls it with its own lock held,
/// from the vCPU thread whose access caused the call: methods should be quick and never block on
/// the guest.
pub trait VirtioDevice: Send + std::fmt::Debug {
    /// The device type (VIRTIO 1.2, 5): 1 for a network card. Zero is not a device.
    fn device_type(&self) -> u32;

    /// The maximum size of each queue, one entry per queue: powers of two up to 32768.
    fn queue_max_sizes(&self) -> &[u16];

    /// The feature bits the device offers. The transport adds [`F_VERSION_1`].
    fn features(&self) -> u64;

    /// Whether the device accepts `features` (a subset of what it offered, with
    /// [`F_VERSION_1`]): the place to refuse combinations the device's section forbids. When it
    /// does not, the driver's `FEATURES_OK` is not set.
    fn accepts(&self, features: u64) -> bool {
        let _ = features;
        true
    }

    /// Reads the device-specific configuration space at `offset` (from 0) into `data` (1, 2, 4
    /// or 8 bytes, any offset). Bytes beyond the space read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// A driver's write to the configuration space; ignore what is read-only or out of range.
    fn write_config(&mut self, offset: u64, data: &[u8]);

    /// The driver set `DRIVER_OK` after a valid sequence: start using the queues.
    ///
    /// # Errors
    /// [`ActivateError`]: the transport then sets `DEVICE_NEEDS_RESET` instead of `DRIVER_OK`.
    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError>;

    /// The driver wrote `QueueNotify` for `queue` (a ready queue of an active device). Devices
    /// whose kicks go to an ioeventfd see this only if the guest bypasses it.
    fn queue_notify(&mut self, queue: u16);

    /// The driver wrote 0 to `Status`: stop using the queues and forget the features. Called on
    /// every reset, activated or not.
    fn reset(&mut self);

    /// Called once when the VM is built, before any guest code runs, with the eventfd that
    /// raises the device's interrupt line (an irqfd): for a device that hands it to a backend.
    ///
    /// # Errors
    /// The VM is not built.
    fn wire(&mut self, irqfd: &EventFd) -> std::io::Result<()> {
        let _ = irqfd;
        Ok(())
    }

    /// Eventfds KVM should signal when the guest writes a queue's index to `QueueNotify`
    /// (ioeventfds, registered when the VM is built), for devices whose queues another process
    /// serves. Such kicks never reach [`VirtioDevice::queue_notify`].
    fn kick_fds(&self) -> Vec<(u16, &EventFd)> {
        Vec::new()
    }

    /// Sockets the device talks on from the vCPU threads (at activation and reset), for the
    /// seccomp filter.
    fn socket_fds(&self) -> Vec<std::os::fd::RawFd> {
        Vec::new()
    }
}
