//! The network configuration requests of protocol 1.2 (VLANs, rules), answered from the store,
//! and the conversions from the switch's counters to `NetStats` for whoever runs the switch.

use kaos_net::switch::{DropReason, Drops, PortCounters, VlanCounters};
use kaos_protocol::{
    DropCount, ErrorCode, MAX_RULES, MAX_VLANS, NetStats, NetStatsQuery, PortStats, RuleInfo,
    RuleList, RuleScope, RuleSpec, VlanInfo, VlanList, VlanSpec, truncated,
};

use crate::config::{Config, Refusal};

fn invalid(message: String) -> Refusal {
    Refusal::new(ErrorCode::InvalidArgument, message)
}

/// `VlanCreate`: checks the definition, stores it.
pub fn vlan_create(config: &Config, spec: &VlanSpec) -> Result<VlanInfo, Refusal> {
    spec.validate()
        .map_err(|why| invalid(format!("VLAN {}: {why}", spec.id)))?;
    let vlans = config.vlans();
    if vlans.iter().any(|v| v.id == spec.id) {
        return Err(Refusal::new(
            ErrorCode::Conflict,
            format!("VLAN {} exists; delete it first", spec.id),
        ));
    }
    if vlans.len() >= MAX_VLANS {
        return Err(Refusal::new(
            ErrorCode::Conflict,
            format!("this host holds at most {MAX_VLANS} VLANs"),
        ));
    }
    config.create_vlan(spec)?;
    Ok(VlanInfo {
        spec: spec.clone(),
        leases_used: 0,
        pool_size: spec.pool_size(),
    })
}

/// `VlanList`: every VLAN with how full its pool is.
pub fn vlan_list(config: &Config) -> VlanList {
    let leases = config.leases();
    let mut entries = heapless::Vec::new();
    for spec in config.vlans() {
        let used = leases.iter().filter(|l| l.vlan == spec.id).count();
        let info = VlanInfo {
            leases_used: u32::try_from(used).unwrap_or(u32::MAX),
            pool_size: spec.pool_size(),
            spec,
        };
        if entries.push(info).is_err() {
            break;
        }
    }
    VlanList { entries }
}

/// `VlanDelete`: refused while a NIC is on it or a rule names it (the store checks both in
/// the deleting transaction).
pub fn vlan_delete(config: &Config, id: u16) -> Result<VlanList, Refusal> {
    if !config.remove_vlan(id)? {
        return Err(Refusal::new(ErrorCode::NotFound, format!("no VLAN {id}")));
    }
    Ok(vlan_list(config))
}

/// `RuleAdd`: checks the rule and that its VLAN or VM exists, stores it.
pub fn rule_add(config: &Config, spec: &RuleSpec) -> Result<RuleInfo, Refusal> {
    spec.validate()
        .map_err(|why| invalid(format!("rule: {why}")))?;
    let missing = match &spec.scope {
        RuleScope::Vlan(id) => (!config.vlans().iter().any(|v| v.id == *id))
            .then(|| format!("no VLAN {id}; create it first with `kaosctl net vlan create`")),
        RuleScope::Vm(name) => (!config.vms().iter().any(|vm| vm.spec.name == *name))
            .then(|| format!("no VM named {:?}", name.as_str())),
    };
    if let Some(message) = missing {
        return Err(Refusal::new(ErrorCode::NotFound, message));
    }
    if config.rules().len() >= MAX_RULES {
        return Err(Refusal::new(
            ErrorCode::Conflict,
            format!("this host holds at most {MAX_RULES} rules"),
        ));
    }
    let id = config.add_rule(spec)?;
    Ok(RuleInfo {
        id,
        spec: spec.clone(),
    })
}

/// `RuleList`: every rule, by id.
pub fn rule_list(config: &Config) -> RuleList {
    let mut entries = heapless::Vec::new();
    for (id, spec) in config.rules() {
        if entries.push(RuleInfo { id, spec }).is_err() {
            break;
        }
    }
    RuleList { entries }
}

/// `RuleDelete`.
pub fn rule_delete(config: &Config, id: u32) -> Result<RuleList, Refusal> {
    if !config.remove_rule(id)? {
        return Err(Refusal::new(ErrorCode::NotFound, format!("no rule {id}")));
    }
    Ok(rule_list(config))
}

/// The switch's drop counters in the protocol's form: non-zero ones, by reason code (the
/// reason's place in `DropReason::ALL`, which `kaos_protocol::DROP_REASONS` names).
// Called by the switch wiring (issue 6), which lands separately.
#[allow(dead_code)]
pub fn drop_counts(drops: &Drops) -> heapless::Vec<DropCount, { kaos_protocol::MAX_DROP_REASONS }> {
    let mut out = heapless::Vec::new();
    for (reason, count) in drops.iter() {
        let code = DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .and_then(|i| u8::try_from(i).ok())
            .unwrap_or(u8::MAX);
        if out
            .push(DropCount {
                reason: code,
                count,
            })
            .is_err()
        {
            break;
        }
    }
    out
}

/// One port's counters: `name` is `VM/INDEX` for a guest NIC (e.g. `web-1/0`), the interface
/// for an uplink.
// Called by the switch wiring (issue 6), which lands separately.
#[allow(dead_code)]
pub fn port_stats(name: &str, vlans: &[u16], c: &PortCounters) -> PortStats {
    PortStats {
        name: truncated(name),
        vlans: vlans
            .iter()
            .copied()
            .take(kaos_protocol::MAX_PORT_VLANS)
            .collect(),
        rx_frames: c.rx_frames,
        rx_bytes: c.rx_bytes,
        tx_frames: c.tx_frames,
        tx_bytes: c.tx_bytes,
        tx_denied: c.tx_denied,
        drops: drop_counts(&c.drops),
    }
}

/// One VLAN's counters.
// Called by the switch wiring (issue 6), which lands separately.
#[allow(dead_code)]
pub fn vlan_stats(vlan: u16, c: &VlanCounters) -> kaos_protocol::VlanStats {
    kaos_protocol::VlanStats {
        vlan,
        frames: c.frames,
        bytes: c.bytes,
        floods: c.floods,
        drops: drop_counts(&c.drops),
    }
}

/// The page of `ports` and `vlans` that `query` asks for (a page always fits one frame).
// Called by the switch wiring (issue 6), which lands separately.
#[allow(dead_code)]
pub fn net_stats(
    query: &NetStatsQuery,
    ports: &[PortStats],
    vlans: &[kaos_protocol::VlanStats],
) -> NetStats {
    let page = |from: u32, len: usize| {
        let from = usize::try_from(from).unwrap_or(usize::MAX).min(len);
        from..len
    };
    NetStats {
        ports: ports[page(query.ports_from, ports.len())]
            .iter()
            .take(kaos_protocol::MAX_STAT_PORTS)
            .cloned()
            .collect(),
        vlans: vlans[page(query.vlans_from, vlans.len())]
            .iter()
            .take(kaos_protocol::MAX_STAT_VLANS)
            .cloned()
            .collect(),
        ports_total: u32::try_from(ports.len()).unwrap_or(u32::MAX),
        vlans_total: u32::try_from(vlans.len()).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_come_in_pages() {
        let ports: Vec<PortStats> = (0..40)
            .map(|i| port_stats(&format!("vm-{i}/0"), &[10], &PortCounters::default()))
            .collect();
        let vlans = [vlan_stats(10, &VlanCounters::default())];
        let first = net_stats(&NetStatsQuery::default(), &ports, &vlans);
        assert_eq!((first.ports.len(), first.vlans.len()), (16, 1));
        assert_eq!((first.ports_total, first.vlans_total), (40, 1));
        let query = NetStatsQuery {
            ports_from: 32,
            vlans_from: 1,
        };
        let last = net_stats(&query, &ports, &vlans);
        assert_eq!((last.ports.len(), last.vlans.len()), (8, 0));
        assert_eq!(last.ports[0].name.as_str(), "vm-32/0");
        let past = NetStatsQuery {
            ports_from: u32::MAX,
            vlans_from: u32::MAX,
        };
        assert!(net_stats(&past, &ports, &vlans).ports.is_empty());
    }

    #[test]
    fn drop_codes_follow_the_switchs_order() {
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(kaos_protocol::DROP_REASONS[i], reason.name());
        }
    }
}
