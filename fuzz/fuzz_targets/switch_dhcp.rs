//! The switch's DHCP server (`kaos_net::switch::dhcp`) fed any DHCP messages, wrapped or not,
//! from any port: it never panics, every answer goes to the port that asked and only to it,
//! is a well-formed reply carrying that port's address (or none), and a DHCP request or a
//! guest's server message on a served VLAN is never forwarded.
//!
//! The switch: the unit tests' lab (guests A and B on VLAN 10, C on VLAN 20, a trunk carrying
//! both), DHCP served on VLAN 10 (with a gateway) and on VLAN 20 (without one, switched off
//! and on by the input).
//!
//! Input: records of `port` (one byte: A, B, C, the trunk, a port that does not exist, or 7:
//! switch VLAN 20's settings off or on), `shape` (one byte, below), `kind` (one byte) and
//! `length` (two bytes, little-endian) and that many bytes. With `shape` bit 0 the bytes are a
//! whole frame; otherwise they are a DHCP message (UDP payload), put in a frame from the port:
//! bits 1-2 choose the IPv4 source (0.0.0.0, the port's own, another guest's, the router's),
//! bit 3 the destination (broadcast or the VLAN's server identifier), bit 4 makes it a server
//! message (UDP 67 to 68), bit 5 writes the port's MAC into `chaddr`, bit 6 writes a request
//! header, the magic cookie and a message-type option of type `kind % 9` (so the fuzzer
//! reaches the answers), bit 7 sets the BROADCAST flag. Frames from the trunk are tagged with
//! VLAN 10 or 20 (by bit 1).
//!
//! Seeds (`seeds/switch_dhcp/`): a DISCOVER, a REQUEST, a renewal, a NAKed request, an
//! INFORM, a RELEASE, a rogue server's OFFER, a spoofed `chaddr`, a truncated message and the
//! settings switched off and on.
#![no_main]

use std::net::Ipv4Addr;

use kaos_fuzz::input::Input;
use kaos_net::switch::dhcp::SERVER_MAC;
use kaos_net::switch::fixture::{self, A, B, BROADCAST, C, Lab, R10};
use kaos_net::switch::{
    Decision, DhcpConfig, DropReason, Instant, PortId, PortKind, SwitchConfig,
};
use libfuzzer_sys::fuzz_target;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    DhcpMessageType, DhcpPacket, DhcpRepr, EthernetFrame, EthernetProtocol, IpAddress,
    Ipv4Packet, Ipv4Repr, UdpPacket,
};

fn settings(gateway: Option<Ipv4Addr>) -> DhcpConfig {
    DhcpConfig {
        prefix: 24,
        gateway,
        dns: vec![Ipv4Addr::new(10, 0, 0, 53)],
        lease_secs: 3600,
    }
}

struct Rig {
    lab: Lab,
    received: [u64; 4],
    forwarded: [u64; 4],
    answered: [u64; 4],
}

fn rig() -> Rig {
    let mut lab = fixture::lab(SwitchConfig::default());
    let s = &mut lab.switch;
    s.set_vlan_dhcp(fixture::vlan(10), Some(settings(Some(R10.ip))))
        .expect("valid settings");
    s.set_vlan_dhcp(fixture::vlan(20), Some(settings(None)))
        .expect("valid settings");
    Rig {
        lab,
        received: [0; 4],
        forwarded: [0; 4],
        answered: [0; 4],
    }
}

fn ports(rig: &Rig) -> [PortId; 4] {
    let l = &rig.lab;
    [l.a, l.b, l.c, l.trunk]
}

/// The guest's MAC, address and its VLAN's settings, if DHCP is served there.
fn served(rig: &Rig, port: PortId) -> Option<([u8; 6], Ipv4Addr, DhcpConfig)> {
    let Some(PortKind::Guest(g)) = rig.lab.switch.port(port) else {
        return None;
    };
    let config = rig.lab.switch.vlan_dhcp(g.vlan)?.clone();
    Some((g.mac, g.ipv4, config))
}

/// Wraps `message` in a frame from `which` as `shape` says.
fn wrap(which: usize, shape: u8, kind: u8, message: &[u8]) -> Vec<u8> {
    let host = [A, B, C, R10][which.min(3)];
    let mut m = message.to_vec();
    if shape & 32 != 0 && m.len() >= 34 {
        m[28..34].copy_from_slice(&host.mac);
    }
    if shape & 64 != 0 {
        if m.len() < 244 {
            m.resize(244, 0);
        }
        m[..4].copy_from_slice(&[1, 1, 6, 0]);
        m[236..244].copy_from_slice(&[99, 130, 83, 99, 53, 1, kind % 9, 255]);
    }
    if shape & 128 != 0 && m.len() >= 12 {
        m[10] |= 0x80;
    }
    let src = match (shape >> 1) & 3 {
        0 => Ipv4Addr::UNSPECIFIED,
        1 => host.ip,
        2 => B.ip,
        _ => R10.ip,
    };
    let (dst_mac, dst) = if shape & 8 == 0 {
        (BROADCAST, Ipv4Addr::BROADCAST)
    } else if host.vlan == 10 {
        (R10.mac, R10.ip)
    } else {
        (SERVER_MAC, kaos_net::switch::dhcp::FALLBACK_SERVER_ID)
    };
    let ports = if shape & 16 == 0 { (68, 67) } else { (67, 68) };
    let l4 = fixture::udp(ports.0, ports.1, &m);
    let frame = fixture::ipv4((host.mac, dst_mac), (src, dst), 17, &l4);
    if which == 3 {
        fixture::tagged(&frame, if shape & 2 == 0 { 10 } else { 20 })
    } else {
        frame
    }
}

/// UDP ports and IPv4 destination of an untagged, unfragmented IPv4/UDP frame.
fn udp_of(frame: &[u8]) -> Option<(u16, u16, Ipv4Addr)> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if u8::from(ip.next_header()) != 17 || ip.more_frags() || ip.frag_offset() != 0 {
        return None;
    }
    let udp = UdpPacket::new_checked(ip.payload()).ok()?;
    Some((udp.src_port(), udp.dst_port(), ip.dst_addr()))
}

/// An answer is a well-formed reply for `mac`, carrying `ip` or no address.
fn check_answer(frame: &[u8], (mac, ip, config): &([u8; 6], Ipv4Addr, DhcpConfig)) {
    assert!(frame.len() <= 1514, "an answer longer than a frame");
    let eth = EthernetFrame::new_checked(frame).expect("answer: Ethernet");
    assert_eq!(eth.dst_addr().0, *mac, "answer to another MAC");
    assert_eq!(eth.src_addr().0, SERVER_MAC);
    let packet = Ipv4Packet::new_checked(eth.payload()).expect("answer: IPv4");
    Ipv4Repr::parse(&packet, &ChecksumCapabilities::default()).expect("answer: IPv4 header");
    assert_eq!(packet.src_addr(), config.server_id());
    let to = packet.dst_addr();
    assert!(to == *ip || to == Ipv4Addr::BROADCAST, "answer to {to}");
    let udp = UdpPacket::new_checked(packet.payload()).expect("answer: UDP");
    let (s, d) = (IpAddress::Ipv4(packet.src_addr()), IpAddress::Ipv4(to));
    assert!(udp.verify_checksum(&s, &d), "answer: UDP checksum");
    assert_eq!((udp.src_port(), udp.dst_port()), (67, 68));
    let dhcp = DhcpPacket::new_checked(udp.payload()).expect("answer: DHCP");
    let r = DhcpRepr::parse(&dhcp).expect("answer: DHCP reply");
    assert!(matches!(
        r.message_type,
        DhcpMessageType::Offer | DhcpMessageType::Ack | DhcpMessageType::Nak
    ));
    assert_eq!(r.client_hardware_address.0, *mac, "answer for another chaddr");
    assert!(r.your_ip == *ip || r.your_ip.is_unspecified(), "offered {}", r.your_ip);
    assert_eq!(r.server_identifier, Some(config.server_id()));
}

fn step(rig: &mut Rig, which: usize, frame: &[u8], now: Instant) {
    let port = ports(rig).get(which).copied().unwrap_or(PortId::new(999));
    let server = served(rig, port);
    let decision = rig.lab.switch.ingress(port, frame, now);
    let forwarded_to = match decision {
        Decision::Forward(f) => Some(f.to.len()),
        Decision::Drop(DropReason::UnknownPort) => {
            assert!(which >= 4);
            return;
        }
        Decision::Drop(_) => None,
    };
    let answers: Vec<_> = rig.lab.switch.take_answers().collect();
    rig.received[which] += 1;
    rig.forwarded[which] += u64::from(forwarded_to.is_some());
    assert!(answers.len() <= 1, "{} answers to one frame", answers.len());
    for (to, answer) in &answers {
        assert_eq!(*to, port, "answered to another port");
        let server = server.as_ref().expect("an answer where DHCP is not served");
        check_answer(answer, server);
        assert_eq!(forwarded_to, Some(0), "an answered request went on");
        rig.answered[which] += 1;
    }
    if forwarded_to == Some(0) {
        assert!(server.is_some(), "a frame taken where DHCP is not served");
    }
    if let (Some((_, _, config)), Some((sport, dport, dst))) = (&server, udp_of(frame)) {
        let request = dport == 67 && (dst == Ipv4Addr::BROADCAST || dst == config.server_id());
        let rogue = sport == 67 && dport == 68;
        if request || rogue {
            assert!(
                forwarded_to.is_none_or(|n| n == 0),
                "a DHCP message forwarded on a served VLAN"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| run(data));

fn run(data: &[u8]) {
    let mut rig = rig();
    let mut input = Input::new(data);
    let mut now_ms = 0i64;
    let mut vlan20 = true;
    while !input.is_empty() {
        let which = usize::from(input.byte().unwrap_or(0) % 8);
        let shape = input.byte().unwrap_or(0);
        let kind = input.byte().unwrap_or(0);
        let len = u16::from_le_bytes([input.byte().unwrap_or(0), input.byte().unwrap_or(0)]);
        let bytes = input.take(usize::from(len));
        now_ms += 10;
        if which == 7 {
            vlan20 = !vlan20;
            let config = vlan20.then(|| settings(None));
            rig.lab
                .switch
                .set_vlan_dhcp(fixture::vlan(20), config)
                .expect("valid settings");
            continue;
        }
        let frame = if shape & 1 != 0 || which > 3 {
            bytes.to_vec()
        } else {
            wrap(which, shape, kind, bytes)
        };
        step(&mut rig, which.min(4), &frame, Instant::from_millis(now_ms));
    }
    for (i, port) in ports(&rig).into_iter().enumerate() {
        let c = rig
            .lab
            .switch
            .port_counters(port)
            .expect("the rig's ports stay");
        assert_eq!(c.rx_frames, rig.received[i]);
        assert_eq!(c.rx_frames, rig.forwarded[i] + c.drops.total());
        assert_eq!(c.dhcp_answers, rig.answered[i]);
    }
}
