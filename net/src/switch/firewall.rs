//! Firewall rules and the policy that applies them to one copy of an IPv4 packet.
//!
//! Rules belong to a guest port or to a VLAN and are read from the guest's side: `In` is
//! towards the guest, `Out` from it, and `remote` is the address of the other end. A packet
//! between two ports passes two stages: the sender's `Out` (when the sender is a guest) and the
//! receiver's `In` (when the receiver is a guest). Each stage takes the first matching rule of
//! the guest's list, then of its VLAN's list (the more specific list first); when none
//! matches, the defaults of issue 6 decide:
//!
//! - `Out`: allowed.
//! - `In` from a guest (necessarily on the same VLAN): allowed.
//! - `In` from an uplink: denied, except TCP or UDP to a port the guest publishes, on its own
//!   address.
//!
//! Connection tracking (`conntrack`) runs before the rules: a packet of a flow that was
//! allowed, in either direction, passes without them. So replies to a guest's outgoing
//! connections come back through an uplink that the defaults close, and changed rules govern
//! new flows only, as with Linux's conntrack.

use core::net::Ipv4Addr;

use super::ConfigError;
use super::frame::{Ipv4, proto};

/// Most rules in one list (a guest's or a VLAN's): bounds the work for a new flow.
pub const MAX_RULES: usize = 256;
/// Most published ports per guest.
pub const MAX_PUBLISHED: usize = 64;

/// Which way a rule looks, from the guest's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Towards the guest.
    In,
    /// From the guest.
    Out,
}

/// Which packets a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Every IPv4 packet.
    Any,
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP.
    Icmp,
}

/// A transport protocol with ports, for published ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Let the packet through (and track its flow).
    Allow,
    /// Drop it.
    Deny,
}

/// An inclusive range of destination ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port.
    pub last: u16,
}

impl PortRange {
    /// Every port.
    pub const ALL: PortRange = PortRange {
        first: 0,
        last: u16::MAX,
    };

    /// One port.
    pub const fn one(port: u16) -> Self {
        Self {
            first: port,
            last: port,
        }
    }

    fn contains(self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

/// An IPv4 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Cidr {
    /// Every address.
    pub const ANY: Cidr = Cidr {
        addr: Ipv4Addr::UNSPECIFIED,
        prefix: 0,
    };

    /// `addr/prefix`, if `prefix` is at most 32. Host bits are cleared.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Cidr> {
        (prefix <= 32).then(|| Cidr {
            addr: Ipv4Addr::from_bits(addr.to_bits() & mask(prefix)),
            prefix,
        })
    }

    /// The network address.
    pub fn addr(self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is inside.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        ip.to_bits() & mask(self.prefix) == self.addr.to_bits()
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0)
}

/// One firewall rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Towards the guest or from it.
    pub direction: Direction,
    /// Which packets.
    pub protocol: Protocol,
    /// Destination ports (the guest's for `In`, the remote's for `Out`); [`PortRange::ALL`]
    /// unless `protocol` is TCP or UDP.
    pub ports: PortRange,
    /// The other end's address.
    pub remote: Cidr,
    /// What to do.
    pub action: Action,
}

impl Rule {
    fn matches(&self, direction: Direction, ip: &Ipv4<'_>) -> bool {
        let remote = match direction {
            Direction::In => ip.src,
            Direction::Out => ip.dst,
        };
        if self.direction != direction || !self.remote.contains(remote) {
            return false;
        }
        let protocol = match self.protocol {
            Protocol::Any => return true,
            Protocol::Tcp => proto::TCP,
            Protocol::Udp => proto::UDP,
            Protocol::Icmp => proto::ICMP,
        };
        if ip.protocol != protocol {
            return false;
        }
        // A fragment after the first has no ports: only a rule for every port matches it.
        self.ports == PortRange::ALL || ip.dport().is_some_and(|p| self.ports.contains(p))
    }
}

/// Checks a rule list at the boundary, before the switch takes it.
pub(crate) fn validate(rules: &[Rule]) -> Result<(), ConfigError> {
    if rules.len() > MAX_RULES {
        return Err(ConfigError::TooManyRules);
    }
    for (i, rule) in rules.iter().enumerate() {
        if rule.ports.first > rule.ports.last {
            return Err(ConfigError::BadPortRange(i));
        }
        let has_ports = matches!(rule.protocol, Protocol::Tcp | Protocol::Udp);
        if rule.ports != PortRange::ALL && !has_ports {
            return Err(ConfigError::PortsWithoutProtocol(i));
        }
    }
    Ok(())
}

/// A port published by a guest: reachable from uplinks on the guest's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// TCP or UDP.
    pub transport: Transport,
    /// The guest's port.
    pub port: u16,
}

/// One end of a packet, as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum End<'a> {
    Guest {
        rules: &'a [Rule],
        ipv4: Ipv4Addr,
        published: &'a [Published],
    },
    Uplink,
}

/// The rules' verdict on one copy of `ip` from `from` to `to` on a VLAN with `vlan_rules`.
pub(crate) fn allows(from: End<'_>, to: End<'_>, vlan_rules: &[Rule], ip: &Ipv4<'_>) -> bool {
    let first = |rules: &[Rule], direction| {
        rules
            .iter()
            .chain(vlan_rules)
            .find(|r| r.matches(direction, ip))
            .map(|r| r.action == Action::Allow)
    };
    if let End::Guest { rules, .. } = from
        && first(rules, Direction::Out) == Some(false)
    {
        return false;
    }
    match to {
        End::Uplink => true,
        End::Guest {
            rules,
            ipv4,
            published,
        } => first(rules, Direction::In).unwrap_or_else(|| match from {
            End::Guest { .. } => true,
            End::Uplink => ip.dst == ipv4 && is_published(published, ip),
        }),
    }
}

fn is_published(published: &[Published], ip: &Ipv4<'_>) -> bool {
    let Some(port) = ip.dport() else {
        return false;
    };
    published.iter().any(|p| {
        p.port == port
            && match p.transport {
                Transport::Tcp => ip.protocol == proto::TCP,
                Transport::Udp => ip.protocol == proto::UDP,
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_contain_their_prefix() {
        let net = Cidr::new(Ipv4Addr::new(10, 1, 2, 3), 16).expect("valid prefix");
        assert_eq!(net.addr(), Ipv4Addr::new(10, 1, 0, 0));
        assert!(net.contains(Ipv4Addr::new(10, 1, 255, 1)));
        assert!(!net.contains(Ipv4Addr::new(10, 2, 0, 1)));
        assert!(Cidr::ANY.contains(Ipv4Addr::BROADCAST));
        let host = Cidr::new(Ipv4Addr::new(192, 0, 2, 7), 32).expect("valid prefix");
        assert!(host.contains(Ipv4Addr::new(192, 0, 2, 7)));
        assert!(!host.contains(Ipv4Addr::new(192, 0, 2, 6)));
        assert_eq!(Cidr::new(Ipv4Addr::LOCALHOST, 33), None);
    }

    #[test]
    fn rule_lists_are_checked() {
        let rule = Rule {
            direction: Direction::In,
            protocol: Protocol::Any,
            ports: PortRange::one(22),
            remote: Cidr::ANY,
            action: Action::Deny,
        };
        assert_eq!(validate(&[rule]), Err(ConfigError::PortsWithoutProtocol(0)));
        let tcp = Rule {
            protocol: Protocol::Tcp,
            ..rule
        };
        assert_eq!(validate(&[tcp]), Ok(()));
        let backwards = Rule {
            ports: PortRange { first: 9, last: 8 },
            ..tcp
        };
        assert_eq!(
            validate(&[tcp, backwards]),
            Err(ConfigError::BadPortRange(1))
        );
        assert_eq!(
            validate(&vec![tcp; MAX_RULES + 1]),
            Err(ConfigError::TooManyRules)
        );
    }
}
