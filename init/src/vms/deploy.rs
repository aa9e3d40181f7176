//! Deploying an image: its instances created, started and destroyed, and what each instance
//! boots with — the image's plan and modules as one more initrd archive
//! ([`kaos_module::plan`]).

use std::path::PathBuf;
use std::sync::Arc;

use kaos_module::plan::{GuestPlan, PLAN_FORMAT, PlanGroup, PlanModule};
use kaos_protocol::{ErrorCode, ImageInfo, MAX_INSTANCES, MAX_VMS};

use super::{Reply, Vm, Vms, lock, refuse};
use crate::config::Config;

impl Vms {
    /// Brings image `name` to `count` instances: the missing ones are created (all or none)
    /// and started, the ones beyond `count` stopped and destroyed, and stopped ones up to
    /// `count` started.
    pub fn deploy(
        self: &Arc<Self>,
        config: &Arc<Config>,
        name: &str,
        count: u16,
    ) -> Reply<ImageInfo> {
        if count > MAX_INSTANCES {
            return Err(refuse(
                ErrorCode::InvalidArgument,
                format!("{count} instances: an image has at most {MAX_INSTANCES}"),
            ));
        }
        let image = config
            .images()
            .into_iter()
            .find(|i| i.name == name)
            .ok_or_else(|| refuse(ErrorCode::NotFound, format!("no image named {name:?}")))?;
        let apps = crate::images::image_apps(config, &image)?;
        let ports = crate::images::published_ports(&apps);
        {
            let vms = lock(&self.vms);
            let others = vms
                .values()
                .filter(|vm| vm.image.as_deref() != Some(name))
                .count();
            if others + usize::from(count) > MAX_VMS {
                return Err(refuse(
                    ErrorCode::Conflict,
                    format!(
                        "this host holds at most {MAX_VMS} VMs ({others} are no instances of {name})"
                    ),
                ));
            }
        }
        let step = config.deploy(name, count, |n| {
            crate::images::instance_spec(&image, n, &ports)
        })?;
        for vm in &step.destroyed {
            if let Some(v) = lock(&self.vms).get_mut(vm) {
                v.desired_running = false;
            }
            self.stop(vm);
            lock(&self.vms).remove(vm);
            self.changed.notify_all();
            log::info!("VM {vm}: destroyed (image {name} scaled to {count})");
        }
        let vlans = config.vlans();
        for record in step.created {
            let nics = crate::ipam::nic_infos(&record.nics, &vlans);
            let vm_name = record.spec.name.to_string();
            lock(&self.vms)
                .entry(vm_name)
                .or_insert_with(|| Vm::new(record.spec, true, nics, record.image));
        }
        for n in 1..=count {
            let vm = format!("{name}-{n}");
            self.set_desired(config, &vm, true)?;
            self.launch(config, &vm);
        }
        crate::images::image_show(config, name)
    }

    /// The initrd archive instance `vm` of image `image` boots with, in the runtime directory:
    /// the plan (modules by SHA-256, the groups' values) and each module's `.aqi` as stored,
    /// read back and checked.
    ///
    /// Every instance of the image boots the same bytes (its name comes on the command line),
    /// and the plan names everything in them by content: the file is named by the plan's hash,
    /// so the modules are read from the store and written to RAM once per content, not at
    /// every start. The image's older files go (a VMM reads its initrd before the guest runs,
    /// so none is in use).
    pub(super) fn apps_initrd(
        &self,
        config: &Config,
        vm: &str,
        image: &str,
    ) -> Result<PathBuf, String> {
        let spec = config
            .images()
            .into_iter()
            .find(|i| i.name == image)
            .ok_or_else(|| "the image is gone".to_owned())?;
        let stored = config.modules();
        let mut plan = GuestPlan {
            format: PLAN_FORMAT,
            image: image.to_owned(),
            modules: Vec::new(),
            groups: Vec::new(),
        };
        for module in &spec.modules {
            let info = stored
                .iter()
                .find(|m| m.name == *module)
                .ok_or_else(|| format!("module {module} is not stored"))?;
            plan.modules.push(PlanModule {
                name: module.to_string(),
                sha256: info.sha256,
            });
        }
        let groups = config.groups();
        for name in &spec.groups {
            let group = groups
                .iter()
                .find(|g| g.name == *name)
                .ok_or_else(|| format!("group {name} is gone"))?;
            plan.groups.push(PlanGroup {
                module: group.module.to_string(),
                name: group.name.to_string(),
                values: group
                    .values
                    .iter()
                    .map(|v| (v.key.to_string(), v.value.to_string()))
                    .collect(),
            });
        }
        let hex = kaos_module::sha256_hex(&kaos_module::plan::encode(&plan));
        let prefix = format!("apps-{image}-");
        let path = self
            .runtime_dir
            .join(format!("{prefix}{}.cpio", &hex[..16]));
        if path.exists() {
            return Ok(path);
        }
        let mut archives = Vec::new();
        for m in &plan.modules {
            let (info, bytes) = config
                .module_bytes(&m.name)
                .map_err(|e| e.reply().message.to_string())?
                .ok_or_else(|| format!("module {} is not stored", m.name))?;
            if info.sha256 != m.sha256 {
                return Err(format!("module {} was replaced meanwhile", m.name));
            }
            archives.push((m.name.as_str(), bytes));
        }
        let parts: Vec<(&str, &[u8])> = archives.iter().map(|(n, b)| (*n, b.as_slice())).collect();
        let bytes = kaos_module::plan::apps_initrd(&plan, &parts).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&self.runtime_dir)
            .and_then(|()| {
                let tmp = self.runtime_dir.join(format!("{prefix}{vm}.tmp"));
                std::fs::write(&tmp, &bytes)?;
                std::fs::rename(&tmp, &path)
            })
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        remove_others(&self.runtime_dir, &prefix, &path);
        Ok(path)
    }
}

/// Removes the `<prefix><16 hex>.cpio` files of `dir` but `keep`.
fn remove_others(dir: &std::path::Path, prefix: &str, keep: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Exactly `<prefix><16 hex>.cpio`: another image whose name starts the same keeps its.
        let ours = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(".cpio"))
            .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
        if path != keep && ours {
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::remove_others;

    #[test]
    fn only_the_images_older_initrds_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = |name: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, b"x").expect("write");
            path
        };
        let old = file("apps-web-0123456789abcdef.cpio");
        let keep = file("apps-web-fedcba9876543210.cpio");
        let other = file("apps-web-x-0123456789abcdef.cpio");
        let unrelated = file("vkaos-00.vmlinuz");
        remove_others(dir.path(), "apps-web-", &keep);
        assert!(!old.exists());
        assert!(keep.exists() && other.exists() && unrelated.exists());
    }
}
