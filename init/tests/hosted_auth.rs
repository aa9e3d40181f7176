//! Tier 2: authentication, roles and the endpoint's defences, against `kattach --hosted` over
//! real kernel TCP, as an attacker or a misconfigured client would meet them.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use kaos_net::client::{ClientHandshake, HostReply, Transport};
use kaos_protocol::handshake::{ClientHello, SERVER_PREAMBLE_LEN, ServerPreamble, Verdict};
use kaos_protocol::keys::SecretKey;
use kaos_protocol::{
    AccessAdd, AccessRemove, ClientFrame, ErrorCode, EventKind, EventsQuery, HostSet, Request,
    Response, Role, truncated,
};
use kaos_qemu_tests::hosted::{HostedHost, read};
use kaos_qemu_tests::{keys, netns, skip};
use kaosctl::{Client, ClientError};

const KATTACH: &str = env!("CARGO_BIN_EXE_kattach");
const READY: Duration = Duration::from_secs(10);

fn launch(test: &str, hostname: &str, extra: &[&str]) -> Option<HostedHost> {
    if let Some(reason) = netns::unavailable() {
        skip(test, &reason);
        return None;
    }
    let host = HostedHost::launch_with(Path::new(KATTACH), hostname, extra).expect("launch");
    drop(host.wait_ready(READY).expect("ready"));
    Some(host)
}

fn connect(host: &HostedHost, key: &SecretKey) -> Result<Client, ClientError> {
    host.client_with(&keys::options(key))
        .map_err(|e| match e.downcast::<ClientError>() {
            Ok(e) => e,
            Err(e) => panic!("not a client error: {e}"),
        })
}

fn events(client: &mut Client, kind: EventKind) -> Vec<String> {
    let query = Request::Events(EventsQuery {
        after: None,
        limit: 32,
        follow: false,
    });
    let Response::Events(page) = client.request(query).expect("events") else {
        panic!("not events");
    };
    page.events
        .iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.message.to_string())
        .collect()
}

fn refused_code(result: Result<Response, ClientError>) -> ErrorCode {
    match result {
        Err(ClientError::Refused { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn an_unknown_key_is_refused_and_recorded() {
    let Some(host) = launch("unknown_key", "auth-1", &[]) else {
        return;
    };
    let stranger = keys::generate();
    let fingerprint = stranger.public().fingerprint().to_string();
    match connect(&host, &stranger) {
        Err(ClientError::Unauthorized(message)) => {
            assert!(message.contains(&fingerprint), "{message}");
            assert!(message.contains("auth-1"), "{message}");
        }
        other => panic!("a stranger got in: {other:?}"),
    }
    // The refusal is an event an admin can read (after the stranger's back-off).
    let mut admin = host
        .client()
        .expect("admin connects (retrying the back-off)");
    let denied = events(&mut admin, EventKind::AccessDenied);
    assert!(
        denied.iter().any(|m| m.contains(&fingerprint)),
        "events: {denied:?}"
    );
}

#[test]
fn a_reader_cannot_mutate_and_an_operator_cannot_administer() {
    let reader = keys::generate();
    let operator = keys::generate();
    let reader_arg = keys::authorize_arg(&reader.public(), Role::Reader);
    let operator_arg = keys::authorize_arg(&operator.public(), Role::Operator);
    let Some(host) = launch(
        "roles",
        "auth-2",
        &["--authorize", &reader_arg, "--authorize", &operator_arg],
    ) else {
        return;
    };
    let mut r = connect(&host, &reader).expect("reader connects");
    assert_eq!(r.identity().role, Role::Reader);
    assert!(matches!(
        r.request(Request::Status),
        Ok(Response::Status(_))
    ));
    for mutation in [
        Request::Reboot,
        Request::Shutdown,
        Request::HostSet(HostSet {
            key: truncated("hostname"),
            value: truncated("owned"),
        }),
        Request::AccessList,
    ] {
        assert_eq!(
            refused_code(r.request(mutation)),
            ErrorCode::PermissionDenied
        );
    }
    let mut o = connect(&host, &operator).expect("operator connects");
    let set = Request::HostSet(HostSet {
        key: truncated("hostname"),
        value: truncated("auth-2b"),
    });
    assert!(matches!(o.request(set), Ok(Response::Host(_))));
    let add = Request::AccessAdd(AccessAdd {
        name: truncated("sneaky"),
        role: Role::Admin,
        key: operator.public(),
    });
    assert_eq!(refused_code(o.request(add)), ErrorCode::PermissionDenied);
    // The host is still up, its name was changed only by the operator, and every refusal
    // was recorded.
    let mut admin = host.client().expect("admin");
    let Response::Status(s) = admin.request(Request::Status).expect("status") else {
        panic!("not a status");
    };
    assert_eq!(s.hostname.as_str(), "auth-2b");
    let denied = events(&mut admin, EventKind::AccessDenied);
    assert_eq!(denied.len(), 5, "{denied:?}");
    // cmdline-1 is the harness's admin key.
    assert!(
        denied[0].contains("reader key cmdline-2 may not reboot"),
        "{denied:?}"
    );
}

#[test]
fn keys_added_at_run_time_work_until_withdrawn() {
    let Some(host) = launch("access_add_remove", "auth-3", &[]) else {
        return;
    };
    let mut admin = host.client().expect("admin");
    let ci = keys::generate();
    let add = Request::AccessAdd(AccessAdd {
        name: truncated("ci"),
        role: Role::Operator,
        key: ci.public(),
    });
    let Response::Access(list) = admin.request(add.clone()).expect("added") else {
        panic!("not an access list");
    };
    assert!(list.entries.iter().any(|e| e.name.as_str() == "ci"));
    assert_eq!(refused_code(admin.request(add)), ErrorCode::Conflict);

    let mut c = connect(&host, &ci).expect("the new key connects");
    assert_eq!(
        (c.identity().name.as_str(), c.identity().role),
        ("ci", Role::Operator)
    );
    assert!(matches!(c.request(Request::Ping), Ok(Response::Pong)));

    let cmdline_admin = Request::AccessRemove(AccessRemove {
        name: truncated("cmdline-1"),
    });
    assert_eq!(
        refused_code(admin.request(cmdline_admin)),
        ErrorCode::Conflict,
        "command-line keys cannot be removed at run time"
    );
    let remove = Request::AccessRemove(AccessRemove {
        name: truncated("ci"),
    });
    assert!(matches!(admin.request(remove), Ok(Response::Access(_))));
    // Its open session ends at its next request, and it cannot come back.
    match c.request(Request::Ping) {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, ErrorCode::Unauthorized),
        other => panic!("a withdrawn key was served: {other:?}"),
    }
    assert!(matches!(
        connect(&host, &ci),
        Err(ClientError::Unauthorized(_))
    ));
    assert_eq!(events(&mut admin, EventKind::AccessChanged).len(), 2);
}

/// A raw connection speaking the protocol by hand, recording every byte it sends.
struct Raw {
    stream: TcpStream,
    sent: Vec<u8>,
    rx: Vec<u8>,
    /// Bytes of the first flight (preamble and message 1) and of message 3 in `sent`.
    flights: (usize, usize),
}

impl Raw {
    fn connect(host: &HostedHost) -> Self {
        Self {
            stream: host.raw().expect("connect"),
            sent: Vec::new(),
            rx: Vec::new(),
            flights: (0, 0),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
        self.sent.extend_from_slice(bytes);
    }

    /// Reads until `parse` finds something, or the host closes (None).
    fn read_until<T>(&mut self, mut parse: impl FnMut(&[u8]) -> Option<(T, usize)>) -> Option<T> {
        loop {
            if let Some((value, used)) = parse(&self.rx) {
                self.rx.drain(..used);
                return Some(value);
            }
            let mut buf = [0u8; 4096];
            match read(&mut self.stream, &mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.rx.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// A complete handshake with `key`; returns the transport after the welcome.
    fn handshake(&mut self, key: &SecretKey) -> Transport {
        let (mut hs, first) = ClientHandshake::start(key).expect("start");
        self.send(&first);
        let reply = self
            .read_until(|b| hs.read_reply(b).expect("valid reply"))
            .expect("message 2");
        assert!(matches!(reply, HostReply::Hello { .. }), "{reply:?}");
        let (mut transport, msg3) = hs.finish(&ClientHello::new("raw")).expect("finish");
        self.send(&msg3);
        self.flights = (first.len(), msg3.len());
        let welcome = self
            .read_until(|b| transport.open(b).expect("valid welcome"))
            .expect("welcome");
        assert!(matches!(welcome.response, Response::Identity(_)));
        transport
    }

    /// Reads until the host closes the connection (EOF or reset); false if it stays open
    /// for 5 s. What arrived meanwhile is kept in `rx`.
    fn closed(&mut self) -> bool {
        self.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        loop {
            let mut buf = [0u8; 4096];
            match read(&mut self.stream, &mut buf) {
                Ok(0) => return true,
                Ok(n) => self.rx.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

#[test]
fn replayed_handshakes_and_frames_are_rejected() {
    let Some(host) = launch("replay", "auth-4", &[]) else {
        return;
    };
    // An eavesdropper records a whole session of the admin's...
    let mut original = Raw::connect(&host);
    let mut transport = original.handshake(keys::admin());
    let mut ping = Vec::new();
    transport
        .seal(
            &ClientFrame {
                id: 1,
                request: Request::Ping,
            },
            &mut ping,
        )
        .expect("seal");
    original.send(&ping);
    let pong = original
        .read_until(|b| transport.open(b).expect("valid"))
        .expect("pong");
    assert_eq!(pong.response, Response::Pong);

    // ...and replays a frame inside it: the nonce is stale, the host drops the connection.
    original.stream.write_all(&ping).expect("replay frame");
    assert!(
        original.closed(),
        "the connection survived a replayed frame"
    );
    assert!(original.rx.is_empty(), "the replayed frame was answered");

    // ...and replays the client's handshake on a new connection: the host answers with a new
    // ephemeral key, so the recorded message 3 does not authenticate.
    let (first, third) = original.flights;
    let mut replay = Raw::connect(&host);
    replay.send(&original.sent[..first]);
    let msg2 = replay
        .read_until(|b| {
            let rest = b.get(SERVER_PREAMBLE_LEN..)?;
            let (body, used) = kaos_protocol::split_frame(rest).ok()??;
            Some((body.to_vec(), SERVER_PREAMBLE_LEN + used))
        })
        .expect("message 2");
    assert!(msg2.len() > 32);
    replay.send(&original.sent[first..first + third]);
    assert!(replay.closed(), "a replayed message 3 kept the connection");
    assert!(replay.rx.is_empty(), "a replayed handshake got a welcome");
    assert!(
        host.log().contains("message 3 did not authenticate"),
        "{}",
        host.log()
    );
    // The host goes on serving (after the back-off the failure earned this address).
    let mut admin = host.client().expect("admin");
    assert!(matches!(admin.request(Request::Ping), Ok(Response::Pong)));
}

/// The server preamble of a fresh connection (sending a valid first flight).
fn verdict(host: &HostedHost) -> ServerPreamble {
    let mut raw = Raw::connect(host);
    let (_, first) = ClientHandshake::start(&keys::generate()).expect("start");
    raw.send(&first);
    raw.read_until(|b| {
        let p = b.first_chunk::<SERVER_PREAMBLE_LEN>()?;
        Some((
            ServerPreamble::decode(p).expect("preamble"),
            SERVER_PREAMBLE_LEN,
        ))
    })
    .expect("a preamble")
}

#[test]
fn failed_authentication_backs_off_and_handshakes_are_rate_limited() {
    let Some(host) = launch("defences", "auth-5", &[]) else {
        return;
    };
    // One failure: this address must wait about a second before the next handshake.
    assert!(matches!(
        connect(&host, &keys::generate()),
        Err(ClientError::Unauthorized(_))
    ));
    let p = verdict(&host);
    assert_eq!(p.verdict, Verdict::BackingOff);
    assert!(
        (1..=1000).contains(&p.retry_after_ms),
        "retry after {} ms",
        p.retry_after_ms
    );
    // A client that honours the delay gets in (kaosctl retries within its timeout).
    let started = Instant::now();
    drop(host.client().expect("admin after the back-off"));
    assert!(started.elapsed() < Duration::from_secs(3));

    // A flood of handshakes from one address meets the rate limit (burst 128, 32/s).
    let mut verdicts = Vec::new();
    for _ in 0..200 {
        verdicts.push(verdict(&host).verdict);
        if verdicts.last() == Some(&Verdict::RateLimited) {
            break;
        }
    }
    let proceeded = verdicts.iter().filter(|v| **v == Verdict::Proceed).count();
    assert_eq!(verdicts.last(), Some(&Verdict::RateLimited), "{verdicts:?}");
    assert!(
        proceeded >= 100,
        "limited after only {proceeded} handshakes"
    );
}

#[test]
fn a_stalled_handshake_is_dropped() {
    let Some(host) = launch("handshake_timeout", "auth-6", &[]) else {
        return;
    };
    let mut raw = Raw::connect(&host);
    raw.send(&kaos_protocol::handshake::ClientPreamble::CURRENT.encode());
    raw.stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let result = read(&mut raw.stream, &mut buf);
    let waited = started.elapsed();
    // The host's log says why it closed (once seen: a close after 2.3 s, under load).
    assert!(
        matches!(result, Ok(0) | Err(_)),
        "a stalled handshake got {result:?}; the host's log:\n{}",
        host.log()
    );
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(15)).contains(&waited),
        "dropped after {waited:?} ({result:?}); the host's log:\n{}",
        host.log()
    );
}

#[test]
fn followed_events_stream_until_cancelled() {
    let Some(host) = launch("follow", "auth-7", &[]) else {
        return;
    };
    let mut watcher = host.client().expect("watcher");
    let follow = Request::Events(EventsQuery {
        after: None,
        limit: 32,
        follow: true,
    });
    let id = watcher.send(follow).expect("follow");
    // The backlog first (at least the boot event).
    let first = watcher.next_frame().expect("backlog");
    assert_eq!((first.id, first.last), (id, false));
    let Response::Events(backlog) = first.response else {
        panic!("not events");
    };
    let last_seq = backlog.events.last().expect("boot event").seq;
    // A change made by someone else arrives on the stream.
    let mut admin = host.client().expect("admin");
    let set = Request::HostSet(HostSet {
        key: truncated("hostname"),
        value: truncated("followed"),
    });
    admin.request(set).expect("set");
    let frame = watcher.next_frame().expect("streamed event");
    assert_eq!((frame.id, frame.last), (id, false));
    let Response::Events(page) = frame.response else {
        panic!("not events");
    };
    let event = page.events.first().expect("one event");
    assert!(event.seq > last_seq);
    assert_eq!(event.kind, EventKind::SettingChanged);
    assert!(event.message.contains("followed"), "{}", event.message);
    // Cancel: the stream ends with `Cancelled`, the cancel itself is accepted, and the
    // session goes on.
    let cancel = watcher.cancel(id).expect("cancel");
    let end = watcher.next_frame().expect("end of stream");
    assert_eq!((end.id, end.last), (id, true));
    assert!(matches!(end.response, Response::Error(e) if e.code == ErrorCode::Cancelled));
    let ack = watcher.next_frame().expect("cancel answered");
    assert_eq!((ack.id, ack.response), (cancel, Response::Accepted));
    assert!(matches!(watcher.request(Request::Ping), Ok(Response::Pong)));
}
