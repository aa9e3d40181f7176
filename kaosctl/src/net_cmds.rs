//! `kaosctl net …`: VLANs, firewall rules and the switch's counters; and how VM NICs are shown.

use kaos_protocol::{
    DropCount, Ipv4Cidr, NetStatsQuery, NicInfo, NicSpec, PortStats, Request, Response, RuleInfo,
    RuleScope, RuleSpec, VlanInfo, VlanSpec, VlanStats, drop_reason_name,
};
use kaosctl::config::ConfigError;
use kaosctl::connect::Error;
use kaosctl::{Client, ClientError};
use serde_json::{Value, json};

use crate::args::Output;
use crate::net_args::{NetCmd, RuleAdd, RuleCmd, VlanCmd};
use crate::show;
use crate::vm_cmds::{object_name, refused};

/// Networking requests and grown VM definitions arrived in protocol 1.2: an older host would
/// drop the connection on them.
pub(crate) fn needs_1_2(c: &Client, what: &str) -> Result<(), Error> {
    let v = c.server().version;
    if v.minor < 2 {
        return Err(ClientError::Refused {
            code: kaos_protocol::ErrorCode::Unsupported,
            message: format!(
                "{} speaks management protocol {v}; {what} needs 1.2 (update its image)",
                c.server().hostname
            ),
        }
        .into());
    }
    Ok(())
}

/// `net …`.
pub fn net(c: &mut Client, cmd: &NetCmd, output: Output) -> Result<(), Error> {
    needs_1_2(c, "virtual networking")?;
    let request = match cmd {
        NetCmd::Vlan(VlanCmd::Create {
            id,
            subnet,
            gateway,
            pool,
            dns,
        }) => Request::VlanCreate(vlan_spec(*id, *subnet, *gateway, *pool, dns)?),
        NetCmd::Vlan(VlanCmd::List) => Request::VlanList,
        NetCmd::Vlan(VlanCmd::Delete { id }) => Request::VlanDelete(*id),
        NetCmd::Rule(RuleCmd::Add(add)) => Request::RuleAdd(rule_spec(add)?),
        NetCmd::Rule(RuleCmd::List) => Request::RuleList,
        NetCmd::Rule(RuleCmd::Delete { id }) => Request::RuleDelete(*id),
        NetCmd::Stats => return stats(c, output),
    };
    match c.request(request)? {
        Response::Vlan(v) => show(output, &vlan_view(&v), |_| {
            vlans_table(std::slice::from_ref(&v))
        }),
        Response::Vlans(list) => {
            let views: Vec<Value> = list.entries.iter().map(vlan_view).collect();
            show(output, &views, |_| vlans_table(&list.entries))
        }
        Response::Rule(r) => show(output, &rule_view(&r), |_| {
            rules_table(std::slice::from_ref(&r))
        }),
        Response::Rules(list) => {
            let views: Vec<Value> = list.entries.iter().map(rule_view).collect();
            show(output, &views, |_| rules_table(&list.entries))
        }
        Response::Error(e) => Err(refused(&e)),
        other => Err(c.unexpected(&other).into()),
    }
}

/// `net stats`: every page, shown as one.
fn stats(c: &mut Client, output: Output) -> Result<(), Error> {
    let mut ports = Vec::new();
    let mut vlans = Vec::new();
    loop {
        let query = NetStatsQuery {
            ports_from: u32::try_from(ports.len()).unwrap_or(u32::MAX),
            vlans_from: u32::try_from(vlans.len()).unwrap_or(u32::MAX),
        };
        let page = match c.request(Request::NetStats(query))? {
            Response::NetStats(page) => page,
            Response::Error(e) => return Err(refused(&e)),
            other => return Err(c.unexpected(&other).into()),
        };
        let progress = !page.ports.is_empty() || !page.vlans.is_empty();
        ports.extend(page.ports.iter().cloned());
        vlans.extend(page.vlans.iter().cloned());
        let done = ports.len() as u64 >= u64::from(page.ports_total)
            && vlans.len() as u64 >= u64::from(page.vlans_total);
        if done || !progress {
            break;
        }
    }
    let view = stats_view(&ports, &vlans);
    show(output, &view, |_| stats_table(&ports, &vlans))
}

fn vlan_spec(
    id: u16,
    subnet: Ipv4Cidr,
    gateway: Option<std::net::Ipv4Addr>,
    pool: Option<(std::net::Ipv4Addr, std::net::Ipv4Addr)>,
    dns: &[std::net::Ipv4Addr],
) -> Result<VlanSpec, ConfigError> {
    let dns = heapless::Vec::from_slice(dns)
        .map_err(|_| ConfigError::Usage("--dns: at most two servers".into()))?;
    let spec = VlanSpec {
        id,
        subnet,
        gateway,
        pool,
        dns,
    };
    spec.validate()
        .map_err(|why| ConfigError::Usage(format!("VLAN {id}: {why}")))?;
    Ok(spec)
}

fn rule_spec(add: &RuleAdd) -> Result<RuleSpec, ConfigError> {
    let scope = match (&add.vlan, &add.vm) {
        (Some(id), _) => RuleScope::Vlan(*id),
        (None, Some(vm)) => RuleScope::Vm(object_name("VM", vm)?),
        (None, None) => return Err(ConfigError::Usage("give --vlan ID or --vm NAME".into())),
    };
    let spec = RuleSpec {
        scope,
        direction: add.direction.into(),
        protocol: add.protocol.into(),
        ports: add.ports,
        peer: add.peer,
        action: add.action.into(),
    };
    spec.validate()
        .map_err(|why| ConfigError::Usage(format!("rule: {why}")))?;
    Ok(spec)
}

/// `aa:bb:cc:dd:ee:ff`.
pub(crate) fn mac_text(mac: &[u8; 6]) -> String {
    let hex: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    hex.join(":")
}

fn pool_text(spec: &VlanSpec) -> String {
    let (first, last) = spec.pool_range();
    format!("{first}-{last}")
}

fn vlan_view(v: &VlanInfo) -> Value {
    json!({
        "id": v.spec.id,
        "subnet": v.spec.subnet.to_string(),
        "gateway": v.spec.gateway.map(|g| g.to_string()),
        "pool": pool_text(&v.spec),
        "dns": v.spec.dns.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "leases_used": v.leases_used,
        "pool_size": v.pool_size,
    })
}

fn vlans_table(vlans: &[VlanInfo]) -> String {
    let mut out = format!(
        "{:<5} {:<18} {:<15} {:<31} {:>11}  {}\n",
        "ID", "SUBNET", "GATEWAY", "POOL", "LEASES", "DNS"
    );
    for v in vlans {
        let dns: Vec<String> = v.spec.dns.iter().map(ToString::to_string).collect();
        out.push_str(&format!(
            "{:<5} {:<18} {:<15} {:<31} {:>11}  {}\n",
            v.spec.id,
            v.spec.subnet.to_string(),
            v.spec.gateway.map_or_else(|| "-".into(), |g| g.to_string()),
            pool_text(&v.spec),
            format!("{}/{}", v.leases_used, v.pool_size),
            if dns.is_empty() {
                "-".into()
            } else {
                dns.join(",")
            }
        ));
    }
    out
}

fn scope_text(scope: &RuleScope) -> String {
    match scope {
        RuleScope::Vlan(id) => format!("vlan {id}"),
        RuleScope::Vm(name) => format!("vm {name}"),
    }
}

fn ports_text(ports: Option<(u16, u16)>) -> String {
    match ports {
        None => "any".into(),
        Some((a, b)) if a == b => a.to_string(),
        Some((a, b)) => format!("{a}-{b}"),
    }
}

fn rule_view(r: &RuleInfo) -> Value {
    let (kind, target) = match &r.spec.scope {
        RuleScope::Vlan(id) => ("vlan", json!(id)),
        RuleScope::Vm(name) => ("vm", json!(name.as_str())),
    };
    json!({
        "id": r.id,
        "scope": kind,
        "target": target,
        "direction": r.spec.direction.as_str(),
        "protocol": r.spec.protocol.as_str(),
        "ports": r.spec.ports.map(|(a, b)| json!([a, b])),
        "peer": r.spec.peer.map(|p| p.to_string()),
        "action": r.spec.action.as_str(),
    })
}

fn rules_table(rules: &[RuleInfo]) -> String {
    let mut out = format!(
        "{:>5}  {:<24} {:<4} {:<6} {:<12} {:<18} {}\n",
        "ID", "SCOPE", "DIR", "PROTO", "PORTS", "PEER", "ACTION"
    );
    for r in rules {
        out.push_str(&format!(
            "{:>5}  {:<24} {:<4} {:<6} {:<12} {:<18} {}\n",
            r.id,
            scope_text(&r.spec.scope),
            r.spec.direction.as_str(),
            r.spec.protocol.as_str(),
            ports_text(r.spec.ports),
            r.spec.peer.map_or_else(|| "any".into(), |p| p.to_string()),
            r.spec.action.as_str()
        ));
    }
    out
}

fn reason(code: u8) -> String {
    drop_reason_name(code).map_or_else(|| format!("reason-{code}"), str::to_owned)
}

fn drops_view(drops: &[DropCount]) -> Value {
    let map: serde_json::Map<String, Value> = drops
        .iter()
        .map(|d| (reason(d.reason), json!(d.count)))
        .collect();
    Value::Object(map)
}

fn drops_text(drops: &[DropCount]) -> String {
    if drops.is_empty() {
        return "-".into();
    }
    let parts: Vec<String> = drops
        .iter()
        .map(|d| format!("{}={}", reason(d.reason), d.count))
        .collect();
    parts.join(",")
}

fn stats_view(ports: &[PortStats], vlans: &[VlanStats]) -> Value {
    json!({
        "ports": ports.iter().map(|p| json!({
            "name": p.name.as_str(),
            "vlans": p.vlans.as_slice(),
            "rx_frames": p.rx_frames,
            "rx_bytes": p.rx_bytes,
            "tx_frames": p.tx_frames,
            "tx_bytes": p.tx_bytes,
            "tx_denied": p.tx_denied,
            "drops": drops_view(&p.drops),
        })).collect::<Vec<_>>(),
        "vlans": vlans.iter().map(|v| json!({
            "vlan": v.vlan,
            "frames": v.frames,
            "bytes": v.bytes,
            "floods": v.floods,
            "drops": drops_view(&v.drops),
        })).collect::<Vec<_>>(),
    })
}

fn stats_table(ports: &[PortStats], vlans: &[VlanStats]) -> String {
    let mut out = format!(
        "{:<24} {:<10} {:>10} {:>12} {:>10} {:>12} {:>8}  {}\n",
        "PORT", "VLANS", "RX-FRAMES", "RX-BYTES", "TX-FRAMES", "TX-BYTES", "DENIED", "DROPS"
    );
    for p in ports {
        let vlans: Vec<String> = p.vlans.iter().map(ToString::to_string).collect();
        out.push_str(&format!(
            "{:<24} {:<10} {:>10} {:>12} {:>10} {:>12} {:>8}  {}\n",
            p.name,
            vlans.join(","),
            p.rx_frames,
            p.rx_bytes,
            p.tx_frames,
            p.tx_bytes,
            p.tx_denied,
            drops_text(&p.drops)
        ));
    }
    out.push_str(&format!(
        "\n{:<6} {:>10} {:>12} {:>10}  {}\n",
        "VLAN", "FRAMES", "BYTES", "FLOODS", "DROPS"
    ));
    for v in vlans {
        out.push_str(&format!(
            "{:<6} {:>10} {:>12} {:>10}  {}\n",
            v.vlan,
            v.frames,
            v.bytes,
            v.floods,
            drops_text(&v.drops)
        ));
    }
    out
}

/// A VM's NICs for `vm inspect --output json`.
pub(crate) fn nics_view(nics: &[NicInfo], specs: &[NicSpec]) -> Value {
    let views: Vec<Value> = nics
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let publish: Vec<String> = specs
                .get(i)
                .map(|s| {
                    s.publish
                        .iter()
                        .map(|p| format!("{}:{}", p.protocol.as_str(), p.port))
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "index": i,
                "vlan": n.vlan,
                "mac": mac_text(&n.mac),
                "ipv4": n.ipv4.to_string(),
                "prefix": n.prefix,
                "gateway": n.gateway.map(|g| g.to_string()),
                "publish": publish,
            })
        })
        .collect();
    Value::Array(views)
}

/// One `vm inspect` line per NIC: `eth0  vlan 10  02:…  10.0.10.2/24  gw 10.0.10.1`.
pub(crate) fn nic_lines(nics: &[NicInfo], specs: &[NicSpec]) -> Vec<String> {
    nics.iter()
        .enumerate()
        .map(|(i, n)| {
            let mut line = format!(
                "eth{i}  vlan {}  {}  {}/{}  gw {}",
                n.vlan,
                mac_text(&n.mac),
                n.ipv4,
                n.prefix,
                n.gateway.map_or_else(|| "-".into(), |g| g.to_string())
            );
            if let Some(spec) = specs.get(i).filter(|s| !s.publish.is_empty()) {
                let published: Vec<String> = spec
                    .publish
                    .iter()
                    .map(|p| format!("{}:{}", p.protocol.as_str(), p.port))
                    .collect();
                line.push_str(&format!("  publish {}", published.join(",")));
            }
            line
        })
        .collect()
}
