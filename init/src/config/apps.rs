//! Groups, images and deployments in the store (see `kaos_store`'s `apps` for the references
//! it keeps). What a group's values mean is checked by [`crate::images`] before it gets here.

use kaos_protocol::keys::SecretKey;
use kaos_protocol::{ErrorCode, EventKind, GroupSpec, ImageSpec, VmSpec};
use kaos_store::{Lease, Store, StoreError, VmRecord};

use super::{Config, Refusal};

/// What one deployment step changed in the store.
#[derive(Debug, Default)]
pub struct Deployment {
    /// Instances created (stored, meant to run).
    pub created: Vec<VmRecord>,
    /// Instances deleted.
    pub destroyed: Vec<String>,
}

fn read(e: StoreError) -> Refusal {
    Refusal::new(ErrorCode::StoreFailed, e.to_string())
}

impl Config {
    /// Every group, by name.
    pub fn groups(&self) -> Vec<GroupSpec> {
        self.read("groups", Store::groups)
    }

    /// Stores a new group (`create`) or replaces one; `Ok(false)`: no group to replace.
    pub fn put_group(&self, spec: &GroupSpec, create: bool) -> Result<bool, Refusal> {
        let stored = self.write(|store| store.put_group(spec, create))?;
        if stored {
            let what = if create { "created" } else { "edited" };
            self.record(
                EventKind::ImageChanged,
                &format!("{what} group {} of module {}", spec.name, spec.module),
            );
        }
        Ok(stored)
    }

    /// Deletes a group no image uses; whether it existed.
    pub fn remove_group(&self, name: &str) -> Result<bool, Refusal> {
        let existed = self.write(|store| store.remove_group(name))?;
        if existed {
            self.record(EventKind::ImageChanged, &format!("deleted group {name}"));
        }
        Ok(existed)
    }

    /// Every image, by name.
    pub fn images(&self) -> Vec<ImageSpec> {
        self.read("images", Store::images)
    }

    /// Stores a new image.
    pub fn create_image(&self, spec: &ImageSpec) -> Result<(), Refusal> {
        self.write(|store| store.create_image(spec))?;
        self.record(
            EventKind::ImageChanged,
            &format!(
                "created image {} ({} modules, {} groups)",
                spec.name,
                spec.modules.len(),
                spec.groups.len()
            ),
        );
        Ok(())
    }

    /// Deletes an image without instances; whether it existed.
    pub fn remove_image(&self, name: &str) -> Result<bool, Refusal> {
        let existed = self.write(|store| store.remove_image(name))?;
        if existed {
            self.record(EventKind::ImageChanged, &format!("deleted image {name}"));
        }
        Ok(existed)
    }

    /// Brings image `image` to `count` instances in the store: `<image>-1` to
    /// `<image>-<count>` exist afterwards (the missing ones made from `instance(n)`, each NIC
    /// given a MAC and an address as `vm create` does, none shared) and instances beyond
    /// `count` are gone, all in one durable transaction under the store's lock. A VM that
    /// holds a wanted name but is no instance of the image refuses the whole step.
    pub fn deploy(
        &self,
        image: &str,
        count: u16,
        instance: impl Fn(u16) -> VmSpec,
    ) -> Result<Deployment, Refusal> {
        let mut st = self.lock();
        let vms = st.store.vms().map_err(read)?;
        let vlans = st.store.vlans().map_err(read)?;
        let mut leases = st.store.leases().map_err(read)?;
        let key = st
            .store
            .host_key()
            .ok()
            .flatten()
            .map_or([0; 32], |secret| SecretKey(secret).public().0);
        let mut step = Deployment::default();
        for (name, record) in &vms {
            if record.image.as_deref() == Some(image)
                && instance_number(image, name).is_none_or(|n| n > count)
            {
                step.destroyed.push(name.clone());
            }
        }
        // Addresses of the instances going away are free for the new ones.
        leases.retain(|l| !step.destroyed.contains(&l.vm));
        for n in 1..=count {
            let spec = instance(n);
            match vms.iter().find(|(name, _)| name == spec.name.as_str()) {
                Some((_, record)) if record.image.as_deref() == Some(image) => continue,
                Some(_) => {
                    return Err(Refusal::new(
                        ErrorCode::Conflict,
                        format!(
                            "VM {} exists and is no instance of image {image}; rename or \
                             destroy it first",
                            spec.name
                        ),
                    ));
                }
                None => {}
            }
            let nics = crate::ipam::assign(&key, &spec.name, &spec.nics, &vlans, &leases).map_err(
                |e| {
                    Refusal::new(
                        e.reply().code,
                        format!("instance {}: {}", spec.name, e.reply().message),
                    )
                },
            )?;
            leases.extend(nics.iter().enumerate().map(|(i, nic)| Lease {
                vlan: nic.vlan,
                ipv4: nic.ipv4,
                vm: spec.name.to_string(),
                nic: u8::try_from(i).unwrap_or(u8::MAX),
                mac: nic.mac,
            }));
            step.created.push(VmRecord {
                spec,
                running: true,
                nics,
                image: Some(image.to_owned()),
            });
        }
        self.write_locked(&mut st, |store| {
            store.deploy(&step.created, &step.destroyed)
        })?;
        drop(st);
        self.record(
            EventKind::ImageChanged,
            &format!(
                "deployed image {image} to {count} instances ({} created, {} destroyed)",
                step.created.len(),
                step.destroyed.len()
            ),
        );
        Ok(step)
    }
}

/// `n` if `vm` is `<image>-<n>` (no leading zero).
pub fn instance_number(image: &str, vm: &str) -> Option<u16> {
    let n = vm.strip_prefix(image)?.strip_prefix('-')?;
    if n.starts_with('0') {
        return None;
    }
    n.parse().ok()
}

/// Copies groups, then images, that `to` lacks (after the modules they name).
pub(super) fn carry_over(from: &Store, to: &Store) {
    if let (Ok(groups), Ok(existing)) = (from.groups(), to.groups()) {
        for group in groups {
            if !existing.iter().any(|g| g.name == group.name)
                && let Err(e) = to.put_group(&group, true)
            {
                log::warn!("group {} not carried over: {e}", group.name);
            }
        }
    }
    if let (Ok(images), Ok(existing)) = (from.images(), to.images()) {
        for image in images {
            if !existing.iter().any(|i| i.name == image.name)
                && let Err(e) = to.create_image(&image)
            {
                log::warn!("image {} not carried over: {e}", image.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::instance_number;

    #[test]
    fn instance_numbers() {
        assert_eq!(instance_number("web", "web-1"), Some(1));
        assert_eq!(instance_number("web", "web-12"), Some(12));
        for other in [
            "web", "web-", "web-01", "web-x", "webs-1", "web-1-2", "db-1",
        ] {
            assert_eq!(instance_number("web", other), None, "{other}");
        }
    }
}
