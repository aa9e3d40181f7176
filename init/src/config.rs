//! The host's configuration store as PID 1 runs it: which disk, and what happens when it fails.
//!
//! - `kaos.store=auto` (default) adopts only a disk that carries our superblock; `memory` never
//!   touches a disk; `kaos.store=DEVICE` wants that disk and nothing else.
//! - A blank or foreign disk is never written: it is listed, and `store init` adopts it.
//! - A store that cannot be opened, or a commit that fails later, switches the host to memory:
//!   settings known so far are carried over, the reason is shown in `store status` and
//!   recorded as an event, and the disk is not written again.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use kaos_protocol::{
    DiskInfo, DiskState, ErrorCode, ErrorReply, EventEntry, EventKind, ModuleInfo, StoreMode,
    StoreReport, truncated,
};
use kaos_store::{ClientKey, EventRecord, Location, Probe, Store, StoreError, VmRecord};

mod apps;
mod net;

pub use apps::instance_number;

/// A request the store refused: a stable code and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Stable code.
    pub code: ErrorCode,
    /// For people.
    pub message: String,
}

impl Refusal {
    /// A refusal with `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The wire form.
    pub fn reply(&self) -> ErrorReply {
        ErrorReply::new(self.code, &self.message)
    }
}

/// Which store the host wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// A disk with our superblock, if there is one; else memory.
    Auto,
    /// Memory only.
    Memory,
    /// This device (by kernel name or path), or memory with a reason.
    Device(String),
    /// A database file (hosted mode).
    File(PathBuf),
}

impl StoreChoice {
    /// Parses `kaos.store=` / `--store`.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "auto" => Ok(Self::Auto),
            "memory" => Ok(Self::Memory),
            "" => Err("empty store choice".into()),
            v if v.len() > 64 => Err("device name too long".into()),
            v => Ok(Self::Device(v.to_owned())),
        }
    }
}

/// Where candidate disks come from.
#[derive(Debug, Clone)]
pub enum DiskSource {
    /// Whole disks in `/sys/block` (PID 1).
    Sysfs,
    /// These paths (hosted mode: files or loop devices standing in for disks).
    Paths(Vec<PathBuf>),
}

struct State {
    store: Store,
    mode: StoreMode,
    location: String,
    degraded: Option<String>,
    ready_ms: Option<u32>,
    disks: Vec<(PathBuf, DiskInfo)>,
}

/// The store and everything known about it.
pub struct Config {
    state: Mutex<State>,
    source: DiskSource,
    boot_id: [u8; 16],
    /// Written whenever an event is recorded, to wake the endpoint's event streams.
    wake: Option<std::os::fd::OwnedFd>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Milliseconds since boot, for events.
fn uptime_ms() -> u64 {
    crate::host::boot_ms()
}

impl Config {
    /// A memory store until [`Config::select`] runs.
    pub fn new(source: DiskSource, boot_id: [u8; 16]) -> Self {
        Self {
            state: Mutex::new(State {
                store: Store::memory(),
                mode: StoreMode::Absent,
                location: String::new(),
                degraded: None,
                ready_ms: None,
                disks: Vec::new(),
            }),
            source,
            boot_id,
            wake: rustix::event::eventfd(
                0,
                rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
            )
            .map_err(|e| log::warn!("eventfd: {e}; event streams poll once a second"))
            .ok(),
        }
    }

    /// Readable after an event was recorded (see `kaos_net::run::serve`).
    pub fn wake_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.wake.as_ref().map(AsFd::as_fd)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Probes the disks and opens the store `choice` asks for, falling back to memory.
    pub fn select(&self, choice: &StoreChoice) {
        let disks = self.probe_disks();
        let (location, problem) = match choice {
            StoreChoice::Memory => (Location::Memory, None),
            StoreChoice::File(path) => (Location::File(path.clone()), None),
            StoreChoice::Auto => {
                let ours = disks.iter().find(|(_, d)| d.state == DiskState::Ours);
                // Our magic but unusable: the disk was meant to be the store, so say why.
                let unusable = disks
                    .iter()
                    .find(|(_, d)| matches!(d.state, DiskState::Corrupt | DiskState::NewerFormat));
                match (ours, unusable) {
                    (Some((path, _)), _) => (Location::Device(path.clone()), None),
                    (None, Some((path, d))) => (
                        Location::Memory,
                        Some(format!(
                            "{}: {} ({}); left untouched",
                            path.display(),
                            state_text(d.state),
                            d.detail
                        )),
                    ),
                    (None, None) => (Location::Memory, None),
                }
            }
            StoreChoice::Device(name) => match disks.iter().find(|(p, d)| matches_disk(name, p, d))
            {
                Some((path, d)) if d.state == DiskState::Ours => {
                    (Location::Device(path.clone()), None)
                }
                Some((path, d)) => (
                    Location::Memory,
                    Some(format!(
                        "{}: {} ({}); run `kaosctl store init`",
                        path.display(),
                        state_text(d.state),
                        d.detail
                    )),
                ),
                None => (
                    Location::Memory,
                    Some(format!("store device {name} not found")),
                ),
            },
        };
        let opened = match Store::open(&location) {
            Ok(store) => Ok(store),
            Err(e) => Err(format!("{}: {e}", location_text(&location))),
        };
        let mut st = self.lock();
        st.disks = disks;
        match opened {
            Ok(store) => self.adopt(&mut st, store, &location),
            Err(reason) => self.degrade(&mut st, reason),
        }
        if let Some(reason) = problem {
            self.degrade(&mut st, reason);
        }
        st.ready_ms = Some(u32::try_from(uptime_ms()).unwrap_or(u32::MAX));
        let message = format!("store: {}", describe(&st));
        log::info!("{message}");
        self.record_locked(&mut st, EventKind::Boot, &message);
    }

    fn adopt(&self, st: &mut State, store: Store, location: &Location) {
        // Settings and keys made before the disk was adopted (memory mode) carry over; what
        // the disk already holds wins.
        carry_over(&st.store, &store);
        st.store = store;
        st.mode = match location {
            Location::Memory => StoreMode::Memory,
            Location::File(_) => StoreMode::File,
            Location::Device(_) => StoreMode::Disk,
        };
        st.location = location_text(location);
        st.degraded = None;
        if let Location::Device(path) = location {
            for (p, d) in &mut st.disks {
                if p == path {
                    d.state = DiskState::InUse;
                }
            }
        }
    }

    /// Switches to memory, carrying over the settings that can still be read.
    fn degrade(&self, st: &mut State, reason: String) {
        log::error!("store degraded to memory: {reason}");
        let memory = Store::memory();
        carry_over(&st.store, &memory);
        st.store = memory;
        st.mode = StoreMode::Memory;
        st.location.clear();
        st.degraded = Some(reason.clone());
        self.record_locked(st, EventKind::StoreDegraded, &reason);
    }

    fn record_locked(&self, st: &mut State, kind: EventKind, message: &str) {
        let event = EventRecord {
            boot_id: self.boot_id,
            uptime_ms: uptime_ms(),
            kind,
            message: message.chars().take(128).collect(),
        };
        if let Err(e) = st.store.record_event(&event) {
            // Recording the failure itself must not recurse: degrade without an event first.
            let reason = format!("recording an event failed: {e}");
            self.degrade(st, reason);
            let _ = st.store.record_event(&event);
        }
        if let Some(wake) = &self.wake {
            let _ = rustix::io::write(wake, &1u64.to_ne_bytes());
        }
    }

    /// Wakes the endpoint's streams (new console output, a VM changed state).
    pub fn wake_streams(&self) {
        if let Some(wake) = &self.wake {
            let _ = rustix::io::write(wake, &1u64.to_ne_bytes());
        }
    }

    /// Records an event.
    pub fn record(&self, kind: EventKind, message: &str) {
        self.record_locked(&mut self.lock(), kind, message);
    }

    /// A persisted setting.
    pub fn setting(&self, key: &str) -> Option<String> {
        self.lock().store.setting(key).ok().flatten()
    }

    /// Every persisted setting.
    pub fn settings(&self) -> Vec<(String, String)> {
        self.lock().store.settings().unwrap_or_default()
    }

    /// Persists a setting (durably, before returning). A failing disk degrades the host to
    /// memory, where the setting is then kept, and the caller is told.
    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), Refusal> {
        self.write(|store| store.set_setting(key, value))?;
        self.record(EventKind::SettingChanged, &format!("{key} = {value}"));
        Ok(())
    }

    /// A page of events after `after`, and whether more follow.
    pub fn events(&self, after: Option<u64>, limit: usize) -> (Vec<EventEntry>, bool) {
        let st = self.lock();
        let Ok(mut events) = st.store.events(after, limit + 1) else {
            return (Vec::new(), false);
        };
        let more = events.len() > limit;
        events.truncate(limit);
        let entries = events
            .into_iter()
            .map(|(seq, e)| EventEntry {
                seq,
                boot_id: e.boot_id,
                uptime_ms: e.uptime_ms,
                kind: e.kind,
                message: truncated(&e.message),
            })
            .collect();
        (entries, more)
    }

    /// The store's state and the disks.
    pub fn report(&self) -> StoreReport {
        let st = self.lock();
        let mut disks = heapless::Vec::new();
        for (_, d) in &st.disks {
            if disks.push(d.clone()).is_err() {
                break;
            }
        }
        StoreReport {
            mode: st.mode,
            location: truncated(&st.location),
            host_id: st.store.host_id(),
            degraded: st.degraded.as_deref().map(truncated),
            ready_ms: st.ready_ms,
            schema_version: st.store.schema_version().unwrap_or(0),
            disks,
        }
    }

    /// The store mode.
    pub fn mode(&self) -> StoreMode {
        self.lock().mode
    }

    /// True when the store survives a reboot (a disk or a file).
    pub fn persistent(&self) -> bool {
        matches!(self.lock().mode, StoreMode::Disk | StoreMode::File)
    }

    /// The stored host key, if any.
    pub fn host_key(&self) -> Option<[u8; 32]> {
        self.lock().store.host_key().ok().flatten()
    }

    /// Stores the host key (durably); a failing disk degrades the host, which keeps it.
    pub fn set_host_key(&self, secret: &[u8; 32]) -> Result<(), Refusal> {
        self.write(|store| store.set_host_key(secret))
    }

    /// The client keys in the store.
    pub fn client_keys(&self) -> Vec<(String, ClientKey)> {
        self.lock().store.client_keys().unwrap_or_default()
    }

    /// Authorises a client key (durably), recording the change.
    pub fn put_client_key(&self, name: &str, key: &ClientKey) -> Result<(), Refusal> {
        self.write(|store| store.put_client_key(name, key))?;
        self.record(
            EventKind::AccessChanged,
            &format!(
                "authorised {name} as {} ({})",
                key.role,
                key.key.fingerprint()
            ),
        );
        Ok(())
    }

    /// Withdraws a client key (durably), recording the change.
    pub fn remove_client_key(&self, name: &str) -> Result<(), Refusal> {
        self.write(|store| store.remove_client_key(name).map(drop))?;
        self.record(EventKind::AccessChanged, &format!("withdrew {name}"));
        Ok(())
    }

    /// What `op` reads from the store; on a read error, logged, an empty default (a reader
    /// sees nothing rather than half of something).
    fn read<T: Default>(&self, what: &str, op: impl FnOnce(&Store) -> Result<T, StoreError>) -> T {
        let read = op(&self.lock().store);
        read.map_err(|e| log::error!("reading {what}: {e}"))
            .unwrap_or_default()
    }

    /// Every stored module.
    pub fn modules(&self) -> Vec<ModuleInfo> {
        self.read("modules", Store::modules)
            .into_iter()
            .map(|(_, record)| record.info)
            .collect()
    }

    /// The `.aqi` file of module `name`, checked against its SHA-256.
    pub fn module_bytes(&self, name: &str) -> Result<Option<(ModuleInfo, Vec<u8>)>, Refusal> {
        self.lock()
            .store
            .module_bytes(name)
            .map_err(|e| Refusal::new(ErrorCode::StoreFailed, format!("module {name}: {e}")))
    }

    /// Stores a module (durably), recording the change.
    pub fn put_module(&self, info: &ModuleInfo, bytes: &[u8]) -> Result<(), Refusal> {
        self.write(|store| store.put_module(info, bytes))?;
        self.record(
            EventKind::ModuleChanged,
            &format!(
                "stored {} module {} {} ({} bytes)",
                info.kind.as_str(),
                info.name,
                info.version,
                info.size
            ),
        );
        Ok(())
    }

    /// Deletes a module (durably), recording the change.
    pub fn remove_module(&self, name: &str) -> Result<(), Refusal> {
        self.write(|store| store.remove_module(name).map(drop))?;
        self.record(EventKind::ModuleChanged, &format!("removed module {name}"));
        Ok(())
    }

    /// Every stored VM.
    pub fn vms(&self) -> Vec<VmRecord> {
        self.read("VMs", Store::vms)
            .into_iter()
            .map(|(_, record)| record)
            .collect()
    }

    /// Creates or replaces a VM record (durably).
    pub fn put_vm(&self, record: &VmRecord) -> Result<(), Refusal> {
        self.write(|store| store.put_vm(record))
    }

    /// Deletes a VM record with its leases and the rules that name it (durably).
    pub fn remove_vm(&self, name: &str) -> Result<(), Refusal> {
        self.write(|store| store.remove_vm(name).map(drop))
    }

    /// Runs one durable write; on failure the host degrades to memory, where the write is
    /// then made, and the caller is told. A write the store refuses as conflicting with what it
    /// holds ([`StoreError::Conflict`]) changed nothing and is only reported.
    fn write<T>(&self, op: impl Fn(&Store) -> Result<T, StoreError>) -> Result<T, Refusal> {
        let mut st = self.lock();
        self.write_locked(&mut st, op)
    }

    fn write_locked<T>(
        &self,
        st: &mut State,
        op: impl Fn(&Store) -> Result<T, StoreError>,
    ) -> Result<T, Refusal> {
        match op(&st.store) {
            Ok(value) => Ok(value),
            Err(StoreError::Conflict(message)) => Err(Refusal::new(ErrorCode::Conflict, message)),
            Err(e) => {
                let reason = format!("commit failed on {}: {e}", st.location);
                self.degrade(st, reason.clone());
                let _ = op(&st.store);
                Err(Refusal::new(ErrorCode::StoreFailed, reason))
            }
        }
    }

    /// Initialises `name` as the store and adopts it, carrying current settings over.
    pub fn init_device(&self, name: &str, force: bool) -> Result<StoreReport, Refusal> {
        let disks = self.probe_disks();
        let Some((path, info)) = disks
            .iter()
            .find(|(p, d)| matches_disk(name, p, d))
            .cloned()
        else {
            return Err(Refusal::new(ErrorCode::NotFound, format!("no disk {name}")));
        };
        {
            let st = self.lock();
            if st.mode == StoreMode::Disk && st.location == path.display().to_string() {
                return Err(Refusal::new(
                    ErrorCode::Conflict,
                    "that disk is the store in use",
                ));
            }
        }
        let mut host_id = [0u8; 16];
        crate::access::secure_random(&mut host_id);
        kaos_store::init_device(&path, force, host_id).map_err(|e| init_error(&info, &e))?;
        let location = Location::Device(path.clone());
        let store = Store::open(&location).map_err(|e| {
            Refusal::new(ErrorCode::StoreFailed, format!("{}: {e}", path.display()))
        })?;
        let mut st = self.lock();
        st.disks = self.probe_disks();
        self.adopt(&mut st, store, &location);
        let message = format!(
            "initialised {} ({}) as the store",
            path.display(),
            if force { "forced" } else { "blank" }
        );
        log::info!("{message}");
        self.record_locked(&mut st, EventKind::StoreInitialized, &message);
        drop(st);
        Ok(self.report())
    }

    fn probe_disks(&self) -> Vec<(PathBuf, DiskInfo)> {
        let paths: Vec<PathBuf> = match &self.source {
            DiskSource::Paths(p) => p.clone(),
            DiskSource::Sysfs => sysfs_disks(),
        };
        paths
            .into_iter()
            .map(|p| {
                let info = disk_info(&p);
                (p, info)
            })
            .collect()
    }
}

/// Copies what `to` lacks from `from`: settings, the host key, client keys.
fn carry_over(from: &Store, to: &Store) {
    if let Ok(settings) = from.settings() {
        for (k, v) in settings {
            if let Ok(None) = to.setting(&k) {
                let _ = to.set_setting(&k, &v);
            }
        }
    }
    if let (Ok(Some(key)), Ok(None)) = (from.host_key(), to.host_key()) {
        let _ = to.set_host_key(&key);
    }
    if let (Ok(keys), Ok(existing)) = (from.client_keys(), to.client_keys()) {
        for (name, key) in keys {
            if !existing.iter().any(|(n, _)| *n == name) {
                let _ = to.put_client_key(&name, &key);
            }
        }
    }
    net::carry_over(from, to);
    if let (Ok(modules), Ok(existing)) = (from.modules(), to.modules()) {
        for (name, _) in modules {
            if !existing.iter().any(|(n, _)| *n == name)
                && let Ok(Some((info, bytes))) = from.module_bytes(&name)
            {
                let _ = to.put_module(&info, &bytes);
            }
        }
    }
    apps::carry_over(from, to);
}

fn matches_disk(name: &str, path: &Path, info: &DiskInfo) -> bool {
    path == Path::new(name) || info.name.as_str() == name
}

fn init_error(info: &DiskInfo, e: &StoreError) -> Refusal {
    let code = match e {
        StoreError::NonBlank(_) => ErrorCode::Conflict,
        StoreError::TooSmall { .. } => ErrorCode::InvalidArgument,
        _ => ErrorCode::StoreFailed,
    };
    Refusal::new(code, format!("{}: {e}", info.name))
}

/// Whole disks the kernel knows, as `/dev` paths.
fn sysfs_disks() -> Vec<PathBuf> {
    const SKIP: [&str; 6] = ["loop", "ram", "zram", "sr", "fd", "dm-"];
    let Ok(dir) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !SKIP.iter().any(|s| n.starts_with(s)))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| PathBuf::from("/dev").join(n))
        .collect()
}

fn disk_info(path: &Path) -> DiskInfo {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let size_bytes = std::fs::File::open(path)
        .and_then(|mut f| std::io::Seek::seek(&mut f, std::io::SeekFrom::End(0)))
        .unwrap_or(0);
    let (state, detail) = match kaos_store::probe(path) {
        Probe::Ours { format, .. } => (DiskState::Ours, format!("store format {format}")),
        Probe::Blank => (DiskState::Blank, String::new()),
        Probe::Foreign(what) => (DiskState::Foreign, what),
        Probe::NewerFormat(v) => (DiskState::NewerFormat, format!("store format {v}")),
        Probe::Corrupt(why) => (DiskState::Corrupt, why),
        Probe::TooSmall(size) => (DiskState::TooSmall, format!("{size} bytes")),
        Probe::Unreadable(why) => (DiskState::Unreadable, why),
    };
    DiskInfo {
        name: truncated(&name),
        size_bytes,
        state,
        detail: truncated(&detail),
    }
}

fn state_text(s: DiskState) -> &'static str {
    match s {
        DiskState::InUse => "in use",
        DiskState::Ours => "a KaOS store",
        DiskState::Blank => "blank",
        DiskState::Foreign => "holds other data",
        DiskState::TooSmall => "too small",
        DiskState::Unreadable => "unreadable",
        DiskState::NewerFormat => "a store of a newer format",
        DiskState::Corrupt => "a corrupt store",
    }
}

fn location_text(location: &Location) -> String {
    match location {
        Location::Memory => "memory".into(),
        Location::File(p) | Location::Device(p) => p.display().to_string(),
    }
}

fn describe(st: &State) -> String {
    match (&st.mode, &st.degraded) {
        (StoreMode::Memory | StoreMode::Absent, Some(reason)) => {
            format!("memory (degraded: {reason})")
        }
        (StoreMode::Memory | StoreMode::Absent, None) => "memory".into(),
        (StoreMode::File, _) => format!("file {}", st.location),
        (StoreMode::Disk, _) => format!("disk {}", st.location),
    }
}
