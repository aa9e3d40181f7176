//! Configuration groups and VM images (protocol 1.4): the requests that define them, checked
//! against the modules they name before anything is stored. Deploying an image (creating,
//! starting and destroying its instances) is [`crate::vms::Vms::deploy`].
//!
//! - A group's values are held against its module's schema with
//!   [`kaos_module::group::resolve`], the function the guest renders them with, so a group the
//!   host accepts is a group every guest can render. Values are kept sorted by key.
//! - An image names a platform, App Modules (each once) and groups (each of one of the image's
//!   modules); a module whose schema has a key without a default needs one of its groups in
//!   the image. Its size and command line pass the checks `vm create` makes, and its VLAN must
//!   exist. Each instance publishes the ports its modules declare.

use kaos_module::manifest::{App, Kind, Protocol};
use kaos_protocol::{
    ErrorCode, GroupEdit, GroupList, GroupSpec, GroupSummary, IMAGE_NAME_MAX, ImageInfo, ImageList,
    ImageSpec, ImageSummary, MAX_PUBLISH, NicSpec, ObjectName, PublishSpec, RestartPolicy,
    Transport, VmSpec, truncated, valid_object_name,
};

use crate::config::{Config, Refusal, instance_number};

fn refuse(code: ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal::new(code, message)
}

fn invalid(message: impl Into<String>) -> Refusal {
    refuse(ErrorCode::InvalidArgument, message)
}

/// The manifest of stored App Module `name`, from its archive parsed again.
pub fn app_manifest(config: &Config, name: &str) -> Result<App, Refusal> {
    let Some((_, bytes)) = config.module_bytes(name)? else {
        return Err(refuse(
            ErrorCode::NotFound,
            format!("module {name:?} is not stored; push it with `kaosctl module push`"),
        ));
    };
    let module = kaos_module::parse(&bytes, &kaos_module::Limits::APP)
        .map_err(|e| refuse(ErrorCode::Internal, format!("stored module {name}: {e}")))?;
    match module.manifest.kind {
        Kind::App(app) => Ok(app),
        Kind::Platform(_) => Err(invalid(format!(
            "module {name:?} is a platform module, not an App Module"
        ))),
    }
}

fn pairs(spec: &GroupSpec) -> Vec<(String, String)> {
    spec.values
        .iter()
        .map(|v| (v.key.to_string(), v.value.to_string()))
        .collect()
}

/// Checks `spec` against its module's schema; returns it with its values sorted by key.
fn checked_group(config: &Config, spec: &GroupSpec) -> Result<GroupSpec, Refusal> {
    if !valid_object_name(&spec.name) {
        return Err(invalid(format!(
            "group name {:?}: use 1 to 32 of a-z, 0-9 and '-', not starting with '-'",
            spec.name.as_str()
        )));
    }
    let app = app_manifest(config, &spec.module)?;
    kaos_module::group::resolve(&app, &pairs(spec)).map_err(|e| {
        invalid(format!(
            "group {} does not fit module {}'s schema: {e}",
            spec.name, spec.module
        ))
    })?;
    let mut sorted = spec.clone();
    sorted.values.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    Ok(sorted)
}

/// Creates a group.
pub fn group_create(config: &Config, spec: &GroupSpec) -> Result<GroupSpec, Refusal> {
    let spec = checked_group(config, spec)?;
    config.put_group(&spec, true)?;
    Ok(spec)
}

fn find_group(config: &Config, name: &str) -> Result<GroupSpec, Refusal> {
    config
        .groups()
        .into_iter()
        .find(|g| g.name == name)
        .ok_or_else(|| refuse(ErrorCode::NotFound, format!("no group named {name:?}")))
}

/// One group.
pub fn group_show(config: &Config, name: &str) -> Result<GroupSpec, Refusal> {
    find_group(config, name)
}

/// Sets and unsets values of a group, all or nothing.
pub fn group_edit(config: &Config, edit: &GroupEdit) -> Result<GroupSpec, Refusal> {
    let mut spec = find_group(config, &edit.name)?;
    for key in &edit.unset {
        let before = spec.values.len();
        spec.values.retain(|v| v.key != *key);
        if spec.values.len() == before {
            return Err(invalid(format!(
                "group {} does not set {key}; nothing to unset",
                edit.name
            )));
        }
    }
    for value in &edit.set {
        spec.values.retain(|v| v.key != value.key);
        spec.values.push(value.clone()).map_err(|_| {
            invalid(format!(
                "a group sets at most {} values",
                kaos_protocol::MAX_GROUP_VALUES
            ))
        })?;
    }
    let spec = checked_group(config, &spec)?;
    if !config.put_group(&spec, false)? {
        return Err(refuse(
            ErrorCode::NotFound,
            format!("no group named {:?}", edit.name.as_str()),
        ));
    }
    Ok(spec)
}

/// Every group, with how many images use each.
pub fn group_list(config: &Config) -> GroupList {
    let images = config.images();
    let mut entries = heapless::Vec::new();
    for g in config.groups() {
        let used = images.iter().filter(|i| i.groups.contains(&g.name)).count();
        let summary = GroupSummary {
            values: u8::try_from(g.values.len()).unwrap_or(u8::MAX),
            images: u8::try_from(used).unwrap_or(u8::MAX),
            name: g.name,
            module: g.module,
        };
        if entries.push(summary).is_err() {
            break;
        }
    }
    GroupList { entries }
}

/// Deletes a group no image uses.
pub fn group_delete(config: &Config, name: &str) -> Result<GroupList, Refusal> {
    if !config.remove_group(name)? {
        return Err(refuse(
            ErrorCode::NotFound,
            format!("no group named {name:?}"),
        ));
    }
    Ok(group_list(config))
}

/// The ports instances of an image publish: every port its modules declare (the first
/// [`MAX_PUBLISH`]).
pub fn published_ports(apps: &[App]) -> heapless::Vec<PublishSpec, MAX_PUBLISH> {
    let mut out = heapless::Vec::new();
    for port in apps.iter().flat_map(|a| &a.ports) {
        let spec = PublishSpec {
            protocol: match port.protocol {
                Protocol::Tcp => Transport::Tcp,
                Protocol::Udp => Transport::Udp,
            },
            port: port.port,
        };
        if !out.contains(&spec) && out.push(spec).is_err() {
            break;
        }
    }
    out
}

/// Instance `n` of `image`: `<image>-<n>`, its size and platform, restarted on failure, one
/// NIC on its VLAN publishing `ports`.
pub fn instance_spec(image: &ImageSpec, n: u16, ports: &[PublishSpec]) -> VmSpec {
    let mut nics = heapless::Vec::new();
    if let Some(vlan) = image.vlan {
        let _ = nics.push(NicSpec {
            vlan,
            ipv4: None,
            publish: ports.iter().cloned().collect(),
        });
    }
    VmSpec {
        name: truncated(&format!("{}-{n}", image.name)),
        vcpus: image.vcpus,
        memory_mib: image.memory_mib,
        cmdline: image.cmdline.clone(),
        platform: image.platform.clone(),
        restart: RestartPolicy::OnFailure,
        nics,
    }
}

/// The App Modules of `image`, parsed, in image order.
pub fn image_apps(config: &Config, image: &ImageSpec) -> Result<Vec<App>, Refusal> {
    image
        .modules
        .iter()
        .map(|m| app_manifest(config, m))
        .collect()
}

/// Creates an image after checking what it names.
pub fn image_create(config: &Config, spec: &ImageSpec) -> Result<ImageInfo, Refusal> {
    if !valid_object_name(&spec.name) || spec.name.len() > IMAGE_NAME_MAX {
        return Err(invalid(format!(
            "image name {:?}: use 1 to {IMAGE_NAME_MAX} of a-z, 0-9 and '-', not starting \
             with '-' (instances add -N)",
            spec.name.as_str()
        )));
    }
    if config.images().iter().any(|i| i.name == spec.name) {
        return Err(refuse(
            ErrorCode::Conflict,
            format!("an image named {:?} exists", spec.name.as_str()),
        ));
    }
    crate::vms::check_spec(&instance_spec(spec, 1, &[]), &config.modules())?;
    for (i, m) in spec.modules.iter().enumerate() {
        if spec.modules[..i].contains(m) {
            return Err(invalid(format!("module {m} is named twice")));
        }
    }
    let apps = image_apps(config, spec)?;
    let groups = config.groups();
    let mut chosen: Vec<&GroupSpec> = Vec::new();
    for (i, name) in spec.groups.iter().enumerate() {
        if spec.groups[..i].contains(name) {
            return Err(invalid(format!("group {name} is named twice")));
        }
        let group = groups
            .iter()
            .find(|g| g.name == *name)
            .ok_or_else(|| refuse(ErrorCode::NotFound, format!("no group named {name:?}")))?;
        if !spec.modules.contains(&group.module) {
            return Err(invalid(format!(
                "group {name} configures module {}, which the image does not hold",
                group.module
            )));
        }
        chosen.push(group);
    }
    for (module, app) in spec.modules.iter().zip(&apps) {
        if let Some(key) = app.config.iter().find(|c| c.default.is_none())
            && !chosen.iter().any(|g| g.module == *module)
        {
            return Err(invalid(format!(
                "module {module} needs a group: its key {} has no default",
                key.key
            )));
        }
    }
    if let Some(vlan) = spec.vlan
        && !config.vlans().iter().any(|v| v.id == vlan)
    {
        return Err(refuse(
            ErrorCode::NotFound,
            format!("VLAN {vlan} does not exist; create it with `kaosctl net vlan create`"),
        ));
    }
    config.create_image(spec)?;
    image_show(config, &spec.name)
}

/// One image and its instances.
pub fn image_show(config: &Config, name: &str) -> Result<ImageInfo, Refusal> {
    let spec = config
        .images()
        .into_iter()
        .find(|i| i.name == name)
        .ok_or_else(|| refuse(ErrorCode::NotFound, format!("no image named {name:?}")))?;
    let mut instances: Vec<(u16, ObjectName)> = config
        .vms()
        .into_iter()
        .filter(|vm| vm.image.as_deref() == Some(name))
        .map(|vm| {
            let n = instance_number(name, &vm.spec.name).unwrap_or(u16::MAX);
            (n, vm.spec.name)
        })
        .collect();
    instances.sort_unstable();
    Ok(ImageInfo {
        spec,
        instances: instances.into_iter().map(|(_, name)| name).collect(),
    })
}

/// Every image, with how many instances each has.
pub fn image_list(config: &Config) -> ImageList {
    let vms = config.vms();
    let mut entries = heapless::Vec::new();
    for spec in config.images() {
        let instances = vms
            .iter()
            .filter(|vm| vm.image.as_deref() == Some(spec.name.as_str()))
            .count();
        let summary = ImageSummary {
            modules: u8::try_from(spec.modules.len()).unwrap_or(u8::MAX),
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
            vlan: spec.vlan,
            instances: u16::try_from(instances).unwrap_or(u16::MAX),
            name: spec.name,
            platform: spec.platform,
        };
        if entries.push(summary).is_err() {
            break;
        }
    }
    ImageList { entries }
}

/// Deletes an image without instances.
pub fn image_delete(config: &Config, name: &str) -> Result<ImageList, Refusal> {
    if !config.remove_image(name)? {
        return Err(refuse(
            ErrorCode::NotFound,
            format!("no image named {name:?}"),
        ));
    }
    Ok(image_list(config))
}
