//! Ports: guest NICs and uplinks, as the control plane configures them.

use core::fmt;
use core::net::Ipv4Addr;

use super::ConfigError;
use super::firewall::{self, MAX_PUBLISHED, Published, Rule};
use super::vlan::{Tag, Vlan, VlanSet};

/// A port of a switch. Ids of removed ports are reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortId(u16);

impl PortId {
    /// The port numbered `n` (which a switch may or may not have).
    pub const fn new(n: u16) -> Self {
        Self(n)
    }

    pub(crate) fn from_index(index: usize) -> Option<Self> {
        u16::try_from(index).ok().map(Self)
    }

    /// The port's number.
    pub const fn get(self) -> u16 {
        self.0
    }

    pub(crate) const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "port {}", self.0)
    }
}

/// A guest NIC: one VLAN, its assigned MAC and IPv4 address, its published ports and rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestPort {
    /// The VLAN the NIC is on (its frames are untagged).
    pub vlan: Vlan,
    /// The assigned MAC: the only source MAC its frames may carry.
    pub mac: [u8; 6],
    /// The assigned address: the only IPv4 source its packets may carry (DHCP aside).
    pub ipv4: Ipv4Addr,
    /// Ports reachable from uplinks when no rule says otherwise.
    pub published: Vec<Published>,
    /// The guest's own firewall rules, before its VLAN's.
    pub rules: Vec<Rule>,
}

/// How an uplink carries VLANs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UplinkMode {
    /// An 802.1Q trunk: every frame tagged, with one of these VLANs.
    Trunk {
        /// The VLANs the trunk carries.
        allowed: VlanSet,
    },
    /// An access port: untagged frames (or priority-tagged, VID 0) of one VLAN.
    Access {
        /// The VLAN.
        vlan: Vlan,
    },
}

/// What a port is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortKind {
    /// A guest NIC.
    Guest(GuestPort),
    /// A physical NIC towards the outside network.
    Uplink(UplinkMode),
}

impl PortKind {
    /// Whether the port carries `vlan`.
    pub fn carries(&self, vlan: Vlan) -> bool {
        match self {
            PortKind::Guest(g) => g.vlan == vlan,
            PortKind::Uplink(UplinkMode::Access { vlan: v }) => *v == vlan,
            PortKind::Uplink(UplinkMode::Trunk { allowed }) => allowed.contains(vlan),
        }
    }

    /// How a frame of `vlan` leaves through this port.
    pub fn egress_tag(&self, vlan: Vlan) -> Tag {
        match self {
            PortKind::Uplink(UplinkMode::Trunk { .. }) => Tag::Tagged(vlan),
            PortKind::Guest(_) | PortKind::Uplink(UplinkMode::Access { .. }) => Tag::Untagged,
        }
    }

    /// The VLANs the port carries.
    pub(crate) fn vlans(&self) -> Vec<Vlan> {
        match self {
            PortKind::Guest(g) => vec![g.vlan],
            PortKind::Uplink(UplinkMode::Access { vlan }) => vec![*vlan],
            PortKind::Uplink(UplinkMode::Trunk { allowed }) => allowed.iter().collect(),
        }
    }

    /// Checks what can be checked without the other ports.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        match self {
            PortKind::Guest(g) => {
                if g.mac[0] & 1 != 0 || g.mac == [0; 6] {
                    return Err(ConfigError::BadMac(g.mac));
                }
                let ip = g.ipv4;
                if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
                    return Err(ConfigError::BadIpv4(ip));
                }
                if g.published.len() > MAX_PUBLISHED {
                    return Err(ConfigError::TooManyPublished);
                }
                firewall::validate(&g.rules)
            }
            PortKind::Uplink(UplinkMode::Trunk { allowed }) if allowed.is_empty() => {
                Err(ConfigError::EmptyTrunk)
            }
            PortKind::Uplink(_) => Ok(()),
        }
    }
}
