//! Register semantics of the virtio-mmio transport (VIRTIO 1.2, 4.2.2), driven as a guest
//! driver would, with a device that records what it is asked ([`common::TestDevice`]).

mod common;

use common::{
    CONFIG, MAX_SIZES, OFFERED, TEST_DEVICE_TYPE, TestDevice, bring_up, negotiate, r32, record,
    reg, setup_queue, transport_with, w32, w64, write_features,
};
use kaos_vmm::virtio::status::{ACKNOWLEDGE, DRIVER, DRIVER_OK, FAILED, FEATURES_OK, NEEDS_RESET};
use kaos_vmm::virtio::{F_VERSION_1, MmioTransport, VENDOR_ID};

fn fresh() -> (MmioTransport, common::Shared) {
    let (device, shared) = TestDevice::new();
    (transport_with(device), shared)
}

const ALL_STEPS: u32 = ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK;

#[test]
fn identity_registers() {
    let (mut t, _) = fresh();
    assert_eq!(r32(&mut t, reg::MAGIC), 0x7472_6976);
    assert_eq!(r32(&mut t, reg::VERSION), 2);
    assert_eq!(r32(&mut t, reg::DEVICE_ID), TEST_DEVICE_TYPE);
    assert_eq!(r32(&mut t, reg::VENDOR_ID), VENDOR_ID);
    assert_eq!(r32(&mut t, reg::STATUS), 0);
    assert_eq!(
        r32(&mut t, reg::SHM_LEN_LOW),
        u32::MAX,
        "no shared memory region"
    );
    w32(&mut t, reg::MAGIC, 0);
    assert_eq!(r32(&mut t, reg::MAGIC), 0x7472_6976, "read-only");
    assert_eq!(t.ignored(), 1);
}

#[test]
fn device_features_come_in_pages_with_version_1() {
    let (mut t, _) = fresh();
    assert_eq!(
        r32(&mut t, reg::DEVICE_FEATURES),
        0b1011,
        "page 0 by default"
    );
    w32(&mut t, reg::DEVICE_FEATURES_SEL, 1);
    assert_eq!(
        r32(&mut t, reg::DEVICE_FEATURES),
        1 | (1 << 8),
        "VERSION_1 and bit 40"
    );
    w32(&mut t, reg::DEVICE_FEATURES_SEL, 2);
    assert_eq!(r32(&mut t, reg::DEVICE_FEATURES), 0);
    w32(&mut t, reg::DEVICE_FEATURES_SEL, u32::MAX);
    assert_eq!(r32(&mut t, reg::DEVICE_FEATURES), 0);
}

#[test]
fn offered_features_are_accepted() {
    let (mut t, _) = fresh();
    let status = negotiate(&mut t, F_VERSION_1 | OFFERED);
    assert_eq!(status, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    let (mut t, _) = fresh();
    assert_eq!(
        negotiate(&mut t, F_VERSION_1),
        ACKNOWLEDGE | DRIVER | FEATURES_OK
    );
}

#[test]
fn features_the_device_did_not_offer_are_refused_at_features_ok() {
    let refused = [
        F_VERSION_1 | (1 << 2), // not offered
        F_VERSION_1 | (1 << 63),
        1,       // no VERSION_1
        OFFERED, // no VERSION_1 either
    ];
    for features in refused {
        let (mut t, _) = fresh();
        let status = negotiate(&mut t, features);
        assert_eq!(status, ACKNOWLEDGE | DRIVER, "{features:#x} accepted");
        w32(&mut t, reg::STATUS, ALL_STEPS);
        assert_eq!(r32(&mut t, reg::STATUS) & DRIVER_OK, 0);
        assert!(!t.is_active());
    }
    // A bit in a page beyond 64 is never offered.
    let (mut t, _) = fresh();
    w32(&mut t, reg::STATUS, ACKNOWLEDGE);
    w32(&mut t, reg::STATUS, ACKNOWLEDGE | DRIVER);
    write_features(&mut t, F_VERSION_1);
    w32(&mut t, reg::DRIVER_FEATURES_SEL, 2);
    w32(&mut t, reg::DRIVER_FEATURES, 1);
    w32(&mut t, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    assert_eq!(r32(&mut t, reg::STATUS), ACKNOWLEDGE | DRIVER);
}

#[test]
fn the_device_may_refuse_a_combination() {
    let (mut device, _) = TestDevice::new();
    device.refused_features = 1 << 3;
    let mut t = transport_with(device);
    assert_eq!(
        negotiate(&mut t, F_VERSION_1 | 0b1000),
        ACKNOWLEDGE | DRIVER
    );
    assert_eq!(
        negotiate(&mut t, F_VERSION_1 | 0b11),
        ACKNOWLEDGE | DRIVER | FEATURES_OK,
        "the same transport after a reset"
    );
}

#[test]
fn driver_features_are_taken_only_during_negotiation() {
    let (mut t, _) = fresh();
    write_features(&mut t, F_VERSION_1); // before DRIVER: ignored
    w32(&mut t, reg::STATUS, ACKNOWLEDGE);
    w32(&mut t, reg::STATUS, ACKNOWLEDGE | DRIVER);
    w32(&mut t, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    assert_eq!(
        r32(&mut t, reg::STATUS),
        ACKNOWLEDGE | DRIVER,
        "no VERSION_1 was taken"
    );
    assert_eq!(
        negotiate(&mut t, F_VERSION_1),
        ACKNOWLEDGE | DRIVER | FEATURES_OK
    );
    let before = t.ignored();
    write_features(&mut t, F_VERSION_1 | 1); // after FEATURES_OK: ignored
    assert_eq!(t.ignored(), before + 2);
}

#[test]
fn queue_sizes_must_be_powers_of_two_within_the_maximum() {
    let (mut t, _) = fresh();
    negotiate(&mut t, F_VERSION_1);
    for (i, &max) in MAX_SIZES.iter().enumerate() {
        w32(&mut t, reg::QUEUE_SEL, u32::try_from(i).unwrap_or(0));
        assert_eq!(r32(&mut t, reg::QUEUE_NUM_MAX), u32::from(max));
        assert_eq!(r32(&mut t, reg::QUEUE_READY), 0);
    }
    w32(&mut t, reg::QUEUE_SEL, 2);
    assert_eq!(r32(&mut t, reg::QUEUE_NUM_MAX), 0, "no such queue");
    assert_eq!(setup_queue(&mut t, 2, 16, 0x1_0000), 0);
    for bad in [0, 3, 100, 512, 0x1_0000, u32::MAX] {
        assert_eq!(setup_queue(&mut t, 0, bad, 0x1_0000), 0, "size {bad}");
    }
    assert_eq!(
        setup_queue(&mut t, 1, 32, 0x1_0000),
        0,
        "above queue 1's maximum"
    );
    assert_eq!(setup_queue(&mut t, 1, 16, 0x1_0000), 1);
    assert_eq!(setup_queue(&mut t, 0, 1, 0x2_0000), 1);
}

#[test]
fn queue_rings_must_be_aligned_and_in_guest_memory() {
    let (mut t, _) = fresh();
    negotiate(&mut t, F_VERSION_1);
    assert_eq!(
        setup_queue(&mut t, 0, 16, 0x1_0008),
        0,
        "descriptor table misaligned"
    );
    assert_eq!(
        setup_queue(&mut t, 0, 16, common::RAM as u64),
        0,
        "beyond RAM"
    );
    assert_eq!(
        setup_queue(&mut t, 0, 16, 0xd000_0000),
        0,
        "in the MMIO hole"
    );
    assert_eq!(setup_queue(&mut t, 0, 16, 1 << 40), 0, "high half");
    w32(&mut t, reg::QUEUE_SEL, 0);
    w64(&mut t, reg::QUEUE_DESC_LOW, 0x1_0000);
    w64(&mut t, reg::QUEUE_DRIVER_LOW, 0x2_0001);
    w32(&mut t, reg::QUEUE_READY, 1);
    assert_eq!(r32(&mut t, reg::QUEUE_READY), 0, "driver area misaligned");
    w64(&mut t, reg::QUEUE_DRIVER_LOW, 0x2_0000);
    w64(&mut t, reg::QUEUE_DEVICE_LOW, 0x3_0002);
    w32(&mut t, reg::QUEUE_READY, 1);
    assert_eq!(r32(&mut t, reg::QUEUE_READY), 0, "device area misaligned");
    w64(&mut t, reg::QUEUE_DEVICE_LOW, 0x3_0000);
    w32(&mut t, reg::QUEUE_READY, 1);
    assert_eq!(r32(&mut t, reg::QUEUE_READY), 1);
}

#[test]
fn queue_registers_are_taken_only_between_features_ok_and_driver_ok() {
    let (mut t, shared) = fresh();
    w32(&mut t, reg::STATUS, ACKNOWLEDGE | DRIVER);
    assert_eq!(
        setup_queue(&mut t, 0, 16, 0x1_0000),
        0,
        "before FEATURES_OK"
    );
    negotiate(&mut t, F_VERSION_1);
    assert_eq!(setup_queue(&mut t, 0, 16, 0x1_0000), 1);
    // A ready queue keeps its setup.
    w32(&mut t, reg::QUEUE_NUM, 8);
    w64(&mut t, reg::QUEUE_DESC_LOW, 0x8_0000);
    w32(&mut t, reg::STATUS, ALL_STEPS);
    assert!(t.is_active());
    let r = record(&shared);
    assert_eq!(
        r.activations[0].1[0],
        Some((16, 0x1_0000, 0x1_1000, 0x1_2000))
    );
    assert_eq!(r.activations[0].1[1], None, "queue 1 was never set up");
    drop(r);
    // After DRIVER_OK, queues cannot change.
    assert_eq!(setup_queue(&mut t, 1, 16, 0x4_0000), 0);
    w32(&mut t, reg::QUEUE_SEL, 0);
    w32(&mut t, reg::QUEUE_READY, 0);
    assert_eq!(r32(&mut t, reg::QUEUE_READY), 1);
}

#[test]
fn the_device_is_activated_once_after_a_valid_sequence() {
    let (mut t, shared) = fresh();
    assert_eq!(bring_up(&mut t), ALL_STEPS);
    assert!(t.is_active());
    let r = record(&shared);
    assert_eq!(r.activations.len(), 1);
    assert_eq!(
        r.activations[0].0,
        F_VERSION_1 | 1,
        "the negotiated features"
    );
    drop(r);
    w32(&mut t, reg::STATUS, ALL_STEPS);
    assert_eq!(
        record(&shared).activations.len(),
        1,
        "DRIVER_OK again changes nothing"
    );
}

#[test]
fn driver_ok_without_features_ok_is_refused() {
    let (mut t, shared) = fresh();
    w32(&mut t, reg::STATUS, ACKNOWLEDGE);
    w32(&mut t, reg::STATUS, ACKNOWLEDGE | DRIVER);
    w32(&mut t, reg::STATUS, ACKNOWLEDGE | DRIVER | DRIVER_OK);
    assert_eq!(r32(&mut t, reg::STATUS), ACKNOWLEDGE | DRIVER);
    // Features refused, then DRIVER_OK anyway.
    negotiate(&mut t, 1);
    w32(
        &mut t,
        reg::STATUS,
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
    );
    assert_eq!(r32(&mut t, reg::STATUS), ACKNOWLEDGE | DRIVER);
    assert!(!t.is_active());
    assert!(record(&shared).activations.is_empty());
}

#[test]
fn a_device_refusing_activation_needs_a_reset() {
    let (mut t, shared) = fresh();
    negotiate(&mut t, F_VERSION_1);
    w32(&mut t, reg::STATUS, ALL_STEPS); // queue 0, which the device needs, is not ready
    assert_eq!(
        r32(&mut t, reg::STATUS),
        ACKNOWLEDGE | DRIVER | FEATURES_OK | NEEDS_RESET
    );
    assert!(!t.is_active());
    assert_eq!(setup_queue(&mut t, 0, 16, 0x1_0000), 1);
    w32(&mut t, reg::STATUS, ALL_STEPS);
    assert!(
        !t.is_active(),
        "nothing but a reset clears DEVICE_NEEDS_RESET"
    );
    // Linux adds FAILED by read-modify-write, echoing DEVICE_NEEDS_RESET.
    let echoed = r32(&mut t, reg::STATUS) | FAILED;
    w32(&mut t, reg::STATUS, echoed);
    assert_eq!(r32(&mut t, reg::STATUS), echoed);
    assert_eq!(bring_up(&mut t), ALL_STEPS);
    assert_eq!(record(&shared).activations.len(), 1);
}

#[test]
fn status_steps_must_follow_the_sequence() {
    let (mut t, _) = fresh();
    let refused = [
        DRIVER,
        FEATURES_OK,
        DRIVER_OK,
        NEEDS_RESET,
        0x10,
        0x20,
        ACKNOWLEDGE | 0x100,
    ];
    for value in refused {
        w32(&mut t, reg::STATUS, value);
        assert_eq!(r32(&mut t, reg::STATUS), 0, "{value:#x} from 0");
    }
    w32(&mut t, reg::STATUS, ACKNOWLEDGE | DRIVER);
    assert_eq!(
        r32(&mut t, reg::STATUS),
        ACKNOWLEDGE | DRIVER,
        "two steps at once"
    );
    w32(&mut t, reg::STATUS, ACKNOWLEDGE);
    assert_eq!(
        r32(&mut t, reg::STATUS),
        ACKNOWLEDGE | DRIVER,
        "a bit cannot be cleared"
    );
    w32(&mut t, reg::STATUS, ACKNOWLEDGE | DRIVER | DRIVER_OK);
    assert_eq!(
        r32(&mut t, reg::STATUS),
        ACKNOWLEDGE | DRIVER,
        "a step skipped"
    );
}

#[test]
fn features_ok_and_driver_ok_each_need_a_write_of_their_own() {
    let (mut device, shared) = TestDevice::new();
    device.needs_queue0 = false;
    let mut t = transport_with(device);
    w32(&mut t, reg::STATUS, ACKNOWLEDGE | DRIVER);
    write_features(&mut t, F_VERSION_1);
    w32(&mut t, reg::STATUS, ALL_STEPS);
    assert_eq!(
        r32(&mut t, reg::STATUS),
        ACKNOWLEDGE | DRIVER,
        "FEATURES_OK was never read back"
    );
    w32(&mut t, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    w32(&mut t, reg::STATUS, ALL_STEPS);
    assert!(t.is_active(), "one step at a time");
    assert_eq!(record(&shared).activations.len(), 1);
    w32(&mut t, reg::STATUS, 0);
    w32(&mut t, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    assert_eq!(r32(&mut t, reg::STATUS), 0, "three steps from 0");
}

#[test]
fn failed_may_be_set_any_time_and_blocks_the_rest() {
    let (mut t, shared) = fresh();
    negotiate(&mut t, F_VERSION_1);
    setup_queue(&mut t, 0, 16, 0x1_0000);
    w32(
        &mut t,
        reg::STATUS,
        ACKNOWLEDGE | DRIVER | FEATURES_OK | FAILED,
    );
    assert_eq!(
        r32(&mut t, reg::STATUS),
        ACKNOWLEDGE | DRIVER | FEATURES_OK | FAILED
    );
    w32(&mut t, reg::STATUS, ALL_STEPS | FAILED);
    assert!(!t.is_active());
    assert!(record(&shared).activations.is_empty());
    w32(&mut t, reg::STATUS, FAILED);
    assert_eq!(
        r32(&mut t, reg::STATUS) & FAILED,
        FAILED,
        "kept: a write cannot clear bits"
    );
}

#[test]
fn writing_zero_resets_the_device_and_every_queue() {
    let (mut t, shared) = fresh();
    bring_up(&mut t);
    let resets = record(&shared).resets;
    let irq = record(&shared)
        .interrupt
        .clone()
        .expect("interrupt at activation");
    irq.signal_used_buffer();
    w32(&mut t, reg::QUEUE_SEL, 1);
    w32(&mut t, reg::DEVICE_FEATURES_SEL, 1);
    w32(&mut t, reg::STATUS, 0);
    assert!(!t.is_active());
    assert_eq!(record(&shared).resets, resets + 1);
    assert_eq!(r32(&mut t, reg::STATUS), 0);
    assert_eq!(
        r32(&mut t, reg::INTERRUPT_STATUS),
        0,
        "pending interrupts dropped"
    );
    assert_eq!(
        r32(&mut t, reg::DEVICE_FEATURES),
        0b1011,
        "selectors back to 0"
    );
    assert_eq!(r32(&mut t, reg::QUEUE_READY), 0, "queue 0 no longer ready");
    // Queue 0's old setup is gone: its size is back at the maximum.
    w32(&mut t, reg::STATUS, ACKNOWLEDGE | DRIVER);
    write_features(&mut t, F_VERSION_1);
    w32(&mut t, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    w64(&mut t, reg::QUEUE_DESC_LOW, 0x2_0000);
    w64(&mut t, reg::QUEUE_DRIVER_LOW, 0x3_0000);
    w64(&mut t, reg::QUEUE_DEVICE_LOW, 0x4_0000);
    w32(&mut t, reg::QUEUE_READY, 1);
    w32(&mut t, reg::STATUS, ALL_STEPS);
    let r = record(&shared);
    assert_eq!(r.activations.len(), 2);
    assert_eq!(r.activations[1].0, F_VERSION_1, "old features forgotten");
    assert_eq!(
        r.activations[1].1[0],
        Some((256, 0x2_0000, 0x3_0000, 0x4_0000))
    );
}

#[test]
fn interrupt_status_and_ack() {
    let (mut t, shared) = fresh();
    bring_up(&mut t);
    let irq = record(&shared)
        .interrupt
        .clone()
        .expect("interrupt at activation");
    assert_eq!(r32(&mut t, reg::INTERRUPT_STATUS), 0);
    irq.signal_used_buffer();
    assert_eq!(r32(&mut t, reg::INTERRUPT_STATUS), 1);
    irq.signal_config_change();
    assert_eq!(r32(&mut t, reg::INTERRUPT_STATUS), 3);
    assert_eq!(
        t.interrupt().irqfd().read().ok(),
        Some(2),
        "the line was raised twice"
    );
    w32(&mut t, reg::INTERRUPT_ACK, 1);
    assert_eq!(r32(&mut t, reg::INTERRUPT_STATUS), 2);
    w32(&mut t, reg::INTERRUPT_ACK, u32::MAX);
    assert_eq!(r32(&mut t, reg::INTERRUPT_STATUS), 0);
    w32(&mut t, reg::INTERRUPT_STATUS, 3);
    assert_eq!(r32(&mut t, reg::INTERRUPT_STATUS), 0, "read-only");
}

#[test]
fn a_running_device_that_fails_asks_for_a_reset() {
    let (mut t, shared) = fresh();
    bring_up(&mut t);
    let irq = record(&shared)
        .interrupt
        .clone()
        .expect("interrupt at activation");
    irq.signal_needs_reset();
    assert_eq!(r32(&mut t, reg::STATUS), ALL_STEPS | NEEDS_RESET);
    assert_eq!(
        r32(&mut t, reg::INTERRUPT_STATUS),
        2,
        "as a configuration change"
    );
    w32(&mut t, reg::STATUS, 0);
    assert_eq!(r32(&mut t, reg::STATUS), 0);
}

#[test]
fn config_generation_follows_device_changes() {
    let (mut t, shared) = fresh();
    bring_up(&mut t);
    let irq = record(&shared)
        .interrupt
        .clone()
        .expect("interrupt at activation");
    let g0 = r32(&mut t, reg::CONFIG_GENERATION);
    assert_eq!(
        r32(&mut t, reg::CONFIG_GENERATION),
        g0,
        "stable without a change"
    );
    irq.signal_config_change();
    let g1 = r32(&mut t, reg::CONFIG_GENERATION);
    assert_ne!(g1, g0);
    w32(&mut t, reg::CONFIG, 0);
    assert_eq!(
        r32(&mut t, reg::CONFIG_GENERATION),
        g1,
        "the driver's writes are not changes"
    );
}

#[test]
fn config_space_is_the_devices_at_any_width() {
    let (mut t, shared) = fresh();
    for (offset, len) in [
        (0, 1),
        (1, 1),
        (2, 2),
        (4, 4),
        (8, 8),
        (3, 4),
        (14, 4),
        (0xe00, 8),
    ] {
        let mut d = vec![0xee; len];
        t.read(reg::CONFIG + offset as u64, &mut d);
        let expected: Vec<u8> = (offset..offset + len)
            .map(|o| CONFIG.get(o).copied().unwrap_or(0))
            .collect();
        assert_eq!(d, expected, "{len} bytes at {offset}");
    }
    for len in [0, 3, 5, 16] {
        let mut d = vec![0xee; len];
        t.read(reg::CONFIG, &mut d);
        assert!(d.iter().all(|&b| b == 0), "{len}-byte read");
        t.write(reg::CONFIG, &d);
    }
    t.write(reg::CONFIG + 6, &[1, 2]);
    assert_eq!(record(&shared).config_writes, vec![(6, vec![1, 2])]);
    assert_eq!(t.ignored(), 8, "four bad reads and four bad writes");
}

#[test]
fn wrong_widths_and_unknown_offsets_are_ignored() {
    let (mut t, _) = fresh();
    for (offset, len) in [(0, 1), (0, 2), (0, 8), (2, 4), (1, 4), (0x70, 2)] {
        let mut d = vec![0xee; len];
        t.read(offset, &mut d);
        assert!(d.iter().all(|&b| b == 0), "{len} bytes at {offset:#x}");
    }
    let writes: [(u64, &[u8]); 4] = [
        (reg::STATUS, &[1]),
        (reg::STATUS, &[1, 0]),
        (reg::STATUS, &[1, 0, 0, 0, 0, 0, 0, 0]),
        (reg::STATUS + 1, &[1, 0, 0, 0]),
    ];
    for (offset, data) in writes {
        t.write(offset, data);
    }
    assert_eq!(
        r32(&mut t, reg::STATUS),
        0,
        "no write of the wrong width took"
    );
    // Legacy (version 1) registers, reserved ones, write-only ones.
    for offset in [
        0x028,
        0x03c,
        0x040,
        0x0c0,
        0x0c4,
        0x0f8,
        reg::QUEUE_NUM,
        reg::QUEUE_NOTIFY,
    ] {
        assert_eq!(r32(&mut t, offset), 0, "read at {offset:#x}");
        w32(&mut t, offset, u32::MAX);
    }
    w32(&mut t, reg::SHM_SEL, 3);
    assert_eq!(t.ignored(), 6 + 4 + 8 + 8, "every one counted");
    assert_eq!(
        r32(&mut t, reg::MAGIC),
        0x7472_6976,
        "and the device still answers"
    );
}

#[test]
fn notifications_reach_an_active_device_for_ready_queues_only() {
    let (mut t, shared) = fresh();
    negotiate(&mut t, F_VERSION_1);
    setup_queue(&mut t, 0, 16, 0x1_0000);
    w32(&mut t, reg::QUEUE_NOTIFY, 0);
    assert!(record(&shared).notifies.is_empty(), "not active yet");
    w32(&mut t, reg::STATUS, ALL_STEPS);
    for q in [0, 1, 2, 0x1_0000, u32::MAX, 0] {
        w32(&mut t, reg::QUEUE_NOTIFY, q);
    }
    assert_eq!(record(&shared).notifies, vec![0, 0]);
}

#[test]
fn the_bus_routes_by_window_and_names_each_device() {
    use kaos_vmm::virtio::{MMIO_BASE, MmioBus};

    let mut bus = MmioBus::default();
    for _ in 0..2 {
        bus.add(fresh().0).expect("a free line");
    }
    assert_eq!(
        bus.cmdline(),
        "virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6"
    );
    let mut d = [0; 4];
    assert!(bus.read(MMIO_BASE + 0x1000 + reg::DEVICE_ID, &mut d));
    assert_eq!(u32::from_le_bytes(d), TEST_DEVICE_TYPE);
    assert!(bus.write(MMIO_BASE + 0x1000 + reg::STATUS, &ACKNOWLEDGE.to_le_bytes()));
    assert_eq!(bus.transport(1).map(|t| t.status()), Some(ACKNOWLEDGE));
    assert_eq!(
        bus.transport(0).map(|t| t.status()),
        Some(0),
        "only the second device"
    );
    for outside in [MMIO_BASE - 4, MMIO_BASE + 0x2000, u64::MAX - 3, 0] {
        assert!(!bus.read(outside, &mut d), "{outside:#x}");
        assert!(!bus.write(outside, &d), "{outside:#x}");
    }
    assert_eq!(bus.irqfds().len(), 2);
    for _ in 2..kaos_vmm::virtio::GSIS.len() {
        bus.add(fresh().0).expect("a free line");
    }
    assert!(bus.add(fresh().0).is_err(), "out of lines");
}
