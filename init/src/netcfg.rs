//! The network configuration requests of protocol 1.2 (VLANs, rules), answered from the store,
//! and the conversions from the switch's counters to `NetStats` for whoever runs the switch.

use kaos_net::switch::{DropReason, Drops, PortCounters, VlanCounters};
use kaos_protocol::{
    DropCount, ErrorCode, MAX_MESSAGE, MAX_RULES, MAX_VLANS, NetStats, PortStats, Response,
    RuleInfo, RuleList, RuleScope, RuleSpec, ServerFrame, VlanInfo, VlanList, VlanSpec,
    encode_message, truncated,
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

/// A `NetStats` answer holding as many of `ports` and `vlans` as one frame carries; the rest
/// are counted in `omitted`.
// Called by the switch wiring (issue 6), which lands separately.
#[allow(dead_code)]
pub fn net_stats(
    ports: impl IntoIterator<Item = PortStats>,
    vlans: impl IntoIterator<Item = kaos_protocol::VlanStats>,
) -> NetStats {
    let mut stats = NetStats {
        ports: heapless::Vec::new(),
        vlans: heapless::Vec::new(),
        omitted: 0,
    };
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut fits = |s: &NetStats| {
        let frame = ServerFrame {
            id: u32::MAX,
            last: true,
            response: Response::NetStats(s.clone()),
        };
        encode_message(&frame, &mut buf).is_ok()
    };
    for v in vlans {
        let kept = match stats.vlans.push(v) {
            Err(_) => false,
            Ok(()) if fits(&stats) => true,
            Ok(()) => stats.vlans.pop().is_none(),
        };
        stats.omitted += u32::from(!kept);
    }
    for p in ports {
        let kept = match stats.ports.push(p) {
            Err(_) => false,
            Ok(()) if fits(&stats) => true,
            Ok(()) => stats.ports.pop().is_none(),
        };
        stats.omitted += u32::from(!kept);
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_fill_one_frame_and_count_the_rest() {
        let counters = PortCounters {
            rx_frames: u64::MAX,
            rx_bytes: u64::MAX,
            tx_frames: u64::MAX,
            tx_bytes: u64::MAX,
            tx_denied: u64::MAX,
            ..PortCounters::default()
        };
        let vlans: Vec<u16> = (4079..=4094).collect();
        let mut worst = port_stats(&"v".repeat(40), &vlans, &counters);
        while worst
            .drops
            .push(DropCount {
                reason: u8::MAX,
                count: u64::MAX,
            })
            .is_ok()
        {}
        let stats = net_stats(std::iter::repeat_n(worst, 64), std::iter::empty());
        assert!(!stats.ports.is_empty());
        assert!(
            stats.omitted > 0,
            "64 worst-case ports do not fit one frame"
        );
        assert_eq!(stats.ports.len() + stats.omitted as usize, 64);
        let small = port_stats("web-1/0", &[10], &PortCounters::default());
        let stats = net_stats(std::iter::repeat_n(small, 100), std::iter::empty());
        assert_eq!(
            (stats.ports.len(), stats.omitted),
            (64, 36),
            "the list's own bound"
        );
    }

    #[test]
    fn drop_codes_follow_the_switchs_order() {
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(kaos_protocol::DROP_REASONS[i], reason.name());
        }
    }
}
