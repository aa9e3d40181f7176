//! The client side of a management session, without I/O: what `kaosctl`, the tests, the fuzz
//! targets and the benches speak to a [`Session`](crate::Session).
//!
//! ```text
//! let (hs, first) = ClientHandshake::start(&my_key)?;      // send `first`
//! match hs.read_reply(&received)? { ... }                  // preamble + message 2
//! let (transport, msg3) = hs.finish(&ClientHello::new("me"))?; // check the host key first!
//! transport.seal(&frame, &mut out)?; transport.open(&received)?
//! ```

use kaos_protocol::handshake::{
    ClientHello, ClientPreamble, NOISE_PARAMS, SERVER_PREAMBLE_LEN, ServerHello, ServerPreamble,
    Verdict,
};
use kaos_protocol::keys::{PublicKey, SecretKey};
use kaos_protocol::{
    ClientFrame, FrameError, HEADER_LEN, MAX_FRAME, ServerFrame, decode_message, encode_message,
    frame_header, split_frame,
};

use crate::session::push_frame;

/// Why the client side failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The host's first bytes are not a KaOS preamble.
    #[error("the peer is not a KaOS host (bad magic)")]
    BadMagic,
    /// A frame could not be split or a message decoded.
    #[error("{0}")]
    Frame(FrameError),
    /// A handshake message did not authenticate or was malformed.
    #[error("handshake failed: {0}")]
    Handshake(&'static str),
    /// A frame from the host did not decrypt.
    #[error("a frame from the host did not authenticate")]
    Decrypt,
}

/// What the host answered to the client's first flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostReply {
    /// The host refused before the handshake (version, rate limit, back-off, busy).
    Refused(ServerPreamble),
    /// Handshake message 2: the host's static key (check it!) and its hello.
    Hello {
        /// The host's static key, authenticated by the handshake.
        host_key: PublicKey,
        /// The host's hello.
        hello: ServerHello,
    },
}

/// A handshake in progress, after the first flight was sent.
pub struct ClientHandshake {
    hs: Box<snow::HandshakeState>,
}

impl std::fmt::Debug for ClientHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientHandshake(..)")
    }
}

impl ClientHandshake {
    /// Starts a handshake with the client's static `key`; returns the bytes to send first
    /// (preamble and message 1).
    pub fn start(key: &SecretKey) -> Result<(Self, Vec<u8>), ClientError> {
        Self::start_with(key, ClientPreamble::CURRENT)
    }

    /// As [`Self::start`], announcing `preamble` (tests use other versions).
    pub fn start_with(
        key: &SecretKey,
        preamble: ClientPreamble,
    ) -> Result<(Self, Vec<u8>), ClientError> {
        let params = NOISE_PARAMS
            .parse()
            .map_err(|_| ClientError::Handshake("noise parameters"))?;
        let prologue = preamble.prologue();
        let mut hs = snow::Builder::new(params)
            .local_private_key(&key.0)
            .and_then(|b| b.prologue(&prologue))
            .and_then(snow::Builder::build_initiator)
            .map_err(|_| ClientError::Handshake("cannot start the handshake"))?;
        let mut msg = [0u8; 128];
        let n = hs
            .write_message(&[], &mut msg)
            .map_err(|_| ClientError::Handshake("cannot write message 1"))?;
        let mut first = preamble.encode().to_vec();
        push_frame(&mut first, &msg[..n]);
        Ok((Self { hs: Box::new(hs) }, first))
    }

    /// Reads the host's preamble and, if it proceeds, message 2 from `buf`. Returns `Ok(None)`
    /// while `buf` is incomplete, otherwise the reply and the bytes it used.
    pub fn read_reply(&mut self, buf: &[u8]) -> Result<Option<(HostReply, usize)>, ClientError> {
        let Some(pre) = buf.first_chunk::<SERVER_PREAMBLE_LEN>() else {
            return Ok(None);
        };
        let preamble = ServerPreamble::decode(pre).map_err(|_| ClientError::BadMagic)?;
        if preamble.verdict != Verdict::Proceed {
            return Ok(Some((HostReply::Refused(preamble), SERVER_PREAMBLE_LEN)));
        }
        let Some((body, used)) =
            split_frame(&buf[SERVER_PREAMBLE_LEN..]).map_err(ClientError::Frame)?
        else {
            return Ok(None);
        };
        let mut payload = [0u8; 512];
        let n = self
            .hs
            .read_message(body, &mut payload)
            .map_err(|_| ClientError::Handshake("message 2 did not authenticate"))?;
        let hello: ServerHello = decode_message(&payload[..n]).map_err(ClientError::Frame)?;
        let host_key = self
            .hs
            .get_remote_static()
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .map(PublicKey)
            .ok_or(ClientError::Handshake("no host key"))?;
        Ok(Some((
            HostReply::Hello { host_key, hello },
            SERVER_PREAMBLE_LEN + used,
        )))
    }

    /// Completes the handshake (message 3, carrying `hello`). Call it only after checking the
    /// host key from [`HostReply::Hello`] against the pinned one.
    pub fn finish(self, hello: &ClientHello) -> Result<(Transport, Vec<u8>), ClientError> {
        let mut payload = [0u8; 128];
        let n = encode_message(hello, &mut payload).map_err(ClientError::Frame)?;
        self.finish_with_payload(&payload[..n])
    }

    /// As [`Self::finish`] with raw payload bytes (tests and fuzzing send malformed ones).
    pub fn finish_with_payload(
        mut self,
        payload: &[u8],
    ) -> Result<(Transport, Vec<u8>), ClientError> {
        let mut msg = [0u8; 256];
        let len = self
            .hs
            .write_message(payload, &mut msg)
            .map_err(|_| ClientError::Handshake("cannot write message 3"))?;
        let mut out = Vec::with_capacity(HEADER_LEN + len);
        push_frame(&mut out, &msg[..len]);
        let state = self
            .hs
            .into_transport_mode()
            .map_err(|_| ClientError::Handshake("handshake incomplete"))?;
        Ok((
            Transport {
                state: Box::new(state),
                plain: vec![0; MAX_FRAME],
            },
            out,
        ))
    }
}

/// An established session's encryption, client side.
pub struct Transport {
    state: Box<snow::TransportState>,
    plain: Vec<u8>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Transport(..)")
    }
}

impl Transport {
    /// Encrypts `frame` and appends it to `out`.
    pub fn seal(&mut self, frame: &ClientFrame, out: &mut Vec<u8>) -> Result<(), ClientError> {
        let n = encode_message(frame, &mut self.plain).map_err(ClientError::Frame)?;
        let start = out.len();
        out.resize(start + HEADER_LEN + MAX_FRAME, 0);
        let sealed = self
            .state
            .write_message(&self.plain[..n], &mut out[start + HEADER_LEN..]);
        match sealed.ok().and_then(|len| Some((len, frame_header(len)?))) {
            Some((len, header)) => {
                out[start..start + HEADER_LEN].copy_from_slice(&header);
                out.truncate(start + HEADER_LEN + len);
                Ok(())
            }
            None => {
                out.truncate(start);
                Err(ClientError::Frame(FrameError::BufferTooSmall))
            }
        }
    }

    /// Decrypts the first frame in `buf`: `Ok(None)` while it is incomplete, otherwise the
    /// frame and the bytes it used.
    pub fn open(&mut self, buf: &[u8]) -> Result<Option<(ServerFrame, usize)>, ClientError> {
        let Some((body, used)) = split_frame(buf).map_err(ClientError::Frame)? else {
            return Ok(None);
        };
        let n = self
            .state
            .read_message(body, &mut self.plain)
            .map_err(|_| ClientError::Decrypt)?;
        let frame = decode_message(&self.plain[..n]).map_err(ClientError::Frame)?;
        Ok(Some((frame, used)))
    }
}
