//! The switch's own DHCP server, for guests with a stock OS that ask for their address (issue
//! 6: "a small DHCP responder serves other guests"). vKaOS guests are told theirs on the kernel
//! command line and never ask.
//!
//! **What it serves.** Nothing is allocated here: every guest port already has its address
//! (IPAM, on the host), so a guest is offered that address and no other, with its VLAN's
//! [`DhcpConfig`]: subnet mask, router, DNS servers, lease time. The answer is a pure function
//! of the request, the guest's port and the VLAN's settings; nothing is remembered between
//! requests (a lease is the port's for as long as the port exists).
//!
//! **Where it sits.** In [`Switch::ingress`](super::Switch::ingress), after anti-spoofing
//! and before destinations, for a guest on a VLAN that has settings:
//! - a UDP datagram to port 67 for `255.255.255.255` or the server identifier is the switch's:
//!   it is answered (or not) and **never forwarded**, so no other guest or uplink host sees it
//!   and no rogue server can answer it. The frame is accepted with no destination (a
//!   [`Forward`](super::Forward) to no port, not a drop); the answer waits in a small outbox
//!   ([`MAX_ANSWERS`]) for the datapath ([`Switch::take_answers`](super::Switch::take_answers)),
//!   addressed to the asking port only, and is counted in its
//!   [`PortCounters::dhcp_answers`](super::PortCounters::dhcp_answers);
//! - a guest's DHCP server message (UDP 67 to 68) is dropped as
//!   [`Firewall`](super::DropReason::Firewall) (DHCP snooping: the switch is the VLAN's only
//!   server). Uplinks are trusted, as a snooping switch trusts its uplink ports; with the
//!   requests kept in, an outside server has nothing to answer anyway.
//!
//! Without settings a VLAN is untouched: DHCP is forwarded as before.
//!
//! **Answers** (RFC 2131): DISCOVER → OFFER; REQUEST for the guest's own address (requested-IP
//! option, else `ciaddr`) → ACK, for any other or none → NAK (a client rebooting with an old
//! lease starts over at once); INFORM from the guest's own address → ACK with the settings and
//! no lease; RELEASE and DECLINE → nothing (the address stays the port's; a DECLINE means an
//! outside host uses it, which anti-spoofing cannot fix). A relayed message (`giaddr` set) is
//! not answered. A client message whose `chaddr` is not the port's MAC is dropped as
//! [`SpoofedMac`](super::DropReason::SpoofedMac) (from 0.0.0.0, anti-spoofing has already
//! dropped it as `SpoofedIpv4`); one that does not parse, is fragmented, comes from a port
//! other than 68 or is longer than [`MAX_MESSAGE`] is `Malformed`.
//!
//! **Addressing.** Ethernet: to the guest's MAC, from [`SERVER_MAC`]. IPv4 (§4.1): a NAK to
//! `255.255.255.255`; otherwise to the guest's address if `ciaddr` is it, else to
//! `255.255.255.255` if the client set the BROADCAST flag, else to the guest's address. From
//! the server identifier: the VLAN's gateway, or [`FALLBACK_SERVER_ID`] when it has none. A
//! client renews by unicast to the server identifier; the switch takes that datagram whatever
//! its destination MAC (the gateway's, for a real router behind an uplink). With the fallback,
//! which a client has no route to, renewing fails and the client rebinds by broadcast at 7/8
//! of the lease, which the switch answers.
//!
//! Every message is at most one frame in and one out; options are parsed by
//! `smoltcp::wire::DhcpRepr` (bounded by the message) and answers are emitted by it.

use std::collections::VecDeque;

use core::net::Ipv4Addr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    DhcpMessageType, DhcpPacket, DhcpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr,
};

use super::ConfigError;
use super::counters::DropReason;
use super::frame::{Ipv4, L4, proto};
use super::port::{GuestPort, PortId};

/// Most DNS servers a VLAN announces (what the protocol's VLAN carries).
pub const MAX_DNS: usize = 2;
/// Shortest lease the switch gives: a client renews at half of it.
pub const MIN_LEASE_SECS: u32 = 60;
/// Answers waiting for the datapath. A TX batch holds at most 64 frames and the datapath takes
/// the answers after each; beyond this the oldest is discarded (its client asks again).
pub const MAX_ANSWERS: usize = 64;
/// Longest DHCP message answered: one that fits an unfragmented 1500-byte IPv4 packet.
pub const MAX_MESSAGE: usize = 1500 - 20 - 8;
/// The server identifier (and answers' source) on a VLAN without a gateway: link-local
/// (RFC 3927), never a guest's or an outside host's address on the subnet, and easy to spot
/// in a capture (67, the server port).
pub const FALLBACK_SERVER_ID: Ipv4Addr = Ipv4Addr::new(169, 254, 67, 67);
/// The source MAC of answers: locally administered, unicast, and outside IPAM's `02:…` range
/// so no guest has it.
pub const SERVER_MAC: [u8; 6] = [0x06, b'k', b'a', b'o', b's', 67];

/// Server and client UDP ports.
pub(crate) const SERVER_PORT: u16 = 67;
const CLIENT_PORT: u16 = 68;
/// BOOTP's shortest message (RFC 1542 §2.1); answers are padded to it.
const MIN_MESSAGE: usize = 300;
const TTL: u8 = 64;

/// A VLAN's DHCP settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpConfig {
    /// The subnet's prefix length: the mask guests are told (1–32).
    pub prefix: u8,
    /// The default router, if the VLAN has one; also the server identifier.
    pub gateway: Option<Ipv4Addr>,
    /// DNS servers, at most [`MAX_DNS`].
    pub dns: Vec<Ipv4Addr>,
    /// Lease time in seconds, at least [`MIN_LEASE_SECS`] (`u32::MAX`: infinite).
    pub lease_secs: u32,
}

impl DhcpConfig {
    /// The address answers come from and clients renew with.
    pub fn server_id(&self) -> Ipv4Addr {
        self.gateway.unwrap_or(FALLBACK_SERVER_ID)
    }

    /// The subnet mask.
    pub fn netmask(&self) -> Ipv4Addr {
        let bits = u32::MAX
            .checked_shl(32 - u32::from(self.prefix.min(32)))
            .unwrap_or(0);
        Ipv4Addr::from_bits(bits)
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let unicast =
            |ip: Ipv4Addr| !(ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast());
        if !(1..=32).contains(&self.prefix) {
            return Err(ConfigError::BadDhcp("the prefix is 1 to 32"));
        }
        if self.gateway.is_some_and(|g| !unicast(g)) {
            return Err(ConfigError::BadDhcp(
                "the gateway must be a unicast address",
            ));
        }
        if self.dns.len() > MAX_DNS || !self.dns.iter().all(|d| unicast(*d)) {
            return Err(ConfigError::BadDhcp(
                "at most 2 DNS servers, unicast addresses",
            ));
        }
        if self.lease_secs < MIN_LEASE_SECS {
            return Err(ConfigError::BadDhcp("a lease is at least 60 seconds"));
        }
        Ok(())
    }
}

/// The VLANs' settings and the answers waiting for the datapath.
#[derive(Debug, Default)]
pub(crate) struct Responder {
    /// Indexed by VLAN id, made on first use (most switches never serve DHCP).
    configs: Vec<Option<DhcpConfig>>,
    /// How many VLANs have settings: the fast path's test.
    served: usize,
    outbox: VecDeque<(PortId, Vec<u8>)>,
}

/// What the responder did with a guest's packet it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Taken {
    /// Answered; the answer is in the outbox.
    Answered,
    /// Taken without an answer (RELEASE, DECLINE, a relayed message, …).
    Silent,
}

impl Responder {
    pub fn set(&mut self, vlan: super::Vlan, config: Option<DhcpConfig>) {
        if self.configs.is_empty() {
            if config.is_none() {
                return;
            }
            self.configs.resize(usize::from(super::Vlan::MAX) + 1, None);
        }
        let slot = &mut self.configs[vlan.index()];
        self.served = self.served - usize::from(slot.is_some()) + usize::from(config.is_some());
        *slot = config;
    }

    pub fn get(&self, vlan: super::Vlan) -> Option<&DhcpConfig> {
        self.configs.get(vlan.index())?.as_ref()
    }

    /// Takes `ip` from guest `g` (on `port`) if the switch serves DHCP on its VLAN and the
    /// packet is DHCP: `None` for every other packet, which goes on as before.
    #[inline]
    pub fn take(
        &mut self,
        port: PortId,
        g: &GuestPort,
        ip: &Ipv4<'_>,
    ) -> Option<Result<Taken, DropReason>> {
        let L4::Ports { src, dst, .. } = ip.l4 else {
            return None;
        };
        if self.served == 0
            || ip.protocol != proto::UDP
            || !(dst == SERVER_PORT || (src == SERVER_PORT && dst == CLIENT_PORT))
        {
            return None;
        }
        self.take_dhcp(port, g, ip, dst)
    }

    #[cold]
    fn take_dhcp(
        &mut self,
        port: PortId,
        g: &GuestPort,
        ip: &Ipv4<'_>,
        dst: u16,
    ) -> Option<Result<Taken, DropReason>> {
        let config = self.get(g.vlan)?;
        if dst != SERVER_PORT {
            return Some(Err(DropReason::Firewall));
        }
        if ip.dst != Ipv4Addr::BROADCAST && ip.dst != config.server_id() {
            return None;
        }
        Some(answer(config, g, ip).map(|frame| match frame {
            Some(frame) => {
                if self.outbox.len() >= MAX_ANSWERS {
                    self.outbox.pop_front();
                }
                self.outbox.push_back((port, frame));
                Taken::Answered
            }
            None => Taken::Silent,
        }))
    }

    /// The answers, oldest first.
    pub fn drain(&mut self) -> impl Iterator<Item = (PortId, Vec<u8>)> + '_ {
        self.outbox.drain(..)
    }

    /// Forgets the answers for a port that goes (its id may be reused).
    pub fn forget(&mut self, port: PortId) {
        self.outbox.retain(|(p, _)| *p != port);
    }
}

/// The answer to a DHCP client message `ip` (UDP to port 67) from guest `g`: an Ethernet frame
/// for `g`, or `None` when there is nothing to say; an error when the message is refused.
pub(crate) fn answer(
    config: &DhcpConfig,
    g: &GuestPort,
    ip: &Ipv4<'_>,
) -> Result<Option<Vec<u8>>, DropReason> {
    if ip.first_fragment || ip.later_fragment {
        return Err(DropReason::Malformed);
    }
    let udp = UdpPacket::new_checked(ip.payload).map_err(|_| DropReason::Malformed)?;
    let message = udp.payload();
    if udp.src_port() != CLIENT_PORT || message.len() > MAX_MESSAGE {
        return Err(DropReason::Malformed);
    }
    let packet = DhcpPacket::new_checked(message).map_err(|_| DropReason::Malformed)?;
    let request = DhcpRepr::parse(&packet).map_err(|_| DropReason::Malformed)?;
    if request.client_hardware_address != EthernetAddress(g.mac) {
        return Err(DropReason::SpoofedMac);
    }
    if !request.relay_agent_ip.is_unspecified() {
        return Ok(None);
    }
    let ours = |a: Ipv4Addr| a == g.ipv4;
    let reply = match request.message_type {
        DhcpMessageType::Discover => Reply::Offer,
        DhcpMessageType::Request => {
            let wanted = request
                .requested_ip
                .or(Some(request.client_ip).filter(|c| !c.is_unspecified()));
            if wanted.is_some_and(ours) {
                Reply::Ack
            } else {
                Reply::Nak
            }
        }
        DhcpMessageType::Inform if ours(request.client_ip) => Reply::Inform,
        _ => return Ok(None),
    };
    Ok(Some(emit(config, g, &request, reply)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    Offer,
    Ack,
    Nak,
    /// An ACK to an INFORM: settings, no address, no lease.
    Inform,
}

/// The reply frame.
fn emit(config: &DhcpConfig, g: &GuestPort, request: &DhcpRepr<'_>, reply: Reply) -> Vec<u8> {
    let server = config.server_id();
    let settings = reply != Reply::Nak;
    let repr = DhcpRepr {
        message_type: match reply {
            Reply::Offer => DhcpMessageType::Offer,
            Reply::Ack | Reply::Inform => DhcpMessageType::Ack,
            Reply::Nak => DhcpMessageType::Nak,
        },
        transaction_id: request.transaction_id,
        secs: 0,
        client_hardware_address: request.client_hardware_address,
        client_ip: match reply {
            Reply::Ack | Reply::Inform => request.client_ip,
            Reply::Offer | Reply::Nak => Ipv4Addr::UNSPECIFIED,
        },
        your_ip: match reply {
            Reply::Offer | Reply::Ack => g.ipv4,
            Reply::Inform | Reply::Nak => Ipv4Addr::UNSPECIFIED,
        },
        server_ip: Ipv4Addr::UNSPECIFIED,
        router: config.gateway.filter(|_| settings),
        subnet_mask: settings.then(|| config.netmask()),
        relay_agent_ip: Ipv4Addr::UNSPECIFIED,
        broadcast: request.broadcast,
        requested_ip: None,
        client_identifier: request.client_identifier,
        server_identifier: Some(server),
        parameter_request_list: None,
        dns_servers: (settings && !config.dns.is_empty())
            .then(|| config.dns.iter().copied().take(MAX_DNS).collect()),
        max_size: None,
        lease_duration: matches!(reply, Reply::Offer | Reply::Ack).then_some(config.lease_secs),
        renew_duration: None,
        rebind_duration: None,
        additional_options: &[],
    };
    let to = match reply {
        Reply::Nak => Ipv4Addr::BROADCAST,
        _ if request.client_ip == g.ipv4 => g.ipv4,
        _ if request.broadcast => Ipv4Addr::BROADCAST,
        _ => g.ipv4,
    };
    frame(g.mac, (server, to), &repr)
}

/// An Ethernet frame from [`SERVER_MAC`] to `mac` carrying `repr` from `server`:67 to `to`:68.
fn frame(mac: [u8; 6], (server, to): (Ipv4Addr, Ipv4Addr), repr: &DhcpRepr<'_>) -> Vec<u8> {
    let message_len = repr.buffer_len().max(MIN_MESSAGE);
    let udp = UdpRepr {
        src_port: SERVER_PORT,
        dst_port: CLIENT_PORT,
    };
    let ip = Ipv4Repr {
        src_addr: server,
        dst_addr: to,
        next_header: IpProtocol::Udp,
        payload_len: udp.header_len() + message_len,
        hop_limit: TTL,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(SERVER_MAC),
        dst_addr: EthernetAddress(mac),
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut out = vec![0; eth.buffer_len() + ip.buffer_len() + ip.payload_len];
    let caps = ChecksumCapabilities::default();
    let mut e = EthernetFrame::new_unchecked(&mut out[..]);
    eth.emit(&mut e);
    let mut p = Ipv4Packet::new_unchecked(e.payload_mut());
    ip.emit(&mut p, &caps);
    let mut u = UdpPacket::new_unchecked(p.payload_mut());
    let mut emitted = Ok(());
    udp.emit(
        &mut u,
        &IpAddress::Ipv4(server),
        &IpAddress::Ipv4(to),
        message_len,
        |m| emitted = repr.emit(&mut DhcpPacket::new_unchecked(m)),
        &caps,
    );
    debug_assert!(
        emitted.is_ok(),
        "the message has the length its repr asked for"
    );
    out
}
