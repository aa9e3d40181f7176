//! The host's shared state and the management service that answers the endpoint's requests.

use std::sync::{Arc, Mutex, PoisonError};

use kaos_net::run::Observer;
use kaos_net::{AddressEvent, Answer, Handler, Stream, StreamPoll};
use kaos_protocol::handshake::{ClientHello, ServerHello};
use kaos_protocol::keys::{PublicKey, SecretKey};
use kaos_protocol::{
    AccessEntry, BootTimeline, ErrorCode, ErrorReply, EventKind, EventPage, EventsQuery,
    HostSettings, Identity, Ipv4Cidr, MgmtLink, Request, Response, Status, truncated,
};

use crate::access::Access;
use crate::config::Config;
use crate::modules::Uploads;
use crate::vms::Vms;
use rustix::time::{ClockId, clock_gettime};

/// What PID 1 is asked to do with the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    /// Orderly reboot (hosted: re-exec).
    Reboot,
    /// Orderly power-off (hosted: exit).
    PowerOff,
}

/// State shared by the supervisor and the endpoint thread.
#[derive(Debug)]
pub struct Host {
    hostname: Mutex<String>,
    /// Random per boot.
    pub boot_id: [u8; 16],
    /// Running as an ordinary process.
    pub hosted: bool,
    timeline: Mutex<BootTimeline>,
    mgmt: Mutex<MgmtLink>,
    power: Mutex<Option<PowerAction>>,
    /// The configuration store.
    pub config: Arc<Config>,
    /// The host key and the authorised client keys.
    pub access: Access,
    /// The VMs and their VMM processes.
    pub vms: Arc<Vms>,
    /// The virtual switch and the ports of the VMs' NICs.
    pub net: Arc<crate::network::Network>,
    /// Module uploads in progress.
    pub uploads: Uploads,
}

/// Milliseconds since the kernel started (`CLOCK_BOOTTIME` counts suspend, too).
pub fn boot_ms() -> u64 {
    let ts = clock_gettime(ClockId::Boottime);
    u64::try_from(ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000).unwrap_or(0)
}

fn boot_ms32() -> u32 {
    u32::try_from(boot_ms()).unwrap_or(u32::MAX)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // No invariant spans a lock: a poisoned value is still the latest one written.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How the host runs guests.
#[derive(Debug, Clone)]
pub struct Guests {
    /// Where platform kernels are unpacked (`/run/kaos/platform`).
    pub runtime_dir: std::path::PathBuf,
    /// Whether VMMs and the switch confine themselves (off for unprivileged hosted tests).
    pub sandbox: bool,
    /// The virtual switch's uplink (`kaos.uplink=`).
    pub uplink: Option<crate::cmdline::Uplink>,
    /// The CPUs VMMs are confined to (`kaos.vm_cpus=`); empty: all.
    pub vm_cpus: Vec<usize>,
}

impl Host {
    /// State for a process that started `init_exec_ms` after boot.
    pub fn new(
        hostname: String,
        hosted: bool,
        init_exec_ms: u32,
        disks: crate::config::DiskSource,
        keys: Vec<AccessEntry>,
        guests: Guests,
    ) -> Arc<Self> {
        let Guests {
            runtime_dir,
            sandbox,
            uplink,
            vm_cpus,
        } = guests;
        let net = Arc::new(crate::network::Network::new(uplink, sandbox));
        let mut boot_id = [0u8; 16];
        // INSECURE: an identifier, not a secret, and early boot must not wait for entropy.
        let _ = rustix::rand::getrandom(&mut boot_id, rustix::rand::GetRandomFlags::INSECURE);
        Arc::new(Self {
            hostname: Mutex::new(hostname),
            config: Arc::new(Config::new(disks, boot_id)),
            boot_id,
            hosted,
            timeline: Mutex::new(BootTimeline {
                init_exec_ms,
                ..BootTimeline::default()
            }),
            mgmt: Mutex::new(MgmtLink {
                interface: heapless::String::new(),
                mac: [0; 6],
                address: None,
                gateway: None,
                dhcp: false,
            }),
            power: Mutex::new(None),
            access: Access::new(keys),
            vms: Arc::new(Vms::new(runtime_dir, sandbox, net.clone()).confined_to(vm_cpus)),
            net,
            uploads: Uploads::default(),
        })
    }

    /// The host name in effect.
    pub fn hostname(&self) -> String {
        lock(&self.hostname).clone()
    }

    /// Puts `name` in effect (the kernel's too, as PID 1).
    pub fn apply_hostname(&self, name: &str) {
        if !self.hosted
            && let Err(e) = rustix::system::sethostname(name.as_bytes())
        {
            log::warn!("sethostname: {e}");
        }
        *lock(&self.hostname) = name.to_owned();
    }

    /// Opens the store `choice` names, applies the persisted settings, and starts the VMs that
    /// were running.
    pub fn start_store(&self, choice: &crate::config::StoreChoice) {
        self.config.select(choice);
        self.access.load(&self.config);
        self.vms.load(&self.config);
        if let Some(name) = self.config.setting("hostname") {
            if crate::cmdline::hostname(&name).is_ok() {
                log::info!("hostname {name} (from the store)");
                self.apply_hostname(&name);
            } else {
                log::warn!("ignoring stored hostname {name:?}: not a valid host name");
            }
        }
    }

    fn host_settings(&self) -> HostSettings {
        let mut entries = heapless::Vec::new();
        for (k, v) in self.config.settings() {
            if entries.push((truncated(&k), truncated(&v))).is_err() {
                break;
            }
        }
        HostSettings {
            hostname: truncated(&self.hostname()),
            entries,
        }
    }

    fn set(&self, key: &str, value: &str) -> Response {
        let valid = match key {
            "hostname" => crate::cmdline::hostname(value).map(drop),
            _ => Err(format!("unknown setting {key:?} (settable: hostname)")),
        };
        if let Err(e) = valid {
            return Response::Error(ErrorReply::new(ErrorCode::InvalidArgument, &e));
        }
        let stored = self.config.set_setting(key, value);
        if key == "hostname" {
            self.apply_hostname(value);
        }
        match stored {
            Ok(()) => Response::Host(self.host_settings()),
            Err(e) => Response::Error(e.reply()),
        }
    }

    /// Records a milestone at the current time, once.
    pub fn mark(&self, milestone: fn(&mut BootTimeline) -> &mut Option<u32>) {
        let mut timeline = lock(&self.timeline);
        milestone(&mut timeline).get_or_insert_with(boot_ms32);
    }

    /// The boot timeline so far.
    pub fn timeline(&self) -> BootTimeline {
        *lock(&self.timeline)
    }

    /// Records the management link once it is open.
    pub fn set_link(&self, interface: &str, mac: [u8; 6], dhcp: bool) {
        let mut mgmt = lock(&self.mgmt);
        mgmt.interface = truncated(interface);
        mgmt.mac = mac;
        mgmt.dhcp = dhcp;
    }

    /// Asks the supervisor for a power action and wakes it.
    pub fn request_power(&self, action: PowerAction) {
        *lock(&self.power) = Some(action);
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::USR1);
    }

    /// The pending power request, if any.
    pub fn take_power(&self) -> Option<PowerAction> {
        lock(&self.power).take()
    }

    fn status(&self) -> Status {
        Status {
            hostname: truncated(&self.hostname()),
            version: truncated(env!("CARGO_PKG_VERSION")),
            boot_id: self.boot_id,
            uptime_ms: boot_ms(),
            hosted: self.hosted,
            timeline: self.timeline(),
            processes: u32::try_from(crate::procs::userspace_pids().len()).unwrap_or(u32::MAX),
            store: self.config.mode(),
            mgmt: lock(&self.mgmt).clone(),
            host_key: self.access.host_public_key().unwrap_or(PublicKey([0; 32])),
            host_key_persistent: self.config.persistent(),
        }
    }
}

/// The endpoint's view of the host.
#[derive(Debug)]
pub struct Service(pub Arc<Host>);

impl Service {
    fn events_page(&self, q: &EventsQuery) -> EventPage {
        let limit = usize::from(q.limit).clamp(1, kaos_protocol::EVENTS_PER_PAGE);
        let (events, more) = self.0.config.events(q.after, limit);
        let mut page = EventPage {
            events: heapless::Vec::new(),
            more,
        };
        for e in events {
            if page.events.push(e).is_err() {
                page.more = true;
                break;
            }
        }
        page
    }

    fn remove_module(&self, name: &str) -> Result<Response, crate::config::Refusal> {
        let host = &self.0;
        if !host.config.modules().iter().any(|m| m.name == name) {
            return Err(crate::config::Refusal::new(
                ErrorCode::NotFound,
                format!("no module named {name:?}"),
            ));
        }
        if let Some(vm) = host.vms.uses_platform(name) {
            return Err(crate::config::Refusal::new(
                ErrorCode::Conflict,
                format!("VM {vm} boots module {name}; destroy it (and any other user) first"),
            ));
        }
        host.config.remove_module(name)?;
        Ok(Response::Modules(crate::modules::list(&host.config)))
    }

    fn reply(result: Result<Response, crate::config::Refusal>) -> Answer {
        Answer::Reply(result.unwrap_or_else(|e| Response::Error(e.reply())))
    }
}

/// `events --follow`: pages of events as they are recorded.
struct EventStream {
    host: Arc<Host>,
    query: EventsQuery,
}

impl Stream for EventStream {
    fn poll(&mut self) -> StreamPoll {
        let page = Service(Arc::clone(&self.host)).events_page(&self.query);
        match page.events.last() {
            Some(last) => {
                self.query.after = Some(last.seq);
                StreamPoll::Item(Response::Events(page))
            }
            None => StreamPoll::Pending,
        }
    }
}

/// `vm logs`: the buffered console, then (with `--follow`) new output as it comes.
struct ConsoleStream {
    host: Arc<Host>,
    name: String,
    /// Next byte to send; `None` before the first chunk (start from the oldest byte held).
    offset: Option<u64>,
    /// Without follow: where the console stood when the request came; the stream ends there.
    end: Option<u64>,
}

impl Stream for ConsoleStream {
    fn poll(&mut self) -> StreamPoll {
        let (chunk, next, _) = match self.host.vms.console(&self.name, self.offset) {
            Ok(read) => read,
            // The VM was destroyed while followed.
            Err(e) => return StreamPoll::Done(Response::Error(e.reply())),
        };
        self.offset = Some(next);
        if let Some(end) = self.end {
            return if next >= end {
                StreamPoll::Done(Response::Console(chunk))
            } else {
                StreamPoll::Item(Response::Console(chunk))
            };
        }
        if chunk.data.is_empty() && chunk.dropped == 0 {
            StreamPoll::Pending
        } else {
            StreamPoll::Item(Response::Console(chunk))
        }
    }
}

impl Handler for Service {
    fn host_key(&self) -> Option<SecretKey> {
        self.0.access.host_key()
    }

    fn server_hello(&self) -> ServerHello {
        ServerHello {
            version: kaos_protocol::VERSION,
            hostname: truncated(&self.0.hostname()),
            key_persistent: self.0.config.persistent(),
        }
    }

    fn authenticate(
        &mut self,
        key: &PublicKey,
        hello: &ClientHello,
        from: &str,
    ) -> Result<Identity, ErrorReply> {
        if let Some(who) = self.0.access.lookup(key) {
            log::info!(
                "session from {from}: key {} ({}), {}",
                who.name,
                who.role,
                hello.client
            );
            return Ok(who);
        }
        let fingerprint = key.fingerprint();
        let message = format!("unknown key {fingerprint} from {from} ({})", hello.client);
        log::warn!("refused: {message}");
        self.0.config.record(EventKind::AccessDenied, &message);
        Err(ErrorReply::new(
            ErrorCode::Unauthorized,
            &format!(
                "key {fingerprint} is not authorised on {}; an admin can run `kaosctl access add`",
                self.0.hostname()
            ),
        ))
    }

    fn identity(&self, key: &PublicKey) -> Option<Identity> {
        self.0.access.lookup(key)
    }

    fn denied(&mut self, who: &Identity, request: &Request) {
        let message = format!("{} key {} may not {}", who.role, who.name, request.name());
        self.0.config.record(EventKind::AccessDenied, &message);
    }

    fn request(&mut self, who: &Identity, request: &Request) -> Answer {
        let host = &self.0;
        match request {
            Request::Status => Answer::Reply(Response::Status(host.status())),
            Request::Reboot | Request::Shutdown => {
                let (action, what) = if *request == Request::Reboot {
                    (PowerAction::Reboot, "reboot")
                } else {
                    (PowerAction::PowerOff, "power-off")
                };
                log::info!("{what} requested by {} over the management port", who.name);
                host.config.record(
                    EventKind::PowerRequested,
                    &format!("{what} by {}", who.name),
                );
                host.request_power(action);
                Answer::Reply(Response::Accepted)
            }
            Request::StoreStatus => Answer::Reply(Response::StoreStatus(host.config.report())),
            Request::StoreInit(init) => Self::reply(
                host.config
                    .init_device(&init.device, init.force)
                    .map(Response::StoreStatus),
            ),
            Request::HostGet => Answer::Reply(Response::Host(host.host_settings())),
            Request::HostSet(set) => Answer::Reply(host.set(&set.key, &set.value)),
            Request::Events(q) if q.follow => Answer::Stream(Box::new(EventStream {
                host: Arc::clone(host),
                query: *q,
            })),
            Request::Events(q) => Answer::Reply(Response::Events(self.events_page(q))),
            Request::AccessList => Answer::Reply(Response::Access(host.access.list())),
            Request::AccessAdd(add) => Self::reply(
                host.access
                    .add(&host.config, &add.name, add.role, add.key)
                    .map(Response::Access),
            ),
            Request::AccessRemove(rm) => Self::reply(
                host.access
                    .remove(&host.config, &rm.name)
                    .map(Response::Access),
            ),
            Request::ModuleUpload(up) => {
                Self::reply(host.uploads.step(&host.config, up).map(Response::Upload))
            }
            Request::ModuleList => {
                Answer::Reply(Response::Modules(crate::modules::list(&host.config)))
            }
            Request::ModuleRemove(name) => Self::reply(self.remove_module(name)),
            Request::VmCreate(create) => Self::reply(
                host.vms
                    .create(&host.config, &create.spec, create.start)
                    .map(Response::Vm),
            ),
            Request::VmList => {
                let mut entries = heapless::Vec::new();
                for vm in host.vms.list() {
                    if entries.push(vm).is_err() {
                        break;
                    }
                }
                Answer::Reply(Response::Vms(kaos_protocol::VmList { entries }))
            }
            Request::VmInspect(name) => Self::reply(host.vms.inspect(name).map(Response::Vm)),
            Request::VmAct(act) => {
                log::info!("{} {} requested by {}", request.name(), act.name, who.name);
                Self::reply(
                    host.vms
                        .act(&host.config, &act.name, act.action)
                        .map(|info| match act.action {
                            kaos_protocol::VmAction::Destroy => Response::Accepted,
                            _ => Response::Vm(info),
                        }),
                )
            }
            Request::VmLogs(q) => match host.vms.console(&q.name, None) {
                Err(e) => Answer::Reply(Response::Error(e.reply())),
                Ok((_, _, end)) => Answer::Stream(Box::new(ConsoleStream {
                    host: Arc::clone(host),
                    name: q.name.to_string(),
                    offset: None,
                    end: (!q.follow).then_some(end),
                })),
            },
            Request::VlanCreate(spec) => {
                let created = crate::netcfg::vlan_create(&host.config, spec);
                host.net.config_changed(&host.config);
                Self::reply(created.map(Response::Vlan))
            }
            Request::VlanList => {
                Answer::Reply(Response::Vlans(crate::netcfg::vlan_list(&host.config)))
            }
            Request::VlanDelete(id) => {
                let deleted = crate::netcfg::vlan_delete(&host.config, *id);
                host.net.config_changed(&host.config);
                Self::reply(deleted.map(Response::Vlans))
            }
            Request::RuleAdd(spec) => {
                let added = crate::netcfg::rule_add(&host.config, spec);
                host.net.config_changed(&host.config);
                Self::reply(added.map(Response::Rule))
            }
            Request::RuleList => {
                Answer::Reply(Response::Rules(crate::netcfg::rule_list(&host.config)))
            }
            Request::RuleDelete(id) => {
                let deleted = crate::netcfg::rule_delete(&host.config, *id);
                host.net.config_changed(&host.config);
                Self::reply(deleted.map(Response::Rules))
            }
            Request::NetStats(query) => Self::reply(host.net.stats(query).map(Response::NetStats)),
            Request::ModuleInspect(q) => {
                Self::reply(crate::modules::inspect(&host.config, q).map(Response::ModuleManifest))
            }
            Request::GroupCreate(spec) => {
                Self::reply(crate::images::group_create(&host.config, spec).map(Response::Group))
            }
            Request::GroupList => {
                Answer::Reply(Response::Groups(crate::images::group_list(&host.config)))
            }
            Request::GroupShow(name) => {
                Self::reply(crate::images::group_show(&host.config, name).map(Response::Group))
            }
            Request::GroupEdit(edit) => {
                Self::reply(crate::images::group_edit(&host.config, edit).map(Response::Group))
            }
            Request::GroupDelete(name) => {
                Self::reply(crate::images::group_delete(&host.config, name).map(Response::Groups))
            }
            Request::ImageCreate(spec) => {
                Self::reply(crate::images::image_create(&host.config, spec).map(Response::Image))
            }
            Request::ImageList => {
                Answer::Reply(Response::Images(crate::images::image_list(&host.config)))
            }
            Request::ImageShow(name) => {
                Self::reply(crate::images::image_show(&host.config, name).map(Response::Image))
            }
            Request::ImageDelete(name) => {
                Self::reply(crate::images::image_delete(&host.config, name).map(Response::Images))
            }
            Request::ImageDeploy(deploy) => {
                log::info!(
                    "image deploy {} --count {} requested by {}",
                    deploy.name,
                    deploy.count,
                    who.name
                );
                let deployed = host.vms.deploy(&host.config, &deploy.name, deploy.count);
                host.net.config_changed(&host.config);
                Self::reply(deployed.map(Response::Image))
            }
            // The session answers these itself.
            Request::Ping | Request::Cancel(_) | Request::WhoAmI => {
                Answer::Reply(Response::Accepted)
            }
        }
    }
}

impl Observer for Service {
    fn address(&mut self, event: AddressEvent) {
        let mut mgmt = lock(&self.0.mgmt);
        match event {
            AddressEvent::Configured { address, gateway } => {
                log::info!(
                    "management endpoint ready on {address} port {}",
                    kaos_protocol::PORT
                );
                mgmt.address = Some(Ipv4Cidr {
                    addr: address.address().octets(),
                    prefix: address.prefix_len(),
                });
                mgmt.gateway = gateway.map(|g| g.octets());
                drop(mgmt);
                self.0.mark(|t| &mut t.address_ms);
                self.0.mark(|t| &mut t.endpoint_ready_ms);
            }
            AddressEvent::Deconfigured => {
                mgmt.address = None;
                mgmt.gateway = None;
            }
        }
    }
}
