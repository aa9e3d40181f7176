//! Configuration groups, VM images and their instances (schema v3).
//!
//! The references between them are checked inside the write transaction that would break
//! them, so redb's single writer makes them hold against concurrent requests:
//! - a group's module exists when it is created, and a module is not removed while a group or
//!   an image names it ([`Store::remove_module`] asks [`module_users`]);
//! - an image's modules and groups exist when it is created, and a group is not deleted while
//!   an image names it;
//! - an image is not deleted while it has instances;
//! - a deployment creates and destroys all its instances, with their leases, in one
//!   transaction ([`Store::deploy`]): nothing is half-deployed.
//!
//! Whether a group's values fit its module's schema is decided by the caller (`kattach`,
//! which parses the module); the store keeps the references.

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::schema::{CONFIG_GROUPS, MODULES, VM_IMAGES, VMS, VmRecord};
use crate::{Store, StoreError};
use kaos_protocol::{GroupSpec, ImageSpec};

/// A configuration group, as kept in [`CONFIG_GROUPS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// The group as created or last edited.
    pub spec: GroupSpec,
}

/// A VM image, as kept in [`VM_IMAGES`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The image as created.
    pub spec: ImageSpec,
}

fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(value)
        .map_err(|error| StoreError::Database(format!("encoding {what}: {error}")))
}

fn decode<'a, T: Deserialize<'a>>(what: &str, bytes: &'a [u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|error| StoreError::Corrupt(format!("{what}: {error}")))
}

fn conflict(message: String) -> StoreError {
    StoreError::Conflict(message)
}

/// Every record of a name-keyed table, decoded (`what` names one in errors).
fn records<R: for<'a> Deserialize<'a>>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    what: &str,
) -> Result<Vec<R>, StoreError> {
    let mut out = Vec::new();
    for entry in table.iter()? {
        let (name, bytes) = entry?;
        out.push(decode(&format!("{what} {}", name.value()), bytes.value())?);
    }
    Ok(out)
}

fn groups_in(txn: &WriteTransaction) -> Result<Vec<GroupSpec>, StoreError> {
    let all: Vec<GroupRecord> = records(&txn.open_table(CONFIG_GROUPS)?, "group")?;
    Ok(all.into_iter().map(|r| r.spec).collect())
}

fn images_in(txn: &WriteTransaction) -> Result<Vec<ImageSpec>, StoreError> {
    let all: Vec<ImageRecord> = records(&txn.open_table(VM_IMAGES)?, "image")?;
    Ok(all.into_iter().map(|r| r.spec).collect())
}

/// What names module `name` (a group or an image), for refusing its removal; `None`: nothing.
pub(crate) fn module_users(
    txn: &WriteTransaction,
    name: &str,
) -> Result<Option<String>, StoreError> {
    if let Some(image) = images_in(txn)?
        .into_iter()
        .find(|i| i.platform == name || i.modules.iter().any(|m| m == name))
    {
        return Ok(Some(format!("image {}", image.name)));
    }
    Ok(groups_in(txn)?
        .into_iter()
        .find(|g| g.module == name)
        .map(|g| format!("group {}", g.name)))
}

impl Store {
    /// Every group, sorted by name.
    pub fn groups(&self) -> Result<Vec<GroupSpec>, StoreError> {
        let txn = self.database().begin_read()?;
        let all: Vec<GroupRecord> = records(&txn.open_table(CONFIG_GROUPS)?, "group")?;
        Ok(all.into_iter().map(|r| r.spec).collect())
    }

    /// Stores group `spec.name`: a new one if `create` (a [`StoreError::Conflict`] if the
    /// name is taken), else a replacement of an existing one (`Ok(false)` if there is none).
    /// Its module must be stored. Durable when it returns.
    pub fn put_group(&self, spec: &GroupSpec, create: bool) -> Result<bool, StoreError> {
        let name = spec.name.as_str();
        let bytes = encode("a group", &GroupRecord { spec: spec.clone() })?;
        let txn = self.begin_durable_write()?;
        if txn
            .open_table(MODULES)?
            .get(spec.module.as_str())?
            .is_none()
        {
            return Err(conflict(format!("module {} is not stored", spec.module)));
        }
        {
            let mut table = txn.open_table(CONFIG_GROUPS)?;
            let exists = table.get(name)?.is_some();
            if create && exists {
                return Err(conflict(format!("a group named {name:?} exists")));
            }
            if !create && !exists {
                return Ok(false);
            }
            table.insert(name, bytes.as_slice())?;
        }
        txn.commit()?;
        Ok(true)
    }

    /// Deletes group `name` unless an image uses it; returns whether it existed.
    pub fn remove_group(&self, name: &str) -> Result<bool, StoreError> {
        let txn = self.begin_durable_write()?;
        if let Some(image) = images_in(&txn)?
            .into_iter()
            .find(|i| i.groups.iter().any(|g| g == name))
        {
            return Err(conflict(format!(
                "image {} uses group {name}; delete the image first",
                image.name
            )));
        }
        let existed = txn.open_table(CONFIG_GROUPS)?.remove(name)?.is_some();
        txn.commit()?;
        Ok(existed)
    }

    /// Every image, sorted by name.
    pub fn images(&self) -> Result<Vec<ImageSpec>, StoreError> {
        let txn = self.database().begin_read()?;
        let all: Vec<ImageRecord> = records(&txn.open_table(VM_IMAGES)?, "image")?;
        Ok(all.into_iter().map(|r| r.spec).collect())
    }

    /// Creates image `spec.name`; its platform, modules and groups must be stored.
    /// [`StoreError::Conflict`] (and nothing written) otherwise or if the name is taken.
    pub fn create_image(&self, spec: &ImageSpec) -> Result<(), StoreError> {
        let name = spec.name.as_str();
        let bytes = encode("an image", &ImageRecord { spec: spec.clone() })?;
        let txn = self.begin_durable_write()?;
        {
            let modules = txn.open_table(MODULES)?;
            for module in core::iter::once(&spec.platform).chain(&spec.modules) {
                if modules.get(module.as_str())?.is_none() {
                    return Err(conflict(format!("module {module} is not stored")));
                }
            }
            let groups = txn.open_table(CONFIG_GROUPS)?;
            for group in &spec.groups {
                if groups.get(group.as_str())?.is_none() {
                    return Err(conflict(format!("there is no group named {group:?}")));
                }
            }
            let mut images = txn.open_table(VM_IMAGES)?;
            if images.get(name)?.is_some() {
                return Err(conflict(format!("an image named {name:?} exists")));
            }
            images.insert(name, bytes.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Deletes image `name` unless a VM is an instance of it; returns whether it existed.
    pub fn remove_image(&self, name: &str) -> Result<bool, StoreError> {
        let txn = self.begin_durable_write()?;
        {
            let vms = txn.open_table(VMS)?;
            for entry in vms.iter()? {
                let (vm, bytes) = entry?;
                let record: VmRecord = decode(&format!("VM {}", vm.value()), bytes.value())?;
                if record.image.as_deref() == Some(name) {
                    return Err(conflict(format!(
                        "VM {} is an instance of image {name}; scale it to 0 first \
                         (kaosctl image deploy {name} --count 0)",
                        vm.value()
                    )));
                }
            }
        }
        let existed = txn.open_table(VM_IMAGES)?.remove(name)?.is_some();
        txn.commit()?;
        Ok(existed)
    }

    /// One deployment step of an image, in one durable transaction: creates the VMs of
    /// `create` with their leases (as [`Store::create_vm`] does for one) and deletes the VMs
    /// named in `destroy` with theirs. Any conflict writes nothing.
    pub fn deploy(&self, create: &[VmRecord], destroy: &[String]) -> Result<(), StoreError> {
        let txn = self.begin_durable_write()?;
        for name in destroy {
            txn.open_table(VMS)?.remove(name.as_str())?;
            crate::net::release_vm(&txn, name)?;
        }
        for record in create {
            crate::net::insert_vm(&txn, record)?;
        }
        txn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
