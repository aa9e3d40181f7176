//! How responses are shown: a table for people, JSON for programs.
//!
//! Each view is a plain struct in the shape `--output json` prints, built from a protocol value
//! (or local state) and rendered as aligned columns by its `table`. Access control views are in
//! [`access`], views of local keys and contexts in [`local`].

mod access;
mod local;

pub use access::{AccessView, access_table};
pub use local::{ContextView, KeyView, context_table};

use kaos_protocol::{BootTimeline, Status};
use serde::Serialize;

/// `status`, in the shape `--output json` prints.
#[derive(Debug, Serialize)]
pub struct StatusView {
    /// Host name.
    pub hostname: String,
    /// kattach version.
    pub version: String,
    /// Boot id, hex.
    pub boot_id: String,
    /// Milliseconds since the kernel started.
    pub uptime_ms: u64,
    /// Running hosted, not as PID 1.
    pub hosted: bool,
    /// Userspace processes.
    pub processes: u32,
    /// Store mode.
    pub store: String,
    /// Milestones, ms since boot.
    pub timeline: TimelineView,
    /// Management link.
    pub mgmt: MgmtView,
    /// The host's static key, `kaos-x25519 BASE64`.
    pub host_key: String,
    /// Its fingerprint, as pinned and shown at first contact.
    pub host_key_fingerprint: String,
    /// False: the key lives in memory only and changes at the next boot.
    pub host_key_persistent: bool,
}

/// Boot milestones.
#[derive(Debug, Serialize)]
pub struct TimelineView {
    /// `/init` executed.
    pub init_exec_ms: u32,
    /// Pseudo-filesystems mounted.
    pub mounts_ms: Option<u32>,
    /// Management link up.
    pub link_up_ms: Option<u32>,
    /// Address configured.
    pub address_ms: Option<u32>,
    /// Port 1289 ready.
    pub endpoint_ready_ms: Option<u32>,
}

/// The management link.
#[derive(Debug, Serialize)]
pub struct MgmtView {
    /// Interface.
    pub interface: String,
    /// MAC.
    pub mac: String,
    /// Address/prefix.
    pub address: Option<String>,
    /// Gateway.
    pub gateway: Option<String>,
    /// DHCP or static.
    pub dhcp: bool,
}

impl From<&Status> for StatusView {
    fn from(s: &Status) -> Self {
        let m = &s.mgmt;
        let t: &BootTimeline = &s.timeline;
        Self {
            hostname: s.hostname.to_string(),
            version: s.version.to_string(),
            boot_id: s.boot_id.iter().map(|b| format!("{b:02x}")).collect(),
            uptime_ms: s.uptime_ms,
            hosted: s.hosted,
            processes: s.processes,
            store: format!("{:?}", s.store).to_lowercase(),
            timeline: TimelineView {
                init_exec_ms: t.init_exec_ms,
                mounts_ms: t.mounts_ms,
                link_up_ms: t.link_up_ms,
                address_ms: t.address_ms,
                endpoint_ready_ms: t.endpoint_ready_ms,
            },
            mgmt: MgmtView {
                interface: m.interface.to_string(),
                mac: m
                    .mac
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
                address: m.address.map(|a| a.to_string()),
                gateway: m.gateway.map(|[a, b, c, d]| format!("{a}.{b}.{c}.{d}")),
                dhcp: m.dhcp,
            },
            host_key: s.host_key.to_line().to_string(),
            host_key_fingerprint: s.host_key.fingerprint().to_string(),
            host_key_persistent: s.host_key_persistent,
        }
    }
}

fn ms(v: Option<u32>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v} ms"))
}

impl StatusView {
    /// Two aligned columns.
    pub fn table(&self) -> String {
        let t = &self.timeline;
        let m = &self.mgmt;
        let rows = [
            ("HOSTNAME", self.hostname.clone()),
            ("VERSION", self.version.clone()),
            (
                "MODE",
                if self.hosted {
                    "hosted".into()
                } else {
                    "pid1".into()
                },
            ),
            ("UPTIME", format!("{:.1} s", self.uptime_ms as f64 / 1000.0)),
            ("BOOT ID", self.boot_id.clone()),
            ("PROCESSES", self.processes.to_string()),
            ("STORE", self.store.clone()),
            (
                "HOST KEY",
                format!(
                    "{} ({})",
                    self.host_key_fingerprint,
                    if self.host_key_persistent {
                        "persistent"
                    } else {
                        "ephemeral: changes at the next boot"
                    }
                ),
            ),
            ("MGMT", format!("{} {}", m.interface, m.mac)),
            (
                "ADDRESS",
                format!(
                    "{} via {} ({})",
                    m.address.as_deref().unwrap_or("-"),
                    m.gateway.as_deref().unwrap_or("-"),
                    if m.dhcp { "dhcp" } else { "static" }
                ),
            ),
            ("INIT EXEC", format!("{} ms", t.init_exec_ms)),
            ("MOUNTS", ms(t.mounts_ms)),
            ("LINK UP", ms(t.link_up_ms)),
            ("ADDRESS UP", ms(t.address_ms)),
            ("ENDPOINT READY", ms(t.endpoint_ready_ms)),
        ];
        rows.iter().map(|(k, v)| format!("{k:<16}{v}\n")).collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `store status`.
#[derive(Debug, Serialize)]
pub struct StoreView {
    /// absent, memory, file, disk.
    pub mode: String,
    /// Device or file.
    pub location: String,
    /// Store host id.
    pub host_id: Option<String>,
    /// Why memory although a disk was wanted.
    pub degraded: Option<String>,
    /// When the store came up.
    pub ready_ms: Option<u32>,
    /// Schema version.
    pub schema_version: u32,
    /// Disks seen.
    pub disks: Vec<DiskView>,
}

/// One disk.
#[derive(Debug, Serialize)]
pub struct DiskView {
    /// Kernel name.
    pub name: String,
    /// Bytes.
    pub size_bytes: u64,
    /// in-use, ours, blank, foreign, ...
    pub state: String,
    /// Details.
    pub detail: String,
}

impl From<&kaos_protocol::StoreReport> for StoreView {
    fn from(r: &kaos_protocol::StoreReport) -> Self {
        Self {
            mode: format!("{:?}", r.mode).to_lowercase(),
            location: r.location.to_string(),
            host_id: r.host_id.map(|h| hex(&h)),
            degraded: r.degraded.as_ref().map(ToString::to_string),
            ready_ms: r.ready_ms,
            schema_version: r.schema_version,
            disks: r
                .disks
                .iter()
                .map(|d| DiskView {
                    name: d.name.to_string(),
                    size_bytes: d.size_bytes,
                    state: kebab(&format!("{:?}", d.state)),
                    detail: d.detail.to_string(),
                })
                .collect(),
        }
    }
}

/// `CommandLine` → `command-line`: enum variants as users type and read them.
pub(crate) fn kebab(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('-');
        }
        out.extend(c.to_lowercase());
    }
    out
}

impl StoreView {
    /// Store summary, then one line per disk.
    pub fn table(&self) -> String {
        let mut out = format!("{:<16}{}\n", "MODE", self.mode);
        if !self.location.is_empty() {
            out += &format!("{:<16}{}\n", "LOCATION", self.location);
        }
        if let Some(id) = &self.host_id {
            out += &format!("{:<16}{id}\n", "HOST ID");
        }
        if let Some(why) = &self.degraded {
            out += &format!("{:<16}{why}\n", "DEGRADED");
        }
        out += &format!("{:<16}{}\n", "READY", ms(self.ready_ms));
        out += &format!("{:<16}{}\n", "SCHEMA", self.schema_version);
        out += &format!(
            "\n{:<12}{:>12}  {:<14}{}\n",
            "DISK", "SIZE", "STATE", "DETAIL"
        );
        for d in &self.disks {
            out += &format!(
                "{:<12}{:>12}  {:<14}{}\n",
                d.name,
                size(d.size_bytes),
                d.state,
                d.detail
            );
        }
        if self.disks.is_empty() {
            out += "(no disks)\n";
        }
        out
    }
}

fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    // Display only: precision loss above 2^52 bytes does not matter.
    #[allow(clippy::cast_precision_loss)]
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `host get` / `host set`.
#[derive(Debug, Serialize)]
pub struct HostView {
    /// Host name in effect.
    pub hostname: String,
    /// Persisted settings.
    pub settings: std::collections::BTreeMap<String, String>,
}

impl From<&kaos_protocol::HostSettings> for HostView {
    fn from(h: &kaos_protocol::HostSettings) -> Self {
        Self {
            hostname: h.hostname.to_string(),
            settings: h
                .entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

impl HostView {
    /// Effective host name, then persisted settings.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<16}{}\n\n{:<16}{}\n",
            "HOSTNAME", self.hostname, "SETTING", "VALUE"
        );
        for (k, v) in &self.settings {
            out += &format!("{k:<16}{v}\n");
        }
        if self.settings.is_empty() {
            out += "(none persisted)\n";
        }
        out
    }
}

/// One event.
#[derive(Debug, Serialize)]
pub struct EventView {
    /// Sequence number.
    pub seq: u64,
    /// Boot id, hex.
    pub boot_id: String,
    /// ms since that boot.
    pub uptime_ms: u64,
    /// Kind.
    pub kind: String,
    /// Details.
    pub message: String,
}

impl From<&kaos_protocol::EventEntry> for EventView {
    fn from(e: &kaos_protocol::EventEntry) -> Self {
        Self {
            seq: e.seq,
            boot_id: hex(&e.boot_id),
            uptime_ms: e.uptime_ms,
            kind: kebab(&format!("{:?}", e.kind)),
            message: e.message.to_string(),
        }
    }
}

/// The header of [`events_table`].
pub fn events_header() -> String {
    format!(
        "{:>6}  {:<8}  {:>10}  {:<18}{}\n",
        "SEQ", "BOOT", "UPTIME", "KIND", "MESSAGE"
    )
}

/// One row of [`events_table`]: the boot id shortened to 8 hex digits.
pub fn event_row(e: &EventView) -> String {
    format!(
        "{:>6}  {:<8}  {:>8.1} s  {:<18}{}\n",
        e.seq,
        &e.boot_id[..8.min(e.boot_id.len())],
        e.uptime_ms as f64 / 1000.0,
        e.kind,
        e.message
    )
}

/// Events as a table.
pub fn events_table(events: &[EventView]) -> String {
    events_header() + &events.iter().map(event_row).collect::<String>()
}
