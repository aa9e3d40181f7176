//! A hostile guest against the virtio-mmio transport: random offsets, widths and values from a
//! fixed-seed generator, alone and mixed into a driver's sequence. Nothing may panic, and the
//! device may be activated only by a `DRIVER_OK` write after `ACKNOWLEDGE`, `DRIVER` and an
//! accepted `FEATURES_OK`, with no `FAILED` or `DEVICE_NEEDS_RESET` (the test device itself
//! checks, at activation, the features and that every ready queue is valid in guest memory).

mod common;

use common::{OFFERED, TestDevice, record, reg, transport_with, w32, w64, write_features};
use kaos_vmm::virtio::status::{ACKNOWLEDGE, DRIVER, DRIVER_OK, FAILED, FEATURES_OK, NEEDS_RESET};
use kaos_vmm::virtio::{F_VERSION_1, MmioTransport};

/// xorshift64*: small, fast, and the same sequence on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn value(&mut self) -> u64 {
        match self.below(4) {
            0 => self.next(),
            1 => self.next() & 0xffff_ffff,
            _ => self.pick(&[
                0,
                1,
                2,
                3,
                4,
                7,
                8,
                0xb,
                0xf,
                0x40,
                0x80,
                0x8f,
                0x100,
                0x1_0000,
                0xd000_0000,
                u64::from(u32::MAX),
            ]),
        }
    }
}

const REGISTERS: [u64; 26] = [
    reg::MAGIC,
    reg::VERSION,
    reg::DEVICE_ID,
    reg::VENDOR_ID,
    reg::DEVICE_FEATURES,
    reg::DEVICE_FEATURES_SEL,
    reg::DRIVER_FEATURES,
    reg::DRIVER_FEATURES_SEL,
    reg::QUEUE_SEL,
    reg::QUEUE_NUM_MAX,
    reg::QUEUE_NUM,
    reg::QUEUE_READY,
    reg::QUEUE_NOTIFY,
    reg::INTERRUPT_STATUS,
    reg::INTERRUPT_ACK,
    reg::STATUS,
    reg::STATUS,
    reg::QUEUE_DESC_LOW,
    reg::QUEUE_DESC_HIGH,
    reg::QUEUE_DRIVER_LOW,
    reg::QUEUE_DRIVER_HIGH,
    reg::QUEUE_DEVICE_LOW,
    reg::QUEUE_DEVICE_HIGH,
    reg::SHM_SEL,
    reg::CONFIG_GENERATION,
    reg::CONFIG,
];

/// One random access; a write to `Status` is checked against the activation rule.
fn random_access(t: &mut MmioTransport, shared: &common::Shared, rng: &mut Rng) {
    let offset = match rng.below(8) {
        0 => rng.next() % 0x1000,
        1 => rng.pick(&REGISTERS) + rng.next() % 4,
        _ => rng.pick(&REGISTERS),
    };
    let len = rng.pick(&[0, 1, 2, 3, 4, 4, 4, 4, 4, 4, 8, 16]);
    let bytes = rng.value().to_le_bytes();
    if rng.below(2) == 0 {
        let mut data = vec![0u8; len];
        t.read(offset, &mut data);
    } else {
        let data: Vec<u8> = bytes.iter().copied().cycle().take(len).collect();
        checked_write(t, shared, offset, &data);
    }
}

/// Writes, then asserts that an activation happened only where the rule allows one.
fn checked_write(t: &mut MmioTransport, shared: &common::Shared, offset: u64, data: &[u8]) {
    let before = t.status();
    let activations = record(shared).activations.len();
    t.write(offset, data);
    let activated = record(shared).activations.len() > activations;
    if activated {
        let value = <[u8; 4]>::try_from(data).map(u32::from_le_bytes);
        assert_eq!(offset, reg::STATUS, "activated by a write to {offset:#x}");
        assert!(
            value.is_ok_and(|v| v & DRIVER_OK != 0),
            "activated without DRIVER_OK"
        );
        let steps = ACKNOWLEDGE | DRIVER | FEATURES_OK;
        let bad = DRIVER_OK | FAILED | NEEDS_RESET;
        assert_eq!(
            before & (steps | bad),
            steps,
            "activated from status {before:#x}"
        );
    }
    check_invariants(t);
}

fn check_invariants(t: &MmioTransport) {
    let status = t.status();
    let known = ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK | FAILED | NEEDS_RESET;
    assert_eq!(status & !known, 0, "status {status:#x}");
    if t.is_active() {
        let steps = ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK;
        assert_eq!(status & steps, steps, "active with status {status:#x}");
    }
    if status & FEATURES_OK != 0 {
        assert_eq!(status & (ACKNOWLEDGE | DRIVER), ACKNOWLEDGE | DRIVER);
    }
}

/// A driver's sequence whose every step may be garbled or skipped, with noise in between.
fn shaky_driver(t: &mut MmioTransport, shared: &common::Shared, rng: &mut Rng) {
    let step = |t: &mut MmioTransport, offset: u64, value: u32, rng: &mut Rng| {
        if rng.below(12) == 0 {
            random_access(t, shared, rng);
        }
        let value = if rng.below(16) == 0 {
            u32::try_from(rng.value() & 0xffff_ffff).unwrap_or(0)
        } else {
            value
        };
        if rng.below(24) != 0 {
            checked_write(t, shared, offset, &value.to_le_bytes());
        }
    };
    step(t, reg::STATUS, 0, rng);
    step(t, reg::STATUS, ACKNOWLEDGE, rng);
    step(t, reg::STATUS, ACKNOWLEDGE | DRIVER, rng);
    let features = if rng.below(4) == 0 {
        rng.next()
    } else {
        F_VERSION_1 | (rng.next() & OFFERED)
    };
    if rng.below(8) != 0 {
        write_features(t, features);
    }
    step(t, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK, rng);
    // Mostly good queues (queue 0 of the first ring layout), with bad sizes and rings mixed in.
    let queues: u32 = if rng.below(2) == 0 { 1 } else { 2 };
    for queue in 0..queues {
        step(t, reg::QUEUE_SEL, queue, rng);
        step(
            t,
            reg::QUEUE_NUM,
            rng.pick(&[1, 3, 16, 16, 64, 256, 512]),
            rng,
        );
        let base = rng.pick(&[0x1_0000, 0x1_0000, 0x1_0000, 0x1_0008, 0xf_f000, 1 << 33]);
        w64(t, reg::QUEUE_DESC_LOW, base);
        let driver = rng.pick(&[0x1000, 0x1000, 0x1000, 0x1001]);
        w64(t, reg::QUEUE_DRIVER_LOW, base + driver);
        let device = rng.pick(&[0x2000, 0x2000, 0x2000, 0x2002, 0x10_0000]);
        w64(t, reg::QUEUE_DEVICE_LOW, base + device);
        step(t, reg::QUEUE_READY, 1, rng);
    }
    step(
        t,
        reg::STATUS,
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
        rng,
    );
    let irq = record(shared).interrupt.clone();
    if let Some(irq) = irq {
        irq.signal_used_buffer();
        step(t, reg::QUEUE_NOTIFY, 0, rng);
        step(t, reg::INTERRUPT_ACK, 1, rng);
    }
}

#[test]
fn random_accesses_never_panic_nor_activate_the_device() {
    let (device, shared) = TestDevice::new();
    let mut t = transport_with(device);
    let mut rng = Rng(0x6b61_6f73_2d72_7321);
    for _ in 0..200_000 {
        random_access(&mut t, &shared, &mut rng);
    }
    assert!(
        t.ignored() > 100_000,
        "most of the noise is refused: {}",
        t.ignored()
    );
    let mut d = [0; 4];
    t.read(reg::MAGIC, &mut d);
    assert_eq!(
        u32::from_le_bytes(d),
        0x7472_6976,
        "the transport still answers"
    );
}

#[test]
fn a_shaky_driver_activates_the_device_only_through_valid_sequences() {
    let (device, shared) = TestDevice::new();
    let mut t = transport_with(device);
    let mut rng = Rng(0x005e_ed0f_5ba6_a11e);
    for _ in 0..20_000 {
        shaky_driver(&mut t, &shared, &mut rng);
    }
    let r = record(&shared);
    let n = r.activations.len();
    eprintln!(
        "{n} activations, {} resets, {} refusals",
        r.resets,
        t.ignored()
    );
    assert!(n > 1000, "only {n} activations");
    assert!(r.resets > 1000, "only {} resets", r.resets);
    assert!(t.ignored() > 1000, "only {} refusals", t.ignored());
}

#[test]
fn a_good_driver_still_works_after_the_noise() {
    let (device, shared) = TestDevice::new();
    let mut t = transport_with(device);
    let mut rng = Rng(7);
    for _ in 0..50_000 {
        random_access(&mut t, &shared, &mut rng);
    }
    let before = record(&shared).activations.len();
    w32(&mut t, reg::INTERRUPT_ACK, u32::MAX);
    assert_eq!(
        common::bring_up(&mut t),
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK
    );
    assert_eq!(record(&shared).activations.len(), before + 1);
}
