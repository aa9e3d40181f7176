//! The network configuration requests of protocol 1.2 (VLANs, rules), answered from the store,
//! and the paging of the switch's counters into `NetStats` (`network.rs` reads them).

use kaos_protocol::{
    ErrorCode, MAX_RULES, MAX_VLANS, NetStats, NetStatsQuery, PortStats, RuleInfo, RuleList,
    RuleScope, RuleSpec, VlanInfo, VlanList, VlanSpec,
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

/// The page of `ports` and `vlans` that `query` asks for (a page always fits one frame).
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
        let port = |i: usize| PortStats {
            name: kaos_protocol::truncated(&format!("vm-{i}/0")),
            vlans: [10].into_iter().collect(),
            rx_frames: 0,
            rx_bytes: 0,
            tx_frames: 0,
            tx_bytes: 0,
            tx_denied: 0,
            drops: heapless::Vec::new(),
        };
        let ports: Vec<PortStats> = (0..40).map(port).collect();
        let vlans = [kaos_protocol::VlanStats {
            vlan: 10,
            frames: 0,
            bytes: 0,
            floods: 0,
            drops: heapless::Vec::new(),
        }];
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
        for (i, reason) in kaos_net::switch::DropReason::ALL.iter().enumerate() {
            assert_eq!(kaos_protocol::DROP_REASONS[i], reason.name());
        }
    }
}
