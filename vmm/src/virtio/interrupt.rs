//! A device's interrupt line and the transport state a device may change without the
//! transport's lock: `InterruptStatus`, `ConfigGeneration` and `DEVICE_NEEDS_RESET`.
//!
//! The line is an irqfd: a write to the eventfd makes KVM pulse the device's GSI (edge-triggered
//! ISA interrupt in the MP table). The vCPU threads' seccomp filter lets them write to it; the
//! VMM lists it among its device descriptors.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use virtio_bindings::virtio_mmio::{VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};
use vmm_sys_util::eventfd::EventFd;

/// One device's interrupt: cheap to clone, shared by the transport and the device.
#[derive(Debug, Clone)]
pub struct Interrupt {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    status: AtomicU32,
    generation: AtomicU32,
    needs_reset: AtomicBool,
    external_used: AtomicBool,
    irqfd: EventFd,
}

impl Interrupt {
    /// An interrupt raised by writing `irqfd` (registered with KVM for the device's GSI).
    pub fn new(irqfd: EventFd) -> Self {
        Interrupt {
            inner: Arc::new(Inner {
                status: AtomicU32::new(0),
                generation: AtomicU32::new(0),
                needs_reset: AtomicBool::new(false),
                external_used: AtomicBool::new(false),
                irqfd,
            }),
        }
    }

    /// The eventfd behind the line, e.g. to hand to a vhost-user backend as its call fd.
    pub fn irqfd(&self) -> &EventFd {
        &self.inner.irqfd
    }

    /// The device put buffers in a used ring: sets the used-buffer bit and raises the line.
    pub fn signal_used_buffer(&self) {
        self.raise(VIRTIO_MMIO_INT_VRING);
    }

    /// The device changed its configuration space: a new `ConfigGeneration`, the
    /// configuration-change bit, and the line raised.
    pub fn signal_config_change(&self) {
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        self.raise(VIRTIO_MMIO_INT_CONFIG);
    }

    /// The device failed while running: `Status` shows `DEVICE_NEEDS_RESET` until the driver
    /// resets it, and the driver is told by a configuration-change interrupt (VIRTIO 1.2, 2.1.2).
    pub fn signal_needs_reset(&self) {
        self.inner.needs_reset.store(true, Ordering::SeqCst);
        self.raise(VIRTIO_MMIO_INT_CONFIG);
    }

    /// For a device whose backend raises the line itself (a vhost-user backend writing the
    /// irqfd): the VMM never learns of used buffers, so `InterruptStatus` always shows the
    /// used-buffer bit while this is on, and the driver checks its queues on every interrupt
    /// (Linux finds nothing new in a queue cheaply). Cleared by a reset.
    pub fn set_external_used_buffers(&self, on: bool) {
        self.inner.external_used.store(on, Ordering::SeqCst);
    }

    /// `InterruptStatus` as the driver reads it.
    pub fn status(&self) -> u32 {
        let external = self.inner.external_used.load(Ordering::SeqCst);
        self.inner.status.load(Ordering::SeqCst) | if external { VIRTIO_MMIO_INT_VRING } else { 0 }
    }

    /// `ConfigGeneration`.
    pub fn generation(&self) -> u32 {
        self.inner.generation.load(Ordering::SeqCst)
    }

    /// Whether the device asked for a reset.
    pub fn needs_reset(&self) -> bool {
        self.inner.needs_reset.load(Ordering::SeqCst)
    }

    /// Activation failed: `DEVICE_NEEDS_RESET` without an interrupt (`DRIVER_OK` is not set).
    pub(crate) fn mark_needs_reset(&self) {
        self.inner.needs_reset.store(true, Ordering::SeqCst);
    }

    /// `InterruptACK`: clears the bits given.
    pub(crate) fn ack(&self, bits: u32) {
        self.inner.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// Device reset: no pending interrupt, no reset request, no external used buffers. The
    /// generation goes on counting, so a driver never sees an old value again.
    pub(crate) fn reset(&self) {
        self.inner.status.store(0, Ordering::SeqCst);
        self.inner.needs_reset.store(false, Ordering::SeqCst);
        self.inner.external_used.store(false, Ordering::SeqCst);
    }

    fn raise(&self, bit: u32) {
        self.inner.status.fetch_or(bit, Ordering::SeqCst);
        if let Err(e) = self.inner.irqfd.write(1) {
            log::warn!("virtio: cannot raise the interrupt: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    use super::*;

    #[test]
    fn bits_are_set_raised_and_acknowledged() -> std::io::Result<()> {
        let irq = Interrupt::new(EventFd::new(EFD_NONBLOCK)?);
        assert_eq!(irq.status(), 0);
        irq.signal_used_buffer();
        irq.signal_config_change();
        assert_eq!(irq.status(), 3);
        assert_eq!(irq.generation(), 1);
        assert_eq!(irq.irqfd().read()?, 2, "raised twice");
        irq.ack(VIRTIO_MMIO_INT_VRING);
        assert_eq!(irq.status(), VIRTIO_MMIO_INT_CONFIG);
        irq.set_external_used_buffers(true);
        irq.ack(3);
        assert_eq!(
            irq.status(),
            VIRTIO_MMIO_INT_VRING,
            "external used buffers stay"
        );
        irq.signal_needs_reset();
        assert!(irq.needs_reset());
        irq.reset();
        assert_eq!((irq.status(), irq.needs_reset()), (0, false));
        assert_eq!(irq.generation(), 1, "the generation survives a reset");
        Ok(())
    }
}
