//! The network configuration in the store: VLANs, rules, and VM records created together with
//! their NICs' leases (see [`crate::ipam`]).

use kaos_protocol::keys::SecretKey;
use kaos_protocol::{ErrorCode, EventKind, RuleSpec, VlanSpec, VmSpec};
use kaos_store::{Lease, Store, StoreError, VmRecord};

use super::{Config, Refusal};

impl Config {
    /// Every VLAN, by id.
    pub fn vlans(&self) -> Vec<VlanSpec> {
        self.read("VLANs", Store::vlans)
    }

    /// Every address VM NICs hold.
    pub fn leases(&self) -> Vec<Lease> {
        self.read("leases", Store::leases)
    }

    /// Every firewall rule, by id.
    pub fn rules(&self) -> Vec<(u32, RuleSpec)> {
        self.read("rules", Store::rules)
    }

    /// Creates a VLAN (durably), recording the change. The caller validates it.
    pub fn create_vlan(&self, spec: &VlanSpec) -> Result<(), Refusal> {
        self.write(|store| store.create_vlan(spec))?;
        self.record(
            EventKind::NetChanged,
            &format!("created VLAN {} ({})", spec.id, spec.subnet),
        );
        Ok(())
    }

    /// Deletes a VLAN no NIC is on and no rule names (durably); whether it existed.
    pub fn remove_vlan(&self, id: u16) -> Result<bool, Refusal> {
        let existed = self.write(|store| store.remove_vlan(id))?;
        if existed {
            self.record(EventKind::NetChanged, &format!("deleted VLAN {id}"));
        }
        Ok(existed)
    }

    /// Stores a rule (durably) and returns its id.
    pub fn add_rule(&self, spec: &RuleSpec) -> Result<u32, Refusal> {
        let id = self.write(|store| store.add_rule(spec))?;
        self.record(EventKind::NetChanged, &format!("added rule {id}"));
        Ok(id)
    }

    /// Deletes a rule (durably); whether it existed.
    pub fn remove_rule(&self, id: u32) -> Result<bool, Refusal> {
        let existed = self.write(|store| store.remove_rule(id))?;
        if existed {
            self.record(EventKind::NetChanged, &format!("deleted rule {id}"));
        }
        Ok(existed)
    }

    /// Creates a VM record with a MAC and an address for each of its NICs ([`crate::ipam`]),
    /// chosen and stored under one lock and in one durable transaction: nothing is
    /// half-created, and concurrent creates never share an address.
    pub fn create_vm(&self, spec: &VmSpec, running: bool) -> Result<VmRecord, Refusal> {
        let mut st = self.lock();
        let read = |e: StoreError| Refusal::new(ErrorCode::StoreFailed, e.to_string());
        let vlans = st.store.vlans().map_err(read)?;
        let leases = st.store.leases().map_err(read)?;
        let key = st
            .store
            .host_key()
            .ok()
            .flatten()
            .map_or([0; 32], |secret| SecretKey(secret).public().0);
        let nics = crate::ipam::assign(&key, &spec.name, &spec.nics, &vlans, &leases)?;
        let record = VmRecord {
            spec: spec.clone(),
            running,
            nics,
            image: None,
        };
        self.write_locked(&mut st, |store| store.create_vm(&record))?;
        Ok(record)
    }
}

/// Copies VLANs, then VMs with their leases (a VM whose address `to` holds already stays
/// behind, logged), then rules (renumbered: `to` hands out its own ids) if `to` has none.
pub(super) fn carry_over(from: &Store, to: &Store) {
    if let (Ok(vlans), Ok(existing)) = (from.vlans(), to.vlans()) {
        for vlan in vlans {
            if !existing.iter().any(|v| v.id == vlan.id) {
                let _ = to.create_vlan(&vlan);
            }
        }
    }
    if let (Ok(vms), Ok(existing)) = (from.vms(), to.vms()) {
        for (name, record) in vms {
            if !existing.iter().any(|(n, _)| *n == name)
                && let Err(e) = to.create_vm(&record)
            {
                log::warn!("VM {name} not carried over: {e}");
            }
        }
    }
    if let (Ok(rules), Ok(existing)) = (from.rules(), to.rules())
        && existing.is_empty()
    {
        for (_, rule) in rules {
            let _ = to.add_rule(&rule);
        }
    }
}
