//! Settings of a host, from `kaos.*` kernel command-line keys (PID 1) or flags (hosted mode).
//!
//! | key | value | default |
//! |---|---|---|
//! | `kaos.mgmt=` | management interface | first non-loopback interface |
//! | `kaos.ip=` | `CIDR[,GATEWAY]` or `dhcp` | `dhcp` |
//! | `kaos.hostname=` | RFC 1123 host name | `kaos` |
//! | `kaos.log=` | `error`, `warn`, `info`, `debug`, `trace` | `info` |
//! | `kaos.store=` | `auto`, `memory`, or a disk (`vdb`, `/dev/nvme0n1`) | `auto` |
//! | `kaos.authorize=` | client keys, `BASE64[:ROLE]`, comma-separated (role: `admin`) | none |
//! | `kaos.uplink=` | the virtual switch's uplink NIC: `IF` (an 802.1Q trunk of every VLAN) or `IF:access=VLAN` | none |
//! | `kaos.vm_cpus=` | the CPUs every VMM (and so every guest vCPU) may run on: `0`, `2-7`, `0,2-3` | all |
//!
//! A bad value is reported and replaced by the default: a typo must not keep a host from booting.

use std::net::Ipv4Addr;

use kaos_net::IpConfig;
use log::LevelFilter;

use crate::config::StoreChoice;
use smoltcp::wire::{Ipv4Address, Ipv4Cidr};

/// Host settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Management interface; `None`: the first non-loopback one.
    pub mgmt: Option<String>,
    /// Addressing of the management endpoint.
    pub ip: IpConfig,
    /// Host name.
    pub hostname: String,
    /// Log level.
    pub log: LevelFilter,
    /// Which configuration store to use.
    pub store: StoreChoice,
    /// Client keys authorised on the command line (`kaos.authorize=` may repeat).
    pub authorize: Vec<(kaos_protocol::keys::PublicKey, kaos_protocol::Role)>,
    /// The virtual switch's uplink, if any.
    pub uplink: Option<Uplink>,
    /// The CPUs VMMs are confined to; empty: all.
    pub vm_cpus: Vec<usize>,
}

/// A physical NIC the virtual switch attaches to (`kaos.uplink=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    /// Interface name.
    pub ifname: String,
    /// `None`: an 802.1Q trunk carrying every VLAN; `Some(v)`: an access port of VLAN `v`.
    pub access: Option<u16>,
}

impl Uplink {
    /// `IF` or `IF:access=VLAN`.
    pub fn parse(value: &str) -> Result<Self, String> {
        let (name, mode) = match value.split_once(':') {
            Some((name, mode)) => (name, Some(mode)),
            None => (value, None),
        };
        let access = match mode {
            None => None,
            Some(m) => Some(
                m.strip_prefix("access=")
                    .and_then(|v| v.parse::<u16>().ok())
                    .filter(|v| (1..=4094).contains(v))
                    .ok_or("expected IF or IF:access=VLAN (1-4094)")?,
            ),
        };
        Ok(Uplink {
            ifname: interface_name(name)?,
            access,
        })
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            mgmt: None,
            ip: IpConfig::Dhcp,
            hostname: "kaos".into(),
            log: LevelFilter::Info,
            store: StoreChoice::Auto,
            authorize: Vec::new(),
            uplink: None,
            vm_cpus: Vec::new(),
        }
    }
}

impl Settings {
    /// Parses a kernel command line, returning the settings and one message per ignored key.
    pub fn from_cmdline(cmdline: &str) -> (Self, Vec<String>) {
        let mut settings = Self::default();
        let mut problems = Vec::new();
        for word in cmdline.split_ascii_whitespace() {
            let Some(rest) = word.strip_prefix("kaos.") else {
                continue;
            };
            let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
            if let Err(e) = settings.set(key, value) {
                problems.push(format!("ignoring kaos.{key}={value}: {e}"));
            }
        }
        (settings, problems)
    }

    /// Sets one key (without the `kaos.` prefix).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "mgmt" => self.mgmt = Some(interface_name(value)?),
            "ip" => self.ip = parse_ip(value)?,
            "hostname" => self.hostname = hostname(value)?,
            "log" => self.log = value.parse().map_err(|_| "unknown log level".to_owned())?,
            "store" => self.store = StoreChoice::parse(value)?,
            "authorize" => self
                .authorize
                .extend(crate::access::parse_cmdline_keys(value)?),
            "uplink" => self.uplink = Some(Uplink::parse(value)?),
            "vm_cpus" => self.vm_cpus = cpu_list(value)?,
            _ => return Err("unknown key".into()),
        }
        Ok(())
    }
}

/// Most CPUs a list may name (the kernel's `CPU_SETSIZE`).
pub const MAX_CPUS: usize = 1024;

/// A CPU list as the kernel writes them (`0`, `2-7`, `0,2-3`): sorted, each CPU once.
fn cpu_list(value: &str) -> Result<Vec<usize>, String> {
    let bad = || format!("expected CPU numbers below {MAX_CPUS} and ranges, e.g. 0,2-3");
    let mut cpus = Vec::new();
    for part in value.split(',') {
        let (from, to) = part.split_once('-').unwrap_or((part, part));
        let from: usize = from.parse().map_err(|_| bad())?;
        let to: usize = to.parse().map_err(|_| bad())?;
        if from > to || to >= MAX_CPUS {
            return Err(bad());
        }
        cpus.extend(from..=to);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

fn interface_name(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.len() < 16
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    ok.then(|| value.to_owned())
        .ok_or_else(|| "not an interface name".into())
}

/// Checks an RFC 1123 host name.
pub fn hostname(value: &str) -> Result<String, String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if value.len() <= 63 && value.split('.').all(label_ok) {
        Ok(value.to_owned())
    } else {
        Err("not an RFC 1123 host name of at most 63 bytes".into())
    }
}

/// `dhcp`, or `A.B.C.D/LEN[,GATEWAY]`.
pub fn parse_ip(value: &str) -> Result<IpConfig, String> {
    if value == "dhcp" {
        return Ok(IpConfig::Dhcp);
    }
    let (cidr, gateway) = match value.split_once(',') {
        Some((cidr, gw)) => (cidr, Some(gw)),
        None => (value, None),
    };
    let (addr, prefix) = cidr.split_once('/').ok_or("expected ADDRESS/PREFIX")?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| format!("bad address {addr:?}"))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= 32)
        .ok_or_else(|| format!("bad prefix length {prefix:?}"))?;
    let gateway = gateway
        .map(|gw| {
            gw.parse::<Ipv4Address>()
                .map_err(|_| format!("bad gateway {gw:?}"))
        })
        .transpose()?;
    Ok(IpConfig::Static {
        address: Ipv4Cidr::new(addr, prefix),
        gateway,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_keys() {
        let (s, problems) = Settings::from_cmdline("console=ttyS0 quiet");
        assert_eq!(s, Settings::default());
        assert!(problems.is_empty());
    }

    #[test]
    fn all_keys() {
        let (s, problems) = Settings::from_cmdline(
            "console=ttyS0 kaos.mgmt=eth1 kaos.ip=10.0.2.15/24,10.0.2.2 kaos.hostname=node-7 \
             kaos.log=debug",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(s.mgmt.as_deref(), Some("eth1"));
        assert_eq!(
            s.ip,
            IpConfig::Static {
                address: Ipv4Cidr::new(Ipv4Addr::new(10, 0, 2, 15), 24),
                gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
            }
        );
        assert_eq!(s.hostname, "node-7");
        assert_eq!(s.log, LevelFilter::Debug);
    }

    #[test]
    fn bad_values_keep_defaults_and_are_reported() {
        let (s, problems) = Settings::from_cmdline(
            "kaos.ip=10.0.0.1/33 kaos.hostname=-bad kaos.mgmt=../x kaos.log=loud kaos.nope=1 \
             kaos.ip=1.2.3.4 kaos.ip=1.2.3.4/8,gw",
        );
        assert_eq!(s, Settings::default());
        assert_eq!(problems.len(), 7, "{problems:?}");
    }

    #[test]
    fn vm_cpus_are_a_cpu_list() {
        let (s, problems) = Settings::from_cmdline("kaos.vm_cpus=3,0-1,1");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(s.vm_cpus, [0, 1, 3]);
        for bad in ["", "a", "2-1", "0,", "1024", "0-1024", "-1"] {
            let (s, problems) = Settings::from_cmdline(&format!("kaos.vm_cpus={bad}"));
            assert_eq!(problems.len(), 1, "{bad:?}");
            assert!(s.vm_cpus.is_empty(), "{bad:?}");
        }
    }

    #[test]
    fn uplinks_are_trunks_or_access_ports() {
        let (s, problems) = Settings::from_cmdline("kaos.uplink=eth1");
        assert!(problems.is_empty());
        let trunk = s.uplink.expect("an uplink");
        assert_eq!((trunk.ifname.as_str(), trunk.access), ("eth1", None));
        let access = Uplink::parse("enp3s0:access=10").expect("valid");
        assert_eq!(access.access, Some(10));
        for bad in [
            "",
            "eth1:access=0",
            "eth1:access=4095",
            "eth1:trunk",
            "../x",
        ] {
            assert!(Uplink::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ip_without_gateway_and_dhcp() {
        assert!(matches!(
            parse_ip("192.168.1.2/16"),
            Ok(IpConfig::Static { gateway: None, .. })
        ));
        assert_eq!(parse_ip("dhcp"), Ok(IpConfig::Dhcp));
    }
}
