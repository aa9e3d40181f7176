//! Messages. postcard encodes enum variants by index: append variants and fields, never reorder.

use heapless::String;
use serde::{Deserialize, Serialize};

use crate::apps::{GroupEdit, GroupList, GroupSpec, ImageDeploy, ImageInfo, ImageList, ImageSpec};
use crate::keys::PublicKey;
use crate::net::{
    NetStats, NetStatsQuery, RuleInfo, RuleList, RuleSpec, VlanInfo, VlanList, VlanSpec,
};
use crate::vm::{
    ConsoleChunk, ModuleInspectQuery, ModuleList, ModuleManifest, ModuleUpload, ObjectName,
    UploadState, VmActRequest, VmAction, VmCreate, VmInfo, VmList, VmLogsQuery,
};

/// A host name or client name (RFC 1123 labels fit in 63 bytes).
pub type Name = String<64>;

/// Protocol version: `major` must match exactly, `minor` may differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// Incompatible changes.
    pub major: u16,
    /// Compatible additions.
    pub minor: u16,
}

impl core::fmt::Display for Version {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A client message: a request and the id its response will carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientFrame {
    /// Chosen by the client; echoed in the response.
    pub id: u32,
    /// What the client asks for.
    pub request: Request,
}

/// A server message: the response to the request with the same id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerFrame {
    /// The id of the request this answers (0: the session itself, e.g. the welcome).
    pub id: u32,
    /// False while more frames for this id follow (a stream); true on the final one.
    pub last: bool,
    /// The answer.
    pub response: Response,
}

/// Requests, in wire order.
// A module upload piece makes this 15 KiB; without an allocator there is nothing to box with,
// and a request lives on the stack only while it is decoded and answered.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Host status: [`Response::Status`].
    Status,
    /// Orderly reboot: [`Response::Accepted`], then the connection closes.
    Reboot,
    /// Orderly power-off: [`Response::Accepted`], then the connection closes.
    Shutdown,
    /// Store mode, location, why degraded, and the disks seen: [`Response::StoreStatus`].
    StoreStatus,
    /// Initialise a disk as the host's store and adopt it: [`Response::StoreStatus`].
    StoreInit(StoreInit),
    /// Persisted host settings: [`Response::Host`].
    HostGet,
    /// Change and persist one host setting: [`Response::Host`].
    HostSet(HostSet),
    /// A page of the event log: [`Response::Events`]; with `follow`, a stream of pages.
    Events(EventsQuery),
    /// Keepalive and round-trip probe: [`Response::Pong`].
    Ping,
    /// Ends the stream of the request with this id: [`Response::Accepted`] (the stream ends
    /// with [`ErrorCode::Cancelled`]) or [`ErrorCode::NotFound`].
    Cancel(u32),
    /// The caller's key name, role and key: [`Response::Identity`].
    WhoAmI,
    /// Every authorised client key: [`Response::Access`].
    AccessList,
    /// Authorise a client key (persisted): [`Response::Access`].
    AccessAdd(AccessAdd),
    /// Withdraw a key added with `AccessAdd`: [`Response::Access`].
    AccessRemove(AccessRemove),
    /// (1.1) One step of a module upload: [`Response::Upload`].
    ModuleUpload(ModuleUpload),
    /// (1.1) Every stored module: [`Response::Modules`].
    ModuleList,
    /// (1.1) Delete a module no VM uses: [`Response::Modules`].
    ModuleRemove(ObjectName),
    /// (1.1) Define a VM (and start it): [`Response::Vm`].
    VmCreate(VmCreate),
    /// (1.1) Every VM: [`Response::Vms`].
    VmList,
    /// (1.1) Everything about one VM: [`Response::Vm`].
    VmInspect(ObjectName),
    /// (1.1) Start, stop, restart or destroy a VM: [`Response::Vm`] ([`Response::Accepted`] for
    /// destroy).
    VmAct(VmActRequest),
    /// (1.1) A VM's serial console: a stream of [`Response::Console`], ending after the buffered
    /// output unless `follow`.
    VmLogs(VmLogsQuery),
    /// (1.2) Define a VLAN and its address pool: [`Response::Vlan`].
    VlanCreate(VlanSpec),
    /// (1.2) Every VLAN: [`Response::Vlans`].
    VlanList,
    /// (1.2) Delete a VLAN no VM NIC is on and no rule names: [`Response::Vlans`].
    VlanDelete(u16),
    /// (1.2) Add a firewall rule: [`Response::Rule`].
    RuleAdd(RuleSpec),
    /// (1.2) Every firewall rule: [`Response::Rules`].
    RuleList,
    /// (1.2) Delete a firewall rule: [`Response::Rules`].
    RuleDelete(u32),
    /// (1.2) A page of the virtual switch's counters: [`Response::NetStats`].
    NetStats(NetStatsQuery),
    /// (1.3) A stored module and (part of) its manifest: [`Response::ModuleManifest`].
    ModuleInspect(ModuleInspectQuery),
    /// (1.4) Define a configuration group, checked against its module's schema:
    /// [`Response::Group`].
    GroupCreate(GroupSpec),
    /// (1.4) Every group: [`Response::Groups`].
    GroupList,
    /// (1.4) One group: [`Response::Group`].
    GroupShow(ObjectName),
    /// (1.4) Set and unset values of a group: [`Response::Group`]. Instances see the change at
    /// their next start.
    GroupEdit(GroupEdit),
    /// (1.4) Delete a group no image uses: [`Response::Groups`].
    GroupDelete(ObjectName),
    /// (1.4) Define a VM image: [`Response::Image`].
    ImageCreate(ImageSpec),
    /// (1.4) Every image: [`Response::Images`].
    ImageList,
    /// (1.4) One image and its instances: [`Response::Image`].
    ImageShow(ObjectName),
    /// (1.4) Delete an image without instances: [`Response::Images`].
    ImageDelete(ObjectName),
    /// (1.4) Scale an image to a number of instances: [`Response::Image`].
    ImageDeploy(ImageDeploy),
}

impl Request {
    /// The least role allowed to make this request.
    pub fn required_role(&self) -> Role {
        match self {
            Self::Status
            | Self::StoreStatus
            | Self::HostGet
            | Self::Events(_)
            | Self::Ping
            | Self::Cancel(_)
            | Self::WhoAmI
            | Self::ModuleList
            | Self::VmList
            | Self::VmInspect(_)
            | Self::VmLogs(_)
            | Self::VlanList
            | Self::RuleList
            | Self::NetStats(_)
            | Self::ModuleInspect(_)
            | Self::GroupList
            | Self::GroupShow(_)
            | Self::ImageList
            | Self::ImageShow(_) => Role::Reader,
            Self::Reboot
            | Self::Shutdown
            | Self::HostSet(_)
            | Self::ModuleUpload(_)
            | Self::ModuleRemove(_)
            | Self::VmCreate(_)
            | Self::VmAct(_)
            | Self::VlanCreate(_)
            | Self::VlanDelete(_)
            | Self::RuleAdd(_)
            | Self::RuleDelete(_)
            | Self::GroupCreate(_)
            | Self::GroupEdit(_)
            | Self::GroupDelete(_)
            | Self::ImageCreate(_)
            | Self::ImageDelete(_)
            | Self::ImageDeploy(_) => Role::Operator,
            Self::StoreInit(_) | Self::AccessList | Self::AccessAdd(_) | Self::AccessRemove(_) => {
                Role::Admin
            }
        }
    }

    /// A short name for logs and events, e.g. `host set`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Reboot => "reboot",
            Self::Shutdown => "shutdown",
            Self::StoreStatus => "store status",
            Self::StoreInit(_) => "store init",
            Self::HostGet => "host get",
            Self::HostSet(_) => "host set",
            Self::Events(_) => "events",
            Self::Ping => "ping",
            Self::Cancel(_) => "cancel",
            Self::WhoAmI => "whoami",
            Self::AccessList => "access list",
            Self::AccessAdd(_) => "access add",
            Self::AccessRemove(_) => "access remove",
            Self::ModuleUpload(_) => "module upload",
            Self::ModuleList => "module list",
            Self::ModuleRemove(_) => "module remove",
            Self::VmCreate(_) => "vm create",
            Self::VmList => "vm list",
            Self::VmInspect(_) => "vm inspect",
            Self::VmAct(a) => match a.action {
                VmAction::Start => "vm start",
                VmAction::Stop => "vm stop",
                VmAction::Restart => "vm restart",
                VmAction::Destroy => "vm destroy",
            },
            Self::VmLogs(_) => "vm logs",
            Self::VlanCreate(_) => "net vlan create",
            Self::VlanList => "net vlan list",
            Self::VlanDelete(_) => "net vlan delete",
            Self::RuleAdd(_) => "net rule add",
            Self::RuleList => "net rule list",
            Self::RuleDelete(_) => "net rule delete",
            Self::NetStats(_) => "net stats",
            Self::ModuleInspect(_) => "module inspect",
            Self::GroupCreate(_) => "group create",
            Self::GroupList => "group list",
            Self::GroupShow(_) => "group show",
            Self::GroupEdit(_) => "group edit",
            Self::GroupDelete(_) => "group delete",
            Self::ImageCreate(_) => "image create",
            Self::ImageList => "image list",
            Self::ImageShow(_) => "image show",
            Self::ImageDelete(_) => "image delete",
            Self::ImageDeploy(_) => "image deploy",
        }
    }
}

/// What a key may do. Ordered: each role may do everything the roles below it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Read-only: status, settings, events, the store report.
    Reader,
    /// Reader, plus power actions, host settings, modules and the VM lifecycle.
    Operator,
    /// Everything, including access control and store initialisation.
    Admin,
}

impl Role {
    /// Lower-case name, as typed on command lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reader => "reader",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }

    /// Parses `reader`, `operator` or `admin`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "reader" => Some(Self::Reader),
            "operator" => Some(Self::Operator),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

impl core::fmt::Display for Role {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name for an authorised key: `[A-Za-z0-9._-]`, 1 to 32 bytes.
pub type KeyName = String<32>;

/// True if `name` is a valid [`KeyName`].
pub fn valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Arguments of [`Request::AccessAdd`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessAdd {
    /// Unique name, see [`valid_key_name`].
    pub name: KeyName,
    /// What the key may do.
    pub role: Role,
    /// The client's static public key.
    pub key: PublicKey,
}

/// Arguments of [`Request::AccessRemove`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRemove {
    /// The name given at `AccessAdd`.
    pub name: KeyName,
}

/// Where an authorised key comes from. Only `Store` keys can be removed at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeySource {
    /// Built into the image (`cargo xtask image --authorize`).
    Image,
    /// The kernel command line (`kaos.authorize=`).
    CommandLine,
    /// Added at run time (`kaosctl access add`), kept in the store.
    Store,
    /// A file given to a hosted `kattach` (`--authorized-keys`).
    File,
}

/// One authorised key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    /// Its name.
    pub name: KeyName,
    /// What it may do.
    pub role: Role,
    /// The key.
    pub key: PublicKey,
    /// Where it comes from.
    pub source: KeySource,
}

/// Most keys a host authorises.
pub const MAX_ACCESS_ENTRIES: usize = 64;

/// Every authorised key, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessList {
    /// The keys.
    pub entries: heapless::Vec<AccessEntry, MAX_ACCESS_ENTRIES>,
}

/// Arguments of [`Request::StoreInit`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreInit {
    /// Disk name as listed by `StoreStatus` (e.g. `vdb`), or a `/dev/` path.
    pub device: String<32>,
    /// Overwrite a disk that holds data (another filesystem, a partition table, an old store).
    pub force: bool,
}

/// Arguments of [`Request::HostSet`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSet {
    /// Setting name, e.g. `hostname`.
    pub key: String<32>,
    /// New value.
    pub value: String<64>,
}

/// Arguments of [`Request::Events`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsQuery {
    /// Only events with a sequence number above this.
    pub after: Option<u64>,
    /// At most this many per page (the host caps it at [`EVENTS_PER_PAGE`]).
    pub limit: u16,
    /// Keep the request open and stream every new event as it is recorded, until
    /// [`Request::Cancel`] or the connection closes.
    pub follow: bool,
}

/// Most events in one [`Response::Events`].
pub const EVENTS_PER_PAGE: usize = 32;

/// Responses, in wire order.
// No allocator to box with: every response is a bounded value built once per request, so a
// few KiB on the stack is the price of `no_std` without `alloc`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The request was accepted and is being carried out.
    Accepted,
    /// The request failed.
    Error(ErrorReply),
    /// Answer to [`Request::Status`].
    Status(Status),
    /// Answer to [`Request::StoreStatus`] and [`Request::StoreInit`].
    StoreStatus(StoreReport),
    /// Answer to [`Request::HostGet`] and [`Request::HostSet`].
    Host(HostSettings),
    /// Answer to [`Request::Events`].
    Events(EventPage),
    /// Answer to [`Request::Ping`].
    Pong,
    /// Who the caller is: the session's welcome (id 0) and the answer to [`Request::WhoAmI`].
    Identity(Identity),
    /// Answer to the `Access*` requests.
    Access(AccessList),
    /// (1.1) Answer to [`Request::ModuleUpload`].
    Upload(UploadState),
    /// (1.1) Answer to [`Request::ModuleList`] and [`Request::ModuleRemove`].
    Modules(ModuleList),
    /// (1.1) Answer to [`Request::VmList`].
    Vms(VmList),
    /// (1.1) Answer to [`Request::VmCreate`], [`Request::VmInspect`] and [`Request::VmAct`].
    Vm(VmInfo),
    /// (1.1) A piece of console output, streamed for [`Request::VmLogs`].
    Console(ConsoleChunk),
    /// (1.2) Answer to [`Request::VlanCreate`].
    Vlan(VlanInfo),
    /// (1.2) Answer to [`Request::VlanList`] and [`Request::VlanDelete`].
    Vlans(VlanList),
    /// (1.2) Answer to [`Request::RuleAdd`].
    Rule(RuleInfo),
    /// (1.2) Answer to [`Request::RuleList`] and [`Request::RuleDelete`].
    Rules(RuleList),
    /// (1.2) Answer to [`Request::NetStats`].
    NetStats(NetStats),
    /// (1.3) Answer to [`Request::ModuleInspect`].
    ModuleManifest(ModuleManifest),
    /// (1.4) Answer to [`Request::GroupCreate`], [`Request::GroupShow`] and
    /// [`Request::GroupEdit`].
    Group(GroupSpec),
    /// (1.4) Answer to [`Request::GroupList`] and [`Request::GroupDelete`].
    Groups(GroupList),
    /// (1.4) Answer to [`Request::ImageCreate`], [`Request::ImageShow`] and
    /// [`Request::ImageDeploy`].
    Image(ImageInfo),
    /// (1.4) Answer to [`Request::ImageList`] and [`Request::ImageDelete`].
    Images(ImageList),
}

/// The authenticated caller of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The name of the caller's key.
    pub name: KeyName,
    /// Its role now.
    pub role: Role,
    /// The caller's static key, as the host saw it in the handshake.
    pub key: PublicKey,
    /// Where the key was authorised.
    pub source: KeySource,
}

/// A snapshot of the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Host name (`kaos.hostname=`, or the default).
    pub hostname: Name,
    /// `kattach` version.
    pub version: String<32>,
    /// Random per boot: a reboot is visible as a new id.
    pub boot_id: [u8; 16],
    /// Milliseconds since the kernel started (`CLOCK_BOOTTIME`).
    pub uptime_ms: u64,
    /// True when `kattach` runs as an ordinary process (`--hosted`), not as PID 1.
    pub hosted: bool,
    /// When each start-up milestone was reached.
    pub timeline: BootTimeline,
    /// Userspace processes (those with a command line); kernel threads are not counted.
    pub processes: u32,
    /// Where the configuration lives.
    pub store: StoreMode,
    /// The management link this endpoint serves.
    pub mgmt: MgmtLink,
    /// The host's static key, which clients pin.
    pub host_key: PublicKey,
    /// False when the key lives only in memory (no store disk): it changes at the next boot.
    pub host_key_persistent: bool,
}

/// Milestones in milliseconds since the kernel started. `None`: not reached (yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootTimeline {
    /// The kernel executed `/init` (or, hosted, the process started).
    pub init_exec_ms: u32,
    /// proc, sys, dev and run are mounted.
    pub mounts_ms: Option<u32>,
    /// The management NIC is up and its frames reach the endpoint.
    pub link_up_ms: Option<u32>,
    /// The endpoint has an IPv4 address (static, or DHCP bound).
    pub address_ms: Option<u32>,
    /// Port 1289 accepts connections.
    pub endpoint_ready_ms: Option<u32>,
}

/// Where the configuration store lives. Variants append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreMode {
    /// No configuration store (not yet opened).
    Absent,
    /// In memory: nothing survives a reboot (no disk chosen, or degraded: see `StoreReport`).
    Memory,
    /// A file (hosted mode).
    File,
    /// A raw disk carrying our superblock.
    Disk,
}

/// The store's state, and every disk the host can see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreReport {
    /// Where the configuration lives now.
    pub mode: StoreMode,
    /// Device or file path; empty in memory mode.
    pub location: String<64>,
    /// The store's host id (disk stores), hex-printed by clients.
    pub host_id: Option<[u8; 16]>,
    /// Why the host runs from memory although a disk was wanted; `None` when healthy.
    pub degraded: Option<String<160>>,
    /// When the store came up, ms since kernel start.
    pub ready_ms: Option<u32>,
    /// Schema version of the open database.
    pub schema_version: u32,
    /// Block devices seen at the last probe.
    pub disks: heapless::Vec<DiskInfo, 16>,
}

/// One block device, as probed (read-only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskInfo {
    /// Kernel name, e.g. `vdb`.
    pub name: String<32>,
    /// Size in bytes.
    pub size_bytes: u64,
    /// What is on it.
    pub state: DiskState,
    /// Details: what foreign data was found, why unreadable, ...
    pub detail: String<64>,
}

/// What a probe found on a disk. Variants append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiskState {
    /// The store the host runs on.
    InUse,
    /// Carries our superblock (another host's store, or ours not adopted).
    Ours,
    /// All zero where filesystems and partition tables live: `store init` may use it.
    Blank,
    /// Holds something else; never written without `--force`.
    Foreign,
    /// Below the minimum store size.
    TooSmall,
    /// Could not be read.
    Unreadable,
    /// Our store, written by a newer kattach.
    NewerFormat,
    /// Our magic, but the superblock does not verify.
    Corrupt,
}

/// Persisted host settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSettings {
    /// The host name in effect.
    pub hostname: Name,
    /// Every persisted setting, sorted by key.
    pub entries: heapless::Vec<(String<32>, String<64>), 16>,
}

/// A page of the event log, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventPage {
    /// The events.
    pub events: heapless::Vec<EventEntry, EVENTS_PER_PAGE>,
    /// More events follow the last one.
    pub more: bool,
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventEntry {
    /// Sequence number, increasing.
    pub seq: u64,
    /// The boot it happened in.
    pub boot_id: [u8; 16],
    /// Milliseconds since that boot's kernel start.
    pub uptime_ms: u64,
    /// What happened.
    pub kind: EventKind,
    /// Details.
    pub message: String<128>,
}

/// Kinds of events. Variants append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// The host booted (with its store mode).
    Boot,
    /// The store fell back to memory.
    StoreDegraded,
    /// A disk was initialised as the store.
    StoreInitialized,
    /// A host setting changed.
    SettingChanged,
    /// A reboot or power-off was requested.
    PowerRequested,
    /// A connection or request was refused: unknown key, or a role without the right.
    AccessDenied,
    /// A client key was authorised or withdrawn.
    AccessChanged,
    /// (1.1) A module was stored or removed.
    ModuleChanged,
    /// (1.1) A VM was created, started, stopped or destroyed by a request.
    VmChanged,
    /// (1.1) A VM's guest stopped by itself or failed to start (and what the policy did).
    VmExited,
    /// (1.2) A VLAN or a firewall rule was created or deleted.
    NetChanged,
    /// (1.4) A configuration group or VM image was created, edited, deleted or deployed.
    ImageChanged,
    /// (1.4) An App Module's entrypoint in a guest exited (and what the guest did).
    AppExited,
}

/// An IPv4 address with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipv4Cidr {
    /// Address octets.
    pub addr: [u8; 4],
    /// Prefix length, 0..=32.
    pub prefix: u8,
}

impl core::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let [a, b, c, d] = self.addr;
        write!(f, "{a}.{b}.{c}.{d}/{}", self.prefix)
    }
}

/// The management link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MgmtLink {
    /// Interface name, e.g. `eth0`.
    pub interface: String<16>,
    /// The endpoint's MAC address.
    pub mac: [u8; 6],
    /// The endpoint's address, once configured.
    pub address: Option<Ipv4Cidr>,
    /// Default gateway, if any.
    pub gateway: Option<[u8; 4]>,
    /// Address from DHCP (true) or static (false).
    pub dhcp: bool,
}

/// A failed request: a stable code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// Stable, machine-readable.
    pub code: ErrorCode,
    /// For people; may change between versions.
    pub message: String<128>,
}

impl ErrorReply {
    /// An error with `message` cut to fit.
    pub fn new(code: ErrorCode, message: &str) -> Self {
        Self {
            code,
            message: truncated(message),
        }
    }
}

/// Stable error codes. The numeric code is the wire index plus one; append only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 1: the peers' major versions differ.
    VersionMismatch,
    /// 2: the client's key is not authorised on this host.
    Unauthorized,
    /// 3: the key's role does not allow this request.
    PermissionDenied,
    /// 4: the host could not carry out the request.
    Internal,
    /// 5: the request is known but not available on this host.
    Unsupported,
    /// 6: an argument is malformed or out of range.
    InvalidArgument,
    /// 7: the named object (disk, setting) does not exist.
    NotFound,
    /// 8: the request conflicts with the current state (a disk holds data, is in use).
    Conflict,
    /// 9: the store could not commit; the host fell back to memory (see `store status`).
    StoreFailed,
    /// 10: the stream was ended by [`Request::Cancel`].
    Cancelled,
    /// 11: a per-connection limit was reached (e.g. open streams); retry later.
    Busy,
}

impl ErrorCode {
    /// The stable numeric code shown to users.
    pub fn code(self) -> u16 {
        match self {
            Self::VersionMismatch => 1,
            Self::Unauthorized => 2,
            Self::PermissionDenied => 3,
            Self::Internal => 4,
            Self::Unsupported => 5,
            Self::InvalidArgument => 6,
            Self::NotFound => 7,
            Self::Conflict => 8,
            Self::StoreFailed => 9,
            Self::Cancelled => 10,
            Self::Busy => 11,
        }
    }
}

/// Copies as much of `s` as fits into a bounded string, cutting at a character boundary.
pub fn truncated<const N: usize>(s: &str) -> String<N> {
    let mut out = String::new();
    for c in s.chars() {
        if out.push(c).is_err() {
            break;
        }
    }
    out
}
