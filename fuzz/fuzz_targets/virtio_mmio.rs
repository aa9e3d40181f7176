//! The virtio-mmio transport (`kaos_vmm::virtio::MmioTransport`) under any sequence of guest
//! accesses and device events: never panics, keeps its status to defined bits in the spec's
//! order, and activates its device only by a `DRIVER_OK` write after `ACKNOWLEDGE`, `DRIVER` and
//! an accepted `FEATURES_OK`, with no `FAILED` or `DEVICE_NEEDS_RESET`. The device checks at
//! activation that the features are a subset of its offer with `VIRTIO_F_VERSION_1`, and that
//! every ready queue is a power of two within its maximum, valid in guest memory.
//!
//! Input: records of 11 bytes, `[op, offset low, offset high, value 0..8]`. Bit 7 of `op` clear:
//! an access at `offset & 0x1fff` (beyond the 4 KiB window too), a write if bit 0 is set, of
//! `[0, 1, 2, 3, 4, 4, 4, 8][(op >> 1) & 7]` bytes of `value`. Bit 7 set: the active device
//! raises a used-buffer (`op & 3 == 0`), configuration-change (1) or needs-reset (2) interrupt,
//! or turns external used buffers on or off (3, by bit 2).
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};

use kaos_vmm::virtio::status::{ACKNOWLEDGE, DRIVER, DRIVER_OK, FAILED, FEATURES_OK, NEEDS_RESET};
use kaos_vmm::virtio::{
    ActivateError, Activation, F_VERSION_1, Interrupt, MmioTransport, QueueT, VirtioDevice,
};
use libfuzzer_sys::fuzz_target;
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

const OFFERED: u64 = 0b1011 | (1 << 40);
const MAX_SIZES: [u16; 2] = [256, 16];
const STATUS: u64 = 0x70;
const STEPS: u32 = ACKNOWLEDGE | DRIVER | FEATURES_OK;

#[derive(Debug, Default)]
struct Seen {
    activations: usize,
    interrupt: Option<Interrupt>,
}

#[derive(Debug)]
struct Device(Arc<Mutex<Seen>>);

impl VirtioDevice for Device {
    fn device_type(&self) -> u32 {
        42
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &MAX_SIZES
    }
    fn features(&self) -> u64 {
        OFFERED
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in (0u64..).zip(data.iter_mut()) {
            *b = u8::try_from(offset.wrapping_add(i) & 0xff).unwrap_or(0);
        }
    }
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
        assert_ne!(a.features & F_VERSION_1, 0, "activated without VERSION_1");
        assert_eq!(
            a.features & !(OFFERED | F_VERSION_1),
            0,
            "unoffered features"
        );
        for q in a.queues.iter().filter(|q| q.ready()) {
            assert!(q.is_valid(&a.mem), "ready but invalid: {q:?}");
            assert!(q.size().is_power_of_two() && q.size() <= q.max_size());
        }
        let mut seen = self.0.lock().expect("not poisoned");
        seen.activations += 1;
        seen.interrupt = Some(a.interrupt);
        Ok(())
    }
    fn queue_notify(&mut self, _queue: u16) {}
    fn reset(&mut self) {
        self.0.lock().expect("not poisoned").interrupt = None;
    }
}

fn memory() -> &'static GuestMemoryMmap {
    static MEM: OnceLock<GuestMemoryMmap> = OnceLock::new();
    MEM.get_or_init(|| {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).expect("1 MiB")
    })
}

fn event(op: u8, seen: &Arc<Mutex<Seen>>) {
    let irq = seen.lock().expect("not poisoned").interrupt.clone();
    let Some(irq) = irq else { return };
    match op & 3 {
        0 => irq.signal_used_buffer(),
        1 => irq.signal_config_change(),
        2 => irq.signal_needs_reset(),
        _ => irq.set_external_used_buffers(op & 4 != 0),
    }
    // Drain the eventfd so it never saturates.
    irq.irqfd().read().ok();
}

fn access(t: &mut MmioTransport, seen: &Arc<Mutex<Seen>>, record: &[u8; 11]) {
    let op = record[0];
    let offset = u64::from(u16::from_le_bytes([record[1], record[2]]) & 0x1fff);
    let len = [0, 1, 2, 3, 4, 4, 4, 8][usize::from((op >> 1) & 7)];
    if op & 1 == 0 {
        let mut data = vec![0u8; len];
        t.read(offset, &mut data);
        return;
    }
    let data = &record[3..3 + len];
    let before = t.status();
    let activations = seen.lock().expect("not poisoned").activations;
    t.write(offset, data);
    if seen.lock().expect("not poisoned").activations > activations {
        assert_eq!((offset, len), (STATUS, 4), "activated by another write");
        assert_ne!(data[0] & u8::try_from(DRIVER_OK).unwrap_or(0), 0);
        let bad = DRIVER_OK | FAILED | NEEDS_RESET;
        assert_eq!(before & (STEPS | bad), STEPS, "activated from {before:#x}");
    }
}

fn check(t: &MmioTransport) {
    let status = t.status();
    let known = STEPS | DRIVER_OK | FAILED | NEEDS_RESET;
    assert_eq!(status & !known, 0, "status {status:#x}");
    let order = status & (STEPS | DRIVER_OK);
    assert!(
        [
            0,
            ACKNOWLEDGE,
            ACKNOWLEDGE | DRIVER,
            STEPS,
            STEPS | DRIVER_OK
        ]
        .contains(&order),
        "status {status:#x} out of order"
    );
    assert_eq!(t.is_active(), status & DRIVER_OK != 0, "status {status:#x}");
}

fuzz_target!(|data: &[u8]| {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let irq = Interrupt::new(EventFd::new(EFD_NONBLOCK).expect("eventfd"));
    let device = Box::new(Device(seen.clone()));
    let mut t = MmioTransport::new(device, memory().clone(), irq).expect("valid queue sizes");
    for record in data.chunks_exact(11) {
        let record: &[u8; 11] = record.try_into().expect("11 bytes");
        if record[0] & 0x80 != 0 {
            event(record[0], &seen);
        } else {
            access(&mut t, &seen, record);
        }
        check(&t);
    }
});
