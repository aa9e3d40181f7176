use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::*;
use crate::client::{ClientHandshake, HostReply, Transport};
use kaos_protocol::handshake::{ClientPreamble, SERVER_PREAMBLE_LEN};
use kaos_protocol::{EventsQuery, KeySource, Role, Version, truncated};

/// A host with a fixed key, a table of authorised keys, and a record of refusals.
struct Fake {
    host: Option<SecretKey>,
    keys: HashMap<PublicKey, Role>,
    denied: Vec<String>,
    /// Items the next stream yields before it goes pending.
    feed: Arc<Mutex<Vec<Response>>>,
}

fn key(n: u8) -> SecretKey {
    SecretKey([n; 32])
}

impl Fake {
    fn new() -> Self {
        let mut keys = HashMap::new();
        keys.insert(key(1).public(), Role::Admin);
        keys.insert(key(2).public(), Role::Reader);
        Self {
            host: Some(key(100)),
            keys,
            denied: Vec::new(),
            feed: Arc::default(),
        }
    }
}

fn identity(key: &PublicKey, role: Role) -> Identity {
    Identity {
        name: truncated("k"),
        role,
        key: *key,
        source: KeySource::Store,
    }
}

struct Feed(Arc<Mutex<Vec<Response>>>);

impl Stream for Feed {
    fn poll(&mut self) -> StreamPoll {
        let mut feed = self.0.lock().expect("lock");
        if feed.is_empty() {
            StreamPoll::Pending
        } else {
            StreamPoll::Item(feed.remove(0))
        }
    }
}

impl Handler for Fake {
    fn host_key(&self) -> Option<SecretKey> {
        self.host.clone()
    }
    fn server_hello(&self) -> ServerHello {
        ServerHello {
            version: kaos_protocol::VERSION,
            hostname: truncated("h"),
            key_persistent: true,
        }
    }
    fn identity(&self, key: &PublicKey) -> Option<Identity> {
        self.keys.get(key).map(|&role| identity(key, role))
    }
    fn denied(&mut self, _: &Identity, request: &Request) {
        self.denied.push(request.name().to_owned());
    }
    fn request(&mut self, _: &Identity, request: &Request) -> Answer {
        match request {
            Request::Reboot => Answer::Reply(Response::Accepted),
            Request::Events(q) if q.follow => {
                Answer::Stream(Box::new(Feed(Arc::clone(&self.feed))))
            }
            _ => Answer::Reply(error(ErrorCode::Unsupported, "test")),
        }
    }
}

/// Feeds `bytes` to the session and returns what it sent.
fn feed(s: &mut Session, h: &mut Fake, bytes: &[u8]) -> Result<Vec<u8>, SessionError> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = s.receive(rest);
        assert!(n > 0, "session refused bytes");
        rest = &rest[n..];
        s.process(h, &mut out)?;
    }
    Ok(out)
}

/// A client and a session after a complete, accepted handshake.
struct Pair {
    session: Session,
    host: Fake,
    transport: Transport,
    welcome: ServerFrame,
    /// Every byte the client sent, in order.
    sent: Vec<u8>,
    host_key: PublicKey,
}

fn handshake(client: &SecretKey, mut host: Fake) -> Result<Pair, SessionError> {
    let mut session = Session::new(Admission::PROCEED, "test");
    let (hs, first) = ClientHandshake::start(client).expect("start");
    let mut sent = first.clone();
    let reply = feed(&mut session, &mut host, &first)?;
    let mut hs = hs;
    let (HostReply::Hello { host_key, .. }, used) =
        hs.read_reply(&reply).expect("reply").expect("complete")
    else {
        panic!("refused");
    };
    assert_eq!(used, reply.len());
    let (mut transport, msg3) = hs.finish(&ClientHello::new("test")).expect("finish");
    sent.extend_from_slice(&msg3);
    let out = feed(&mut session, &mut host, &msg3)?;
    let (welcome, used) = transport.open(&out).expect("opens").expect("complete");
    assert_eq!(used, out.len());
    Ok(Pair {
        session,
        host,
        transport,
        welcome,
        sent,
        host_key,
    })
}

impl Pair {
    fn ask(&mut self, id: u32, request: Request) -> Result<Vec<ServerFrame>, SessionError> {
        let mut bytes = Vec::new();
        self.transport
            .seal(&ClientFrame { id, request }, &mut bytes)
            .expect("seal");
        self.sent.extend_from_slice(&bytes);
        let out = feed(&mut self.session, &mut self.host, &bytes)?;
        Ok(self.open_all(&out))
    }

    fn open_all(&mut self, mut out: &[u8]) -> Vec<ServerFrame> {
        let mut frames = Vec::new();
        while let Some((f, used)) = self.transport.open(out).expect("valid reply") {
            frames.push(f);
            out = &out[used..];
        }
        assert!(out.is_empty(), "partial reply left");
        frames
    }

    fn poll_streams(&mut self) -> Vec<ServerFrame> {
        let mut out = Vec::new();
        self.session.poll_streams(&mut self.host, &mut out);
        self.open_all(&out)
    }
}

#[test]
fn an_authorised_key_is_welcomed_with_its_role() {
    let pair = handshake(&key(1), Fake::new()).expect("handshake");
    assert_eq!(
        pair.host_key,
        key(100).public(),
        "the client learns the host key"
    );
    assert_eq!(pair.welcome.id, 0);
    assert_eq!(
        pair.welcome.response,
        Response::Identity(identity(&key(1).public(), Role::Admin))
    );
    assert!(pair.session.established());
}

#[test]
fn an_unknown_key_is_refused_after_the_handshake_and_the_connection_closes() {
    let mut pair = handshake(&key(3), Fake::new()).expect("handshake completes");
    let Response::Error(e) = &pair.welcome.response else {
        panic!("welcomed an unknown key: {:?}", pair.welcome);
    };
    assert_eq!(e.code, ErrorCode::Unauthorized);
    assert!(pair.session.closing());
    assert_eq!(pair.session.take_outcome(), Some(AuthOutcome::Failed));
    // Anything it sends afterwards is ignored, never answered.
    let mut bytes = Vec::new();
    pair.transport
        .seal(
            &ClientFrame {
                id: 1,
                request: Request::Status,
            },
            &mut bytes,
        )
        .expect("seal");
    assert_eq!(
        feed(&mut pair.session, &mut pair.host, &bytes),
        Ok(Vec::new())
    );
}

#[test]
fn roles_are_enforced_per_request_and_refusals_recorded() {
    let mut reader = handshake(&key(2), Fake::new()).expect("handshake");
    let replies = reader.ask(7, Request::Reboot).expect("answered");
    let [
        ServerFrame {
            id: 7,
            last: true,
            response: Response::Error(e),
        },
    ] = &replies[..]
    else {
        panic!("reader rebooted: {replies:?}");
    };
    assert_eq!(e.code, ErrorCode::PermissionDenied);
    assert!(e.message.contains("operator"), "{}", e.message);
    assert_eq!(reader.host.denied, ["reboot"]);
    assert!(!reader.session.closing(), "a refusal is not fatal");
    let replies = reader.ask(8, Request::Ping).expect("answered");
    assert_eq!(replies[0].response, Response::Pong);

    let mut admin = handshake(&key(1), Fake::new()).expect("handshake");
    let replies = admin.ask(9, Request::Reboot).expect("answered");
    assert_eq!(replies[0].response, Response::Accepted);
    assert!(admin.session.closing(), "an accepted reboot closes");
}

#[test]
fn a_withdrawn_key_loses_its_session_at_the_next_request() {
    let mut pair = handshake(&key(1), Fake::new()).expect("handshake");
    pair.host.keys.clear();
    let replies = pair.ask(1, Request::Status).expect("answered");
    let Response::Error(e) = &replies[0].response else {
        panic!("served a withdrawn key");
    };
    assert_eq!(e.code, ErrorCode::Unauthorized);
    assert!(pair.session.closing());
}

#[test]
fn a_role_change_applies_at_the_next_request() {
    let mut pair = handshake(&key(1), Fake::new()).expect("handshake");
    pair.host.keys.insert(key(1).public(), Role::Reader);
    let replies = pair.ask(1, Request::WhoAmI).expect("answered");
    assert_eq!(
        replies[0].response,
        Response::Identity(identity(&key(1).public(), Role::Reader))
    );
}

#[test]
fn a_major_version_mismatch_is_answered_in_clear_and_closes() {
    let mut host = Fake::new();
    let mut session = Session::new(Admission::PROCEED, "test");
    let other = ClientPreamble {
        version: Version { major: 9, minor: 0 },
    };
    let (mut hs, first) = ClientHandshake::start_with(&key(1), other).expect("start");
    let out = feed(&mut session, &mut host, &first).expect("no error");
    let (reply, _) = hs.read_reply(&out).expect("reply").expect("complete");
    let HostReply::Refused(preamble) = reply else {
        panic!("handshake went on");
    };
    assert_eq!(preamble.verdict, Verdict::VersionMismatch);
    assert_eq!(preamble.version, kaos_protocol::VERSION);
    assert!(session.closing());
}

#[test]
fn a_refused_admission_is_told_before_any_cryptography() {
    let mut host = Fake::new();
    let admission = Admission {
        verdict: Verdict::BackingOff,
        retry_after_ms: 2000,
    };
    let mut session = Session::new(admission, "test");
    let (mut hs, first) = ClientHandshake::start(&key(1)).expect("start");
    let out = feed(&mut session, &mut host, &first).expect("no error");
    assert_eq!(
        out.len(),
        SERVER_PREAMBLE_LEN,
        "no handshake message follows"
    );
    let (HostReply::Refused(p), _) = hs.read_reply(&out).expect("r").expect("c") else {
        panic!("proceeded");
    };
    assert_eq!((p.verdict, p.retry_after_ms), (Verdict::BackingOff, 2000));
}

#[test]
fn the_handshake_waits_for_the_host_key() {
    let mut host = Fake::new();
    host.host = None;
    let mut session = Session::new(Admission::PROCEED, "test");
    let (_, first) = ClientHandshake::start(&key(1)).expect("start");
    assert_eq!(feed(&mut session, &mut host, &first), Ok(Vec::new()));
    host.host = Some(key(100));
    let mut out = Vec::new();
    session.process(&mut host, &mut out).expect("proceeds");
    assert!(
        out.len() > SERVER_PREAMBLE_LEN,
        "message 2 sent once the key exists"
    );
}

#[test]
fn bad_magic_and_oversize_frames_end_the_session() {
    let mut host = Fake::new();
    let mut s = Session::new(Admission::PROCEED, "test");
    assert_eq!(
        feed(&mut s, &mut host, b"GET / HTTP/1.1\r\n"),
        Err(SessionError::BadMagic)
    );
    let mut s = Session::new(Admission::PROCEED, "test");
    let mut bytes = ClientPreamble::CURRENT.encode().to_vec();
    bytes.extend_from_slice(&[0xff; 4]);
    assert_eq!(
        feed(&mut s, &mut host, &bytes),
        Err(SessionError::Frame(FrameError::Oversize(u32::MAX)))
    );
}

#[test]
fn a_replayed_handshake_does_not_authenticate() {
    let pair = handshake(&key(1), Fake::new()).expect("handshake");
    // An eavesdropper replays the whole client side of that handshake on a new connection:
    // message 3 was made for the host's previous ephemeral key, so it fails.
    let mut host = Fake::new();
    let mut session = Session::new(Admission::PROCEED, "replay");
    let result = feed(&mut session, &mut host, &pair.sent);
    assert_eq!(
        result,
        Err(SessionError::Handshake("message 3 did not authenticate"))
    );
    assert_eq!(session.take_outcome(), Some(AuthOutcome::Failed));
}

#[test]
fn a_replayed_request_frame_is_rejected() {
    let mut pair = handshake(&key(1), Fake::new()).expect("handshake");
    let mut bytes = Vec::new();
    pair.transport
        .seal(
            &ClientFrame {
                id: 1,
                request: Request::Ping,
            },
            &mut bytes,
        )
        .expect("seal");
    let out = feed(&mut pair.session, &mut pair.host, &bytes).expect("first copy answered");
    assert_eq!(pair.open_all(&out)[0].response, Response::Pong);
    assert_eq!(
        feed(&mut pair.session, &mut pair.host, &bytes),
        Err(SessionError::Decrypt),
        "the same frame again has a stale nonce"
    );
}

#[test]
fn a_tampered_frame_is_rejected() {
    let mut pair = handshake(&key(1), Fake::new()).expect("handshake");
    let mut bytes = Vec::new();
    pair.transport
        .seal(
            &ClientFrame {
                id: 1,
                request: Request::Ping,
            },
            &mut bytes,
        )
        .expect("seal");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert_eq!(
        feed(&mut pair.session, &mut pair.host, &bytes),
        Err(SessionError::Decrypt)
    );
}

#[test]
fn byte_by_byte_delivery_works() {
    let mut host = Fake::new();
    let mut session = Session::new(Admission::PROCEED, "test");
    let (mut hs, first) = ClientHandshake::start(&key(1)).expect("start");
    let mut out = Vec::new();
    for b in &first {
        assert_eq!(session.receive(std::slice::from_ref(b)), 1);
        session.process(&mut host, &mut out).expect("ok");
    }
    assert!(hs.read_reply(&out).expect("reply").is_some());
}

#[test]
fn streams_yield_until_cancelled_and_are_bounded() {
    let mut pair = handshake(&key(2), Fake::new()).expect("handshake");
    let follow = Request::Events(EventsQuery {
        after: None,
        limit: 10,
        follow: true,
    });
    assert_eq!(
        pair.ask(5, follow.clone()).expect("opened"),
        [],
        "no reply yet"
    );
    pair.host.feed.lock().expect("lock").push(Response::Pong);
    let frames = pair.poll_streams();
    assert_eq!(
        frames,
        [ServerFrame {
            id: 5,
            last: false,
            response: Response::Pong
        }]
    );
    assert_eq!(pair.poll_streams(), [], "pending: nothing sent");
    // Requests still work beside the stream.
    assert_eq!(
        pair.ask(6, Request::Ping).expect("ok")[0].response,
        Response::Pong
    );
    let frames = pair.ask(7, Request::Cancel(5)).expect("ok");
    let [end, ack] = &frames[..] else {
        panic!("{frames:?}");
    };
    assert_eq!((end.id, end.last), (5, true));
    assert!(matches!(&end.response, Response::Error(e) if e.code == ErrorCode::Cancelled));
    assert_eq!((ack.id, &ack.response), (7, &Response::Accepted));
    let again = pair.ask(8, Request::Cancel(5)).expect("ok");
    assert!(matches!(&again[0].response, Response::Error(e) if e.code == ErrorCode::NotFound));

    for id in 10..10 + u32::try_from(MAX_STREAMS).expect("small") {
        assert_eq!(pair.ask(id, follow.clone()).expect("opened"), []);
    }
    let refused = pair.ask(99, follow).expect("answered");
    assert!(matches!(&refused[0].response, Response::Error(e) if e.code == ErrorCode::Busy));
    assert_eq!(pair.session.streams(), MAX_STREAMS);
}

#[test]
fn a_request_reusing_an_open_streams_id_ends_the_session() {
    let mut pair = handshake(&key(1), Fake::new()).expect("handshake");
    let follow = Request::Events(EventsQuery {
        after: None,
        limit: 10,
        follow: true,
    });
    assert_eq!(pair.ask(5, follow).expect("opened"), []);
    assert_eq!(pair.ask(5, Request::Ping), Err(SessionError::IdInUse(5)));
}

#[test]
fn a_malformed_hello_counts_as_a_failed_authentication() {
    let mut host = Fake::new();
    let mut session = Session::new(Admission::PROCEED, "test");
    let (mut hs, first) = ClientHandshake::start(&key(1)).expect("start");
    let reply = feed(&mut session, &mut host, &first).expect("message 2");
    hs.read_reply(&reply).expect("reply").expect("complete");
    // A ClientHello whose name is not UTF-8: the Noise layer is fine, the payload is not.
    let (_, msg3) = hs.finish_with_payload(&[1, 0xff]).expect("finish");
    assert_eq!(
        feed(&mut session, &mut host, &msg3),
        Err(SessionError::Frame(FrameError::Malformed))
    );
    assert_eq!(session.take_outcome(), Some(AuthOutcome::Failed));
}
