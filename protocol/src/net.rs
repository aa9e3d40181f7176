//! Messages of protocol 1.2: the network configuration plane — VLANs with their address pools,
//! firewall rules, VM NICs, and the virtual switch's counters. postcard encodes enum variants by
//! index: append variants and fields, never reorder.
//!
//! The rule and counter types mirror the switch's decision core (`kaos_net::switch`) without
//! depending on it, so this crate stays `no_std` and a client never links the switch.

use core::net::Ipv4Addr;

use heapless::{String, Vec};
use serde::{Deserialize, Serialize};

use crate::message::Ipv4Cidr;
use crate::vm::ObjectName;

/// Lowest VLAN id.
pub const VLAN_MIN: u16 = 1;
/// Highest VLAN id (4095 is reserved by 802.1Q).
pub const VLAN_MAX: u16 = 4094;
/// Shortest subnet prefix a VLAN may have.
pub const VLAN_PREFIX_MIN: u8 = 8;
/// Longest subnet prefix a VLAN may have (a /30 leaves two usable addresses).
pub const VLAN_PREFIX_MAX: u8 = 30;
/// Most VLANs a host holds (and lists in one frame).
pub const MAX_VLANS: usize = 128;
/// Most firewall rules a host holds, in all (one list fits a frame, and a response stays
/// small enough for a thread's stack: there is no allocator to box it with).
pub const MAX_RULES: usize = 128;
/// Most NICs per VM.
pub const MAX_NICS: usize = 4;
/// Most published ports per NIC.
pub const MAX_PUBLISH: usize = 8;
/// Most DNS servers per VLAN (what the kernel's `ip=` argument carries).
pub const MAX_DNS: usize = 2;

/// A VLAN: an L2 domain of the virtual switch and the IPv4 subnet its guests live in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VlanSpec {
    /// 802.1Q id, [`VLAN_MIN`]..=[`VLAN_MAX`].
    pub id: u16,
    /// The subnet, host bits zero, prefix [`VLAN_PREFIX_MIN`]..=[`VLAN_PREFIX_MAX`].
    pub subnet: Ipv4Cidr,
    /// The guests' default gateway (inside the subnet), if the VLAN has one.
    pub gateway: Option<Ipv4Addr>,
    /// First and last address guests are given, inclusive. `None`: the whole subnet but its
    /// network and broadcast addresses. The gateway is never handed out either way.
    pub pool: Option<(Ipv4Addr, Ipv4Addr)>,
    /// DNS servers the guests are told about.
    pub dns: Vec<Ipv4Addr, MAX_DNS>,
}

/// A VLAN and how full its pool is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VlanInfo {
    /// The definition, as created.
    pub spec: VlanSpec,
    /// Addresses held by VM NICs (pool or fixed).
    pub leases_used: u32,
    /// Addresses the pool can hand out (the gateway excluded).
    pub pool_size: u32,
}

/// Every VLAN, by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VlanList {
    /// The VLANs.
    pub entries: Vec<VlanInfo, MAX_VLANS>,
}

/// What a rule applies to. Variants append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RuleScope {
    /// Every guest NIC on this VLAN (evaluated after the guest's own rules).
    Vlan(u16),
    /// Every NIC of this VM.
    Vm(ObjectName),
}

/// Which way a rule looks, from the guest's side. Variants append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RuleDirection {
    /// Towards the guest.
    In,
    /// From the guest.
    Out,
}

/// Which packets a rule matches. Variants append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RuleProtocol {
    /// Every IPv4 packet.
    Any,
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP.
    Icmp,
}

/// What a matching rule does. Variants append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RuleAction {
    /// Let the packet through (and track its flow).
    Allow,
    /// Drop it.
    Deny,
}

/// A firewall rule, as an operator writes it. See `docs/protocol.md`, "Networking".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSpec {
    /// What it applies to.
    pub scope: RuleScope,
    /// Towards the guest or from it.
    pub direction: RuleDirection,
    /// Which packets.
    pub protocol: RuleProtocol,
    /// Destination ports, first and last inclusive (TCP and UDP only); `None`: every port.
    pub ports: Option<(u16, u16)>,
    /// The other end's addresses; `None`: any.
    pub peer: Option<Ipv4Cidr>,
    /// What to do.
    pub action: RuleAction,
}

/// A stored rule. Within a scope, rules are evaluated in id order; the first match decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleInfo {
    /// Assigned by the host, increasing, never reused.
    pub id: u32,
    /// The rule.
    pub spec: RuleSpec,
}

/// Every rule, by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleList {
    /// The rules.
    pub entries: Vec<RuleInfo, MAX_RULES>,
}

/// TCP or UDP, for published ports. Variants append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transport {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// A port a guest publishes: reachable from uplinks on its address unless a rule says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishSpec {
    /// TCP or UDP.
    pub protocol: Transport,
    /// The guest's port.
    pub port: u16,
}

/// A NIC of a VM, as asked for at create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicSpec {
    /// The VLAN it is on.
    pub vlan: u16,
    /// A fixed address in the VLAN's subnet; `None`: the lowest free address of the pool.
    pub ipv4: Option<Ipv4Addr>,
    /// Ports reachable from uplinks.
    pub publish: Vec<PublishSpec, MAX_PUBLISH>,
}

/// A NIC of a VM, as assigned by the host (stable for the VM's life, across host boots).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicInfo {
    /// The VLAN it is on.
    pub vlan: u16,
    /// Its locally administered unicast MAC.
    pub mac: [u8; 6],
    /// Its address.
    pub ipv4: Ipv4Addr,
    /// The VLAN subnet's prefix length.
    pub prefix: u8,
    /// The VLAN's gateway.
    pub gateway: Option<Ipv4Addr>,
}

/// Names of the switch's drop reasons, indexed by [`DropCount::reason`]: the decision core's
/// (`kaos_net::switch::DropReason::ALL`, in order), then the datapath's
/// (`kaos_vswitch::port::DatapathDrop::ALL`: descriptor chains and buffers the core never sees).
/// Append only.
pub const DROP_REASONS: [&str; 22] = [
    "unknown-port",
    "oversize",
    "malformed",
    "bad-vlan-tag",
    "unknown-vlan",
    "invalid-source-mac",
    "spoofed-mac",
    "unsupported-ethertype",
    "spoofed-ipv4",
    "spoofed-arp",
    "no-destination",
    "firewall",
    "conntrack-full",
    "bad-chain",
    "truncated",
    "bad-virtio-header",
    "oversize-chain",
    "no-rx-buffers",
    "rx-buffer-too-small",
    "gso-unsupported",
    "bad-rx-chain",
    "uplink-error",
];

/// The name of drop reason `code`, or `None` for a code newer than this build.
pub fn drop_reason_name(code: u8) -> Option<&'static str> {
    DROP_REASONS.get(usize::from(code)).copied()
}

/// Most drop reasons reported per port or VLAN (room for reasons a newer switch adds).
pub const MAX_DROP_REASONS: usize = 16;

/// Frames dropped for one reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropCount {
    /// Index into [`DROP_REASONS`] (a code as a number, so a client older than the switch
    /// still decodes a newer reason).
    pub reason: u8,
    /// Frames.
    pub count: u64,
}

/// Most VLANs listed for one port (a trunk carries more; the rest are left out).
pub const MAX_PORT_VLANS: usize = 16;

/// One switch port's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStats {
    /// `VM/INDEX` for a guest NIC (e.g. `web-1/0`), the interface name for an uplink.
    pub name: String<40>,
    /// The VLANs it carries.
    pub vlans: Vec<u16, MAX_PORT_VLANS>,
    /// Frames received from the port.
    pub rx_frames: u64,
    /// Bytes of those frames.
    pub rx_bytes: u64,
    /// Frames sent to the port.
    pub tx_frames: u64,
    /// Bytes of those frames.
    pub tx_bytes: u64,
    /// Copies for this port the firewall withheld.
    pub tx_denied: u64,
    /// Frames from this port that went nowhere, by reason (non-zero ones only).
    pub drops: Vec<DropCount, MAX_DROP_REASONS>,
}

/// One VLAN's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VlanStats {
    /// The VLAN.
    pub vlan: u16,
    /// Frames forwarded within it.
    pub frames: u64,
    /// Bytes of those frames.
    pub bytes: u64,
    /// Of those, frames flooded.
    pub floods: u64,
    /// Frames classified into it that went nowhere, by reason (non-zero ones only).
    pub drops: Vec<DropCount, MAX_DROP_REASONS>,
}

/// Most ports in one [`NetStats`] page (a page always fits a frame; it is a page, not the
/// whole switch, so that the response stays small without an allocator).
pub const MAX_STAT_PORTS: usize = 16;
/// Most VLANs in one [`NetStats`] page.
pub const MAX_STAT_VLANS: usize = 16;

/// Arguments of [`Request::NetStats`](crate::Request::NetStats): where the page starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetStatsQuery {
    /// Index of the first port (in switch order) to report.
    pub ports_from: u32,
    /// Index of the first VLAN (by id) to report.
    pub vlans_from: u32,
}

/// A page of the virtual switch's counters. A client asks again from `ports_from + ports.len()`
/// and `vlans_from + vlans.len()` until it has `ports_total` ports and `vlans_total` VLANs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetStats {
    /// Ports from `ports_from` on, in switch order.
    pub ports: Vec<PortStats, MAX_STAT_PORTS>,
    /// VLANs from `vlans_from` on, by id.
    pub vlans: Vec<VlanStats, MAX_STAT_VLANS>,
    /// Ports the switch has.
    pub ports_total: u32,
    /// VLANs the switch has.
    pub vlans_total: u32,
}

/// Why a [`VlanSpec`] or [`RuleSpec`] is refused (the message names the problem).
pub type SpecError = &'static str;

impl Ipv4Cidr {
    /// The netmask, e.g. `255.255.255.0` for /24 (a prefix above 32 counts as 32).
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from_bits(mask(self.prefix))
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from_bits(u32::from_be_bytes(self.addr) & mask(self.prefix))
    }

    /// The broadcast address (host bits set).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from_bits(self.network().to_bits() | !mask(self.prefix))
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        ip.to_bits() & mask(self.prefix) == self.network().to_bits()
    }

    /// Parses `A.B.C.D/N` (N ≤ 32); host bits are kept as written.
    pub fn parse(text: &str) -> Option<Self> {
        let (addr, prefix) = text.split_once('/')?;
        let addr: Ipv4Addr = addr.parse().ok()?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
        Some(Self {
            addr: addr.octets(),
            prefix,
        })
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0)
}

impl VlanSpec {
    /// Checks the definition: id, subnet, gateway, pool and DNS servers.
    pub fn validate(&self) -> Result<(), SpecError> {
        let net = &self.subnet;
        if !(VLAN_MIN..=VLAN_MAX).contains(&self.id) {
            return Err("a VLAN id is 1 to 4094");
        }
        if !(VLAN_PREFIX_MIN..=VLAN_PREFIX_MAX).contains(&net.prefix) {
            return Err("a VLAN subnet's prefix is /8 to /30");
        }
        if net.network().octets() != net.addr {
            return Err("the subnet has host bits set (write its network address)");
        }
        let usable =
            |ip: Ipv4Addr| net.contains(ip) && ip != net.network() && ip != net.broadcast();
        if self.gateway.is_some_and(|gw| !usable(gw)) {
            return Err("the gateway must be a host address inside the subnet");
        }
        if let Some((first, last)) = self.pool {
            if !usable(first) || !usable(last) {
                return Err("the pool must hold host addresses inside the subnet");
            }
            if first > last {
                return Err("the pool ends before it starts");
            }
        }
        if self.pool_size() == 0 {
            return Err("the pool holds no address but the gateway");
        }
        if self
            .dns
            .iter()
            .any(|d| d.is_unspecified() || d.is_broadcast() || d.is_multicast())
        {
            return Err("a DNS server must be a unicast address");
        }
        Ok(())
    }

    /// The pool's first and last address (the default when none was given).
    pub fn pool_range(&self) -> (Ipv4Addr, Ipv4Addr) {
        self.pool.unwrap_or_else(|| {
            let net = &self.subnet;
            (
                Ipv4Addr::from_bits(net.network().to_bits().saturating_add(1)),
                Ipv4Addr::from_bits(net.broadcast().to_bits().saturating_sub(1)),
            )
        })
    }

    /// How many addresses the pool hands out: its range without the gateway.
    pub fn pool_size(&self) -> u32 {
        let (first, last) = self.pool_range();
        let Some(span) = last.to_bits().checked_sub(first.to_bits()) else {
            return 0;
        };
        let gateway_inside = self.gateway.is_some_and(|g| first <= g && g <= last);
        span.saturating_add(1) - u32::from(gateway_inside)
    }

    /// Whether a NIC may hold `ip`: inside the subnet, not its network, broadcast or gateway
    /// address. (Whether another NIC holds it is the host's to check.)
    pub fn assignable(&self, ip: Ipv4Addr) -> Result<(), SpecError> {
        let net = &self.subnet;
        if !net.contains(ip) {
            return Err("the address is outside the VLAN's subnet");
        }
        if ip == net.network() || ip == net.broadcast() {
            return Err("the address is the subnet's network or broadcast address");
        }
        if self.gateway == Some(ip) {
            return Err("the address is the VLAN's gateway");
        }
        Ok(())
    }
}

impl RuleSpec {
    /// Checks what the switch would refuse: ports without TCP or UDP, a backwards range, a bad
    /// VLAN id or peer prefix. (Whether the VLAN or VM exists is the host's to check.)
    pub fn validate(&self) -> Result<(), SpecError> {
        if let RuleScope::Vlan(id) = self.scope
            && !(VLAN_MIN..=VLAN_MAX).contains(&id)
        {
            return Err("a VLAN id is 1 to 4094");
        }
        if let Some((first, last)) = self.ports {
            if !matches!(self.protocol, RuleProtocol::Tcp | RuleProtocol::Udp) {
                return Err("a port range needs protocol tcp or udp");
            }
            if first > last {
                return Err("the port range ends before it starts");
            }
        }
        if self.peer.is_some_and(|p| p.prefix > 32) {
            return Err("a peer prefix is 0 to 32");
        }
        Ok(())
    }
}

impl RuleDirection {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::In => "in",
            Self::Out => "out",
        }
    }
}

impl RuleProtocol {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Icmp => "icmp",
        }
    }
}

impl RuleAction {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

impl Transport {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}
