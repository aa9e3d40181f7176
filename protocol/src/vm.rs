//! Messages of protocol 1.1: platform modules (upload, list, remove) and VMs (create, lifecycle,
//! console); and of 1.3: a module's manifest (`module inspect`). postcard encodes enum variants by index: append variants and fields, never reorder.

use heapless::String;
use serde::{Deserialize, Serialize};

use crate::net::{MAX_NICS, NicInfo, NicSpec};

/// The name of a VM or a module: `[a-z0-9-]`, 1 to 32 bytes, not starting with `-`.
pub type ObjectName = String<32>;

/// True if `name` is a valid [`ObjectName`].
pub fn valid_object_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Bytes of module data in one [`ModuleUpload`]: a frame holds it with room for the header.
pub const UPLOAD_CHUNK: usize = 15 * 1024;

/// Longest guest kernel command line a VM may add to the one the host generates.
pub const VM_CMDLINE_MAX: usize = 512;

/// Most vCPUs a VM may have.
pub const VM_VCPUS_MAX: u8 = 8;

/// One step of a module upload: a piece of the `.aqi` file at `offset`.
///
/// An empty `data` at any offset asks how much the host holds (start, or resume after a lost
/// connection); the host answers [`Response::Upload`](crate::Response::Upload) with what it has
/// received. Pieces must arrive in order. When `received == size` the host checks the SHA-256,
/// parses the archive and stores the module, all or nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleUpload {
    /// SHA-256 of the whole file: the upload's identity and its check.
    pub sha256: [u8; 32],
    /// Size of the whole file.
    pub size: u64,
    /// Where `data` goes.
    pub offset: u64,
    /// The piece (at most [`UPLOAD_CHUNK`] bytes).
    pub data: heapless::Vec<u8, UPLOAD_CHUNK>,
}

/// Where an upload stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadState {
    /// Bytes the host holds; the next piece starts here.
    pub received: u64,
    /// Set once the module is verified and stored.
    pub module: Option<ModuleInfo>,
}

/// What a module is for. Variants append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModuleKind {
    /// A guest platform: the vKaOS kernel VMs boot.
    Platform,
    /// An App Module: software run inside guests.
    App,
}

impl ModuleKind {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Platform => "platform",
            Self::App => "app",
        }
    }
}

/// A stored module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleInfo {
    /// Its name (e.g. `vkaos`); one stored module per name.
    pub name: ObjectName,
    /// Its version as built.
    pub version: String<64>,
    /// What it is for.
    pub kind: ModuleKind,
    /// SHA-256 of the `.aqi` file.
    pub sha256: [u8; 32],
    /// Size of the `.aqi` file.
    pub size: u64,
}

/// Most modules a host lists.
pub const MAX_MODULES: usize = 32;

/// Every stored module, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleList {
    /// The modules.
    pub entries: heapless::Vec<ModuleInfo, MAX_MODULES>,
}

/// (1.3) Asks for a stored module's manifest from byte `offset` on: [`ModuleManifest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleInspectQuery {
    /// The module.
    pub name: ObjectName,
    /// The first manifest byte wanted (0, then where the previous part ended).
    pub offset: u32,
}

/// Most manifest bytes in one [`ModuleManifest`] (a manifest may hold up to 64 KiB, a frame 16).
pub const MANIFEST_PART: usize = 12 * 1024;

/// (1.3) A stored module and a part of its manifest: the `kaos-module` entry of the archive as
/// it is stored (postcard, `kaos_module::manifest::FORMAT` first), which the client decodes. A
/// manifest longer than [`MANIFEST_PART`] takes several requests; a client checks that `module`
/// (its SHA-256) stayed the same across them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleManifest {
    /// The module.
    pub module: ModuleInfo,
    /// Size of the whole manifest.
    pub total: u32,
    /// Where `data` starts in it.
    pub offset: u32,
    /// The part: up to [`MANIFEST_PART`] bytes; empty at or past the end.
    pub data: heapless::Vec<u8, MANIFEST_PART>,
}

/// What to do when a VM's guest stops by itself. Variants append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    /// Leave it stopped.
    Never,
    /// Start it again unless it powered off cleanly.
    OnFailure,
    /// Always start it again.
    Always,
}

impl RestartPolicy {
    /// Name as typed on command lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::OnFailure => "on-failure",
            Self::Always => "always",
        }
    }

    /// Parses `never`, `on-failure` or `always`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "never" => Some(Self::Never),
            "on-failure" => Some(Self::OnFailure),
            "always" => Some(Self::Always),
            _ => None,
        }
    }
}

/// A VM's definition, as created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    /// Unique name, see [`valid_object_name`].
    pub name: ObjectName,
    /// vCPUs, 1 to [`VM_VCPUS_MAX`].
    pub vcpus: u8,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// Added to the kernel command line the host generates.
    pub cmdline: String<VM_CMDLINE_MAX>,
    /// The platform module to boot (e.g. `vkaos`).
    pub platform: ObjectName,
    /// What to do when the guest stops by itself.
    pub restart: RestartPolicy,
    /// (1.2) Its NICs, in guest order (`eth0` first).
    pub nics: heapless::Vec<NicSpec, MAX_NICS>,
}

/// Arguments of [`Request::VmCreate`](crate::Request::VmCreate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmCreate {
    /// The definition.
    pub spec: VmSpec,
    /// Start it right away.
    pub start: bool,
}

/// A lifecycle action. Variants append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmAction {
    /// Start a stopped VM; it also starts after every host boot until stopped.
    Start,
    /// Stop a running VM (its VMM is ended); it stays stopped across host boots.
    Stop,
    /// Stop, then start.
    Restart,
    /// Stop and delete.
    Destroy,
}

impl VmAction {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Destroy => "destroy",
        }
    }
}

/// Arguments of [`Request::VmAct`](crate::Request::VmAct).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmActRequest {
    /// The VM.
    pub name: ObjectName,
    /// What to do.
    pub action: VmAction,
}

/// Arguments of [`Request::VmLogs`](crate::Request::VmLogs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmLogsQuery {
    /// The VM.
    pub name: ObjectName,
    /// Keep streaming new console output until cancelled.
    pub follow: bool,
}

/// Where a VM is. Variants append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmState {
    /// Not running, and not meant to be.
    Stopped,
    /// Its VMM process runs the guest.
    Running,
    /// It stopped by itself and will be started again after a back-off.
    BackingOff,
    /// It stopped by itself and its restart policy leaves it stopped.
    Exited,
    /// It cannot start (e.g. its platform module is missing); see the last exit.
    Failed,
    /// Its VMM process is being started.
    Starting,
}

impl VmState {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stopped => "stopped",
            Self::Running => "running",
            Self::BackingOff => "backing-off",
            Self::Exited => "exited",
            Self::Failed => "failed",
            Self::Starting => "starting",
        }
    }
}

/// How a guest run ended. Variants append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmExitKind {
    /// The guest powered off.
    PowerOff,
    /// The guest reset itself (a reboot, or a kernel panic with `panic=`).
    Reset,
    /// The guest or its VMM failed (triple fault, VMM error, VMM killed).
    Crash,
    /// Stopped by a request.
    Stopped,
    /// The VMM could not start the guest (bad kernel, no memory, no KVM).
    StartFailed,
}

impl VmExitKind {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PowerOff => "power-off",
            Self::Reset => "reset",
            Self::Crash => "crash",
            Self::Stopped => "stopped",
            Self::StartFailed => "start failed",
        }
    }
}

/// The end of one guest run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmExit {
    /// How it ended.
    pub kind: VmExitKind,
    /// Details (the VMM's last words).
    pub message: String<128>,
    /// Milliseconds since host boot.
    pub at_ms: u64,
}

/// One VM in a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSummary {
    /// Its name.
    pub name: ObjectName,
    /// Where it is.
    pub state: VmState,
    /// vCPUs.
    pub vcpus: u8,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// Times the host started it again after it stopped by itself, this boot.
    pub restarts: u32,
    /// The guest's console said it is up (the guest `kattach` readiness line).
    pub guest_up: bool,
    /// (1.2) The first NIC's address.
    pub ipv4: Option<core::net::Ipv4Addr>,
    /// (1.4) The image it is an instance of.
    pub image: Option<ObjectName>,
}

/// Most VMs a host lists.
pub const MAX_VMS: usize = 64;

/// Every VM, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmList {
    /// The VMs.
    pub entries: heapless::Vec<VmSummary, MAX_VMS>,
}

/// Everything about one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmInfo {
    /// The definition.
    pub spec: VmSpec,
    /// Where it is.
    pub state: VmState,
    /// Whether it is meant to run (and to start after a host boot).
    pub desired_running: bool,
    /// The VMM's process id while running.
    pub pid: Option<u32>,
    /// Times the host started it again after it stopped by itself, this boot.
    pub restarts: u32,
    /// When the current state began, ms since host boot.
    pub since_ms: u64,
    /// The guest's console said it is up.
    pub guest_up: bool,
    /// How the last run ended.
    pub last_exit: Option<VmExit>,
    /// SHA-256 of the platform module the current or last run booted.
    pub platform_sha256: Option<[u8; 32]>,
    /// (1.2) Its NICs as assigned, in the order of `spec.nics`.
    pub nics: heapless::Vec<NicInfo, MAX_NICS>,
    /// (1.4) The image it is an instance of.
    pub image: Option<ObjectName>,
    /// (1.4) Its App Modules' entrypoints, as the guest reported them this run.
    pub apps: heapless::Vec<crate::apps::AppStatus, { crate::apps::MAX_APPS }>,
}

/// Most console bytes in one [`ConsoleChunk`].
pub const CONSOLE_CHUNK: usize = 8 * 1024;

/// A piece of a VM's serial console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleChunk {
    /// Console bytes, as the guest wrote them.
    pub data: heapless::Vec<u8, CONSOLE_CHUNK>,
    /// Bytes lost before `data` because the host's ring overflowed or the reader fell behind.
    pub dropped: u64,
}
