//! What the switch reads from a frame: addresses, VLAN tag, and for IPv4 and ARP the fields its
//! anti-spoofing and firewall decide on. Parsing is `smoltcp::wire`'s checked views
//! (`new_checked`, then accessors that cannot panic); a frame that does not parse is
//! [`Malformed`](super::DropReason::Malformed). Checksums are not verified: guests with
//! checksum offload send partial ones, and the receiving stack checks them anyway.

use core::net::Ipv4Addr;

use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, IPV4_HEADER_LEN,
    Icmpv4Message, Icmpv4Packet, Ipv4Packet, TcpPacket, UdpPacket,
};

use super::vlan::{self, Outer};

/// EtherType of IPv4.
pub(crate) const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub(crate) const ETHERTYPE_ARP: u16 = 0x0806;

/// The Ethernet header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct L2<'a> {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub outer: Outer,
    /// The EtherType after the tag, if any.
    pub ethertype: u16,
    pub payload: &'a [u8],
}

/// Reads the Ethernet header and the outer VLAN tag; `None` if the frame is too short.
pub(crate) fn l2(frame: &[u8]) -> Option<L2<'_>> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let (outer, at) = vlan::outer(frame)?;
    Some(L2 {
        dst: eth.dst_addr().0,
        src: eth.src_addr().0,
        outer,
        ethertype: vlan::be16(frame, at)?,
        payload: frame.get(at + 2..)?,
    })
}

/// Whether `mac` is a group (multicast or broadcast) address.
pub(crate) fn is_group(mac: [u8; 6]) -> bool {
    mac[0] & 1 != 0
}

/// An ARP packet for IPv4 over Ethernet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Arp {
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
}

pub(crate) fn arp(payload: &[u8]) -> Option<Arp> {
    let packet = ArpPacket::new_checked(payload).ok()?;
    match ArpRepr::parse(&packet).ok()? {
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request | ArpOperation::Reply,
            source_hardware_addr,
            source_protocol_addr,
            ..
        } => Some(Arp {
            sender_mac: source_hardware_addr.0,
            sender_ip: source_protocol_addr,
        }),
        _ => None,
    }
}

/// The transport fields of an IPv4 packet that rules and connection tracking match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum L4 {
    /// TCP or UDP with ports; `flags` are TCP's (SYN, ACK, FIN, RST), 0 for UDP.
    Ports { src: u16, dst: u16, flags: u8 },
    /// ICMP echo request or reply.
    Echo { ident: u16 },
    /// An ICMP error (unreachable, time exceeded, parameter problem) quoting a packet of
    /// `inner`, as that packet was sent.
    Error { inner: Flow },
    /// Any other protocol or ICMP message, or a fragment after the first: no ports.
    None,
}

pub(crate) const TCP_FIN: u8 = 1;
pub(crate) const TCP_SYN: u8 = 2;
pub(crate) const TCP_RST: u8 = 4;
pub(crate) const TCP_ACK: u8 = 16;

/// An IPv4 packet, as far as the switch reads it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ipv4<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ident: u16,
    /// This is a fragment after the first (offset > 0): no transport header.
    pub later_fragment: bool,
    /// This is the first fragment of several (offset 0, more fragments).
    pub first_fragment: bool,
    pub l4: L4,
    /// The IP payload (total length honoured, Ethernet padding excluded).
    pub payload: &'a [u8],
}

/// A flow's 5-tuple as one packet carries it. ICMP echo uses its identifier as both ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flow {
    pub protocol: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
}

impl Ipv4<'_> {
    /// The flow this packet belongs to, if it has ports (or an echo identifier).
    pub fn flow(&self) -> Option<Flow> {
        let (sport, dport) = match self.l4 {
            L4::Ports { src, dst, .. } => (src, dst),
            L4::Echo { ident } => (ident, ident),
            L4::Error { .. } | L4::None => return None,
        };
        Some(Flow {
            protocol: self.protocol,
            src: self.src,
            dst: self.dst,
            sport,
            dport,
        })
    }

    /// The destination port, for rules with a port range.
    pub fn dport(&self) -> Option<u16> {
        match self.l4 {
            L4::Ports { dst, .. } => Some(dst),
            _ => None,
        }
    }
}

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;

/// Parses an IPv4 packet. Refuses what a receiver would (bad version, IHL, total length beyond
/// the frame) and what could hide a transport header from the firewall: a first fragment too
/// short for its TCP or UDP header, and a TCP fragment at offset 8 (RFC 1858's overlap attack).
pub(crate) fn ipv4(payload: &[u8]) -> Option<Ipv4<'_>> {
    let packet = Ipv4Packet::new_checked(payload).ok()?;
    if packet.version() != 4 {
        return None;
    }
    let protocol = u8::from(packet.next_header());
    let offset = packet.frag_offset();
    let later_fragment = offset != 0;
    let first_fragment = !later_fragment && packet.more_frags();
    if protocol == TCP && offset == 8 {
        return None;
    }
    let payload = packet.payload();
    let l4 = if later_fragment {
        L4::None
    } else {
        transport(protocol, payload, first_fragment)?
    };
    Some(Ipv4 {
        src: packet.src_addr(),
        dst: packet.dst_addr(),
        protocol,
        ident: packet.ident(),
        later_fragment,
        first_fragment,
        l4,
        payload,
    })
}

fn transport(protocol: u8, payload: &[u8], fragment: bool) -> Option<L4> {
    Some(match protocol {
        TCP => {
            let tcp = TcpPacket::new_checked(payload).ok()?;
            let flags = u8::from(tcp.fin())
                | u8::from(tcp.syn()) << 1
                | u8::from(tcp.rst()) << 2
                | u8::from(tcp.ack()) << 4;
            L4::Ports {
                src: tcp.src_port(),
                dst: tcp.dst_port(),
                flags,
            }
        }
        UDP => {
            // A first fragment holds only the start of the datagram its length field covers,
            // so only the ports are read from it.
            let (src, dst) = if fragment {
                (vlan::be16(payload, 0)?, vlan::be16(payload, 2)?)
            } else {
                let udp = UdpPacket::new_checked(payload).ok()?;
                (udp.src_port(), udp.dst_port())
            };
            L4::Ports { src, dst, flags: 0 }
        }
        ICMP => icmp(payload)?,
        _ => L4::None,
    })
}

fn icmp(payload: &[u8]) -> Option<L4> {
    let icmp = Icmpv4Packet::new_checked(payload).ok()?;
    Some(match icmp.msg_type() {
        Icmpv4Message::EchoRequest | Icmpv4Message::EchoReply => L4::Echo {
            ident: icmp.echo_ident(),
        },
        Icmpv4Message::DstUnreachable
        | Icmpv4Message::TimeExceeded
        | Icmpv4Message::ParamProblem => match quoted(icmp.data()) {
            Some(inner) => L4::Error { inner },
            None => L4::None,
        },
        _ => L4::None,
    })
}

/// The flow of the packet an ICMP error quotes: its IPv4 header and first 8 payload bytes.
/// The quoted packet is truncated by design, so its total length is not checked; the header
/// is read only after its own length is.
fn quoted(data: &[u8]) -> Option<Flow> {
    let ihl = usize::from(*data.first()? & 0x0f) * 4;
    if *data.first()? >> 4 != 4 || ihl < IPV4_HEADER_LEN {
        return None;
    }
    let header = Ipv4Packet::new_unchecked(data.get(..ihl)?);
    // `header` holds `ihl` >= 20 bytes, so every fixed-field accessor below is in bounds.
    if header.frag_offset() != 0 {
        return None;
    }
    let l4 = data.get(ihl..ihl + 8)?;
    let protocol = u8::from(header.next_header());
    let (sport, dport) = match protocol {
        TCP | UDP => (vlan::be16(l4, 0)?, vlan::be16(l4, 2)?),
        ICMP if l4[0] == 8 || l4[0] == 0 => {
            let ident = vlan::be16(l4, 4)?;
            (ident, ident)
        }
        _ => return None,
    };
    Some(Flow {
        protocol,
        src: header.src_addr(),
        dst: header.dst_addr(),
        sport,
        dport,
    })
}

/// Whether `payload` (an IPv4 packet from 0.0.0.0) is a DHCP client message a host without an
/// address sends (DISCOVER, REQUEST, DECLINE), from `mac` itself: UDP 68 to 255.255.255.255:67,
/// BOOTREQUEST, client hardware address `mac`.
pub(crate) fn is_dhcp_without_address(ip: &Ipv4<'_>, mac: [u8; 6]) -> bool {
    use smoltcp::wire::{DhcpMessageType, DhcpOpCode, DhcpPacket, DhcpRepr};

    if ip.dst != Ipv4Addr::BROADCAST || ip.first_fragment || ip.later_fragment {
        return false;
    }
    if ip.l4
        != (L4::Ports {
            src: 68,
            dst: 67,
            flags: 0,
        })
        || ip.protocol != UDP
    {
        return false;
    }
    let Ok(udp) = UdpPacket::new_checked(ip.payload) else {
        return false;
    };
    let Ok(dhcp) = DhcpPacket::new_checked(udp.payload()) else {
        return false;
    };
    if dhcp.opcode() != DhcpOpCode::Request
        || dhcp.client_hardware_address() != EthernetAddress(mac)
    {
        return false;
    }
    matches!(
        DhcpRepr::parse(&dhcp).map(|r| r.message_type),
        Ok(DhcpMessageType::Discover | DhcpMessageType::Request | DhcpMessageType::Decline)
    )
}

/// Protocol numbers for the firewall.
pub(crate) mod proto {
    pub const TCP: u8 = super::TCP;
    pub const UDP: u8 = super::UDP;
    pub const ICMP: u8 = super::ICMP;
}
