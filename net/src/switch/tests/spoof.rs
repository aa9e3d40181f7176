//! Anti-spoofing on guest ports: source MAC, IPv4 source, ARP sender; DHCP discovery.

use core::net::Ipv4Addr;

use smoltcp::wire::{ArpOperation, DhcpMessageType};

use super::super::fixture::{A, B, BROADCAST, C, R10, R20, arp, dhcp, ipv4, udp, udp_frame};
use super::super::{DropReason, PortId};
use super::{at, default_lab, send, v};

fn drops(lab: &super::Lab, port: PortId, reason: DropReason) -> u64 {
    lab.switch
        .port_counters(port)
        .map_or(0, |c| c.drops.get(reason))
}

#[test]
fn a_guest_cannot_send_with_another_mac() {
    let mut lab = default_lab();
    let forged = udp_frame(
        super::super::fixture::Host { mac: B.mac, ..A },
        R10,
        (1, 2),
        b"x",
    );
    assert_eq!(
        send(&mut lab.switch, lab.a, &forged, at(1)).dropped(),
        DropReason::SpoofedMac
    );
    let invented = udp_frame(
        super::super::fixture::Host {
            mac: [2, 9, 9, 9, 9, 9],
            ..A
        },
        R10,
        (1, 2),
        b"x",
    );
    assert_eq!(
        send(&mut lab.switch, lab.a, &invented, at(1)).dropped(),
        DropReason::SpoofedMac
    );
    assert_eq!(drops(&lab, lab.a, DropReason::SpoofedMac), 2);
    let vlan = lab
        .switch
        .vlan_counters(v(10))
        .map(|c| c.drops.get(DropReason::SpoofedMac));
    assert_eq!(vlan, Some(2));
    assert_eq!(
        lab.switch.port_counters(lab.a).map(|c| c.rx_frames),
        Some(2)
    );
    assert_eq!(
        lab.switch.port_counters(lab.trunk).map(|c| c.tx_frames),
        Some(0)
    );
}

#[test]
fn group_and_zero_source_macs_are_invalid_from_any_port() {
    let mut lab = default_lab();
    let multicast = super::super::fixture::Host {
        mac: [0x01, 0, 0x5e, 0, 0, 1],
        ..R10
    };
    let zero = super::super::fixture::Host { mac: [0; 6], ..R10 };
    for host in [multicast, zero] {
        let frame = super::super::fixture::tagged(&udp_frame(host, A, (1, 2), b""), 10);
        let fate = send(&mut lab.switch, lab.trunk, &frame, at(1));
        assert_eq!(fate.dropped(), DropReason::InvalidSourceMac);
    }
}

#[test]
fn a_guest_cannot_send_from_another_address() {
    let mut lab = default_lab();
    let as_b = udp_frame(
        super::super::fixture::Host { ip: B.ip, ..A },
        R10,
        (1, 2),
        b"x",
    );
    assert_eq!(
        send(&mut lab.switch, lab.a, &as_b, at(1)).dropped(),
        DropReason::SpoofedIpv4
    );
    let as_outsider = udp_frame(
        super::super::fixture::Host {
            ip: Ipv4Addr::new(192, 0, 2, 1),
            ..A
        },
        R10,
        (1, 2),
        b"x",
    );
    assert_eq!(
        send(&mut lab.switch, lab.a, &as_outsider, at(1)).dropped(),
        DropReason::SpoofedIpv4
    );
    assert_eq!(drops(&lab, lab.a, DropReason::SpoofedIpv4), 2);
}

#[test]
fn arp_must_name_the_guest_itself() {
    let mut lab = default_lab();
    let frame = |sender_mac, sender_ip| {
        arp(
            (A.mac, BROADCAST),
            ArpOperation::Request,
            (sender_mac, sender_ip),
            R10.ip,
        )
    };
    // Someone else's MAC or address as the sender: a poisoning attempt.
    let wrong_mac = frame(B.mac, A.ip);
    assert_eq!(
        send(&mut lab.switch, lab.a, &wrong_mac, at(1)).dropped(),
        DropReason::SpoofedArp
    );
    let wrong_ip = frame(A.mac, R10.ip);
    assert_eq!(
        send(&mut lab.switch, lab.a, &wrong_ip, at(1)).dropped(),
        DropReason::SpoofedArp
    );
    let gratuitous_lie = arp((A.mac, BROADCAST), ArpOperation::Reply, (A.mac, B.ip), B.ip);
    let fate = send(&mut lab.switch, lab.a, &gratuitous_lie, at(1));
    assert_eq!(fate.dropped(), DropReason::SpoofedArp);
    assert_eq!(drops(&lab, lab.a, DropReason::SpoofedArp), 3);
    // The truth passes: a request, a gratuitous announcement, an RFC 5227 probe.
    assert_eq!(
        send(&mut lab.switch, lab.a, &frame(A.mac, A.ip), at(1)).ports(),
        [lab.b, lab.trunk]
    );
    let announce = arp(
        (A.mac, BROADCAST),
        ArpOperation::Request,
        (A.mac, A.ip),
        A.ip,
    );
    assert_eq!(
        send(&mut lab.switch, lab.a, &announce, at(1)).ports(),
        [lab.b, lab.trunk]
    );
    let probe = frame(A.mac, Ipv4Addr::UNSPECIFIED);
    assert_eq!(
        send(&mut lab.switch, lab.a, &probe, at(1)).ports(),
        [lab.b, lab.trunk]
    );
}

fn dhcp_from(mac: [u8; 6], message: DhcpMessageType, ports: (u16, u16)) -> Vec<u8> {
    let l4 = udp(ports.0, ports.1, &dhcp(message, mac));
    let addrs = (Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST);
    ipv4((A.mac, BROADCAST), addrs, 17, &l4)
}

#[test]
fn dhcp_discovery_from_no_address_is_allowed() {
    let mut lab = default_lab();
    for message in [DhcpMessageType::Discover, DhcpMessageType::Request] {
        let frame = dhcp_from(A.mac, message, (68, 67));
        assert_eq!(
            send(&mut lab.switch, lab.a, &frame, at(1)).ports(),
            [lab.b, lab.trunk]
        );
    }
}

#[test]
fn only_dhcp_discovery_may_come_from_no_address() {
    let mut lab = default_lab();
    let cases = [
        // Another client's hardware address: pool starvation.
        dhcp_from([2, 7, 7, 7, 7, 7], DhcpMessageType::Discover, (68, 67)),
        // A server's message: a rogue DHCP server without an address.
        dhcp_from(A.mac, DhcpMessageType::Offer, (68, 67)),
        dhcp_from(A.mac, DhcpMessageType::Discover, (68, 53)),
        // Not DHCP at all.
        ipv4(
            (A.mac, BROADCAST),
            (Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST),
            17,
            &udp(68, 67, b"not bootp"),
        ),
    ];
    for frame in cases {
        assert_eq!(
            send(&mut lab.switch, lab.a, &frame, at(1)).dropped(),
            DropReason::SpoofedIpv4
        );
    }
}

#[test]
fn an_uplink_cannot_speak_for_a_guests_address() {
    let mut lab = default_lab();
    // A forged packet "from A" into a flow between A and B, and an ARP poisoning B's cache.
    send(
        &mut lab.switch,
        lab.a,
        &udp_frame(A, B, (7, 7), b"x"),
        at(1),
    );
    let as_a = super::super::fixture::Host { mac: R10.mac, ..A };
    let forged = super::super::fixture::tagged(&udp_frame(as_a, B, (7, 7), b"x"), 10);
    let fate = send(&mut lab.switch, lab.trunk, &forged, at(1));
    assert_eq!(fate.dropped(), DropReason::SpoofedIpv4);
    let poison = arp((R10.mac, B.mac), ArpOperation::Reply, (R10.mac, A.ip), B.ip);
    let fate = send(
        &mut lab.switch,
        lab.trunk,
        &super::super::fixture::tagged(&poison, 10),
        at(1),
    );
    assert_eq!(fate.dropped(), DropReason::SpoofedArp);
    // The same address on VLAN 20 is no guest's there.
    let other_vlan = arp(
        (R20.mac, BROADCAST),
        ArpOperation::Request,
        (R20.mac, A.ip),
        C.ip,
    );
    let fate = send(
        &mut lab.switch,
        lab.trunk,
        &super::super::fixture::tagged(&other_vlan, 20),
        at(1),
    );
    assert_eq!(fate.ports(), [lab.c]);
}
