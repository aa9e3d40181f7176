//! VMs: desired state in the store, one `kattach vmm run` process per running VM, restart
//! policies, and each VM's serial console kept in a bounded ring for `kaosctl vm logs`.
//!
//! Lifecycle (see `docs/ARCHITECTURE.md`, "VM lifecycle"):
//!
//! ```text
//!   create ──► Stopped ──start──► Running ──guest stops──► policy says restart? ──yes──► BackingOff
//!                 ▲                  │                          │ no                        │
//!                 └──────stop────────┘                          ▼                           │
//!                                                             Exited        Running ◄───────┘
//!   start with a missing or broken platform module ──► Failed
//! ```
//!
//! Each start gets a *runner* thread that spawns the VMM, copies its console into the ring until
//! the pipes close, takes the exit status the supervisor reaped (`Vms::child_exited`), and applies
//! the restart policy. A VMM that crashes or is killed ends only its own run; PID 1 and the other
//! VMs never share its address space.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use kaos_protocol::{
    AppStatus, ConsoleChunk, ErrorCode, EventKind, MAX_APPS, ModuleKind, NicInfo, RestartPolicy,
    VM_VCPUS_MAX, VlanSpec, VmAction, VmExit, VmExitKind, VmInfo, VmSpec, VmState, VmSummary,
    truncated, valid_object_name,
};
use kaos_store::{NicRecord, VmRecord};

use crate::config::{Config, Refusal};
use crate::host::boot_ms;

/// Console bytes kept per VM.
pub const CONSOLE_BYTES: usize = 64 << 10;
/// Smallest guest RAM accepted, in MiB (a vKaOS kernel needs about 24).
pub const MIN_MEMORY_MIB: u32 = 32;
/// First restart back-off; doubles per consecutive quick failure.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// Longest restart back-off.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A run longer than this resets the back-off.
const HEALTHY_RUN: Duration = Duration::from_secs(30);
/// Time a VMM gets between SIGTERM and SIGKILL on stop.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// What the guest `kattach` prints once it is up (see `guest.rs`).
const READY_MARK: &[u8] = b"kattach guest: ";

/// `kattach vmm run` exit statuses (see `vmm_role.rs`).
pub mod exit_code {
    /// The guest powered off.
    pub const POWER_OFF: i32 = 0;
    /// The guest failed: triple fault, VMM error.
    pub const GUEST_FAILED: i32 = 1;
    /// The VM could not be built: bad parameters, kernel, no KVM.
    pub const START_FAILED: i32 = 2;
    /// The guest reset itself (reboot, or a panic with `panic=`).
    pub const RESET: i32 = 3;
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update leaves the map consistent; a panicking thread leaves the last state.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The last [`CONSOLE_BYTES`] of a console, addressed by absolute byte offsets so readers can
/// follow it and know what they missed.
#[derive(Debug)]
struct ConsoleRing {
    buf: Vec<u8>,
    /// Bytes ever written; `buf` holds the last `min(total, CONSOLE_BYTES)` of them.
    total: u64,
}

impl ConsoleRing {
    fn new() -> Self {
        Self {
            buf: Vec::new(),
            total: 0,
        }
    }

    fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        if self.buf.len() > CONSOLE_BYTES {
            let cut = self.buf.len() - CONSOLE_BYTES;
            self.buf.drain(..cut);
        }
        self.total += data.len() as u64;
    }

    /// Offset of the oldest byte still held.
    fn start(&self) -> u64 {
        self.total - self.buf.len() as u64
    }

    /// Up to `max` bytes from `offset` on, and how many bytes before them were lost.
    fn read(&self, offset: u64, max: usize) -> (u64, &[u8]) {
        let from = offset.max(self.start());
        let dropped = from - offset;
        let at = usize::try_from(from - self.start()).unwrap_or(usize::MAX);
        let slice = self.buf.get(at..).unwrap_or(&[]);
        (dropped, &slice[..slice.len().min(max)])
    }
}

/// One VM's run-time state.
#[derive(Debug)]
struct Vm {
    spec: VmSpec,
    desired_running: bool,
    state: VmState,
    pid: Option<u32>,
    restarts: u32,
    since_ms: u64,
    guest_up: bool,
    last_exit: Option<VmExit>,
    platform_sha256: Option<[u8; 32]>,
    /// Its NICs as assigned at create (kept in the store with their leases).
    nics: Vec<NicInfo>,
    /// The image it is an instance of.
    image: Option<String>,
    /// Its App Modules' entrypoints, as the guest reported them this run.
    apps: Vec<AppStatus>,
    console: ConsoleRing,
    /// Bumped at every start and stop: a runner whose generation is stale gives up.
    generation: u64,
    /// The raw wait status the supervisor reaped for `pid`.
    reaped: Option<i32>,
}

impl Vm {
    fn new(spec: VmSpec, desired_running: bool, nics: Vec<NicInfo>, image: Option<String>) -> Self {
        Self {
            spec,
            desired_running,
            nics,
            image,
            apps: Vec::new(),
            state: VmState::Stopped,
            pid: None,
            restarts: 0,
            since_ms: boot_ms(),
            guest_up: false,
            last_exit: None,
            platform_sha256: None,
            console: ConsoleRing::new(),
            generation: 0,
            reaped: None,
        }
    }

    fn set_state(&mut self, state: VmState) {
        self.state = state;
        self.since_ms = boot_ms();
    }

    fn info(&self) -> VmInfo {
        VmInfo {
            spec: self.spec.clone(),
            state: self.state,
            desired_running: self.desired_running,
            pid: self.pid,
            restarts: self.restarts,
            since_ms: self.since_ms,
            guest_up: self.guest_up,
            last_exit: self.last_exit.clone(),
            platform_sha256: self.platform_sha256,
            nics: self.nics.iter().cloned().collect(),
            image: self.image.as_deref().map(truncated),
            apps: self.apps.iter().take(MAX_APPS).cloned().collect(),
        }
    }

    fn record(&self) -> VmRecord {
        VmRecord {
            spec: self.spec.clone(),
            running: self.desired_running,
            nics: self
                .nics
                .iter()
                .map(|n| NicRecord {
                    vlan: n.vlan,
                    mac: n.mac,
                    ipv4: n.ipv4,
                })
                .collect(),
            image: self.image.clone(),
        }
    }
}

/// Every VM of the host.
#[derive(Debug)]
pub struct Vms {
    vms: Mutex<BTreeMap<String, Vm>>,
    /// Signalled on every state change and reaped exit.
    changed: Condvar,
    /// Where platform kernels are unpacked for the VMM to open (`/run/kaos/platform`).
    runtime_dir: PathBuf,
    /// The program to run as `kattach vmm run` (this very binary).
    exe: PathBuf,
    /// Whether to pass `--no-sandbox` (hosted tests without privileges).
    sandbox: bool,
    /// The CPUs every VMM is confined to (`kaos.vm_cpus=`); `None`: all.
    cpus: Option<rustix::thread::CpuSet>,
    /// The host is going down: nothing starts or restarts any more.
    shutting_down: std::sync::atomic::AtomicBool,
    /// The virtual switch, which gets a port for each NIC of a starting VM.
    net: Arc<crate::network::Network>,
}

/// A reply or a refusal.
pub type Reply<T> = Result<T, Refusal>;

fn refuse(code: ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal::new(code, message)
}

fn not_found(name: &str) -> Refusal {
    refuse(ErrorCode::NotFound, format!("no VM named {name:?}"))
}

impl Vms {
    /// No VMs yet; [`Vms::load`] reads them from the store.
    pub fn new(runtime_dir: PathBuf, sandbox: bool, net: Arc<crate::network::Network>) -> Self {
        Self {
            vms: Mutex::new(BTreeMap::new()),
            changed: Condvar::new(),
            runtime_dir,
            exe: PathBuf::from("/proc/self/exe"),
            sandbox,
            cpus: None,
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            net,
        }
    }

    /// Confines every VMM to `cpus` (empty: no confinement). CPUs this machine lacks are
    /// left out, with a warning; if none is left, VMMs run anywhere.
    pub fn confined_to(mut self, cpus: Vec<usize>) -> Self {
        if cpus.is_empty() {
            return self;
        }
        use rustix::thread::{CpuSet, sched_getaffinity};
        let online = sched_getaffinity(None).ok();
        let mut set = CpuSet::new();
        let mut kept = Vec::new();
        for cpu in cpus {
            // `cpu` < MAX_CPUS (CPU_SETSIZE), checked when the list was parsed.
            if online.as_ref().is_none_or(|o| o.is_set(cpu)) {
                set.set(cpu);
                kept.push(cpu);
            } else {
                log::warn!("kaos.vm_cpus: CPU {cpu} is not available to the host; left out");
            }
        }
        if kept.is_empty() {
            log::warn!("kaos.vm_cpus: none of its CPUs is available; VMMs run on any");
            return self;
        }
        log::info!("VMMs confined to CPUs {kept:?}");
        self.cpus = Some(set);
        self
    }

    /// Reads the VMs from the store and starts those meant to run (autostart after a boot).
    pub fn load(self: &Arc<Self>, config: &Arc<Config>) {
        let records = config.vms();
        let vlans = config.vlans();
        let mut to_start = Vec::new();
        {
            let mut vms = lock(&self.vms);
            for record in records {
                let name = record.spec.name.to_string();
                if record.running {
                    to_start.push(name.clone());
                }
                let nics = crate::ipam::nic_infos(&record.nics, &vlans);
                vms.entry(name)
                    .or_insert_with(|| Vm::new(record.spec, record.running, nics, record.image));
            }
        }
        for name in to_start {
            log::info!("VM {name}: starting (it was running before this boot)");
            self.launch(config, &name);
        }
    }

    /// Validates and stores a new VM; starts it if asked.
    pub fn create(
        self: &Arc<Self>,
        config: &Arc<Config>,
        spec: &VmSpec,
        start: bool,
    ) -> Reply<VmInfo> {
        check_spec(spec, &config.modules())?;
        let name = spec.name.to_string();
        {
            let mut vms = lock(&self.vms);
            if vms.contains_key(&name) {
                return Err(refuse(
                    ErrorCode::Conflict,
                    format!("a VM named {name:?} exists; destroy it first or pick another name"),
                ));
            }
            if vms.len() >= kaos_protocol::MAX_VMS {
                return Err(refuse(
                    ErrorCode::Conflict,
                    format!("this host holds at most {} VMs", kaos_protocol::MAX_VMS),
                ));
            }
            // The NICs' MACs and addresses are chosen and stored with the record.
            let record = config.create_vm(spec, start)?;
            let nics = crate::ipam::nic_infos(&record.nics, &config.vlans());
            vms.insert(name.clone(), Vm::new(spec.clone(), start, nics, None));
        }
        config.record(
            EventKind::VmChanged,
            &format!(
                "created VM {name} ({} vCPUs, {} MiB, {})",
                spec.vcpus, spec.memory_mib, spec.platform
            ),
        );
        if start {
            self.launch(config, &name);
        }
        self.inspect(&name)
    }

    /// Everything about one VM.
    pub fn inspect(&self, name: &str) -> Reply<VmInfo> {
        lock(&self.vms)
            .get(name)
            .map(Vm::info)
            .ok_or_else(|| not_found(name))
    }

    /// Every VM, sorted by name.
    pub fn list(&self) -> Vec<VmSummary> {
        lock(&self.vms)
            .values()
            .map(|vm| VmSummary {
                name: vm.spec.name.clone(),
                state: vm.state,
                vcpus: vm.spec.vcpus,
                memory_mib: vm.spec.memory_mib,
                restarts: vm.restarts,
                guest_up: vm.guest_up,
                ipv4: vm.nics.first().map(|n| n.ipv4),
                image: vm.image.as_deref().map(truncated),
            })
            .collect()
    }

    /// True if a VM boots platform module `name`.
    pub fn uses_platform(&self, name: &str) -> Option<String> {
        lock(&self.vms)
            .values()
            .find(|vm| vm.spec.platform.as_str() == name)
            .map(|vm| vm.spec.name.to_string())
    }

    /// Carries out a lifecycle action.
    pub fn act(
        self: &Arc<Self>,
        config: &Arc<Config>,
        name: &str,
        action: VmAction,
    ) -> Reply<VmInfo> {
        if !lock(&self.vms).contains_key(name) {
            return Err(not_found(name));
        }
        match action {
            VmAction::Start => {
                self.set_desired(config, name, true)?;
                self.launch(config, name);
            }
            VmAction::Stop => {
                self.set_desired(config, name, false)?;
                self.stop(name);
            }
            VmAction::Restart => {
                self.set_desired(config, name, true)?;
                self.stop(name);
                self.launch(config, name);
            }
            VmAction::Destroy => {
                self.set_desired(config, name, false)?;
                self.stop(name);
                config.remove_vm(name)?;
                let info = lock(&self.vms).remove(name).map(|vm| vm.info());
                self.changed.notify_all();
                config.record(EventKind::VmChanged, &format!("destroyed VM {name}"));
                return info.ok_or_else(|| not_found(name));
            }
        }
        config.record(
            EventKind::VmChanged,
            &format!("{} VM {name}", action.as_str()),
        );
        self.inspect(name)
    }

    fn set_desired(&self, config: &Config, name: &str, running: bool) -> Reply<()> {
        let mut vms = lock(&self.vms);
        let vm = vms.get_mut(name).ok_or_else(|| not_found(name))?;
        if vm.desired_running != running {
            vm.desired_running = running;
            config.put_vm(&vm.record())?;
        }
        Ok(())
    }

    /// Stops every start and restart from now on (host power-off or reboot).
    pub fn begin_shutdown(&self) {
        self.shutting_down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.changed.notify_all();
    }

    fn shutting_down(&self) -> bool {
        self.shutting_down.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Starts a runner for `name` unless one is running it already.
    fn launch(self: &Arc<Self>, config: &Arc<Config>, name: &str) {
        if self.shutting_down() {
            return;
        }
        let generation = {
            let mut vms = lock(&self.vms);
            let Some(vm) = vms.get_mut(name) else { return };
            if matches!(vm.state, VmState::Running | VmState::Starting) {
                return;
            }
            vm.generation += 1;
            vm.restarts = 0;
            vm.guest_up = false;
            vm.set_state(VmState::Starting);
            vm.generation
        };
        self.changed.notify_all();
        let (this, config, name) = (Arc::clone(self), Arc::clone(config), name.to_owned());
        let spawned = std::thread::Builder::new()
            .name(format!("vm-{name}"))
            .spawn(move || this.runner(&config, &name, generation));
        if let Err(e) = spawned {
            log::error!("cannot start a runner thread: {e}");
        }
    }

    /// Ends the VM's current run (if any) and waits until its runner has recorded it:
    /// SIGTERM to the VMM, SIGKILL after [`STOP_GRACE`].
    fn stop(&self, name: &str) {
        let active = |vm: &Vm| matches!(vm.state, VmState::Running | VmState::Starting);
        {
            let mut vms = lock(&self.vms);
            let Some(vm) = vms.get_mut(name) else { return };
            vm.generation += 1;
            if vm.state == VmState::BackingOff {
                vm.set_state(VmState::Stopped);
            }
        }
        self.changed.notify_all();
        let deadline = Instant::now() + STOP_GRACE;
        let mut signalled = None;
        let mut vms = lock(&self.vms);
        loop {
            let Some(vm) = vms.get(name).filter(|vm| active(vm)) else {
                return;
            };
            let pid = vm
                .pid
                .and_then(|p| i32::try_from(p).ok())
                .and_then(rustix::process::Pid::from_raw);
            let now = Instant::now();
            match (pid, signalled) {
                (Some(pid), None) => {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                    signalled = Some(rustix::process::Signal::TERM);
                }
                (Some(pid), Some(rustix::process::Signal::TERM)) if now >= deadline => {
                    log::warn!(
                        "VM {name}: VMM {} ignored SIGTERM; killing it",
                        pid.as_raw_nonzero()
                    );
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    signalled = Some(rustix::process::Signal::KILL);
                }
                _ if now >= deadline + STOP_GRACE => {
                    log::error!("VM {name}: its runner did not record the stop");
                    return;
                }
                _ => {}
            }
            vms = self
                .changed
                .wait_timeout(vms, Duration::from_millis(200))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Called by the supervisor for every child it reaps; returns whether it was a VMM.
    pub fn child_exited(&self, pid: u32, status: i32) -> bool {
        let mut vms = lock(&self.vms);
        let Some(vm) = vms.values_mut().find(|vm| vm.pid == Some(pid)) else {
            return false;
        };
        vm.reaped = Some(status);
        drop(vms);
        self.changed.notify_all();
        true
    }

    /// The console from `offset` on (at most one chunk), the offset after it, and the end.
    pub fn console(&self, name: &str, offset: Option<u64>) -> Reply<(ConsoleChunk, u64, u64)> {
        let vms = lock(&self.vms);
        let vm = vms.get(name).ok_or_else(|| not_found(name))?;
        let ring = &vm.console;
        let offset = offset.unwrap_or_else(|| ring.start());
        let (dropped, data) = ring.read(offset, kaos_protocol::CONSOLE_CHUNK);
        let mut chunk = ConsoleChunk {
            data: heapless::Vec::new(),
            dropped,
        };
        // `data` is at most CONSOLE_CHUNK bytes, so this cannot fail.
        let _ = chunk.data.extend_from_slice(data);
        let next = offset + dropped + data.len() as u64;
        Ok((chunk, next, ring.total))
    }

    /// One start of `name` after another, as the restart policy says, until stopped.
    fn runner(&self, config: &Config, name: &str, generation: u64) {
        let mut backoff = BACKOFF_FIRST;
        loop {
            let started = Instant::now();
            let Some(exit) = self.run_once(config, name, generation) else {
                return; // Stopped by a request, destroyed, or superseded.
            };
            let kind = exit.kind;
            let decision = {
                let mut vms = lock(&self.vms);
                let Some(vm) = vms.get_mut(name) else { return };
                if vm.generation != generation || !vm.desired_running {
                    vm.last_exit = Some(exit.clone());
                    vm.set_state(VmState::Stopped);
                    self.changed.notify_all();
                    return;
                }
                let restart = !self.shutting_down()
                    && match (kind, vm.spec.restart) {
                        (VmExitKind::StartFailed, _) => false,
                        (_, RestartPolicy::Always) => true,
                        (VmExitKind::PowerOff, RestartPolicy::OnFailure) => false,
                        (_, RestartPolicy::OnFailure) => true,
                        (_, RestartPolicy::Never) => false,
                    };
                vm.last_exit = Some(exit.clone());
                vm.set_state(match (restart, kind) {
                    (true, _) => VmState::BackingOff,
                    (false, VmExitKind::StartFailed) => VmState::Failed,
                    (false, _) => VmState::Exited,
                });
                self.changed.notify_all();
                restart
            };
            let what = if decision {
                format!("restarting in {} s", backoff.as_secs())
            } else {
                "left stopped".to_owned()
            };
            let message = format!("VM {name}: {}: {}; {what}", kind.as_str(), exit.message);
            log::info!("{message}");
            config.record(EventKind::VmExited, &message);
            if !decision {
                return;
            }
            if started.elapsed() >= HEALTHY_RUN {
                backoff = BACKOFF_FIRST;
            }
            if !self.wait_backoff(name, generation, backoff) {
                return;
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
            let mut vms = lock(&self.vms);
            match vms.get_mut(name) {
                Some(vm) if vm.generation == generation => vm.restarts += 1,
                _ => return,
            }
        }
    }

    /// Sleeps `backoff` unless the VM is stopped or restarted meanwhile; true to go on.
    fn wait_backoff(&self, name: &str, generation: u64, backoff: Duration) -> bool {
        let deadline = Instant::now() + backoff;
        let mut vms = lock(&self.vms);
        loop {
            match vms.get(name) {
                Some(vm)
                    if vm.generation == generation
                        && vm.desired_running
                        && !self.shutting_down() => {}
                _ => return false,
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            vms = self
                .changed
                .wait_timeout(vms, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Runs the guest once. `None` if the run was superseded before it started.
    fn run_once(&self, config: &Config, name: &str, generation: u64) -> Option<VmExit> {
        let record = {
            let mut vms = lock(&self.vms);
            let vm = vms.get_mut(name)?;
            if vm.generation != generation {
                // Stopped before it started; a newer start (if any) owns the state.
                if !vm.desired_running && vm.state == VmState::Starting {
                    vm.set_state(VmState::Stopped);
                    self.changed.notify_all();
                }
                return None;
            }
            // A restart after a back-off starts here too.
            vm.set_state(VmState::Starting);
            vm.record()
        };
        let spec = &record.spec;
        let (kernel, sha) = match self.platform_kernel(config, &spec.platform) {
            Ok(k) => k,
            Err(message) => {
                return Some(VmExit {
                    kind: VmExitKind::StartFailed,
                    message: truncated(&message),
                    at_ms: boot_ms(),
                });
            }
        };
        let start_failed = |message: String| {
            Some(VmExit {
                kind: VmExitKind::StartFailed,
                message: truncated(&message),
                at_ms: boot_ms(),
            })
        };
        let nics = match self.net.attach(config, &record) {
            Ok(nics) => nics,
            Err(e) => return start_failed(format!("network: {e}")),
        };
        let apps = match &record.image {
            Some(image) => match self.apps_initrd(config, name, image) {
                Ok(path) => Some(path),
                Err(e) => {
                    self.net.detach(name);
                    return start_failed(format!("image {image}: {e}"));
                }
            },
            None => None,
        };
        let cmdline = guest_cmdline(spec, &record, &config.vlans());
        let spawned = self.spawn_vmm(spec, &kernel, apps.as_deref(), &cmdline, &nics);
        // The VMM holds its own copies of the vhost-user sockets now.
        drop(nics);
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                self.net.detach(name);
                return start_failed(format!("cannot start the VMM: {e}"));
            }
        };
        let pid = child.id();
        {
            let mut vms = lock(&self.vms);
            let Some(vm) = vms.get_mut(name) else {
                let _ = child.kill();
                return None;
            };
            vm.pid = Some(pid);
            vm.reaped = None;
            vm.guest_up = false;
            vm.apps.clear();
            vm.platform_sha256 = Some(sha);
            vm.set_state(VmState::Running);
            let stale = vm.generation != generation;
            drop(vms);
            self.changed.notify_all();
            if stale {
                let _ = child.kill();
            }
        }
        log::info!("VM {name}: VMM process {pid} started");
        let last_words = self.pump_console(config, name, &mut child);
        let status = self.wait_reaped(name, pid);
        self.net.detach(name);
        let mut exit = classify(status);
        if !last_words.is_empty() {
            exit.message = truncated(&last_words);
        }
        if self.shutting_down() {
            // Ended with every other process by the host's power-off or reboot, not by itself.
            exit.kind = VmExitKind::Stopped;
            exit.message = truncated("stopped for the host's power-off or reboot");
        }
        let mut vms = lock(&self.vms);
        if let Some(vm) = vms.get_mut(name) {
            vm.pid = None;
            vm.guest_up = false;
            if vm.generation != generation || !vm.desired_running {
                exit.kind = VmExitKind::Stopped;
            }
        }
        Some(exit)
    }

    /// Unpacks the platform module's kernel into the runtime directory, once per SHA-256: later
    /// starts only look the module up.
    fn platform_kernel(
        &self,
        config: &Config,
        platform: &str,
    ) -> Result<(PathBuf, [u8; 32]), String> {
        let missing = || {
            format!(
                "platform module {platform:?} is not stored; push it with `kaosctl module push`"
            )
        };
        let info = config
            .modules()
            .into_iter()
            .find(|m| m.name == platform)
            .ok_or_else(missing)?;
        if info.kind != ModuleKind::Platform {
            return Err(format!("module {platform:?} is not a platform module"));
        }
        let hex: String = info.sha256.iter().map(|b| format!("{b:02x}")).collect();
        let path = self.runtime_dir.join(format!("{platform}-{hex}.vmlinuz"));
        if path.exists() {
            return Ok((path, info.sha256));
        }
        // Read back and checked chunk by chunk and whole against its SHA-256.
        let (info, bytes) = config
            .module_bytes(platform)
            .map_err(|e| e.reply().message.to_string())?
            .ok_or_else(missing)?;
        let module = kaos_module::parse(&bytes, &kaos_module::Limits::PLATFORM)
            .map_err(|e| format!("platform module {platform:?}: {e}"))?;
        let kernel = module
            .kernel()
            .ok_or_else(|| format!("platform module {platform:?} holds no kernel"))?;
        std::fs::create_dir_all(&self.runtime_dir)
            .and_then(|()| {
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, kernel)?;
                std::fs::rename(&tmp, &path)
            })
            .map_err(|e| format!("unpacking {}: {e}", path.display()))?;
        Ok((path, info.sha256))
    }

    /// `kattach vmm run` for `spec`; each of `nics` (a vhost-user socket and the NIC's MAC)
    /// is inherited as descriptor 3, 4, … and named by a `--nic`.
    fn spawn_vmm(
        &self,
        spec: &VmSpec,
        kernel: &Path,
        apps: Option<&Path>,
        cmdline: &str,
        nics: &[(std::os::unix::net::UnixStream, [u8; 6])],
    ) -> std::io::Result<Child> {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("vmm")
            .arg("run")
            .arg("--kernel")
            .arg(kernel)
            .arg("--guest-init");
        // The image's plan and modules, unpacked by the kernel after the guest init's archive.
        if let Some(apps) = apps {
            cmd.arg("--initrd").arg(apps);
        }
        cmd.args(["--vcpus", &spec.vcpus.to_string()])
            .args(["--memory", &format!("{}M", spec.memory_mib)])
            .args(["--cmdline", cmdline]);
        let mut inherit = Vec::with_capacity(nics.len());
        for (i, (socket, mac)) in (0i32..).zip(nics) {
            let target = NIC_FD_BASE + i;
            let mac: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
            cmd.arg("--nic")
                .arg(format!("fd={target},mac={}", mac.join(":")));
            inherit.push((std::os::fd::AsRawFd::as_raw_fd(socket), target));
        }
        if !self.sandbox {
            cmd.arg("--no-sandbox");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let cpus = self.cpus;
        // SAFETY: the closure runs in the child between fork and exec and only makes
        // async-signal-safe calls (fcntl, dup2, prctl, sched_setaffinity).
        unsafe {
            use std::os::unix::process::CommandExt as _;
            cmd.pre_exec(move || {
                // The NICs' sockets at the descriptors their --nic names, without close-on-exec.
                // First out of the way (a source may sit on another's target), then into place.
                let mut high = [-1i32; MAX_NICS];
                for (slot, &(from, _)) in high.iter_mut().zip(&inherit) {
                    *slot = libc::fcntl(from, libc::F_DUPFD_CLOEXEC, NIC_FD_SPARE);
                    if *slot < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for (&from, &(_, to)) in high.iter().zip(&inherit) {
                    if libc::dup2(from, to) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // If the thread that started it dies (PID 1 never does; a hosted kattach may),
                // the VMM goes too instead of running orphaned.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The VMM and every vCPU thread it starts inherit the confinement.
                if let Some(set) = &cpus {
                    rustix::thread::sched_setaffinity(None, set)?;
                }
                Ok(())
            });
        }
        cmd.spawn()
    }

    /// Copies the VMM's stdout (the guest console) and stderr (the VMM's own messages) into the
    /// ring until both close; returns the VMM's last stderr line.
    fn pump_console(&self, config: &Config, name: &str, child: &mut Child) -> String {
        let mut out = child.stdout.take();
        let mut err = child.stderr.take();
        let mut last_words = String::new();
        let mut line = Vec::new();
        let mut buf = vec![0u8; 16 << 10];
        while out.is_some() || err.is_some() {
            let mut fds = Vec::new();
            if let Some(o) = &out {
                fds.push(rustix::event::PollFd::new(o, rustix::event::PollFlags::IN));
            }
            if let Some(e) = &err {
                fds.push(rustix::event::PollFd::new(e, rustix::event::PollFlags::IN));
            }
            if let Err(e) = rustix::event::poll(&mut fds, None) {
                if e == rustix::io::Errno::INTR {
                    continue;
                }
                log::error!("VM {name}: poll: {e}");
                break;
            }
            let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
            drop(fds);
            let mut idx = 0;
            if out.is_some() {
                if ready[idx] {
                    match out.as_mut().map(|o| o.read(&mut buf)) {
                        Some(Ok(n)) if n > 0 => {
                            self.console_output(config, name, &buf[..n], &mut line);
                        }
                        _ => out = None,
                    }
                }
                idx += 1;
            }
            if err.is_some() && ready[idx] {
                match err.as_mut().map(|e| e.read(&mut buf)) {
                    Some(Ok(n)) if n > 0 => {
                        let text = String::from_utf8_lossy(&buf[..n]);
                        if let Some(l) = text.lines().rev().find(|l| !l.trim().is_empty()) {
                            l.trim().clone_into(&mut last_words);
                        }
                        for l in text.lines() {
                            log::info!("VM {name}: {l}");
                        }
                        self.console_output(config, name, &buf[..n], &mut Vec::new());
                    }
                    _ => err = None,
                }
            }
        }
        last_words
    }

    fn console_output(&self, config: &Config, name: &str, data: &[u8], line: &mut Vec<u8>) {
        let mut up = false;
        let mut reports = Vec::new();
        for &b in data {
            if b == b'\n' {
                up |= is_ready_line(line);
                reports.extend(crate::app_report::parse(line));
                line.clear();
            } else if line.len() < 512 {
                line.push(b);
            }
        }
        {
            let mut vms = lock(&self.vms);
            if let Some(vm) = vms.get_mut(name) {
                vm.console.push(data);
                if up && !vm.guest_up {
                    vm.guest_up = true;
                    log::info!("VM {name}: guest is up");
                }
                for (module, entrypoint, report) in &reports {
                    apps::apply(&mut vm.apps, module, entrypoint, report);
                }
            }
        }
        for (module, entrypoint, report) in reports {
            if let crate::app_report::Report::Exited(how) = report {
                config.record(
                    EventKind::AppExited,
                    &format!("VM {name}: app {module}/{entrypoint} exited: {how}"),
                );
            }
        }
        config.wake_streams();
    }

    /// Waits for the supervisor to reap `pid` (it reaps every child); falls back to reaping it
    /// here if no status arrives.
    fn wait_reaped(&self, name: &str, pid: u32) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut vms = lock(&self.vms);
        loop {
            match vms.get(name) {
                Some(vm) if vm.pid == Some(pid) => {
                    if let Some(status) = vm.reaped {
                        return status;
                    }
                }
                _ => return libc::SIGKILL, // Destroyed meanwhile: reported as killed.
            }
            let now = Instant::now();
            if now >= deadline {
                drop(vms);
                return reap_directly(pid);
            }
            vms = self
                .changed
                .wait_timeout(vms, (deadline - now).min(Duration::from_millis(500)))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

fn reap_directly(pid: u32) -> i32 {
    let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return libc::SIGKILL;
    };
    match rustix::process::waitpid(Some(p), rustix::process::WaitOptions::empty()) {
        Ok(Some((_, status))) => status.as_raw(),
        _ => libc::SIGKILL,
    }
}

/// Whether a console line is the guest `kattach` saying it is up.
fn is_ready_line(line: &[u8]) -> bool {
    line.windows(READY_MARK.len()).any(|w| w == READY_MARK) && line.windows(4).any(|w| w == b" up ")
}

/// How a VMM's raw wait status reads.
fn classify(status: i32) -> VmExit {
    let (kind, message) = if libc::WIFEXITED(status) {
        match libc::WEXITSTATUS(status) {
            exit_code::POWER_OFF => (VmExitKind::PowerOff, "the guest powered off".to_owned()),
            exit_code::RESET => (VmExitKind::Reset, "the guest reset".to_owned()),
            exit_code::START_FAILED => {
                (VmExitKind::StartFailed, "the VMM refused the VM".to_owned())
            }
            code => (
                VmExitKind::Crash,
                format!("the VMM exited with status {code}"),
            ),
        }
    } else if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        (
            VmExitKind::Crash,
            format!("the VMM was killed by signal {sig}"),
        )
    } else {
        (
            VmExitKind::Crash,
            format!("the VMM ended with wait status {status:#x}"),
        )
    };
    VmExit {
        kind,
        message: truncated(&message),
        at_ms: boot_ms(),
    }
}

/// The kernel command line of a vKaOS guest: what the host needs, then the VM's own.
pub fn guest_cmdline(spec: &VmSpec, record: &VmRecord, vlans: &[VlanSpec]) -> String {
    // reboot=k: the i8042 reset, which the VMM turns into a "reset" exit; panic=-1: a guest
    // kernel panic resets at once instead of hanging, so the restart policy sees it.
    let mut line = format!(
        "console=ttyS0 reboot=k panic=-1 kaos.role=guest kaos.name={}",
        spec.name
    );
    // The first NIC's address through the kernel's own autoconfiguration (IP_PNP): the guest
    // has its address before init runs. Further NICs are named on `kaos.nic=` for the guest.
    // A VM whose own command line sets `ip=` (e.g. `ip=dhcp`, answered by the switch with the
    // same lease) configures itself.
    let own_ip = spec
        .cmdline
        .split_ascii_whitespace()
        .any(|w| w.starts_with("ip="));
    let infos = crate::ipam::nic_infos(&record.nics, vlans);
    if let Some((nic, vlan)) = infos
        .first()
        .and_then(|n| vlans.iter().find(|v| v.id == n.vlan).map(|v| (n, v)))
        .filter(|_| !own_ip)
    {
        line.push(' ');
        line.push_str(&crate::ipam::guest_cmdline(&spec.name, nic, vlan));
    }
    if !spec.cmdline.is_empty() {
        line.push(' ');
        line.push_str(&spec.cmdline);
    }
    line
}

/// The descriptor the first NIC's vhost-user socket gets in the VMM (then 4, 5, 6).
const NIC_FD_BASE: i32 = 3;
/// Where the sockets wait between fork and exec before they are put in place.
const NIC_FD_SPARE: i32 = 64;
/// Most NICs a VM has.
const MAX_NICS: usize = kaos_protocol::MAX_NICS;

/// Checks a definition before anything is stored or started.
pub(crate) fn check_spec(spec: &VmSpec, modules: &[kaos_protocol::ModuleInfo]) -> Reply<()> {
    let invalid = |m: String| Err(refuse(ErrorCode::InvalidArgument, m));
    if !valid_object_name(&spec.name) {
        return invalid(format!(
            "VM name {:?}: use 1 to 32 of a-z, 0-9 and '-', not starting with '-'",
            spec.name.as_str()
        ));
    }
    if spec.vcpus == 0 || spec.vcpus > VM_VCPUS_MAX {
        return invalid(format!(
            "{} vCPUs: a VM has 1 to {VM_VCPUS_MAX}",
            spec.vcpus
        ));
    }
    let host_mib = kaos_vmm::memory::host_ram() >> 20;
    if spec.memory_mib < MIN_MEMORY_MIB || u64::from(spec.memory_mib) > host_mib {
        return invalid(format!(
            "{} MiB of memory: a VM needs {MIN_MEMORY_MIB} MiB to the host's {host_mib} MiB",
            spec.memory_mib
        ));
    }
    if let Some(c) = spec.cmdline.chars().find(|c| !(' '..='~').contains(c)) {
        return invalid(format!(
            "the command line holds {c:?}: printable ASCII only"
        ));
    }
    if spec
        .cmdline
        .split(' ')
        .any(|w| w.starts_with("kaos.role=") || w.starts_with("kaos.name="))
    {
        return invalid("kaos.role= and kaos.name= are set by the host".to_owned());
    }
    match modules.iter().find(|m| m.name == spec.platform) {
        None => Err(refuse(
            ErrorCode::NotFound,
            format!(
                "platform module {:?} is not stored on this host; push it first with `kaosctl module push`",
                spec.platform.as_str()
            ),
        )),
        Some(m) if m.kind != ModuleKind::Platform => invalid(format!(
            "module {:?} is an {} module, not a platform",
            spec.platform.as_str(),
            m.kind.as_str()
        )),
        Some(_) => Ok(()),
    }
}

mod apps;
mod deploy;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_ring_keeps_the_tail_and_counts_what_readers_missed() {
        let mut ring = ConsoleRing::new();
        ring.push(b"hello ");
        ring.push(b"world");
        assert_eq!(ring.read(0, 100), (0, &b"hello world"[..]));
        assert_eq!(ring.read(6, 3), (0, &b"wor"[..]));
        let big = vec![b'x'; CONSOLE_BYTES];
        ring.push(&big);
        let (dropped, data) = ring.read(0, usize::MAX);
        assert_eq!(dropped, 11);
        assert_eq!(data.len(), CONSOLE_BYTES);
        assert_eq!(ring.read(ring.total, 10), (0, &b""[..]));
    }

    #[test]
    fn exit_statuses_map_to_kinds() {
        let exited = |code: i32| code << 8;
        assert_eq!(classify(exited(0)).kind, VmExitKind::PowerOff);
        assert_eq!(classify(exited(3)).kind, VmExitKind::Reset);
        assert_eq!(classify(exited(2)).kind, VmExitKind::StartFailed);
        assert_eq!(classify(exited(1)).kind, VmExitKind::Crash);
        assert_eq!(classify(libc::SIGKILL).kind, VmExitKind::Crash);
        assert!(classify(libc::SIGSEGV).message.contains("signal 11"));
    }

    #[test]
    fn ready_line_is_recognised() {
        assert!(is_ready_line(
            b"[    1.2] kattach guest: web-1 up (kernel 6.1, 1 vCPUs, 128 MiB)"
        ));
        assert!(!is_ready_line(b"kattach guest: web-1 starting"));
        assert!(!is_ready_line(b"random line up there"));
    }

    fn spec(name: &str, vcpus: u8, memory_mib: u32, cmdline: &str) -> VmSpec {
        VmSpec {
            name: truncated(name),
            vcpus,
            memory_mib,
            cmdline: truncated(cmdline),
            platform: truncated("vkaos"),
            restart: RestartPolicy::Never,
            nics: heapless::Vec::new(),
        }
    }

    #[test]
    fn bad_specs_are_refused_with_the_reason() {
        let platform = kaos_protocol::ModuleInfo {
            name: truncated("vkaos"),
            version: truncated("1"),
            kind: ModuleKind::Platform,
            sha256: [0; 32],
            size: 1,
        };
        let modules = [platform];
        assert!(check_spec(&spec("web-1", 1, 64, "quiet"), &modules).is_ok());
        for (bad, why) in [
            (spec("Web", 1, 64, ""), "name"),
            (spec("web", 0, 64, ""), "vCPUs"),
            (spec("web", 9, 64, ""), "vCPUs"),
            (spec("web", 1, 8, ""), "memory"),
            (spec("web", 1, u32::MAX, ""), "memory"),
            (spec("web", 1, 64, "a\tb"), "printable"),
            (spec("web", 1, 64, "kaos.role=host"), "set by the host"),
        ] {
            let err = check_spec(&bad, &modules)
                .err()
                .map(|e| e.reply().message.to_string());
            assert!(
                err.as_deref().is_some_and(|m| m.contains(why)),
                "{why}: {err:?}"
            );
        }
        let err = check_spec(&spec("web", 1, 64, ""), &[])
            .err()
            .map(|e| e.reply().code);
        assert_eq!(err, Some(ErrorCode::NotFound));
    }

    #[test]
    fn guest_cmdline_puts_the_host_part_first() {
        let s = spec("web-1", 1, 64, "quiet");
        let bare = VmRecord {
            spec: s.clone(),
            running: true,
            nics: Vec::new(),
            image: None,
        };
        let line = guest_cmdline(&s, &bare, &[]);
        assert!(
            line.starts_with("console=ttyS0 reboot=k panic=-1 kaos.role=guest kaos.name=web-1")
        );
        assert!(line.ends_with(" quiet"));
        assert!(!line.contains("ip="), "no NIC, no address");
        let vlan = VlanSpec {
            id: 10,
            subnet: kaos_protocol::Ipv4Cidr {
                addr: [10, 0, 10, 0],
                prefix: 24,
            },
            gateway: Some(std::net::Ipv4Addr::new(10, 0, 10, 1)),
            pool: None,
            dns: heapless::Vec::new(),
        };
        let with_nic = VmRecord {
            nics: vec![NicRecord {
                vlan: 10,
                mac: [2, 0, 0, 0, 0, 1],
                ipv4: std::net::Ipv4Addr::new(10, 0, 10, 7),
            }],
            ..bare
        };
        let line = guest_cmdline(&s, &with_nic, std::slice::from_ref(&vlan));
        assert!(
            line.contains(" ip=10.0.10.7::10.0.10.1:255.255.255.0:web-1:eth0:off quiet"),
            "{line}"
        );
        let dhcp = VmSpec {
            cmdline: truncated("ip=dhcp"),
            ..s.clone()
        };
        let line = guest_cmdline(&dhcp, &with_nic, std::slice::from_ref(&vlan));
        assert!(line.ends_with(" ip=dhcp"), "{line}");
        assert_eq!(
            line.matches("ip=").count(),
            1,
            "the VM's own ip= only: {line}"
        );
    }
}
