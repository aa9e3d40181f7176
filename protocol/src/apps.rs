//! Messages of protocol 1.4: configuration groups, VM images and their deployment (the KaOS
//! workflow), and what guests report about their App Modules. postcard encodes enum variants by
//! index: append variants and fields, never reorder.
//!
//! Values travel as text (`--set key=value` as typed); the host parses each against the type
//! the module's schema gives its key (`kaos_module::manifest::ConfigValue::parse_text`), so
//! the schema is checked in one place and a client needs no copy of it.

use heapless::{String, Vec};
use serde::{Deserialize, Serialize};

use crate::vm::ObjectName;

/// Longest configuration key (as in a module's schema).
pub const GROUP_KEY_MAX: usize = 64;
/// Longest configuration value, as text.
pub const GROUP_VALUE_MAX: usize = 256;
/// Most values a group sets.
pub const MAX_GROUP_VALUES: usize = 16;
/// Most groups a host holds (and lists in one frame).
pub const MAX_GROUPS: usize = 64;
/// Most modules (and most groups) in one image.
pub const MAX_IMAGE_PARTS: usize = 8;
/// Most images a host holds (and lists in one frame).
pub const MAX_IMAGES: usize = 32;
/// Most instances one image deploys.
pub const MAX_INSTANCES: u16 = 32;
/// Longest image name: an instance is named `<image>-<n>` and must be an
/// [`ObjectName`] (32 bytes) for every `n` up to [`MAX_INSTANCES`].
pub const IMAGE_NAME_MAX: usize = 29;
/// Most entrypoints of one VM whose state the host shows.
pub const MAX_APPS: usize = 16;

/// One `key=value` of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupValue {
    /// A key of the module's schema.
    pub key: String<GROUP_KEY_MAX>,
    /// Its value as text: `hello`, `8080`, `true`, `10.0.0.1`.
    pub value: String<GROUP_VALUE_MAX>,
}

/// A named configuration group: values for one module's schema. Keys it does not set take the
/// schema's default; every key without a default must be set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSpec {
    /// Unique among groups.
    pub name: ObjectName,
    /// The App Module whose schema it follows.
    pub module: ObjectName,
    /// Its values, sorted by key, each key once.
    pub values: Vec<GroupValue, MAX_GROUP_VALUES>,
}

/// Arguments of [`Request::GroupEdit`](crate::Request::GroupEdit): values to set (or replace)
/// and keys to unset, applied together or not at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupEdit {
    /// The group.
    pub name: ObjectName,
    /// Set these.
    pub set: Vec<GroupValue, MAX_GROUP_VALUES>,
    /// Then unset these (back to the default).
    pub unset: Vec<String<GROUP_KEY_MAX>, MAX_GROUP_VALUES>,
}

/// A group in a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSummary {
    /// Its name.
    pub name: ObjectName,
    /// Its module.
    pub module: ObjectName,
    /// How many values it sets.
    pub values: u8,
    /// How many images use it.
    pub images: u8,
}

/// Every group, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupList {
    /// The groups.
    pub entries: Vec<GroupSummary, MAX_GROUPS>,
}

/// A VM image: what every instance of it boots (a platform, App Modules and their groups) and
/// how large it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSpec {
    /// Unique among images, at most [`IMAGE_NAME_MAX`] bytes.
    pub name: ObjectName,
    /// The platform module instances boot (e.g. `vkaos`).
    pub platform: ObjectName,
    /// App Modules, started in this order.
    pub modules: Vec<ObjectName, MAX_IMAGE_PARTS>,
    /// Configuration groups, each of one of `modules`.
    pub groups: Vec<ObjectName, MAX_IMAGE_PARTS>,
    /// vCPUs per instance.
    pub vcpus: u8,
    /// RAM per instance, MiB.
    pub memory_mib: u32,
    /// The VLAN each instance's one NIC is on (its address from the VLAN's pool, the modules'
    /// ports published); `None`: no NIC.
    pub vlan: Option<u16>,
    /// Added to each instance's kernel command line.
    pub cmdline: String<{ crate::vm::VM_CMDLINE_MAX }>,
}

/// An image and its instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// The definition.
    pub spec: ImageSpec,
    /// Its instances (`<name>-1`, `<name>-2`, …), sorted.
    pub instances: Vec<ObjectName, { MAX_INSTANCES as usize }>,
}

/// An image in a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSummary {
    /// Its name.
    pub name: ObjectName,
    /// Its platform.
    pub platform: ObjectName,
    /// How many App Modules.
    pub modules: u8,
    /// vCPUs per instance.
    pub vcpus: u8,
    /// RAM per instance, MiB.
    pub memory_mib: u32,
    /// Its VLAN.
    pub vlan: Option<u16>,
    /// How many instances exist.
    pub instances: u16,
}

/// Every image, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageList {
    /// The images.
    pub entries: Vec<ImageSummary, MAX_IMAGES>,
}

/// Arguments of [`Request::ImageDeploy`](crate::Request::ImageDeploy): make the image have
/// exactly `count` instances, `<name>-1` to `<name>-<count>`. Missing ones are created and
/// started (all of them or none), ones beyond `count` are destroyed, and existing ones up to
/// `count` are started if stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageDeploy {
    /// The image.
    pub name: ObjectName,
    /// Instances wanted, 0 to [`MAX_INSTANCES`].
    pub count: u16,
}

/// What a guest reported about one entrypoint of its App Modules (from its console).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppStatus {
    /// The module.
    pub module: ObjectName,
    /// The entrypoint.
    pub entrypoint: ObjectName,
    /// It runs now.
    pub running: bool,
    /// Times the guest started it, this guest boot.
    pub starts: u32,
    /// How its last run ended (`exit status 1`, `signal 9`), if it ended.
    pub last_exit: Option<String<32>>,
}
