//! Forwarding within VLANs: flooding, learning, ageing, isolation, tags.

use smoltcp::wire::ArpOperation;

use super::super::fixture::{self, A, B, BROADCAST, C, R10, R20, arp, tagged, udp_frame};
use super::super::{DropReason, PortKind, SwitchConfig, Tag, UplinkMode, write_egress};
use super::{Fate, at, default_lab, send, v};

fn arp_request(from: fixture::Host) -> Vec<u8> {
    arp(
        (from.mac, BROADCAST),
        ArpOperation::Request,
        (from.mac, from.ip),
        R10.ip,
    )
}

#[test]
fn a_broadcast_floods_its_vlan_and_only_its_vlan() {
    let mut lab = default_lab();
    let fate = send(&mut lab.switch, lab.a, &arp_request(A), at(1));
    assert_eq!(fate.ports(), [lab.b, lab.trunk]);
    assert_eq!(fate.tag_to(lab.b), Tag::Untagged);
    assert_eq!(fate.tag_to(lab.trunk), Tag::Tagged(v(10)));
    // From the trunk on VLAN 20: C alone.
    let frame = tagged(&arp_request(R20), 20);
    let fate = send(&mut lab.switch, lab.trunk, &frame, at(1));
    assert_eq!(fate.ports(), [lab.c]);
    assert!(matches!(
        fate,
        Fate::To {
            vlan: 20,
            ingress_tagged: true,
            ..
        }
    ));
    let counters = lab.switch.vlan_counters(v(10)).expect("VLAN 10 exists");
    assert_eq!((counters.frames, counters.floods), (1, 1));
}

#[test]
fn a_unicast_to_a_guest_of_another_vlan_never_reaches_it() {
    let mut lab = default_lab();
    // A addresses C's MAC: on VLAN 10 that MAC is unknown, so it can only be behind the uplink.
    let frame = udp_frame(A, C, (1, 2), b"x");
    let fate = send(&mut lab.switch, lab.a, &frame, at(1));
    assert_eq!(fate.ports(), [lab.trunk]);
    assert_eq!(
        lab.switch.port_counters(lab.c).map(|c| c.tx_frames),
        Some(0)
    );
}

#[test]
fn unicast_between_guests_goes_to_the_one_guest() {
    let mut lab = default_lab();
    let fate = send(
        &mut lab.switch,
        lab.a,
        &udp_frame(A, B, (1, 2), b"x"),
        at(1),
    );
    assert_eq!(fate.ports(), [lab.b]);
    let (a, b) = (
        lab.switch.port_counters(lab.a).cloned().unwrap_or_default(),
        lab.switch.port_counters(lab.b).cloned().unwrap_or_default(),
    );
    assert_eq!((a.rx_frames, b.tx_frames, b.tx_bytes), (1, 1, a.rx_bytes));
}

/// The lab plus an access uplink on VLAN 10: two uplinks where R10 could be.
fn two_uplinks() -> (fixture::Lab, super::PortId) {
    let mut lab = default_lab();
    let access = lab
        .switch
        .add_port(PortKind::Uplink(UplinkMode::Access { vlan: v(10) }))
        .expect("valid port");
    (lab, access)
}

#[test]
fn learning_sends_unicast_to_the_uplink_that_saw_the_mac() {
    let (mut lab, access) = two_uplinks();
    let to_r10 = udp_frame(A, R10, (1000, 53), b"q");
    let fate = send(&mut lab.switch, lab.a, &to_r10, at(1));
    assert_eq!(fate.ports(), [lab.trunk, access], "unknown: every uplink");
    // R10 speaks on the trunk: learned there, and only on VLAN 10.
    let from_r10 = tagged(&arp_request(R10), 10);
    send(&mut lab.switch, lab.trunk, &from_r10, at(2));
    assert_eq!(lab.switch.learned(v(10), R10.mac, at(2)), Some(lab.trunk));
    assert_eq!(lab.switch.learned(v(20), R10.mac, at(2)), None);
    let fate = send(&mut lab.switch, lab.a, &to_r10, at(3));
    assert_eq!(fate.ports(), [lab.trunk]);
    // It moves to the access port when it shows up there.
    send(&mut lab.switch, access, &arp_request(R10), at(4));
    assert_eq!(
        send(&mut lab.switch, lab.a, &to_r10, at(5)).ports(),
        [access]
    );
    let floods = lab.switch.vlan_counters(v(10)).map(|c| c.floods);
    assert_eq!(
        floods,
        Some(3),
        "the first frame and the two ARP broadcasts"
    );
}

#[test]
fn learned_macs_age_out() {
    let config = SwitchConfig {
        mac_ageing: smoltcp::time::Duration::from_secs(10),
        ..SwitchConfig::default()
    };
    let mut lab = fixture::lab(config);
    send(
        &mut lab.switch,
        lab.trunk,
        &tagged(&arp_request(R10), 10),
        at(100),
    );
    assert_eq!(lab.switch.learned(v(10), R10.mac, at(109)), Some(lab.trunk));
    assert_eq!(lab.switch.learned(v(10), R10.mac, at(110)), None);
    assert_eq!(
        lab.switch.learned_len(v(10)),
        1,
        "still there until a sweep"
    );
    lab.switch.expire(at(110));
    assert_eq!(lab.switch.learned_len(v(10)), 0);
    // Frames refresh it; ingress sweeps by itself.
    for t in [200, 205, 214] {
        send(
            &mut lab.switch,
            lab.trunk,
            &tagged(&arp_request(R10), 10),
            at(t),
        );
    }
    assert_eq!(lab.switch.learned(v(10), R10.mac, at(223)), Some(lab.trunk));
    send(&mut lab.switch, lab.a, &arp_request(A), at(300));
    assert_eq!(lab.switch.learned_len(v(10)), 0);
}

#[test]
fn the_mac_table_is_bounded_and_keeps_the_newest() {
    let config = SwitchConfig {
        max_macs_per_vlan: 32,
        ..SwitchConfig::default()
    };
    let mut lab = fixture::lab(config);
    let mut last = [0u8; 6];
    for i in 0..500u16 {
        let [hi, lo] = i.to_be_bytes();
        last = [0x52, 0x54, 0, 1, hi, lo];
        let host = fixture::Host { mac: last, ..R10 };
        let frame = tagged(&arp_request(host), 10);
        send(&mut lab.switch, lab.trunk, &frame, at(i64::from(i)));
        assert!(lab.switch.learned_len(v(10)) <= 32);
    }
    assert_eq!(lab.switch.learned(v(10), last, at(500)), Some(lab.trunk));
    assert_eq!(
        lab.switch.learned(v(10), [0x52, 0x54, 0, 1, 0, 0], at(500)),
        None
    );
}

#[test]
fn guests_teach_nothing_and_their_macs_cannot_come_from_an_uplink() {
    let mut lab = default_lab();
    send(&mut lab.switch, lab.a, &arp_request(A), at(1));
    assert_eq!(lab.switch.learned_len(v(10)), 0);
    let forged = tagged(&arp_request(A), 10);
    let fate = send(&mut lab.switch, lab.trunk, &forged, at(1));
    assert_eq!(fate.dropped(), DropReason::SpoofedMac);
    // The same MAC on VLAN 20 is no guest's there: fine.
    let elsewhere = tagged(&arp_request(fixture::Host { vlan: 20, ..A }), 20);
    assert_eq!(
        send(&mut lab.switch, lab.trunk, &elsewhere, at(1)).ports(),
        [lab.c]
    );
}

#[test]
fn nothing_goes_back_where_it_came_from() {
    let (mut lab, access) = two_uplinks();
    let to_self = udp_frame(A, A, (1, 2), b"x");
    assert_eq!(
        send(&mut lab.switch, lab.a, &to_self, at(1)).dropped(),
        DropReason::NoDestination
    );
    // A unicast from an uplink for a MAC no guest has: not ours, and never out another uplink.
    let between = tagged(&udp_frame(R10, R20, (1, 2), b"x"), 10);
    let fate = send(&mut lab.switch, lab.trunk, &between, at(1));
    assert_eq!(fate.dropped(), DropReason::NoDestination);
    // An uplink's broadcast reaches the guests, not the other uplink.
    let fate = send(
        &mut lab.switch,
        lab.trunk,
        &tagged(&arp_request(R10), 10),
        at(1),
    );
    assert_eq!(fate.ports(), [lab.a, lab.b]);
    let fate = send(&mut lab.switch, access, &arp_request(R10), at(1));
    assert_eq!(fate.ports(), [lab.a, lab.b]);
}

#[test]
fn access_uplinks_are_untagged_and_trunks_tagged() {
    let (mut lab, access) = two_uplinks();
    let fate = send(&mut lab.switch, lab.a, &arp_request(A), at(1));
    assert_eq!(fate.tag_to(access), Tag::Untagged);
    assert_eq!(fate.tag_to(lab.trunk), Tag::Tagged(v(10)));
    // A priority tag on the access port is VLAN 10 and is removed on the way out.
    let priority = tagged(&arp_request(R10), 0xa000);
    let fate = send(&mut lab.switch, access, &priority, at(1));
    assert!(matches!(
        fate,
        Fate::To {
            vlan: 10,
            ingress_tagged: true,
            ..
        }
    ));
    let tagged10 = tagged(&arp_request(R10), 10);
    let fate = send(&mut lab.switch, access, &tagged10, at(1));
    assert_eq!(fate.dropped(), DropReason::BadVlanTag);
    // Trunks: tagged frames of their VLANs only.
    let cases: [(Vec<u8>, DropReason); 5] = [
        (arp_request(R10), DropReason::BadVlanTag),
        (tagged(&arp_request(R10), 0), DropReason::BadVlanTag),
        (tagged(&arp_request(R10), 4095), DropReason::BadVlanTag),
        (tagged(&arp_request(R10), 30), DropReason::UnknownVlan),
        (
            tagged(&tagged(&arp_request(R10), 10), 10),
            DropReason::BadVlanTag,
        ),
    ];
    for (frame, reason) in cases {
        assert_eq!(
            send(&mut lab.switch, lab.trunk, &frame, at(1)).dropped(),
            reason
        );
    }
    // Guests: untagged only.
    let fate = send(&mut lab.switch, lab.a, &tagged(&arp_request(A), 10), at(1));
    assert_eq!(fate.dropped(), DropReason::BadVlanTag);
}

#[test]
fn egress_frames_carry_the_tag_their_port_needs() {
    let mut lab = default_lab();
    let from_a = arp_request(A);
    let Fate::To {
        to, ingress_tagged, ..
    } = send(&mut lab.switch, lab.a, &from_a, at(1))
    else {
        panic!("dropped");
    };
    let mut out = vec![0u8; 1600];
    for e in to {
        let n = write_egress(&from_a, ingress_tagged, e.tag, &mut out).expect("room");
        if e.port == lab.trunk {
            assert_eq!(out[..n], tagged(&from_a, 10)[..]);
        } else {
            assert_eq!(out[..n], from_a[..]);
        }
    }
    let from_trunk = tagged(&arp_request(R10), 10);
    let Fate::To {
        to, ingress_tagged, ..
    } = send(&mut lab.switch, lab.trunk, &from_trunk, at(1))
    else {
        panic!("dropped");
    };
    let n = write_egress(&from_trunk, ingress_tagged, to[0].tag, &mut out).expect("room");
    assert_eq!(out[..n], arp_request(R10)[..]);
}
