//! The host's side of connection set-up, fed by a stranger: a session gets arbitrary bytes in
//! arbitrary TCP pieces and must answer, close or fail, never panic, stall or send without
//! bound. Everything it sends must start with a valid server preamble.
//!
//! Arbitrary bytes cannot pass message 3 (it must answer the host's fresh ephemeral key), so in
//! "assisted" inputs the harness plays a real Noise client whose choices come from the input:
//! the key (authorised or not), the announced version, the payloads of messages 1 and 3 (a
//! `ClientHello` or any bytes), and then any plaintexts as encrypted requests. That reaches the
//! host's decoding of the hello and of requests with bytes no honest client would send.
//!
//! ```text
//! input := piece flags rest
//!   piece: TCP piece size (0: whole)
//!   flags: bit 0 assisted; bit 1 unknown key; bit 2 raw hello payload; bits 3-4 admission;
//!          bit 5 host key loaded only after the first bytes; bit 6 announce a fuzzed version
//!   raw:      rest is delivered as is
//!   assisted: [version: 4] msg1-payload (len, bytes) hello (len, bytes) then (len, plaintext)*
//! ```
#![no_main]

use kaos_fuzz::feed::{deliver, poll};
use kaos_fuzz::host::{CLIENT_KEY, Host, STRANGER_KEY, public_keys, server_hello};
use kaos_fuzz::input::Input;
use kaos_fuzz::noise::{self, Reply};
use kaos_net::Admission;
use kaos_net::Session;
use kaos_net::session::{AuthOutcome, SessionError};
use kaos_protocol::handshake::{
    ClientHello, ClientPreamble, SERVER_PREAMBLE_LEN, ServerPreamble, Verdict,
};
use kaos_protocol::{ErrorCode, FrameError, Response, Role, Version, encode_message};
use libfuzzer_sys::fuzz_target;

const ADMISSIONS: [Verdict; 4] = [
    Verdict::Proceed,
    Verdict::RateLimited,
    Verdict::BackingOff,
    Verdict::Busy,
];

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let (Some(piece), Some(flags)) = (input.byte(), input.byte()) else {
        return;
    };
    let admission = Admission {
        verdict: ADMISSIONS[usize::from(flags >> 3) & 3],
        retry_after_ms: 1500,
    };
    let mut session = Session::new(admission, "fuzz");
    let mut host = Host::new(Role::Admin);
    host.set_key_ready(flags & 1 << 5 == 0);
    let piece = usize::from(piece);
    if flags & 1 == 0 {
        raw(&mut session, &mut host, input.rest(), piece);
    } else {
        assisted(&mut session, &mut host, input, piece, flags);
    }
});

/// Arbitrary bytes in pieces; the host key appears after the first piece.
fn raw(session: &mut Session, host: &mut Host, data: &[u8], piece: usize) {
    let mut out = Vec::new();
    for bytes in data.chunks(piece.max(1)) {
        let result = deliver(session, host, bytes, 0, &mut out);
        check_preamble(&out, session);
        if result.is_err() || session.closing() {
            return;
        }
        if !host.key_ready() {
            host.set_key_ready(true);
            let result = session.process(host, &mut out);
            check_preamble(&out, session);
            if result.is_err() {
                return;
            }
        }
    }
}

/// Whatever the host sent starts with a server preamble; a refusal is the preamble alone.
fn check_preamble(out: &[u8], session: &Session) {
    let Some(bytes) = out.first_chunk::<SERVER_PREAMBLE_LEN>() else {
        assert!(
            out.is_empty(),
            "the host sent a partial preamble: {out:02x?}"
        );
        return;
    };
    let preamble = ServerPreamble::decode(bytes).expect("the host's preamble parses");
    assert_eq!(preamble.version, kaos_protocol::VERSION);
    if preamble.verdict != Verdict::Proceed {
        assert_eq!(
            out.len(),
            SERVER_PREAMBLE_LEN,
            "a refusal is followed by more bytes"
        );
        assert!(session.closing(), "a refusal does not close");
    }
}

/// A real Noise client, steered by the input.
fn assisted(session: &mut Session, host: &mut Host, mut input: Input<'_>, piece: usize, flags: u8) {
    let stranger = flags & 1 << 1 != 0;
    let key = if stranger { &STRANGER_KEY } else { &CLIENT_KEY };
    let mut preamble = ClientPreamble::CURRENT;
    let version = input.take(4);
    if flags & 1 << 6 != 0 && version.len() == 4 {
        let major = u16::from_le_bytes([version[0], version[1]]);
        let minor = u16::from_le_bytes([version[2], version[3]]);
        preamble.version = Version { major, minor };
    }
    let verdict = if preamble.version.major == kaos_protocol::VERSION.major {
        ADMISSIONS[usize::from(flags >> 3) & 3]
    } else {
        Verdict::VersionMismatch
    };
    let (mut hs, first) = noise::start(key, preamble, input.chunk());
    let mut out = Vec::new();
    deliver(session, host, &first, piece, &mut out).expect("an honest first flight is taken");
    if !host.key_ready() {
        if verdict == Verdict::Proceed {
            assert!(out.is_empty(), "the host answered before it had its key");
        }
        host.set_key_ready(true);
        session
            .process(host, &mut out)
            .expect("the handshake resumes once the key is loaded");
    }
    let reply = noise::read_reply(&mut hs, &out).expect("the host answers a whole first flight");
    let used = match reply {
        Reply::Refused(p) => {
            assert_eq!(p.verdict, verdict);
            check_preamble(&out, session);
            return;
        }
        Reply::Hello(host_key, hello, used) => {
            assert_eq!(host_key, public_keys().0);
            assert_eq!(hello, server_hello());
            used
        }
    };
    assert_eq!(used, out.len(), "bytes after message 2");
    let hello = input.chunk();
    let payload = if flags & 1 << 2 != 0 {
        hello.to_vec()
    } else {
        let mut buf = [0; 128];
        let hello = ClientHello::new(&String::from_utf8_lossy(hello));
        let n = encode_message(&hello, &mut buf).expect("a client hello fits");
        buf[..n].to_vec()
    };
    let (mut transport, msg3) = noise::finish(hs, &payload);
    let mut out = Vec::new();
    match deliver(session, host, &msg3, piece, &mut out) {
        // A hello that does not decode ends the session.
        Err(SessionError::Frame(FrameError::Malformed | FrameError::TrailingBytes)) => return,
        Err(e) => panic!("an authenticated message 3 failed: {e}"),
        Ok(()) => {}
    }
    let welcome = noise::open_all(&mut transport, &out);
    let [welcome] = &welcome[..] else {
        panic!("welcome: {welcome:?}")
    };
    assert_eq!((welcome.id, welcome.last), (0, true));
    if stranger {
        let Response::Error(e) = &welcome.response else {
            panic!("welcomed a stranger")
        };
        assert_eq!(e.code, ErrorCode::Unauthorized);
        assert!(session.closing());
        assert_eq!(session.take_outcome(), Some(AuthOutcome::Failed));
        return;
    }
    assert!(
        matches!(welcome.response, Response::Identity(_)),
        "{welcome:?}"
    );
    assert_eq!(session.take_outcome(), Some(AuthOutcome::Succeeded));
    // Any plaintext as a request: the host decodes it only after decrypting it.
    while !input.is_empty() && !session.closing() {
        let frame = noise::seal(&mut transport, input.chunk());
        let mut out = Vec::new();
        if deliver(session, host, &frame, piece, &mut out).is_err() {
            return;
        }
        out.extend_from_slice(&poll(session, host));
        noise::open_all(&mut transport, &out);
    }
}
