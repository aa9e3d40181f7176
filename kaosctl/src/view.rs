//! How responses are shown: a table for people, JSON for programs.

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
