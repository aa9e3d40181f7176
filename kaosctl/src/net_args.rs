//! The command line of `kaosctl net …` and `vm create --nic`: flags and their parsers. Each
//! parser's error names what is wrong with the value.

use std::net::Ipv4Addr;

use clap::{Args, Subcommand, ValueEnum};
use kaos_protocol::{
    Ipv4Cidr, MAX_PUBLISH, NicSpec, PublishSpec, RuleAction, RuleDirection, RuleProtocol, Transport,
};

/// `net` verbs.
#[derive(Debug, Subcommand)]
pub enum NetCmd {
    /// VLANs: the virtual switch's L2 domains and their address pools.
    #[command(subcommand)]
    Vlan(VlanCmd),
    /// Firewall rules for a VLAN or a VM.
    #[command(subcommand)]
    Rule(RuleCmd),
    /// The virtual switch's counters, per port and per VLAN.
    Stats,
}

/// `net vlan` verbs. Changing verbs need the operator role.
#[derive(Debug, Subcommand)]
pub enum VlanCmd {
    /// Define a VLAN, e.g. `net vlan create 10 --subnet 10.0.10.0/24 --gateway 10.0.10.1`.
    Create {
        /// The 802.1Q id, 1-4094.
        #[arg(value_parser = clap::value_parser!(u16).range(1..=4094))]
        id: u16,
        /// The guests' subnet (its network address), /8 to /30.
        #[arg(long, value_name = "A.B.C.D/N", value_parser = cidr)]
        subnet: Ipv4Cidr,
        /// The guests' default gateway (never handed out).
        #[arg(long, value_name = "A.B.C.D")]
        gateway: Option<Ipv4Addr>,
        /// The addresses guests get [default: the whole subnet].
        #[arg(long, value_name = "FIRST-LAST", value_parser = pool)]
        pool: Option<(Ipv4Addr, Ipv4Addr)>,
        /// A DNS server for the guests (up to two).
        #[arg(long, value_name = "A.B.C.D")]
        dns: Vec<Ipv4Addr>,
    },
    /// Every VLAN: subnet, gateway, pool and how many addresses are held.
    List,
    /// Delete a VLAN that no VM NIC is on and no rule names.
    Delete {
        /// The VLAN id.
        id: u16,
    },
}

/// `net rule` verbs. Changing verbs need the operator role.
#[derive(Debug, Subcommand)]
pub enum RuleCmd {
    /// Add a rule. A VM's rules are evaluated before its VLAN's, each in id order; the first
    /// match decides. Unmatched: outgoing and guest-to-guest allowed, from uplinks denied but
    /// to published ports.
    Add(RuleAdd),
    /// Every rule, by id.
    List,
    /// Delete a rule.
    Delete {
        /// The rule's id (from `net rule list`).
        id: u32,
    },
}

/// `net rule add` flags.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("scope").required(true).args(["vlan", "vm"]))]
pub struct RuleAdd {
    /// The rule is for every guest on this VLAN.
    #[arg(long, value_name = "ID")]
    pub vlan: Option<u16>,
    /// The rule is for every NIC of this VM.
    #[arg(long, value_name = "NAME")]
    pub vm: Option<String>,
    /// Towards the guest (in) or from it (out).
    #[arg(long, value_enum)]
    pub direction: DirectionArg,
    /// Which packets.
    #[arg(long, value_enum, default_value_t = ProtocolArg::Any)]
    pub protocol: ProtocolArg,
    /// Destination ports (tcp and udp only): P or P-Q.
    #[arg(long, value_name = "P[-Q]", value_parser = ports)]
    pub ports: Option<(u16, u16)>,
    /// The other end's addresses: A.B.C.D/N or one address [default: any].
    #[arg(long, value_name = "CIDR", value_parser = peer)]
    pub peer: Option<Ipv4Cidr>,
    /// What a match does.
    #[arg(long, value_enum)]
    pub action: ActionArg,
}

/// `--direction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DirectionArg {
    /// Towards the guest.
    In,
    /// From the guest.
    Out,
}

impl From<DirectionArg> for RuleDirection {
    fn from(d: DirectionArg) -> Self {
        match d {
            DirectionArg::In => Self::In,
            DirectionArg::Out => Self::Out,
        }
    }
}

/// `--protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProtocolArg {
    /// Every IPv4 packet.
    Any,
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP.
    Icmp,
}

impl From<ProtocolArg> for RuleProtocol {
    fn from(p: ProtocolArg) -> Self {
        match p {
            ProtocolArg::Any => Self::Any,
            ProtocolArg::Tcp => Self::Tcp,
            ProtocolArg::Udp => Self::Udp,
            ProtocolArg::Icmp => Self::Icmp,
        }
    }
}

/// `--action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ActionArg {
    /// Let it through.
    Allow,
    /// Drop it.
    Deny,
}

impl From<ActionArg> for RuleAction {
    fn from(a: ActionArg) -> Self {
        match a {
            ActionArg::Allow => Self::Allow,
            ActionArg::Deny => Self::Deny,
        }
    }
}

/// `A.B.C.D/N`.
pub fn cidr(text: &str) -> Result<Ipv4Cidr, String> {
    Ipv4Cidr::parse(text).ok_or_else(|| format!("{text:?}: expected A.B.C.D/N with N at most 32"))
}

/// `A.B.C.D/N`, or one address (`/32`).
fn peer(text: &str) -> Result<Ipv4Cidr, String> {
    if let Ok(ip) = text.parse::<Ipv4Addr>() {
        return Ok(Ipv4Cidr {
            addr: ip.octets(),
            prefix: 32,
        });
    }
    cidr(text)
}

/// `FIRST-LAST`.
fn pool(text: &str) -> Result<(Ipv4Addr, Ipv4Addr), String> {
    let bad = || format!("{text:?}: expected FIRST-LAST, e.g. 10.0.10.100-10.0.10.199");
    let (first, last) = text.split_once('-').ok_or_else(bad)?;
    let first: Ipv4Addr = first.trim().parse().map_err(|_| bad())?;
    let last: Ipv4Addr = last.trim().parse().map_err(|_| bad())?;
    if first > last {
        return Err(format!("{text:?}: the pool ends before it starts"));
    }
    Ok((first, last))
}

/// `P` or `P-Q`.
fn ports(text: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{text:?}: expected a port or a range P-Q (0-65535)");
    let (first, last) = text.split_once('-').unwrap_or((text, text));
    let first: u16 = first.trim().parse().map_err(|_| bad())?;
    let last: u16 = last.trim().parse().map_err(|_| bad())?;
    if first > last {
        return Err(format!("{text:?}: the range ends before it starts"));
    }
    Ok((first, last))
}

/// `--nic vlan=ID[,ip=A.B.C.D][,publish=tcp:80]…`.
pub fn nic(text: &str) -> Result<NicSpec, String> {
    let mut vlan = None;
    let mut spec = NicSpec {
        vlan: 0,
        ipv4: None,
        publish: heapless::Vec::new(),
    };
    for part in text.split(',') {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: expected KEY=VALUE (vlan=, ip=, publish=)"))?;
        match key.trim() {
            "vlan" => {
                let id = value
                    .parse::<u16>()
                    .ok()
                    .filter(|id| (1..=4094).contains(id))
                    .ok_or_else(|| format!("vlan={value}: a VLAN id is 1 to 4094"))?;
                vlan = Some(id);
            }
            "ip" => {
                let ip = value
                    .parse()
                    .map_err(|_| format!("ip={value}: expected an IPv4 address"))?;
                spec.ipv4 = Some(ip);
            }
            "publish" => {
                let published = publish(value)?;
                spec.publish
                    .push(published)
                    .map_err(|_| format!("a NIC publishes at most {MAX_PUBLISH} ports"))?;
            }
            other => return Err(format!("{other:?}: unknown NIC key (vlan, ip, publish)")),
        }
    }
    spec.vlan = vlan.ok_or_else(|| format!("{text:?}: vlan=ID is required"))?;
    Ok(spec)
}

/// `tcp:80` or `udp:53`.
fn publish(value: &str) -> Result<PublishSpec, String> {
    let bad = || format!("publish={value}: expected tcp:PORT or udp:PORT");
    let (protocol, port) = value.split_once(':').ok_or_else(bad)?;
    let protocol = match protocol {
        "tcp" => Transport::Tcp,
        "udp" => Transport::Udp,
        _ => return Err(bad()),
    };
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(bad)?;
    Ok(PublishSpec { protocol, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nic_arguments_parse_and_name_their_problems() {
        let n = nic("vlan=10,ip=10.0.10.5,publish=tcp:80,publish=udp:53").expect("parses");
        assert_eq!(n.vlan, 10);
        assert_eq!(n.ipv4, Some(Ipv4Addr::new(10, 0, 10, 5)));
        assert_eq!(n.publish.len(), 2);
        assert_eq!(nic("vlan=7").expect("parses").ipv4, None);
        for (bad, why) in [
            ("ip=10.0.0.1", "vlan=ID is required"),
            ("vlan=0", "1 to 4094"),
            ("vlan=10,ip=10.0.0", "IPv4 address"),
            ("vlan=10,publish=sctp:9", "tcp:PORT"),
            ("vlan=10,publish=tcp:0", "tcp:PORT"),
            ("vlan=10,mtu=9000", "unknown NIC key"),
            ("vlan", "KEY=VALUE"),
        ] {
            let err = nic(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn ranges_and_prefixes_parse() {
        assert_eq!(ports("80"), Ok((80, 80)));
        assert_eq!(ports("8000-8080"), Ok((8000, 8080)));
        assert!(ports("9-8").is_err_and(|e| e.contains("ends before")));
        assert!(ports("http").is_err());
        assert_eq!(peer("192.0.2.7").map(|c| c.prefix), Ok(32));
        assert_eq!(peer("192.0.2.0/24").map(|c| c.prefix), Ok(24));
        assert!(pool("10.0.0.9-10.0.0.1").is_err());
        assert!(cidr("10.0.0.0/40").is_err());
    }
}
