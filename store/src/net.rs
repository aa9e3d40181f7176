//! The network configuration tables (schema v2): VLANs, firewall rules, and the addresses VM
//! NICs hold.
//!
//! The invariants that span tables are kept inside single write transactions, so redb's one
//! writer at a time makes them hold against concurrent requests too:
//! - a VM record and its [`NIC_LEASES`] entries are created and deleted together
//!   ([`Store::create_vm`], [`Store::remove_vm`]), and a lease's VLAN exists when it is taken;
//! - a VLAN is deleted only while no lease is on it and no rule names it ([`Store::remove_vlan`]);
//! - rule ids come from a counter in [`META`] and are never reused.
//!
//! Which address or MAC a NIC gets is decided by the caller (`kattach`'s IPAM); the store only
//! refuses an address that is already held.

use std::net::Ipv4Addr;

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};
use serde::Serialize;

use crate::schema::{
    FIREWALL_RULES, LeaseRecord, META, META_NEXT_RULE_ID, NIC_LEASES, RuleRecord, VLANS, VMS,
    VlanRecord, VmRecord,
};
use crate::{Store, StoreError};
use kaos_protocol::{RuleScope, RuleSpec, VlanSpec};

/// An address held by a VM's NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The VLAN.
    pub vlan: u16,
    /// The address.
    pub ipv4: Ipv4Addr,
    /// The VM holding it.
    pub vm: String,
    /// Which of the VM's NICs.
    pub nic: u8,
    /// That NIC's MAC.
    pub mac: [u8; 6],
}

fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(value)
        .map_err(|error| StoreError::Database(format!("encoding {what}: {error}")))
}

fn decode<'a, T: serde::Deserialize<'a>>(what: &str, bytes: &'a [u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|error| StoreError::Corrupt(format!("{what}: {error}")))
}

fn conflict(message: String) -> StoreError {
    StoreError::Conflict(message)
}

impl Store {
    /// Every VLAN, by id.
    pub fn vlans(&self) -> Result<Vec<VlanSpec>, StoreError> {
        let txn = self.database().begin_read()?;
        let table = txn.open_table(VLANS)?;
        let mut vlans = Vec::new();
        for entry in table.iter()? {
            let (id, bytes) = entry?;
            let record: VlanRecord = decode(&format!("VLAN {}", id.value()), bytes.value())?;
            vlans.push(record.spec);
        }
        Ok(vlans)
    }

    /// Creates VLAN `spec.id`; [`StoreError::Conflict`] if it exists. Durable when it returns
    /// `Ok`. The caller validates the spec.
    pub fn create_vlan(&self, spec: &VlanSpec) -> Result<(), StoreError> {
        let bytes = encode("a VLAN", &VlanRecord { spec: spec.clone() })?;
        let txn = self.begin_durable_write()?;
        {
            let mut table = txn.open_table(VLANS)?;
            if table.get(spec.id)?.is_some() {
                return Err(conflict(format!("VLAN {} exists", spec.id)));
            }
            table.insert(spec.id, bytes.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Deletes VLAN `id`; returns whether it existed. [`StoreError::Conflict`] while a VM NIC
    /// is on it or a rule names it. Durable when it returns `Ok`.
    pub fn remove_vlan(&self, id: u16) -> Result<bool, StoreError> {
        let txn = self.begin_durable_write()?;
        let users: Vec<String> = {
            let leases = txn.open_table(NIC_LEASES)?;
            let mut users = Vec::new();
            for entry in leases.range((id, 0)..=(id, u32::MAX))? {
                let (_, bytes) = entry?;
                let lease: LeaseRecord = decode("a lease", bytes.value())?;
                if !users.contains(&lease.vm) {
                    users.push(lease.vm);
                }
            }
            users
        };
        if !users.is_empty() {
            return Err(conflict(format!(
                "VLAN {id} is in use by VM {}; destroy {} first",
                users.join(", "),
                if users.len() == 1 { "it" } else { "them" }
            )));
        }
        let naming: Vec<String> = rules_in(&txn)?
            .into_iter()
            .filter(|(_, spec)| spec.scope == RuleScope::Vlan(id))
            .map(|(rule, _)| rule.to_string())
            .collect();
        if !naming.is_empty() {
            return Err(conflict(format!(
                "VLAN {id} is named by rule {}; delete the rules first",
                naming.join(", ")
            )));
        }
        let existed = txn.open_table(VLANS)?.remove(id)?.is_some();
        txn.commit()?;
        Ok(existed)
    }

    /// Every address held, by VLAN and address.
    pub fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        let txn = self.database().begin_read()?;
        let table = txn.open_table(NIC_LEASES)?;
        let mut leases = Vec::new();
        for entry in table.iter()? {
            let (key, bytes) = entry?;
            let (vlan, ip) = key.value();
            let record: LeaseRecord = decode("a lease", bytes.value())?;
            leases.push(Lease {
                vlan,
                ipv4: Ipv4Addr::from_bits(ip),
                vm: record.vm,
                nic: record.nic,
                mac: record.mac,
            });
        }
        Ok(leases)
    }

    /// Every firewall rule, by id.
    pub fn rules(&self) -> Result<Vec<(u32, RuleSpec)>, StoreError> {
        let txn = self.database().begin_read()?;
        let table = txn.open_table(FIREWALL_RULES)?;
        let mut rules = Vec::new();
        for entry in table.iter()? {
            let (id, bytes) = entry?;
            let record: RuleRecord = decode(&format!("rule {}", id.value()), bytes.value())?;
            rules.push((rule_id(id.value())?, record.spec));
        }
        Ok(rules)
    }

    /// Stores a rule under the next id and returns the id. Durable when it returns `Ok`. The
    /// caller validates the rule and checks that its VLAN or VM exists.
    pub fn add_rule(&self, spec: &RuleSpec) -> Result<u32, StoreError> {
        let bytes = encode("a rule", &RuleRecord { spec: spec.clone() })?;
        let txn = self.begin_durable_write()?;
        let id = {
            let mut meta = txn.open_table(META)?;
            let id = meta.get(META_NEXT_RULE_ID)?.map_or(1, |v| v.value());
            let short = u32::try_from(id)
                .map_err(|_| conflict("every rule id has been used".to_owned()))?;
            meta.insert(META_NEXT_RULE_ID, id + 1)?;
            txn.open_table(FIREWALL_RULES)?
                .insert(id, bytes.as_slice())?;
            short
        };
        txn.commit()?;
        Ok(id)
    }

    /// Deletes rule `id`; returns whether it existed. Durable when it returns `Ok`.
    pub fn remove_rule(&self, id: u32) -> Result<bool, StoreError> {
        let txn = self.begin_durable_write()?;
        let existed = txn
            .open_table(FIREWALL_RULES)?
            .remove(u64::from(id))?
            .is_some();
        txn.commit()?;
        Ok(existed)
    }

    /// Creates VM `record.spec.name` and takes a lease for each of `record.nics`, all in one
    /// durable transaction. [`StoreError::Conflict`] (and nothing written) if the name is
    /// taken, a NIC's VLAN does not exist, or its address or MAC is held on that VLAN.
    pub fn create_vm(&self, record: &VmRecord) -> Result<(), StoreError> {
        let txn = self.begin_durable_write()?;
        insert_vm(&txn, record)?;
        txn.commit()?;
        Ok(())
    }
}

/// Inserts VM `record.spec.name` and a lease for each of its NICs (part of creating a VM, see
/// [`Store::create_vm`]): a [`StoreError::Conflict`] if the name is taken, a NIC's VLAN does
/// not exist, or its address or MAC is held on that VLAN.
pub(crate) fn insert_vm(txn: &WriteTransaction, record: &VmRecord) -> Result<(), StoreError> {
    let name = record.spec.name.as_str();
    let bytes = encode("a VM", record)?;
    {
        let mut vms = txn.open_table(VMS)?;
        if vms.get(name)?.is_some() {
            return Err(conflict(format!("a VM named {name:?} exists")));
        }
        vms.insert(name, bytes.as_slice())?;
    }
    let vlans = txn.open_table(VLANS)?;
    let mut leases = txn.open_table(NIC_LEASES)?;
    for (index, nic) in record.nics.iter().enumerate() {
        if vlans.get(nic.vlan)?.is_none() {
            return Err(conflict(format!("VLAN {} does not exist", nic.vlan)));
        }
        let key = (nic.vlan, nic.ipv4.to_bits());
        if let Some(held) = leases.get(key)? {
            let held: LeaseRecord = decode("a lease", held.value())?;
            return Err(conflict(format!(
                "{} is held by VM {} on VLAN {}",
                nic.ipv4, held.vm, nic.vlan
            )));
        }
        for entry in leases.range((nic.vlan, 0)..=(nic.vlan, u32::MAX))? {
            let (_, held) = entry?;
            let held: LeaseRecord = decode("a lease", held.value())?;
            if held.mac == nic.mac {
                return Err(conflict(format!(
                    "MAC {:02x?} is held by VM {} on VLAN {}",
                    nic.mac, held.vm, nic.vlan
                )));
            }
        }
        let lease = LeaseRecord {
            vm: name.to_owned(),
            nic: u8::try_from(index).unwrap_or(u8::MAX),
            mac: nic.mac,
        };
        leases.insert(key, encode("a lease", &lease)?.as_slice())?;
    }
    Ok(())
}

/// Releases VM `name`'s leases and deletes the rules that name it (part of deleting the VM).
pub(crate) fn release_vm(txn: &WriteTransaction, name: &str) -> Result<(), StoreError> {
    let mut leases = txn.open_table(NIC_LEASES)?;
    let mut held = Vec::new();
    for entry in leases.iter()? {
        let (key, bytes) = entry?;
        let lease: LeaseRecord = decode("a lease", bytes.value())?;
        if lease.vm == name {
            held.push(key.value());
        }
    }
    for key in held {
        leases.remove(key)?;
    }
    let scope = RuleScope::Vm(kaos_protocol::truncated(name));
    let naming: Vec<u32> = rules_in(txn)?
        .into_iter()
        .filter(|(_, spec)| spec.scope == scope)
        .map(|(id, _)| id)
        .collect();
    let mut rules = txn.open_table(FIREWALL_RULES)?;
    for id in naming {
        rules.remove(u64::from(id))?;
    }
    Ok(())
}

fn rules_in(txn: &WriteTransaction) -> Result<Vec<(u32, RuleSpec)>, StoreError> {
    let table = txn.open_table(FIREWALL_RULES)?;
    let mut rules = Vec::new();
    for entry in table.iter()? {
        let (id, bytes) = entry?;
        let record: RuleRecord = decode(&format!("rule {}", id.value()), bytes.value())?;
        rules.push((rule_id(id.value())?, record.spec));
    }
    Ok(rules)
}

fn rule_id(id: u64) -> Result<u32, StoreError> {
    u32::try_from(id).map_err(|_| StoreError::Corrupt(format!("rule id {id}")))
}
