//! A virtio device for tests: it records what the transport asks of it and checks, at
//! activation, that it was handed only what a valid driver sequence can produce.

// Each test crate uses part of this module.
#![allow(dead_code)]

pub mod code;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use kaos_vmm::virtio::{ActivateError, Activation, F_VERSION_1, Interrupt, QueueT, VirtioDevice};

/// The test device's type (no real device uses it).
pub const TEST_DEVICE_TYPE: u32 = 42;
/// What it offers: bits 0, 1 and 3, and bit 40 in the second page.
pub const OFFERED: u64 = 0b1011 | (1 << 40);
/// Its queues' maximum sizes.
pub const MAX_SIZES: [u16; 2] = [256, 16];
/// Its configuration space: 16 bytes, 0xa0 to 0xaf.
pub const CONFIG: [u8; 16] = [
    0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf,
];

/// One queue as the device received it: size and the three ring addresses.
pub type QueueSeen = (u16, u64, u64, u64);

/// What the transport asked of the device.
#[derive(Debug, Default)]
pub struct Record {
    /// Each activation: the features and each queue (`None` when not ready).
    pub activations: Vec<(u64, Vec<Option<QueueSeen>>)>,
    /// Queue notifications.
    pub notifies: Vec<u16>,
    /// Resets.
    pub resets: usize,
    /// Configuration writes.
    pub config_writes: Vec<(u64, Vec<u8>)>,
    /// The interrupt of the current activation.
    pub interrupt: Option<Interrupt>,
}

/// The record, shared between a test and its device.
pub type Shared = Arc<Mutex<Record>>;

/// Locks the record.
pub fn record(shared: &Shared) -> MutexGuard<'_, Record> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The device.
#[derive(Debug)]
pub struct TestDevice {
    record: Shared,
    config: [u8; 16],
    /// Refuse activation unless queue 0 is ready.
    pub needs_queue0: bool,
    /// Refuse feature sets holding any of these bits.
    pub refused_features: u64,
}

impl TestDevice {
    /// A device needing queue 0, refusing nothing it offers.
    pub fn new() -> (Self, Shared) {
        let record = Shared::default();
        let device = TestDevice {
            record: record.clone(),
            config: CONFIG,
            needs_queue0: true,
            refused_features: 0,
        };
        (device, record)
    }
}

impl VirtioDevice for TestDevice {
    fn device_type(&self) -> u32 {
        TEST_DEVICE_TYPE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &MAX_SIZES
    }

    fn features(&self) -> u64 {
        OFFERED
    }

    fn accepts(&self, features: u64) -> bool {
        features & self.refused_features == 0
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in (0u64..).zip(data.iter_mut()) {
            let at = offset.checked_add(i).and_then(|o| usize::try_from(o).ok());
            *b = at.and_then(|o| self.config.get(o)).copied().unwrap_or(0);
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        record(&self.record)
            .config_writes
            .push((offset, data.to_vec()));
    }

    fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
        assert_ne!(a.features & F_VERSION_1, 0, "activated without VERSION_1");
        assert_eq!(
            a.features & !(OFFERED | F_VERSION_1),
            0,
            "unoffered features"
        );
        assert_eq!(a.queues.len(), MAX_SIZES.len());
        let mut seen = Vec::new();
        for q in &a.queues {
            if q.ready() {
                assert!(q.is_valid(&a.mem), "a ready queue that is not valid: {q:?}");
                assert!(q.size().is_power_of_two() && q.size() <= q.max_size());
                seen.push(Some((
                    q.size(),
                    q.desc_table(),
                    q.avail_ring(),
                    q.used_ring(),
                )));
            } else {
                seen.push(None);
            }
        }
        if self.needs_queue0 && seen[0].is_none() {
            return Err(ActivateError::QueueNotReady(0));
        }
        let mut r = record(&self.record);
        r.activations.push((a.features, seen));
        r.interrupt = Some(a.interrupt);
        Ok(())
    }

    fn queue_notify(&mut self, queue: u16) {
        record(&self.record).notifies.push(queue);
    }

    fn reset(&mut self) {
        let mut r = record(&self.record);
        r.resets += 1;
        r.interrupt = None;
    }
}

/// Guest RAM for transport tests: 1 MiB at 0.
pub const RAM: usize = 0x10_0000;

/// A transport with a fresh [`TestDevice`] over 1 MiB of guest memory.
pub fn transport_with(device: TestDevice) -> kaos_vmm::virtio::MmioTransport {
    use vm_memory::{GuestAddress, GuestMemoryMmap};
    use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM)]).expect("guest memory");
    let irq = Interrupt::new(EventFd::new(EFD_NONBLOCK).expect("eventfd"));
    kaos_vmm::virtio::MmioTransport::new(Box::new(device), mem, irq).expect("transport")
}

/// A 32-bit register read.
pub fn r32(t: &mut kaos_vmm::virtio::MmioTransport, offset: u64) -> u32 {
    let mut d = [0xee; 4];
    t.read(offset, &mut d);
    u32::from_le_bytes(d)
}

/// A 32-bit register write.
pub fn w32(t: &mut kaos_vmm::virtio::MmioTransport, offset: u64, value: u32) {
    t.write(offset, &value.to_le_bytes());
}

/// Register offsets.
pub mod reg {
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const SHM_SEL: u64 = 0x0ac;
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// Writes a 64-bit value to a low/high register pair.
pub fn w64(t: &mut kaos_vmm::virtio::MmioTransport, low: u64, value: u64) {
    w32(t, low, u32::try_from(value & 0xffff_ffff).unwrap_or(0));
    w32(t, low + 4, u32::try_from(value >> 32).unwrap_or(0));
}

/// Writes both pages of the driver's features.
pub fn write_features(t: &mut kaos_vmm::virtio::MmioTransport, features: u64) {
    for page in 0..2u32 {
        w32(t, reg::DRIVER_FEATURES_SEL, page);
        let half = if page == 0 {
            features & 0xffff_ffff
        } else {
            features >> 32
        };
        w32(t, reg::DRIVER_FEATURES, u32::try_from(half).unwrap_or(0));
    }
}

/// Reset, `ACKNOWLEDGE`, `DRIVER`, `features`, then `FEATURES_OK`; the status read back.
pub fn negotiate(t: &mut kaos_vmm::virtio::MmioTransport, features: u64) -> u32 {
    use kaos_vmm::virtio::status::{ACKNOWLEDGE, DRIVER, FEATURES_OK};
    w32(t, reg::STATUS, 0);
    w32(t, reg::STATUS, ACKNOWLEDGE);
    w32(t, reg::STATUS, ACKNOWLEDGE | DRIVER);
    write_features(t, features);
    w32(t, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    r32(t, reg::STATUS)
}

/// Sets up queue `index` with `size` entries and rings at `desc`, `desc + 0x1000` and
/// `desc + 0x2000`, then writes `QueueReady`; what `QueueReady` reads back.
pub fn setup_queue(
    t: &mut kaos_vmm::virtio::MmioTransport,
    index: u32,
    size: u32,
    desc: u64,
) -> u32 {
    w32(t, reg::QUEUE_SEL, index);
    w32(t, reg::QUEUE_NUM, size);
    w64(t, reg::QUEUE_DESC_LOW, desc);
    w64(t, reg::QUEUE_DRIVER_LOW, desc + 0x1000);
    w64(t, reg::QUEUE_DEVICE_LOW, desc + 0x2000);
    w32(t, reg::QUEUE_READY, 1);
    r32(t, reg::QUEUE_READY)
}

/// The whole sequence of a good driver: features (with VERSION_1), queue 0 of 128 entries at
/// 0x10000, `DRIVER_OK`; the status read back.
pub fn bring_up(t: &mut kaos_vmm::virtio::MmioTransport) -> u32 {
    use kaos_vmm::virtio::status::{ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK};
    negotiate(t, F_VERSION_1 | 1);
    setup_queue(t, 0, 128, 0x1_0000);
    w32(
        t,
        reg::STATUS,
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
    );
    r32(t, reg::STATUS)
}
