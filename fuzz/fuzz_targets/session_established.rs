//! An established session, driven by its authorised client: requests of every kind, stream
//! polls, cancels, forged and replayed frames. The harness completes a real handshake with
//! `kaos_net::client`, then encrypts each plaintext request of the script (see
//! `kaos_fuzz::script`), so the fuzzer reaches request decoding and dispatch behind the
//! encryption.
//!
//! Beside "never panics", it checks the session against a model of what it must do: every honest
//! request is answered once under its id (or opens a stream), roles are enforced, streams match
//! the open set and end once, a forged or replayed frame is never answered, and everything the
//! host sends opens for the client.
#![no_main]

use kaos_fuzz::feed::{deliver, poll};
use kaos_fuzz::host::{CLIENT_KEY, Host, public_keys};
use kaos_fuzz::script::{Script, Step};
use kaos_net::client::{ClientHandshake, HostReply, Transport};
use kaos_net::session::{MAX_STREAMS, SessionError};
use kaos_net::{Admission, Handler, Session};
use kaos_protocol::handshake::ClientHello;
use kaos_protocol::keys::PublicKey;
use kaos_protocol::{ClientFrame, ErrorCode, Request, Response, Role, ServerFrame, decode_message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let script = Script::parse(data);
    let mut conn = Conn::establish(script.role);
    for step in script {
        if !conn.step(step) {
            break;
        }
        if !conn.poll() {
            break;
        }
    }
});

/// A session, its host, and the client's view of it.
struct Conn {
    session: Session,
    host: Host,
    transport: Transport,
    client: PublicKey,
    /// Streams the client has open, by request id.
    open: Vec<u32>,
    /// A forged frame left the session waiting for bytes that never come: nothing that follows
    /// can be answered.
    desynced: bool,
}

impl Conn {
    fn establish(role: Role) -> Self {
        let mut host = Host::new(role);
        let mut session = Session::new(Admission::PROCEED, "fuzz");
        let (mut hs, first) = ClientHandshake::start(&CLIENT_KEY).expect("handshake starts");
        let mut out = Vec::new();
        deliver(&mut session, &mut host, &first, 0, &mut out).expect("first flight taken");
        let reply = hs
            .read_reply(&out)
            .expect("message 2 reads")
            .expect("message 2 whole");
        let (HostReply::Hello { host_key, .. }, used) = reply else {
            panic!("refused")
        };
        assert_eq!((host_key, used), (public_keys().0, out.len()));
        let (mut transport, msg3) = hs.finish(&ClientHello::new("fuzz")).expect("message 3");
        out.clear();
        deliver(&mut session, &mut host, &msg3, 0, &mut out).expect("message 3 taken");
        let client = public_keys().1;
        let welcome = open_all(&mut transport, &out);
        let expected = Response::Identity(host.identity(&client).expect("authorised"));
        assert_eq!(
            welcome,
            [ServerFrame {
                id: 0,
                last: true,
                response: expected
            }]
        );
        Self {
            session,
            host,
            transport,
            client,
            open: Vec::new(),
            desynced: false,
        }
    }

    /// Runs one step; false once the connection is over.
    fn step(&mut self, step: Step<'_>) -> bool {
        let (body, piece) = match step {
            Step::Poll => return true,
            Step::Send { body, piece }
            | Step::Tamper { body, piece, .. }
            | Step::Replay { body, piece } => (body, usize::from(piece)),
        };
        // Only what decodes can be sealed by the client; request_decode covers the rest.
        let Ok(frame) = decode_message::<ClientFrame>(body) else {
            return true;
        };
        let mut bytes = Vec::new();
        self.transport
            .seal(&frame, &mut bytes)
            .expect("a decoded frame seals");
        if let Step::Tamper { at, mask, .. } = step {
            let i = usize::from(at) % bytes.len();
            bytes[i] ^= mask;
            return self.unanswered(&bytes, piece);
        }
        if self.desynced {
            return self.unanswered(&bytes, piece);
        }
        if !self.send(&frame, &bytes, piece) {
            return false;
        }
        if let Step::Replay { .. } = step {
            let mut out = Vec::new();
            let result = deliver(&mut self.session, &mut self.host, &bytes, piece, &mut out);
            assert_eq!(
                result,
                Err(SessionError::Decrypt),
                "a replayed frame was taken"
            );
            assert!(out.is_empty(), "a replayed frame was answered");
            return false;
        }
        true
    }

    /// Delivers bytes that must never be answered (forged, or after a forged frame).
    fn unanswered(&mut self, bytes: &[u8], piece: usize) -> bool {
        let mut out = Vec::new();
        let result = deliver(&mut self.session, &mut self.host, bytes, piece, &mut out);
        assert!(out.is_empty(), "answered a forged frame: {result:?}");
        self.desynced = true;
        result.is_ok()
    }

    /// Sends an honest request and checks the answer against the model.
    fn send(&mut self, frame: &ClientFrame, bytes: &[u8], piece: usize) -> bool {
        let who = self.host.identity(&self.client);
        let mut out = Vec::new();
        let result = deliver(&mut self.session, &mut self.host, bytes, piece, &mut out);
        if self.open.contains(&frame.id) {
            // Reusing an open stream's id would make its answer indistinguishable from the
            // stream's frames: the session ends instead.
            assert_eq!(result, Err(SessionError::IdInUse(frame.id)), "{frame:?}");
            assert!(out.is_empty(), "answered a request reusing a stream id");
            return false;
        }
        result.unwrap_or_else(|e| panic!("an honest request {frame:?} failed: {e}"));
        let replies = open_all(&mut self.transport, &out);
        let id = frame.id;
        let Some(who) = who else {
            // The key was withdrawn by an earlier request: refused, and the connection closes.
            assert!(self.session.closing(), "a withdrawn key kept its session");
            assert!(
                matches!(&replies[..], [r] if r.id == id && is_error(r, ErrorCode::Unauthorized))
            );
            return false;
        };
        if who.role < frame.request.required_role() && !matches!(frame.request, Request::Cancel(_))
        {
            let [reply] = &replies[..] else {
                panic!("{replies:?}")
            };
            assert!(
                reply.id == id && is_error(reply, ErrorCode::PermissionDenied),
                "{reply:?}"
            );
            return true;
        }
        match &frame.request {
            Request::Cancel(target) if self.open.contains(target) => {
                let [end, ack] = &replies[..] else {
                    panic!("cancel: {replies:?}")
                };
                assert!(end.id == *target && end.last && is_error(end, ErrorCode::Cancelled));
                assert_eq!(
                    (ack.id, ack.last, &ack.response),
                    (id, true, &Response::Accepted)
                );
                self.open.retain(|s| s != target);
            }
            Request::Events(q) if q.follow && replies.is_empty() => {
                assert!(
                    id != 0 && !self.open.contains(&id),
                    "stream {id} opened twice"
                );
                assert!(
                    self.open.len() < MAX_STREAMS,
                    "more than {MAX_STREAMS} streams"
                );
                self.open.push(id);
            }
            request => {
                let [reply] = &replies[..] else {
                    panic!("{request:?}: {replies:?}")
                };
                assert_eq!((reply.id, reply.last), (id, true), "{reply:?}");
                self.check_reply(request, &who, reply);
            }
        }
        if self.session.closing() {
            // An accepted reboot: the connection closes, and its streams with it.
            self.open.clear();
            return false;
        }
        assert_eq!(self.session.streams(), self.open.len());
        true
    }

    /// The single reply to `request` has the right kind.
    fn check_reply(&self, request: &Request, who: &kaos_protocol::Identity, reply: &ServerFrame) {
        let response = &reply.response;
        match request {
            Request::Ping => assert_eq!(response, &Response::Pong),
            Request::WhoAmI => assert_eq!(response, &Response::Identity(who.clone())),
            Request::Cancel(_) => assert!(is_error(reply, ErrorCode::NotFound), "{reply:?}"),
            Request::Events(q) if q.follow => {
                let code = if self.open.len() >= MAX_STREAMS {
                    ErrorCode::Busy
                } else {
                    ErrorCode::InvalidArgument
                };
                assert!(is_error(reply, code), "stream refused with {reply:?}");
            }
            Request::Reboot => {
                assert_eq!(response, &Response::Accepted);
                assert!(self.session.closing(), "an accepted reboot did not close");
            }
            _ => {}
        }
    }

    /// Polls the streams: only open streams speak, and each ends once.
    fn poll(&mut self) -> bool {
        let out = poll(&mut self.session, &mut self.host);
        let frames = open_all(&mut self.transport, &out);
        if self.host.identity(&self.client).is_none() {
            assert!(frames.is_empty(), "a withdrawn key's streams went on");
            self.open.clear();
        }
        for frame in frames {
            assert!(
                self.open.contains(&frame.id),
                "frame for no open stream: {frame:?}"
            );
            if frame.last {
                self.open.retain(|&s| s != frame.id);
            }
        }
        assert_eq!(self.session.streams(), self.open.len());
        !self.session.closing()
    }
}

fn is_error(frame: &ServerFrame, code: ErrorCode) -> bool {
    matches!(&frame.response, Response::Error(e) if e.code == code)
}

/// Decrypts everything the host sent; anything that does not open is a finding.
fn open_all(transport: &mut Transport, mut out: &[u8]) -> Vec<ServerFrame> {
    let mut frames = Vec::new();
    while !out.is_empty() {
        let (frame, used) = transport
            .open(out)
            .expect("the host's frame opens")
            .expect("the host sent whole frames");
        frames.push(frame);
        out = &out[used..];
    }
    frames
}
