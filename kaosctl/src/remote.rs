//! Commands sent to a host.

use std::time::Duration;

use kaos_protocol::keys::PublicKey;
use kaos_protocol::{
    AccessAdd, AccessRemove, EventsQuery, HostSet, Request, Response, StoreInit, truncated,
    valid_key_name,
};
use kaosctl::config::{ConfigDir, ConfigError};
use kaosctl::connect::{Connected, Error, Selection, connect};
use kaosctl::view::{
    AccessView, EventView, HostView, StatusView, StoreView, access_table, event_row, events_header,
    events_table,
};
use kaosctl::{Client, ClientError};

use crate::args::{AccessCmd, Command, HostCmd, NewKey, Output, StoreCmd};
use crate::{emit, show};

/// Events printed without --limit.
const DEFAULT_EVENTS: usize = 100;
/// While following, a host silent this long is pinged; one silent for twice as long is lost.
const FOLLOW_IDLE: Duration = Duration::from_secs(30);

/// Connects as `selection` says and carries out `command`.
pub fn run(
    command: &Command,
    dir: &ConfigDir,
    selection: &Selection,
    output: Output,
) -> Result<(), Error> {
    let Connected {
        mut client,
        target,
        pinned_now,
    } = connect(dir, selection)?;
    if let Some(fingerprint) = pinned_now {
        eprintln!(
            "kaosctl: pinned host key {fingerprint} for {} ({})",
            target.endpoint,
            target.slot_name()
        );
        if !client.server().key_persistent {
            eprintln!(
                "kaosctl: note: {} has no store disk, so its key changes at its next boot \
                 (then `kaosctl context unpin` and verify the new key)",
                client.server().hostname
            );
        }
    }
    let c = &mut client;
    match command {
        Command::Status => match c.request(Request::Status)? {
            Response::Status(s) => show(output, &StatusView::from(&s), StatusView::table),
            other => Err(c.unexpected(&other).into()),
        },
        Command::Reboot => power(c, Request::Reboot, "rebooting", output),
        Command::Shutdown => power(c, Request::Shutdown, "shutting down", output),
        Command::Store(StoreCmd::Status) => store(c, Request::StoreStatus, output),
        Command::Store(StoreCmd::Init { device, force }) => {
            let init = StoreInit {
                device: bounded(device)?,
                force: *force,
            };
            store(c, Request::StoreInit(init), output)
        }
        Command::Host(HostCmd::Get) => host(c, Request::HostGet, output),
        Command::Host(HostCmd::Set { setting, value }) => {
            let set = HostSet {
                key: bounded(setting)?,
                value: bounded(value)?,
            };
            host(c, Request::HostSet(set), output)
        }
        Command::Events {
            after,
            limit,
            follow: false,
        } => events(c, *after, limit.unwrap_or(DEFAULT_EVENTS), output),
        Command::Events { after, limit, .. } => follow(c, *after, *limit, output),
        Command::Access(cmd) => access(c, cmd, output),
        Command::Module(cmd) => crate::vm_cmds::module(c, cmd, output),
        Command::Vm(cmd) => crate::vm_cmds::vm(c, cmd, output),
        Command::Net(cmd) => crate::net_cmds::net(c, cmd, output),
        Command::Group(cmd) => crate::group_cmds::group(c, cmd, output),
        Command::Image(cmd) => crate::image_cmds::image(c, cmd, output),
        Command::Key(_) | Command::Context(_) | Command::Completions { .. } => {
            unreachable!("local commands are dispatched before connecting")
        }
    }
}

/// An argument that must fit the protocol's bounded string.
pub(crate) fn bounded<const N: usize>(s: &str) -> Result<heapless::String<N>, ConfigError> {
    let b = truncated::<N>(s);
    if b.len() != s.len() {
        return Err(ConfigError::Usage(format!(
            "{s:?} is longer than {N} bytes"
        )));
    }
    Ok(b)
}

fn power(c: &mut Client, request: Request, verb: &str, output: Output) -> Result<(), Error> {
    match c.request(request)? {
        Response::Accepted => {
            let host = c.server().hostname.to_string();
            let view = serde_json::json!({ "host": host, "accepted": true, "action": verb });
            show(output, &view, |_| format!("{host}: {verb}\n"))
        }
        other => Err(c.unexpected(&other).into()),
    }
}

fn store(c: &mut Client, request: Request, output: Output) -> Result<(), Error> {
    match c.request(request)? {
        Response::StoreStatus(r) => show(output, &StoreView::from(&r), StoreView::table),
        other => Err(c.unexpected(&other).into()),
    }
}

fn host(c: &mut Client, request: Request, output: Output) -> Result<(), Error> {
    match c.request(request)? {
        Response::Host(h) => show(output, &HostView::from(&h), HostView::table),
        other => Err(c.unexpected(&other).into()),
    }
}

/// Pages of the event log, up to `limit` events.
fn events(c: &mut Client, after: Option<u64>, limit: usize, output: Output) -> Result<(), Error> {
    let mut events = Vec::new();
    let mut after = after;
    while events.len() < limit {
        let page =
            u16::try_from((limit - events.len()).min(kaos_protocol::EVENTS_PER_PAGE)).unwrap_or(1);
        let query = EventsQuery {
            after,
            limit: page,
            follow: false,
        };
        let p = match c.request(Request::Events(query))? {
            Response::Events(p) => p,
            other => return Err(c.unexpected(&other).into()),
        };
        after = p.events.last().map(|e| e.seq).or(after);
        events.extend(p.events.iter().map(EventView::from));
        if !p.more || p.events.is_empty() {
            break;
        }
    }
    show(output, &events, |e: &Vec<EventView>| events_table(e))
}

/// `events --follow`: every event after `after`, then new ones as they are recorded, until
/// `limit` events (then the stream is cancelled) or until interrupted. A silent host is pinged,
/// so a lost connection is noticed.
fn follow(
    c: &mut Client,
    after: Option<u64>,
    limit: Option<usize>,
    output: Output,
) -> Result<(), Error> {
    let query = EventsQuery {
        after,
        limit: u16::try_from(kaos_protocol::EVENTS_PER_PAGE).unwrap_or(u16::MAX),
        follow: true,
    };
    let stream = c.send(Request::Events(query))?;
    if output == Output::Table {
        emit(&events_header())?;
    }
    c.set_read_timeout(Some(FOLLOW_IDLE))?;
    let mut left = limit.unwrap_or(usize::MAX);
    let mut ping = None;
    while left > 0 {
        let frame = c.next_keepalive(&mut ping)?;
        match frame.response {
            Response::Events(page) if frame.id == stream => {
                for e in page.events.iter().take(left) {
                    let view = EventView::from(e);
                    emit(&match output {
                        Output::Table => event_row(&view),
                        Output::Json => crate::json_line(&view),
                    })?;
                    left -= 1;
                }
                if frame.last {
                    return Ok(());
                }
            }
            Response::Error(e) => {
                return Err(ClientError::Refused {
                    code: e.code,
                    message: e.message.to_string(),
                }
                .into());
            }
            other => return Err(c.unexpected(&other).into()),
        }
    }
    c.cancel(stream)?;
    Ok(())
}

fn access(c: &mut Client, cmd: &AccessCmd, output: Output) -> Result<(), Error> {
    let request = match cmd {
        AccessCmd::Whoami => {
            return match c.request(Request::WhoAmI)? {
                Response::Identity(i) => {
                    show(output, &AccessView::from(&i), AccessView::identity_table)
                }
                other => Err(c.unexpected(&other).into()),
            };
        }
        AccessCmd::List => Request::AccessList,
        AccessCmd::Add { name, role, key } => Request::AccessAdd(AccessAdd {
            name: key_name(name)?,
            role: (*role).into(),
            key: new_key(key)?,
        }),
        AccessCmd::Remove { name } => Request::AccessRemove(AccessRemove {
            name: key_name(name)?,
        }),
    };
    match c.request(request)? {
        Response::Access(list) => {
            let views: Vec<AccessView> = list.entries.iter().map(AccessView::from).collect();
            show(output, &views, |v: &Vec<AccessView>| access_table(v))
        }
        other => Err(c.unexpected(&other).into()),
    }
}

fn key_name(name: &str) -> Result<kaos_protocol::KeyName, ConfigError> {
    if !valid_key_name(name) {
        return Err(ConfigError::Usage(format!(
            "bad key name {name:?}: 1-32 of A-Z a-z 0-9 . _ -"
        )));
    }
    bounded(name)
}

/// The key of `--public-key`, or the first key line of `--key-file`.
fn new_key(key: &NewKey) -> Result<PublicKey, ConfigError> {
    if let Some(line) = &key.public_key {
        return PublicKey::parse_line(line)
            .map(|(k, _)| k)
            .map_err(|e| ConfigError::Usage(format!("--public-key: {e}")));
    }
    let path = key.key_file.as_deref().unwrap_or(std::path::Path::new(""));
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    let (n, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| !l.trim().is_empty() && !l.trim().starts_with('#'))
        .unwrap_or((0, ""));
    PublicKey::parse_line(line)
        .map(|(k, _)| k)
        .map_err(|e| ConfigError::Malformed {
            path: path.to_owned(),
            line: Some(n + 1),
            reason: format!("{e} (expected the `kaos-x25519 BASE64 NAME` line of a .pub file)"),
        })
}
