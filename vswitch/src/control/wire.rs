//! The control channel's messages, as postcard encodes them. Variants are encoded by index:
//! **append only**. Every list is bounded by the message size ([`MAX_MESSAGE`]) and checked
//! again by the core (rule and published-port limits) before use.

use std::net::Ipv4Addr;

use kaos_net::switch::{
    Action, Cidr, DhcpConfig, Direction, PortRange, Protocol, Published, Rule, Transport,
};
use serde::{Deserialize, Serialize};

/// Version of this protocol, exchanged in the hello.
pub const VERSION: u16 = 1;
/// Largest message either side sends or accepts.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Longest port name.
pub const MAX_NAME: usize = 64;

/// Host → switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// First message; answered with [`Reply::Hello`].
    Hello { version: u16 },
    /// A guest port. Comes with one descriptor (SCM_RIGHTS): a listening unix socket on
    /// which the VMM's vhost-user connection already waits.
    AddGuest(WireGuest),
    /// Removes a guest port.
    RemovePort { port: u32 },
    /// Replaces a VLAN's rules.
    SetVlanRules { vlan: u16, rules: Vec<WireRule> },
    /// Replaces a guest's rules.
    SetPortRules { port: u32, rules: Vec<WireRule> },
    /// Replaces a guest's published ports.
    SetPublished {
        port: u32,
        published: Vec<WirePublished>,
    },
    /// Counters.
    Stats,
    /// Forgets tracked flows (after rule changes that must apply to open connections).
    FlushFlows,
    /// Replaces the VLANs the trunk uplink on interface `uplink` carries.
    SetTrunkVlans { uplink: String, vlans: Vec<u16> },
    /// Sets (or with `None` clears) a VLAN's DHCP settings: with them the switch answers its
    /// guests' DHCP itself.
    SetVlanDhcp { vlan: u16, config: Option<WireDhcp> },
}

/// Switch → host: one per request, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The switch's version.
    Hello { version: u16 },
    /// Done.
    Done,
    /// The counters.
    Stats(super::Stats),
    /// Refused, nothing changed.
    Refused { message: String },
}

/// A guest port on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireGuest {
    pub port: u32,
    pub name: String,
    pub vlan: u16,
    pub mac: [u8; 6],
    pub ipv4: [u8; 4],
    pub published: Vec<WirePublished>,
    pub rules: Vec<WireRule>,
}

/// [`DhcpConfig`] on the wire (checked by the core when set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireDhcp {
    pub prefix: u8,
    pub gateway: Option<[u8; 4]>,
    pub dns: Vec<[u8; 4]>,
    pub lease_secs: u32,
}

impl From<&DhcpConfig> for WireDhcp {
    fn from(c: &DhcpConfig) -> Self {
        Self {
            prefix: c.prefix,
            gateway: c.gateway.map(|g| g.octets()),
            dns: c.dns.iter().map(|d| d.octets()).collect(),
            lease_secs: c.lease_secs,
        }
    }
}

impl From<WireDhcp> for DhcpConfig {
    fn from(w: WireDhcp) -> Self {
        Self {
            prefix: w.prefix,
            gateway: w.gateway.map(Ipv4Addr::from),
            dns: w.dns.into_iter().map(Ipv4Addr::from).collect(),
            lease_secs: w.lease_secs,
        }
    }
}

/// [`Rule`] on the wire: direction 0 in, 1 out; protocol 0 any, 1 tcp, 2 udp, 3 icmp; action
/// 0 allow, 1 deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRule {
    pub direction: u8,
    pub protocol: u8,
    pub ports: (u16, u16),
    pub remote: ([u8; 4], u8),
    pub action: u8,
}

/// [`Published`] on the wire: transport 0 tcp, 1 udp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePublished {
    pub transport: u8,
    pub port: u16,
}

impl From<&Rule> for WireRule {
    fn from(r: &Rule) -> Self {
        Self {
            direction: match r.direction {
                Direction::In => 0,
                Direction::Out => 1,
            },
            protocol: match r.protocol {
                Protocol::Any => 0,
                Protocol::Tcp => 1,
                Protocol::Udp => 2,
                Protocol::Icmp => 3,
            },
            ports: (r.ports.first, r.ports.last),
            remote: (r.remote.addr().octets(), r.remote.prefix()),
            action: match r.action {
                Action::Allow => 0,
                Action::Deny => 1,
            },
        }
    }
}

impl WireRule {
    /// The rule, if every field is one a rule can have.
    pub fn to_rule(self) -> Option<Rule> {
        Some(Rule {
            direction: match self.direction {
                0 => Direction::In,
                1 => Direction::Out,
                _ => return None,
            },
            protocol: match self.protocol {
                0 => Protocol::Any,
                1 => Protocol::Tcp,
                2 => Protocol::Udp,
                3 => Protocol::Icmp,
                _ => return None,
            },
            ports: PortRange {
                first: self.ports.0,
                last: self.ports.1,
            },
            remote: Cidr::new(Ipv4Addr::from(self.remote.0), self.remote.1)?,
            action: match self.action {
                0 => Action::Allow,
                1 => Action::Deny,
                _ => return None,
            },
        })
    }
}

impl From<&Published> for WirePublished {
    fn from(p: &Published) -> Self {
        Self {
            transport: match p.transport {
                Transport::Tcp => 0,
                Transport::Udp => 1,
            },
            port: p.port,
        }
    }
}

impl WirePublished {
    /// The published port, if the transport is one.
    pub fn to_published(self) -> Option<Published> {
        Some(Published {
            transport: match self.transport {
                0 => Transport::Tcp,
                1 => Transport::Udp,
                _ => return None,
            },
            port: self.port,
        })
    }
}

/// Rules from the wire; `None` if any field is invalid.
pub fn rules(wire: &[WireRule]) -> Option<Vec<Rule>> {
    wire.iter().map(|r| r.to_rule()).collect()
}

/// Published ports from the wire; `None` if any is invalid.
pub fn published(wire: &[WirePublished]) -> Option<Vec<Published>> {
    wire.iter().map(|p| p.to_published()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The encoding is a wire format: these bytes must not change (append variants only).
    #[test]
    fn golden_bytes() {
        let hello = postcard::to_allocvec(&Request::Hello { version: 1 }).expect("encodes");
        assert_eq!(hello, [0, 1]);
        let remove = postcard::to_allocvec(&Request::RemovePort { port: 300 }).expect("encodes");
        assert_eq!(remove, [2, 0xac, 0x02]);
        let done = postcard::to_allocvec(&Reply::Done).expect("encodes");
        assert_eq!(done, [1]);
        let rule = WireRule {
            direction: 0,
            protocol: 1,
            ports: (80, 80),
            remote: ([10, 0, 0, 0], 8),
            action: 0,
        };
        let set = Request::SetVlanRules {
            vlan: 10,
            rules: vec![rule],
        };
        assert_eq!(
            postcard::to_allocvec(&set).expect("encodes"),
            [3, 10, 1, 0, 1, 80, 80, 10, 0, 0, 0, 8, 0]
        );
        let trunk = Request::SetTrunkVlans {
            uplink: "eth1".into(),
            vlans: vec![10, 300],
        };
        assert_eq!(
            postcard::to_allocvec(&trunk).expect("encodes"),
            [8, 4, b'e', b't', b'h', b'1', 2, 10, 0xac, 0x02]
        );
        let dhcp = Request::SetVlanDhcp {
            vlan: 10,
            config: Some(WireDhcp {
                prefix: 24,
                gateway: Some([10, 0, 10, 1]),
                dns: vec![[9, 9, 9, 9]],
                lease_secs: 86_400,
            }),
        };
        assert_eq!(
            postcard::to_allocvec(&dhcp).expect("encodes"),
            [
                9, 10, 1, 24, 1, 10, 0, 10, 1, 1, 9, 9, 9, 9, 0x80, 0xa3, 0x05
            ]
        );
        let clear = Request::SetVlanDhcp {
            vlan: 300,
            config: None,
        };
        assert_eq!(
            postcard::to_allocvec(&clear).expect("encodes"),
            [9, 0xac, 0x02, 0]
        );
    }

    #[test]
    fn dhcp_settings_round_trip() {
        let c = DhcpConfig {
            prefix: 22,
            gateway: None,
            dns: vec![Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(8, 8, 8, 8)],
            lease_secs: 3600,
        };
        assert_eq!(DhcpConfig::from(WireDhcp::from(&c)), c);
    }

    #[test]
    fn rules_round_trip_and_bad_fields_are_refused() {
        let r = Rule {
            direction: Direction::Out,
            protocol: Protocol::Udp,
            ports: PortRange::one(53),
            remote: Cidr::new(Ipv4Addr::new(192, 168, 0, 0), 16).expect("valid"),
            action: Action::Deny,
        };
        assert_eq!(WireRule::from(&r).to_rule(), Some(r));
        let bad = WireRule {
            protocol: 9,
            ..WireRule::from(&r)
        };
        assert_eq!(bad.to_rule(), None);
        let bad_prefix = WireRule {
            remote: ([1, 2, 3, 4], 33),
            ..WireRule::from(&r)
        };
        assert_eq!(bad_prefix.to_rule(), None);
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x1234_5678_u32;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    seed.to_le_bytes()[2]
                })
                .collect();
            let _ = postcard::from_bytes::<Request>(&bytes);
            let _ = postcard::from_bytes::<Reply>(&bytes);
        }
    }
}
