//! The fake host behind the session targets: a fixed host key, a table of authorised keys
//! holding one fixed client key (its role chosen by the input), and an answer of the right shape
//! to every request, including a stream for `events --follow`. Mutating requests change the
//! table and settings, so a fuzzed session can withdraw its own key (`AccessRemove` of `fuzz`).

// `ErrorReply` is the protocol's bounded error value (no allocator there to box it with); the
// fake host hands it back as the session will send it.
#![allow(clippy::result_large_err)]

use std::sync::OnceLock;

use heapless::String;
use kaos_net::{Answer, Handler, Stream, StreamPoll};
use kaos_protocol::handshake::ServerHello;
use kaos_protocol::keys::{PublicKey, SecretKey};
use kaos_protocol::{
    AccessEntry, AccessList, BootTimeline, DiskInfo, DiskState, EVENTS_PER_PAGE, ErrorCode,
    ErrorReply, EventEntry, EventKind, EventPage, EventsQuery, HostSettings, Identity, KeySource,
    MgmtLink, Name, Request, Response, Role, Status, StoreMode, StoreReport, truncated,
    valid_key_name,
};

/// The host's static key.
pub const HOST_KEY: SecretKey = SecretKey([100; 32]);
/// The client key the host authorises, under [`CLIENT_NAME`].
pub const CLIENT_KEY: SecretKey = SecretKey([1; 32]);
/// A key the host does not know.
pub const STRANGER_KEY: SecretKey = SecretKey([2; 32]);
/// The name [`CLIENT_KEY`] is authorised under (`AccessRemove` of it withdraws the session).
pub const CLIENT_NAME: &str = "fuzz";

/// The public halves of [`HOST_KEY`] and [`CLIENT_KEY`], computed once per process: a base-point
/// multiplication per input would cost as much as a third of a handshake.
pub fn public_keys() -> &'static (PublicKey, PublicKey) {
    static KEYS: OnceLock<(PublicKey, PublicKey)> = OnceLock::new();
    KEYS.get_or_init(|| (HOST_KEY.public(), CLIENT_KEY.public()))
}

/// A host with one authorised client key.
#[derive(Debug)]
pub struct Host {
    key_ready: bool,
    hostname: Name,
    settings: heapless::Vec<(String<32>, String<64>), 16>,
    access: AccessList,
    /// Requests refused for want of a role.
    pub denied: usize,
}

impl Host {
    /// A host whose key is loaded, authorising [`CLIENT_KEY`] with `role`.
    pub fn new(role: Role) -> Self {
        let mut access = AccessList {
            entries: heapless::Vec::new(),
        };
        let entries = [
            (CLIENT_NAME, role, public_keys().1, KeySource::Store),
            (
                "image-admin",
                Role::Admin,
                PublicKey([7; 32]),
                KeySource::Image,
            ),
        ];
        for (name, role, key, source) in entries {
            let entry = AccessEntry {
                name: truncated(name),
                role,
                key,
                source,
            };
            access
                .entries
                .push(entry)
                .expect("two entries fit the access list");
        }
        Self {
            key_ready: true,
            hostname: truncated("fuzzhost"),
            settings: heapless::Vec::new(),
            access,
            denied: 0,
        }
    }

    /// Whether [`Handler::host_key`] has the key yet (a host still opening its store has not).
    pub fn set_key_ready(&mut self, ready: bool) {
        self.key_ready = ready;
    }

    /// True if the host has its key.
    pub fn key_ready(&self) -> bool {
        self.key_ready
    }

    fn answer(&mut self, request: &Request) -> Result<Response, ErrorReply> {
        Ok(match request {
            Request::Status => Response::Status(self.status()),
            Request::Reboot => Response::Accepted,
            Request::Shutdown => return Err(fail(ErrorCode::Unsupported, "no power-off here")),
            Request::StoreStatus => Response::StoreStatus(store_report()),
            Request::StoreInit(init) if init.device == "vdb" => {
                Response::StoreStatus(store_report())
            }
            Request::StoreInit(_) => return Err(fail(ErrorCode::NotFound, "no such disk")),
            Request::HostGet => Response::Host(self.settings()),
            Request::HostSet(set) => {
                self.set(&set.key, &set.value)?;
                Response::Host(self.settings())
            }
            Request::Events(query) => Response::Events(page(query)),
            Request::AccessList => Response::Access(self.access.clone()),
            Request::AccessAdd(add) => {
                self.add(add.name.as_str(), add.role, add.key)?;
                Response::Access(self.access.clone())
            }
            Request::AccessRemove(remove) => {
                self.remove(remove.name.as_str())?;
                Response::Access(self.access.clone())
            }
            // Modules and VMs (1.1), networking (1.2), module inspect (1.3), groups and images
            // (1.4) are not modelled: these targets check the session (one answer per id, roles,
            // streams); the control planes have their own tests.
            Request::ModuleUpload(_)
            | Request::ModuleList
            | Request::ModuleRemove(_)
            | Request::VmCreate(_)
            | Request::VmList
            | Request::VmInspect(_)
            | Request::VmAct(_)
            | Request::VmLogs(_)
            | Request::VlanCreate(_)
            | Request::VlanList
            | Request::VlanDelete(_)
            | Request::RuleAdd(_)
            | Request::RuleList
            | Request::RuleDelete(_)
            | Request::NetStats(_)
            | Request::ModuleInspect(_)
            | Request::GroupCreate(_)
            | Request::GroupList
            | Request::GroupShow(_)
            | Request::GroupEdit(_)
            | Request::GroupDelete(_)
            | Request::ImageCreate(_)
            | Request::ImageList
            | Request::ImageShow(_)
            | Request::ImageDelete(_)
            | Request::ImageDeploy(_) => {
                return Err(fail(ErrorCode::Unsupported, "no VMs in the fuzz host"));
            }
            // The session answers these itself and never asks the host.
            Request::Ping | Request::WhoAmI | Request::Cancel(_) => {
                return Err(fail(ErrorCode::Internal, "the session answers this"));
            }
        })
    }

    fn status(&self) -> Status {
        Status {
            hostname: self.hostname.clone(),
            version: truncated("0.0.0-fuzz"),
            boot_id: [9; 16],
            uptime_ms: u64::MAX,
            hosted: true,
            timeline: BootTimeline {
                init_exec_ms: u32::MAX,
                mounts_ms: Some(1),
                link_up_ms: Some(2),
                address_ms: None,
                endpoint_ready_ms: Some(u32::MAX),
            },
            processes: 1,
            store: StoreMode::Disk,
            mgmt: MgmtLink {
                interface: truncated("eth0"),
                mac: [2, 0, 0, 0, 0, 1],
                address: None,
                gateway: Some([10, 0, 0, 1]),
                dhcp: true,
            },
            host_key: public_keys().0,
            host_key_persistent: true,
        }
    }

    fn settings(&self) -> HostSettings {
        HostSettings {
            hostname: self.hostname.clone(),
            entries: self.settings.clone(),
        }
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), ErrorReply> {
        if !valid_key_name(key) || value.is_empty() {
            return Err(fail(ErrorCode::InvalidArgument, "bad setting"));
        }
        if key == "hostname" {
            self.hostname = truncated(value);
        }
        let entry = (truncated(key), truncated(value));
        match self.settings.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => *slot = entry,
            None => {
                let full = || fail(ErrorCode::Conflict, "too many settings");
                self.settings.push(entry).map_err(|_| full())?;
                self.settings.sort_unstable();
            }
        }
        Ok(())
    }

    fn add(&mut self, name: &str, role: Role, key: PublicKey) -> Result<(), ErrorReply> {
        if !valid_key_name(name) {
            return Err(fail(ErrorCode::InvalidArgument, "bad key name"));
        }
        if self
            .access
            .entries
            .iter()
            .any(|e| e.name == name || e.key == key)
        {
            return Err(fail(ErrorCode::Conflict, "name or key already authorised"));
        }
        let entry = AccessEntry {
            name: truncated(name),
            role,
            key,
            source: KeySource::Store,
        };
        let full = |_| fail(ErrorCode::Conflict, "access list full");
        self.access.entries.push(entry).map_err(full)?;
        self.access
            .entries
            .sort_unstable_by(|a, b| a.name.cmp(&b.name));
        Ok(())
    }

    fn remove(&mut self, name: &str) -> Result<(), ErrorReply> {
        let i = self.access.entries.iter().position(|e| e.name == name);
        let i = i.ok_or_else(|| fail(ErrorCode::NotFound, "no such key"))?;
        if self.access.entries[i].source != KeySource::Store {
            return Err(fail(ErrorCode::Conflict, "only store keys can be removed"));
        }
        self.access.entries.remove(i);
        Ok(())
    }
}

impl Handler for Host {
    fn host_key(&self) -> Option<SecretKey> {
        self.key_ready.then_some(HOST_KEY)
    }

    fn server_hello(&self) -> ServerHello {
        server_hello()
    }


    fn identity(&self, key: &PublicKey) -> Option<Identity> {
        let entry = self.access.entries.iter().find(|e| e.key == *key)?;
        Some(Identity {
            name: entry.name.clone(),
            role: entry.role,
            key: entry.key,
            source: entry.source,
        })
    }

    fn denied(&mut self, _: &Identity, _: &Request) {
        self.denied += 1;
    }

    fn request(&mut self, _: &Identity, request: &Request) -> Answer {
        match request {
            Request::Events(query) if query.follow => Answer::Stream(Box::new(Ticker::new(query))),
            _ => Answer::Reply(self.answer(request).unwrap_or_else(Response::Error)),
        }
    }
}

/// The hello [`Host`] sends in handshake message 2.
pub fn server_hello() -> ServerHello {
    ServerHello {
        version: kaos_protocol::VERSION,
        hostname: truncated("fuzzhost"),
        key_persistent: true,
    }
}

fn fail(code: ErrorCode, message: &str) -> ErrorReply {
    ErrorReply::new(code, message)
}

fn store_report() -> StoreReport {
    let disk = |name: &str, state| DiskInfo {
        name: truncated(name),
        size_bytes: 1 << 30,
        state,
        detail: truncated(&"d".repeat(64)),
    };
    let mut disks = heapless::Vec::new();
    for (i, state) in [DiskState::InUse, DiskState::Blank, DiskState::Foreign]
        .into_iter()
        .enumerate()
    {
        let name = ["vda", "vdb", "vdc"][i];
        disks.push(disk(name, state)).expect("three disks fit");
    }
    StoreReport {
        mode: StoreMode::Disk,
        location: truncated("/dev/vda"),
        host_id: Some([3; 16]),
        degraded: Some(truncated(&"x".repeat(160))),
        ready_ms: Some(5),
        schema_version: 1,
        disks,
    }
}

/// A page of `query.limit` events (capped), each with a full-length message, so pages come
/// close to the frame limit.
fn page(query: &EventsQuery) -> EventPage {
    let first = query.after.map_or(0, |a| a.saturating_add(1));
    let n = usize::from(query.limit).min(EVENTS_PER_PAGE);
    let mut events = heapless::Vec::new();
    for seq in (first..).take(n) {
        let entry = EventEntry {
            seq,
            boot_id: [9; 16],
            uptime_ms: seq,
            kind: EventKind::SettingChanged,
            message: truncated(&"m".repeat(128)),
        };
        events.push(entry).expect("at most EVENTS_PER_PAGE events");
    }
    EventPage {
        events,
        more: usize::from(query.limit) > EVENTS_PER_PAGE,
    }
}

/// The stream of `events --follow`: `limit % 8` pages of one event, then the end, with a
/// pending poll between any two.
struct Ticker {
    left: u16,
    next: u64,
    pending: bool,
}

impl Ticker {
    fn new(query: &EventsQuery) -> Self {
        Self {
            left: query.limit % 8,
            next: query.after.unwrap_or(0),
            pending: false,
        }
    }
}

impl Stream for Ticker {
    fn poll(&mut self) -> StreamPoll {
        self.pending = !self.pending;
        if !self.pending {
            return StreamPoll::Pending;
        }
        let query = EventsQuery {
            after: Some(self.next),
            limit: 1,
            follow: true,
        };
        if self.left == 0 {
            let end = EventsQuery { limit: 0, ..query };
            return StreamPoll::Done(Response::Events(page(&end)));
        }
        self.left -= 1;
        self.next = self.next.saturating_add(1);
        StreamPoll::Item(Response::Events(page(&query)))
    }
}
