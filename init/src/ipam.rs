//! IPAM: which MAC and IPv4 address each VM NIC gets, and what the switch and the guest are
//! told about them. Pure functions of the store's contents, so they are tested without a host.
//!
//! - **Addresses.** A NIC asking for a fixed address gets it if it is inside the VLAN's subnet,
//!   not the network, broadcast or gateway address, and not held; otherwise it gets the lowest
//!   free address of the VLAN's pool (the gateway is never handed out). The caller stores the
//!   result in the same transaction as the VM record (`Config::create_vm`), so a VM is never
//!   half-created and two creates never share an address.
//! - **MACs.** `02:` (locally administered, unicast) and five bytes of
//!   SHA-256(`"kaos-mac"`, host public key, VM name, NIC index, attempt): stable for a name on a
//!   host, different between hosts sharing a segment. A MAC already held on the host (any VLAN)
//!   moves to the next attempt, so MACs are unique on every VLAN.
//! - **Stable across boots**: both are kept in the VM record and its leases; nothing is derived
//!   again after create.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use kaos_net::switch::{self, Published, Rule};
use kaos_protocol::{
    ErrorCode, NicInfo, NicSpec, RuleAction, RuleDirection, RuleProtocol, RuleScope, RuleSpec,
    Transport, VlanSpec,
};
use kaos_store::{Lease, NicRecord, VmRecord};
use sha2::{Digest as _, Sha256};

use crate::config::Refusal;

/// How many MACs are tried for one NIC before giving up (a collision is a 2^-40 event).
const MAC_ATTEMPTS: u32 = 64;

/// The MAC of NIC `index` of VM `vm` on the host whose key is `host_key`, `attempt`th try.
pub fn derive_mac(host_key: &[u8; 32], vm: &str, index: u8, attempt: u32) -> [u8; 6] {
    let mut h = Sha256::new();
    h.update(b"kaos-mac\0");
    h.update(host_key);
    h.update((vm.len() as u64).to_le_bytes());
    h.update(vm.as_bytes());
    h.update([index]);
    h.update(attempt.to_le_bytes());
    let d = h.finalize();
    [0x02, d[0], d[1], d[2], d[3], d[4]]
}

/// Assigns a MAC and an address to each of VM `vm`'s `nics`, given the VLANs and the leases
/// held now. Nothing is stored here.
pub fn assign(
    host_key: &[u8; 32],
    vm: &str,
    nics: &[NicSpec],
    vlans: &[VlanSpec],
    leases: &[Lease],
) -> Result<Vec<NicRecord>, Refusal> {
    let mut taken: BTreeSet<(u16, Ipv4Addr)> = leases.iter().map(|l| (l.vlan, l.ipv4)).collect();
    let mut macs: BTreeSet<[u8; 6]> = leases.iter().map(|l| l.mac).collect();
    let mut out = Vec::with_capacity(nics.len());
    for (index, nic) in nics.iter().enumerate() {
        let index = u8::try_from(index).unwrap_or(u8::MAX);
        let vlan = find_vlan(vlans, nic.vlan, index)?;
        check_publish(nic, index)?;
        let ipv4 = match nic.ipv4 {
            Some(ip) => fixed(vlan, ip, index, leases, &taken)?,
            None => lowest_free(vlan, &taken).ok_or_else(|| exhausted(vlan, leases))?,
        };
        let mac = (0..MAC_ATTEMPTS)
            .map(|attempt| derive_mac(host_key, vm, index, attempt))
            .find(|mac| !macs.contains(mac))
            .ok_or_else(|| Refusal::new(ErrorCode::Internal, "no free MAC address was found"))?;
        taken.insert((nic.vlan, ipv4));
        macs.insert(mac);
        out.push(NicRecord {
            vlan: nic.vlan,
            mac,
            ipv4,
        });
    }
    Ok(out)
}

fn find_vlan(vlans: &[VlanSpec], id: u16, index: u8) -> Result<&VlanSpec, Refusal> {
    vlans.iter().find(|v| v.id == id).ok_or_else(|| {
        Refusal::new(
            ErrorCode::NotFound,
            format!(
                "NIC {index}: VLAN {id} does not exist; create it first with \
                 `kaosctl net vlan create {id} --subnet …`"
            ),
        )
    })
}

fn check_publish(nic: &NicSpec, index: u8) -> Result<(), Refusal> {
    if nic.publish.iter().any(|p| p.port == 0) {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            format!("NIC {index}: port 0 cannot be published"),
        ));
    }
    Ok(())
}

fn fixed(
    vlan: &VlanSpec,
    ip: Ipv4Addr,
    index: u8,
    leases: &[Lease],
    taken: &BTreeSet<(u16, Ipv4Addr)>,
) -> Result<Ipv4Addr, Refusal> {
    vlan.assignable(ip).map_err(|why| {
        Refusal::new(
            ErrorCode::InvalidArgument,
            format!(
                "NIC {index}: {ip} on VLAN {} ({}): {why}",
                vlan.id, vlan.subnet
            ),
        )
    })?;
    if taken.contains(&(vlan.id, ip)) {
        let holder = leases
            .iter()
            .find(|l| l.vlan == vlan.id && l.ipv4 == ip)
            .map_or_else(
                || "another NIC of this VM".to_owned(),
                |l| format!("VM {}", l.vm),
            );
        return Err(Refusal::new(
            ErrorCode::Conflict,
            format!(
                "NIC {index}: {ip} is taken on VLAN {} (held by {holder})",
                vlan.id
            ),
        ));
    }
    Ok(ip)
}

/// The lowest address of the VLAN's pool that is neither the gateway nor held.
pub fn lowest_free(vlan: &VlanSpec, taken: &BTreeSet<(u16, Ipv4Addr)>) -> Option<Ipv4Addr> {
    let (first, last) = vlan.pool_range();
    (first.to_bits()..=last.to_bits())
        .map(Ipv4Addr::from_bits)
        .find(|ip| Some(*ip) != vlan.gateway && !taken.contains(&(vlan.id, *ip)))
}

fn exhausted(vlan: &VlanSpec, leases: &[Lease]) -> Refusal {
    let (first, last) = vlan.pool_range();
    let held = leases.iter().filter(|l| l.vlan == vlan.id).count();
    Refusal::new(
        ErrorCode::Conflict,
        format!(
            "VLAN {}'s pool {first}-{last} is exhausted ({held} addresses held); \
             destroy a VM or give a fixed address outside the pool",
            vlan.id
        ),
    )
}

/// What a VM's NICs show: the assignment with its VLAN's prefix and gateway. A NIC whose VLAN
/// is missing (a damaged store) shows prefix 32 and no gateway.
pub fn nic_infos(nics: &[NicRecord], vlans: &[VlanSpec]) -> Vec<NicInfo> {
    nics.iter()
        .map(|n| {
            let vlan = vlans.iter().find(|v| v.id == n.vlan);
            NicInfo {
                vlan: n.vlan,
                mac: n.mac,
                ipv4: n.ipv4,
                prefix: vlan.map_or(32, |v| v.subnet.prefix),
                gateway: vlan.and_then(|v| v.gateway),
            }
        })
        .collect()
}

/// The guest kernel's `ip=` argument for its first NIC (Linux `Documentation/admin-guide/
/// nfs/nfsroot.rst`): `ip=<client>::<gateway>:<netmask>:<hostname>:eth0:off[:<dns0>[:<dns1>]]`.
pub fn guest_cmdline(vm: &str, nic: &NicInfo, vlan: &VlanSpec) -> String {
    let gateway = nic.gateway.map(|g| g.to_string()).unwrap_or_default();
    let mut arg = format!(
        "ip={}::{gateway}:{}:{vm}:eth0:off",
        nic.ipv4,
        vlan.subnet.netmask()
    );
    for dns in &vlan.dns {
        arg.push(':');
        arg.push_str(&dns.to_string());
    }
    arg
}

/// One stored rule in the switch's terms.
pub fn switch_rule(spec: &RuleSpec) -> Rule {
    let ports = spec
        .ports
        .map_or(switch::PortRange::ALL, |(first, last)| switch::PortRange {
            first,
            last,
        });
    let remote = spec
        .peer
        .and_then(|p| switch::Cidr::new(Ipv4Addr::from(p.addr), p.prefix))
        .unwrap_or(switch::Cidr::ANY);
    Rule {
        direction: match spec.direction {
            RuleDirection::In => switch::Direction::In,
            RuleDirection::Out => switch::Direction::Out,
        },
        protocol: match spec.protocol {
            RuleProtocol::Any => switch::Protocol::Any,
            RuleProtocol::Tcp => switch::Protocol::Tcp,
            RuleProtocol::Udp => switch::Protocol::Udp,
            RuleProtocol::Icmp => switch::Protocol::Icmp,
        },
        ports,
        remote,
        action: match spec.action {
            RuleAction::Allow => switch::Action::Allow,
            RuleAction::Deny => switch::Action::Deny,
        },
    }
}

/// The rules of `scope`, in id order (the order the switch evaluates them), from every stored
/// rule (`Config::rules`).
pub fn scope_rules(rules: &[(u32, RuleSpec)], scope: &RuleScope) -> Vec<Rule> {
    let mut mine: Vec<&(u32, RuleSpec)> = rules.iter().filter(|(_, r)| r.scope == *scope).collect();
    mine.sort_by_key(|(id, _)| *id);
    mine.into_iter().map(|(_, r)| switch_rule(r)).collect()
}

/// A VLAN's rules for `Switch::set_vlan_rules`.
pub fn switch_rules(rules: &[(u32, RuleSpec)], vlan: u16) -> Vec<Rule> {
    scope_rules(rules, &RuleScope::Vlan(vlan))
}

/// A VM's own rules, for each of its NICs' ports (`GuestPort::rules`).
pub fn vm_rules(rules: &[(u32, RuleSpec)], vm: &str) -> Vec<Rule> {
    scope_rules(rules, &RuleScope::Vm(kaos_protocol::truncated(vm)))
}

/// A NIC's published ports in the switch's terms.
pub fn published(nic: &NicSpec) -> Vec<Published> {
    nic.publish
        .iter()
        .map(|p| Published {
            transport: match p.protocol {
                Transport::Tcp => switch::Transport::Tcp,
                Transport::Udp => switch::Transport::Udp,
            },
            port: p.port,
        })
        .collect()
}

/// The switch ports of a VM's NICs, in NIC order: VLAN, MAC, address, published ports and the
/// VM's rules. A NIC with a VLAN id the switch cannot take (a damaged record) is left out and
/// named in the error list.
pub fn guest_ports(
    record: &VmRecord,
    rules: &[(u32, RuleSpec)],
) -> (Vec<switch::GuestPort>, Vec<String>) {
    let own = vm_rules(rules, &record.spec.name);
    let mut ports = Vec::new();
    let mut errors = Vec::new();
    for (nic, spec) in record.nics.iter().zip(record.spec.nics.iter()) {
        let Some(vlan) = switch::Vlan::new(nic.vlan) else {
            errors.push(format!("VM {}: VLAN id {}", record.spec.name, nic.vlan));
            continue;
        };
        ports.push(switch::GuestPort {
            vlan,
            mac: nic.mac,
            ipv4: nic.ipv4,
            published: published(spec),
            rules: own.clone(),
        });
    }
    (ports, errors)
}

#[cfg(test)]
mod tests;
