//! A Noise client made directly with `snow`, for what `kaos_net::client` rightly refuses to do:
//! put any payload in handshake messages 1 and 3, and encrypt any plaintext as a request. The
//! handshake target uses it to reach the host's `ClientHello` decoding and request decoding
//! with bytes no honest client sends.
//!
//! Whatever the host sends must make sense to this client: a reply that does not parse,
//! authenticate or decode is a finding, so these functions panic on it.

use kaos_protocol::handshake::{
    ClientPreamble, NOISE_PARAMS, SERVER_PREAMBLE_LEN, ServerHello, ServerPreamble, Verdict,
};
use kaos_protocol::keys::{PublicKey, SecretKey};
use kaos_protocol::{MAX_FRAME, ServerFrame, decode_message, frame_header, split_frame};

/// The host's answer to the first flight.
#[derive(Debug)]
pub enum Reply {
    /// Refused in the preamble.
    Refused(ServerPreamble),
    /// Handshake message 2: the host's key and hello, and the bytes used.
    Hello(PublicKey, ServerHello, usize),
}

/// Starts a handshake as `key`, announcing `preamble`, with `payload` in message 1; returns the
/// bytes to send.
pub fn start(
    key: &SecretKey,
    preamble: ClientPreamble,
    payload: &[u8],
) -> (snow::HandshakeState, Vec<u8>) {
    let params = NOISE_PARAMS
        .parse()
        .expect("the protocol's Noise parameters parse");
    let prologue = preamble.prologue();
    let mut hs = snow::Builder::new(params)
        .local_private_key(&key.0)
        .and_then(|b| b.prologue(&prologue))
        .and_then(snow::Builder::build_initiator)
        .expect("an initiator builds");
    let mut first = preamble.encode().to_vec();
    let mut msg = vec![0; MAX_FRAME];
    let n = hs.write_message(payload, &mut msg).expect("message 1 fits");
    push_frame(&mut first, &msg[..n]);
    (hs, first)
}

/// Reads the host's preamble and message 2 from `out`; `None` while incomplete.
///
/// # Panics
/// A finding: the host sent a bad preamble, or a message 2 that does not authenticate or
/// decode.
pub fn read_reply(hs: &mut snow::HandshakeState, out: &[u8]) -> Option<Reply> {
    let preamble = out.first_chunk::<SERVER_PREAMBLE_LEN>()?;
    let preamble = ServerPreamble::decode(preamble).expect("the host's preamble parses");
    if preamble.verdict != Verdict::Proceed {
        return Some(Reply::Refused(preamble));
    }
    let (body, used) = split_frame(&out[SERVER_PREAMBLE_LEN..]).expect("message 2 frame")?;
    let mut payload = vec![0; MAX_FRAME];
    let n = hs
        .read_message(body, &mut payload)
        .expect("message 2 authenticates");
    let hello = decode_message(&payload[..n]).expect("the server hello decodes");
    let key = hs
        .get_remote_static()
        .expect("message 2 carries the host key");
    let key = PublicKey(key.try_into().expect("a 32-byte host key"));
    Some(Reply::Hello(key, hello, SERVER_PREAMBLE_LEN + used))
}

/// Writes message 3 carrying `payload`; returns the transport and the bytes to send.
pub fn finish(mut hs: snow::HandshakeState, payload: &[u8]) -> (snow::TransportState, Vec<u8>) {
    let mut msg = vec![0; MAX_FRAME];
    let n = hs.write_message(payload, &mut msg).expect("message 3 fits");
    let mut out = Vec::new();
    push_frame(&mut out, &msg[..n]);
    let transport = hs.into_transport_mode().expect("the handshake is complete");
    (transport, out)
}

/// Encrypts `plain` as one frame (cut to fit).
pub fn seal(transport: &mut snow::TransportState, plain: &[u8]) -> Vec<u8> {
    let mut msg = vec![0; MAX_FRAME];
    let plain = &plain[..plain
        .len()
        .min(MAX_FRAME - kaos_protocol::handshake::TAG_LEN)];
    let n = transport
        .write_message(plain, &mut msg)
        .expect("a cut plaintext fits a frame");
    let mut out = Vec::new();
    push_frame(&mut out, &msg[..n]);
    out
}

/// Decrypts every frame the host sent.
///
/// # Panics
/// A finding: a frame that is cut, does not authenticate or does not decode.
pub fn open_all(transport: &mut snow::TransportState, mut out: &[u8]) -> Vec<ServerFrame> {
    let mut frames = Vec::new();
    let mut plain = vec![0; MAX_FRAME];
    while !out.is_empty() {
        let (body, used) = split_frame(out)
            .expect("host frame header")
            .expect("whole frames");
        let n = transport
            .read_message(body, &mut plain)
            .expect("host frame authenticates");
        frames.push(decode_message(&plain[..n]).expect("host frame decodes"));
        out = &out[used..];
    }
    frames
}

fn push_frame(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(&frame_header(body.len()).expect("body within MAX_FRAME"));
    out.extend_from_slice(body);
}
