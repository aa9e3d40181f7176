//! A small switch and frame builders, shared by the unit tests, the `switch_ingress` fuzz target
//! and the future `cargo xtask bench switch`. Not an API.
//!
//! The lab: guests A and B on VLAN 10, guest C on VLAN 20, and one trunk uplink carrying both
//! VLANs, behind which live a router R10 (VLAN 10) and R20 (VLAN 20). B publishes TCP 80 and
//! UDP 53.

use core::net::Ipv4Addr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::time::Instant;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, DhcpMessageType, DhcpPacket, DhcpRepr, EthernetAddress,
    IpProtocol, Ipv4Packet, Ipv4Repr, TcpPacket,
};

use super::{
    Decision, GuestPort, PortId, PortKind, Published, Switch, SwitchConfig, Transport, UplinkMode,
    Vlan, VlanSet,
};

/// A host's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub vlan: u16,
}

pub const A: Host = Host {
    mac: [0x02, 0, 0, 0, 0x10, 0x0a],
    ip: Ipv4Addr::new(10, 0, 10, 10),
    vlan: 10,
};
pub const B: Host = Host {
    mac: [0x02, 0, 0, 0, 0x10, 0x0b],
    ip: Ipv4Addr::new(10, 0, 10, 11),
    vlan: 10,
};
pub const C: Host = Host {
    mac: [0x02, 0, 0, 0, 0x20, 0x0c],
    ip: Ipv4Addr::new(10, 0, 20, 12),
    vlan: 20,
};
/// A router behind the trunk on VLAN 10.
pub const R10: Host = Host {
    mac: [0x52, 0x54, 0, 0, 0x10, 0x01],
    ip: Ipv4Addr::new(10, 0, 10, 1),
    vlan: 10,
};
/// A router behind the trunk on VLAN 20.
pub const R20: Host = Host {
    mac: [0x52, 0x54, 0, 0, 0x20, 0x01],
    ip: Ipv4Addr::new(10, 0, 20, 1),
    vlan: 20,
};
pub const BROADCAST: [u8; 6] = [0xff; 6];

/// The lab's switch and its ports.
#[derive(Debug)]
pub struct Lab {
    pub switch: Switch,
    pub a: PortId,
    pub b: PortId,
    pub c: PortId,
    pub trunk: PortId,
}

pub fn vlan(id: u16) -> Vlan {
    Vlan::new(id).expect("fixture VLAN ids are in 1..=4094")
}

pub fn guest(host: Host, published: Vec<Published>) -> PortKind {
    PortKind::Guest(GuestPort {
        vlan: vlan(host.vlan),
        mac: host.mac,
        ipv4: host.ip,
        published,
        rules: Vec::new(),
    })
}

/// The lab, with `config`'s limits.
pub fn lab(config: SwitchConfig) -> Lab {
    let mut switch = Switch::new(config, 0x6b61_6f73);
    let mut add = |kind| {
        switch
            .add_port(kind)
            .expect("the fixture's ports are valid")
    };
    let published = vec![
        Published {
            transport: Transport::Tcp,
            port: 80,
        },
        Published {
            transport: Transport::Udp,
            port: 53,
        },
    ];
    let a = add(guest(A, Vec::new()));
    let b = add(guest(B, published));
    let c = add(guest(C, Vec::new()));
    let allowed: VlanSet = [vlan(10), vlan(20)].into_iter().collect();
    let trunk = add(PortKind::Uplink(UplinkMode::Trunk { allowed }));
    Lab {
        switch,
        a,
        b,
        c,
        trunk,
    }
}

/// An Ethernet frame.
pub fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// `frame` with an 802.1Q tag (`tci`: priority bits and VID) after its addresses.
pub fn tagged(frame: &[u8], tci: u16) -> Vec<u8> {
    let mut f = frame.to_vec();
    let [high, low] = tci.to_be_bytes();
    f.splice(12..12, [0x81, 0x00, high, low]);
    f
}

/// An ARP packet from `sender` (`sender_mac`, `sender_ip`) for `target_ip`, in a frame from
/// `src` to `dst`.
pub fn arp(
    (src, dst): ([u8; 6], [u8; 6]),
    operation: ArpOperation,
    (sender_mac, sender_ip): ([u8; 6], Ipv4Addr),
    target_ip: Ipv4Addr,
) -> Vec<u8> {
    let repr = ArpRepr::EthernetIpv4 {
        operation,
        source_hardware_addr: EthernetAddress(sender_mac),
        source_protocol_addr: sender_ip,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target_ip,
    };
    let mut payload = vec![0; repr.buffer_len()];
    repr.emit(&mut ArpPacket::new_unchecked(&mut payload[..]));
    ethernet(dst, src, 0x0806, &payload)
}

/// An IPv4 packet carrying `l4` (a transport header and payload), in a frame.
pub fn ipv4(
    (src_mac, dst_mac): ([u8; 6], [u8; 6]),
    (src, dst): (Ipv4Addr, Ipv4Addr),
    protocol: u8,
    l4: &[u8],
) -> Vec<u8> {
    let repr = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::from(protocol),
        payload_len: l4.len(),
        hop_limit: 64,
    };
    let mut packet = vec![0; repr.buffer_len() + l4.len()];
    let mut view = Ipv4Packet::new_unchecked(&mut packet[..]);
    repr.emit(&mut view, &ChecksumCapabilities::default());
    view.payload_mut().copy_from_slice(l4);
    ethernet(dst_mac, src_mac, 0x0800, &packet)
}

/// Makes the IPv4 packet in untagged `frame` a fragment: datagram `ident`, at byte `offset`.
pub fn fragment(frame: &mut [u8], ident: u16, offset: u16, more: bool) {
    let mut ip = Ipv4Packet::new_unchecked(&mut frame[14..]);
    ip.set_ident(ident);
    ip.set_frag_offset(offset);
    ip.set_more_frags(more);
    ip.fill_checksum();
}

/// A UDP header (checksum 0: none) and payload.
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(8 + payload.len()).expect("test datagrams are small");
    let mut d = Vec::with_capacity(usize::from(len));
    for field in [sport, dport, len, 0] {
        d.extend_from_slice(&field.to_be_bytes());
    }
    d.extend_from_slice(payload);
    d
}

/// TCP header flags for [`tcp`].
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const FIN: u8 = 0x01;
pub const RST: u8 = 0x04;

/// A 20-byte TCP header with `flags` (the raw flag bits).
pub fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut h = vec![0; 20];
    let mut t = TcpPacket::new_unchecked(&mut h[..]);
    t.set_src_port(sport);
    t.set_dst_port(dport);
    t.set_header_len(20);
    t.set_syn(flags & SYN != 0);
    t.set_ack(flags & ACK != 0);
    t.set_fin(flags & FIN != 0);
    t.set_rst(flags & RST != 0);
    t.set_window_len(65535);
    h
}

/// An ICMP echo request (or reply) with identifier `ident`.
pub fn echo(request: bool, ident: u16) -> Vec<u8> {
    let mut m = vec![if request { 8 } else { 0 }, 0, 0, 0];
    m.extend_from_slice(&ident.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    m
}

/// An ICMP error of `kind` (3 unreachable, 11 time exceeded) quoting `quoted` (an IPv4 packet,
/// of which its header and 8 bytes are kept).
pub fn icmp_error(kind: u8, quoted: &[u8]) -> Vec<u8> {
    let ihl = usize::from(quoted[0] & 0x0f) * 4;
    let mut m = vec![kind, 0, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&quoted[..(ihl + 8).min(quoted.len())]);
    m
}

/// A DHCP client message from `mac` (UDP payload).
pub fn dhcp(message_type: DhcpMessageType, mac: [u8; 6]) -> Vec<u8> {
    let repr = DhcpRepr {
        message_type,
        transaction_id: 0x1234_5678,
        secs: 0,
        client_hardware_address: EthernetAddress(mac),
        client_ip: Ipv4Addr::UNSPECIFIED,
        your_ip: Ipv4Addr::UNSPECIFIED,
        server_ip: Ipv4Addr::UNSPECIFIED,
        router: None,
        subnet_mask: None,
        relay_agent_ip: Ipv4Addr::UNSPECIFIED,
        broadcast: true,
        requested_ip: None,
        client_identifier: Some(EthernetAddress(mac)),
        server_identifier: None,
        parameter_request_list: Some(&[1, 3, 6]),
        dns_servers: None,
        max_size: None,
        lease_duration: None,
        renew_duration: None,
        rebind_duration: None,
        additional_options: &[],
    };
    let mut payload = vec![0; repr.buffer_len()];
    repr.emit(&mut DhcpPacket::new_unchecked(&mut payload[..]))
        .expect("the buffer has the length the repr asked for");
    payload
}

/// A UDP frame from host `from` to host `to` (MACs and addresses).
pub fn udp_frame(from: Host, to: Host, (sport, dport): (u16, u16), payload: &[u8]) -> Vec<u8> {
    let l4 = udp(sport, dport, payload);
    ipv4((from.mac, to.mac), (from.ip, to.ip), 17, &l4)
}

/// A TCP frame from host `from` to host `to`.
pub fn tcp_frame(from: Host, to: Host, (sport, dport): (u16, u16), flags: u8) -> Vec<u8> {
    ipv4(
        (from.mac, to.mac),
        (from.ip, to.ip),
        6,
        &tcp(sport, dport, flags),
    )
}

/// Frames for a benchmark of the decision core: guest to guest UDP both ways, a guest's TCP
/// connection through the trunk and its replies, and ARP broadcasts, each padded to `len`
/// bytes (at least 64).
pub fn bench_frames(lab: &Lab, len: usize) -> Vec<(PortId, Vec<u8>)> {
    let pad = |mut f: Vec<u8>| {
        f.resize(f.len().max(len), 0);
        f
    };
    let to_trunk = |f: Vec<u8>, vid: u16| tagged(&pad(f), vid);
    vec![
        (lab.a, pad(udp_frame(A, B, (4000, 5000), &[]))),
        (lab.b, pad(udp_frame(B, A, (5000, 4000), &[]))),
        (lab.a, pad(tcp_frame(A, R10, (40000, 443), ACK))),
        (
            lab.trunk,
            to_trunk(tcp_frame(R10, A, (443, 40000), ACK), 10),
        ),
        (lab.trunk, to_trunk(tcp_frame(R10, B, (50000, 80), ACK), 10)),
        (
            lab.c,
            pad(arp(
                (C.mac, BROADCAST),
                ArpOperation::Request,
                (C.mac, C.ip),
                R20.ip,
            )),
        ),
    ]
}

/// Runs `frames` through the switch `rounds` times, 1 µs apart; returns the copies forwarded.
/// The benchmark times this call.
pub fn bench_run(switch: &mut Switch, frames: &[(PortId, Vec<u8>)], rounds: u32) -> u64 {
    let mut copies = 0u64;
    let mut t = 0i64;
    for _ in 0..rounds {
        for (port, frame) in frames {
            t += 1;
            if let Decision::Forward(f) = switch.ingress(*port, frame, Instant::from_micros(t)) {
                copies += f.to.len() as u64;
            }
        }
    }
    copies
}
