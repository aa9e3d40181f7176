//! One management connection's protocol state, without I/O: bytes in, bytes out.
//!
//! A session walks through the phases of `kaos_protocol::handshake`: the client preamble, the
//! Noise `XX` handshake, the host's check of the client's key, then encrypted request frames.
//! Nothing a client sends is decoded as a request before its key is authenticated and
//! authorised, and every request is checked against the key's role *at the time it is made*, so
//! a withdrawn key loses its session at its next request.
//!
//! The endpoint feeds received bytes with [`Session::receive`] and calls [`Session::process`];
//! both the endpoint and the fuzz targets drive it without a network.

use kaos_protocol::handshake::{
    CLIENT_PREAMBLE_LEN, ClientHello, ClientPreamble, NOISE_PARAMS, ServerHello, ServerPreamble,
    Verdict,
};
use kaos_protocol::keys::{PublicKey, SecretKey};
use kaos_protocol::{
    ClientFrame, ErrorCode, ErrorReply, FrameError, HEADER_LEN, Identity, MAX_FRAME, MAX_MESSAGE,
    Request, Response, ServerFrame, decode_message, encode_message, frame_header, split_frame,
};

/// Most open streams (e.g. `events --follow`) on one connection.
pub const MAX_STREAMS: usize = 4;

/// What a connection can ask of the host.
pub trait Handler {
    /// The host's static key; `None` while it is not known yet (the store is being opened).
    /// A session that reaches the handshake waits until it is.
    fn host_key(&self) -> Option<SecretKey>;
    /// The payload of handshake message 2.
    fn server_hello(&self) -> ServerHello;
    // One bounded reply, built once per refused handshake: boxing would buy nothing.
    #[allow(clippy::result_large_err)]
    /// Decides whether the key that completed the handshake may use the host. `from` names the
    /// peer for logs. A refusal is sent to the client, and the connection closes. By default:
    /// the key's [`identity`](Self::identity), or `Unauthorized`; a host overrides it to log and
    /// record refusals.
    fn authenticate(
        &mut self,
        key: &PublicKey,
        hello: &ClientHello,
        from: &str,
    ) -> Result<Identity, ErrorReply> {
        let _ = (hello, from);
        self.identity(key)
            .ok_or_else(|| ErrorReply::new(ErrorCode::Unauthorized, "unknown key"))
    }
    /// The key's current identity (its role may have changed); `None`: no longer authorised.
    fn identity(&self, key: &PublicKey) -> Option<Identity>;
    /// A request was refused because `who`'s role does not allow it (for the event log).
    fn denied(&mut self, who: &Identity, request: &Request);
    /// Carries out a request that `who`'s role allows.
    fn request(&mut self, who: &Identity, request: &Request) -> Answer;
}

/// A handler's answer to one request.
// Like `Response` itself: a bounded value built once per request, moved once.
#[allow(clippy::large_enum_variant)]
pub enum Answer {
    /// One response, then the request is done.
    Reply(Response),
    /// A stream of responses, polled by the session until it ends or is cancelled.
    Stream(Box<dyn Stream>),
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Reply(r) => f.debug_tuple("Reply").field(r).finish(),
            Self::Stream(_) => f.write_str("Stream(..)"),
        }
    }
}

/// What a stream has to say when polled.
#[derive(Debug)]
pub enum StreamPoll {
    /// One more response; the stream goes on.
    Item(Response),
    /// The final response.
    Done(Response),
    /// Nothing now.
    Pending,
}

/// A streamed answer (logs, progress, followed events).
pub trait Stream: Send {
    /// The next response, if any. Called only when the connection has room to send.
    fn poll(&mut self) -> StreamPoll;
}

/// Whether the endpoint admits a new connection, decided before any cryptography.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// The verdict sent in the server preamble.
    pub verdict: Verdict,
    /// With a refusal: when to retry.
    pub retry_after_ms: u16,
}

impl Admission {
    /// Admit.
    pub const PROCEED: Self = Self {
        verdict: Verdict::Proceed,
        retry_after_ms: 0,
    };
}

/// Why a session ended abruptly (the connection is reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The first bytes are not a KaOS preamble.
    #[error("not a KaOS client (bad magic)")]
    BadMagic,
    /// A frame header announced too much, or a decrypted message did not decode.
    #[error("{0}")]
    Frame(FrameError),
    /// A handshake message was malformed, or did not authenticate (replayed, forged).
    #[error("handshake failed: {0}")]
    Handshake(&'static str),
    /// A transport frame did not decrypt: forged, replayed, reordered or cut.
    #[error("frame did not authenticate (forged, replayed or reordered)")]
    Decrypt,
    /// A request reused the id of an open stream, so its answer and the stream's frames could
    /// not be told apart.
    #[error("request id {0} is an open stream's")]
    IdInUse(u32),
}

/// How the handshake ended, for the endpoint's per-source back-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The client proved an authorised key.
    Succeeded,
    /// The client's key is unknown, or its handshake did not authenticate.
    Failed,
}

enum Phase {
    /// Waiting for the client preamble.
    Preamble,
    /// Waiting for handshake message 1.
    Message1(ClientPreamble),
    /// Waiting for handshake message 3.
    Message3(Box<snow::HandshakeState>),
    /// Authenticated: encrypted requests.
    Established {
        transport: Box<snow::TransportState>,
        key: PublicKey,
    },
    /// A refusal was queued; the connection closes once it is sent.
    Closing,
}

/// Protocol state of one connection.
pub struct Session {
    phase: Phase,
    admission: Admission,
    /// Names the peer in logs and events.
    from: String,
    rx: Vec<u8>,
    streams: Vec<(u32, Box<dyn Stream>)>,
    outcome: Option<AuthOutcome>,
    /// Plaintext scratch, one message long.
    plain: Vec<u8>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let phase = match &self.phase {
            Phase::Preamble => "preamble",
            Phase::Message1(_) => "message 1",
            Phase::Message3(_) => "message 3",
            Phase::Established { .. } => "established",
            Phase::Closing => "closing",
        };
        f.debug_struct("Session")
            .field("from", &self.from)
            .field("phase", &phase)
            .field("streams", &self.streams.len())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session for a connection from `from`, admitted or refused by the endpoint.
    pub fn new(admission: Admission, from: impl Into<String>) -> Self {
        Self {
            phase: Phase::Preamble,
            admission,
            from: from.into(),
            rx: Vec::new(),
            streams: Vec::new(),
            outcome: None,
            plain: vec![0; MAX_FRAME],
        }
    }

    /// Takes as many bytes of `data` as fit the frame buffer, returning how many were taken.
    /// The buffer holds exactly one maximal frame, so a valid client is never refused here.
    pub fn receive(&mut self, data: &[u8]) -> usize {
        let room = (HEADER_LEN + MAX_FRAME).saturating_sub(self.rx.len());
        let n = data.len().min(room);
        self.rx.extend_from_slice(&data[..n]);
        n
    }

    /// True once a reply was queued after which the connection closes (a refusal, an accepted
    /// reboot or shutdown). Bytes received after that are ignored.
    pub fn closing(&self) -> bool {
        matches!(self.phase, Phase::Closing)
    }

    /// True once the client's key is authenticated and authorised.
    pub fn established(&self) -> bool {
        matches!(self.phase, Phase::Established { .. })
    }

    /// Open streams.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// How the handshake ended, once it has; reported once.
    pub fn take_outcome(&mut self) -> Option<AuthOutcome> {
        self.outcome.take()
    }

    /// Handles every complete message received so far, appending what to send to `out`.
    pub fn process(
        &mut self,
        handler: &mut impl Handler,
        out: &mut Vec<u8>,
    ) -> Result<(), SessionError> {
        loop {
            let progressed = match std::mem::replace(&mut self.phase, Phase::Closing) {
                Phase::Closing => return Ok(()),
                Phase::Preamble => self.on_preamble(handler, out)?,
                Phase::Message1(preamble) => self.on_message1(preamble, handler, out)?,
                Phase::Message3(hs) => self.on_message3(hs, handler, out)?,
                Phase::Established { transport, key } => {
                    self.on_request(transport, key, handler, out)?
                }
            };
            if !progressed {
                return Ok(());
            }
        }
    }

    /// Sends what open streams have, while `out` is empty (a client that does not read stalls
    /// only itself). Returns true if anything was sent.
    pub fn poll_streams(&mut self, handler: &mut impl Handler, out: &mut Vec<u8>) -> bool {
        let Phase::Established { transport, key } = &mut self.phase else {
            return false;
        };
        if !out.is_empty() || self.streams.is_empty() {
            return false;
        }
        if handler.identity(key).is_none() {
            // The key was withdrawn: its streams end with it.
            self.streams.clear();
            return false;
        }
        let mut sent = false;
        let mut i = 0;
        while i < self.streams.len() {
            let id = self.streams[i].0;
            let (response, last) = match self.streams[i].1.poll() {
                StreamPoll::Pending => {
                    i += 1;
                    continue;
                }
                StreamPoll::Item(r) => (r, false),
                StreamPoll::Done(r) => (r, true),
            };
            seal(transport, &mut self.plain, out, id, last, &response);
            sent = true;
            if last {
                self.streams.remove(i);
            } else {
                i += 1;
            }
        }
        sent
    }

    fn on_preamble(
        &mut self,
        handler: &mut impl Handler,
        out: &mut Vec<u8>,
    ) -> Result<bool, SessionError> {
        let Some(bytes) = self.rx.first_chunk::<CLIENT_PREAMBLE_LEN>() else {
            self.phase = Phase::Preamble;
            return Ok(false);
        };
        let preamble = ClientPreamble::decode(bytes).map_err(|_| SessionError::BadMagic)?;
        let refusal = if preamble.version.major != kaos_protocol::VERSION.major {
            log::warn!(
                "{}: client speaks protocol {}, host {}",
                self.from,
                preamble.version,
                kaos_protocol::VERSION
            );
            Some(Admission {
                verdict: Verdict::VersionMismatch,
                retry_after_ms: 0,
            })
        } else if self.admission.verdict != Verdict::Proceed {
            Some(self.admission)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            self.rx.clear();
            out.extend_from_slice(&server_preamble(refusal).encode());
            self.phase = Phase::Closing;
            return Ok(false);
        }
        if handler.host_key().is_none() {
            // The host key is still being loaded: keep the bytes and wait.
            self.phase = Phase::Preamble;
            return Ok(false);
        }
        self.rx.drain(..CLIENT_PREAMBLE_LEN);
        self.phase = Phase::Message1(preamble);
        Ok(true)
    }

    fn on_message1(
        &mut self,
        preamble: ClientPreamble,
        handler: &mut impl Handler,
        out: &mut Vec<u8>,
    ) -> Result<bool, SessionError> {
        let Some((body, used)) = split_frame(&self.rx).map_err(SessionError::Frame)? else {
            self.phase = Phase::Message1(preamble);
            return Ok(false);
        };
        let Some(key) = handler.host_key() else {
            self.phase = Phase::Message1(preamble);
            return Ok(false);
        };
        let mut hs = responder(&key, &preamble)?;
        // Message 1 is the client's ephemeral key and an empty payload.
        hs.read_message(body, &mut self.plain)
            .map_err(|_| SessionError::Handshake("message 1 is malformed"))?;
        self.rx.drain(..used);
        let mut hello = [0u8; 256];
        let n = encode_message(&handler.server_hello(), &mut hello)
            .map_err(|_| SessionError::Handshake("server hello does not fit"))?;
        let mut msg = [0u8; 512];
        let len = hs
            .write_message(&hello[..n], &mut msg)
            .map_err(|_| SessionError::Handshake("cannot write message 2"))?;
        out.extend_from_slice(&server_preamble(Admission::PROCEED).encode());
        push_frame(out, &msg[..len]);
        self.phase = Phase::Message3(Box::new(hs));
        Ok(true)
    }

    fn on_message3(
        &mut self,
        mut hs: Box<snow::HandshakeState>,
        handler: &mut impl Handler,
        out: &mut Vec<u8>,
    ) -> Result<bool, SessionError> {
        let Some((body, used)) = split_frame(&self.rx).map_err(SessionError::Frame)? else {
            self.phase = Phase::Message3(hs);
            return Ok(false);
        };
        let n = hs.read_message(body, &mut self.plain).map_err(|_| {
            // A replayed or forged message 3 fails here: it was made for another ephemeral key.
            self.outcome = Some(AuthOutcome::Failed);
            SessionError::Handshake("message 3 did not authenticate")
        })?;
        self.rx.drain(..used);
        let hello: ClientHello = decode_message(&self.plain[..n]).map_err(|_| {
            // The client's key proved itself but the hello is malformed: still a failed
            // authentication, or an unknown key could handshake forever without backing off.
            self.outcome = Some(AuthOutcome::Failed);
            SessionError::Frame(FrameError::Malformed)
        })?;
        let key = hs
            .get_remote_static()
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .map(PublicKey)
            .ok_or(SessionError::Handshake("no client key"))?;
        let mut transport = Box::new(
            hs.into_transport_mode()
                .map_err(|_| SessionError::Handshake("handshake incomplete"))?,
        );
        match handler.authenticate(&key, &hello, &self.from) {
            Ok(identity) => {
                self.outcome = Some(AuthOutcome::Succeeded);
                seal(
                    &mut transport,
                    &mut self.plain,
                    out,
                    0,
                    true,
                    &Response::Identity(identity),
                );
                self.phase = Phase::Established { transport, key };
                Ok(true)
            }
            Err(reply) => {
                self.outcome = Some(AuthOutcome::Failed);
                seal(
                    &mut transport,
                    &mut self.plain,
                    out,
                    0,
                    true,
                    &Response::Error(reply),
                );
                self.rx.clear();
                self.phase = Phase::Closing;
                Ok(false)
            }
        }
    }

    fn on_request(
        &mut self,
        mut transport: Box<snow::TransportState>,
        key: PublicKey,
        handler: &mut impl Handler,
        out: &mut Vec<u8>,
    ) -> Result<bool, SessionError> {
        let Some((body, used)) = split_frame(&self.rx).map_err(SessionError::Frame)? else {
            self.phase = Phase::Established { transport, key };
            return Ok(false);
        };
        let n = transport
            .read_message(body, &mut self.plain)
            .map_err(|_| SessionError::Decrypt)?;
        self.rx.drain(..used);
        let frame: ClientFrame = decode_message(&self.plain[..n]).map_err(SessionError::Frame)?;
        if self.streams.iter().any(|(id, _)| *id == frame.id) {
            return Err(SessionError::IdInUse(frame.id));
        }
        let Some(who) = handler.identity(&key) else {
            let reply = Response::Error(ErrorReply::new(
                ErrorCode::Unauthorized,
                "this key is no longer authorised",
            ));
            seal(&mut transport, &mut self.plain, out, frame.id, true, &reply);
            self.rx.clear();
            self.streams.clear();
            self.phase = Phase::Closing;
            return Ok(false);
        };
        let response = match frame.request {
            // Every role may cancel its own streams.
            Request::Cancel(target) => Some(self.cancel(target, &mut transport, out)),
            _ => self.dispatch(handler, &who, &frame),
        };
        let closes = matches!(frame.request, Request::Reboot | Request::Shutdown)
            && response == Some(Response::Accepted);
        if let Some(response) = response {
            seal(
                &mut transport,
                &mut self.plain,
                out,
                frame.id,
                true,
                &response,
            );
        }
        if closes {
            self.rx.clear();
            self.streams.clear();
            self.phase = Phase::Closing;
            return Ok(false);
        }
        self.phase = Phase::Established { transport, key };
        Ok(true)
    }

    /// The response to one request, or `None` if it opened a stream.
    fn dispatch(
        &mut self,
        handler: &mut impl Handler,
        who: &Identity,
        frame: &ClientFrame,
    ) -> Option<Response> {
        let request = &frame.request;
        if who.role < request.required_role() {
            log::warn!(
                "{}: {} ({}) may not {}",
                self.from,
                who.name,
                who.role,
                request.name()
            );
            handler.denied(who, request);
            let message = format!(
                "{} needs role {}; key {} has role {}",
                request.name(),
                request.required_role(),
                who.name,
                who.role
            );
            return Some(error(ErrorCode::PermissionDenied, &message));
        }
        match request {
            Request::Ping => Some(Response::Pong),
            Request::WhoAmI => Some(Response::Identity(who.clone())),
            _ => match handler.request(who, request) {
                Answer::Reply(response) => Some(response),
                Answer::Stream(_) if self.streams.len() >= MAX_STREAMS => Some(error(
                    ErrorCode::Busy,
                    "too many open streams on this connection",
                )),
                Answer::Stream(_)
                    if frame.id == 0 || self.streams.iter().any(|s| s.0 == frame.id) =>
                {
                    Some(error(
                        ErrorCode::InvalidArgument,
                        "stream id 0 or already in use",
                    ))
                }
                Answer::Stream(stream) => {
                    self.streams.push((frame.id, stream));
                    None
                }
            },
        }
    }

    /// Ends stream `target` with a `Cancelled` frame; the answer to the `Cancel` itself.
    fn cancel(
        &mut self,
        target: u32,
        transport: &mut snow::TransportState,
        out: &mut Vec<u8>,
    ) -> Response {
        let Some(i) = self.streams.iter().position(|s| s.0 == target) else {
            return error(ErrorCode::NotFound, "no open stream with that id");
        };
        self.streams.remove(i);
        let end = error(ErrorCode::Cancelled, "cancelled by the client");
        seal(transport, &mut self.plain, out, target, true, &end);
        Response::Accepted
    }
}

fn server_preamble(admission: Admission) -> ServerPreamble {
    ServerPreamble {
        version: kaos_protocol::VERSION,
        verdict: admission.verdict,
        retry_after_ms: admission.retry_after_ms,
    }
}

fn responder(
    key: &SecretKey,
    preamble: &ClientPreamble,
) -> Result<snow::HandshakeState, SessionError> {
    let params = NOISE_PARAMS
        .parse()
        .map_err(|_| SessionError::Handshake("noise parameters"))?;
    let prologue = preamble.prologue();
    snow::Builder::new(params)
        .local_private_key(&key.0)
        .and_then(|b| b.prologue(&prologue))
        .and_then(snow::Builder::build_responder)
        .map_err(|_| SessionError::Handshake("cannot start the handshake"))
}

fn error(code: ErrorCode, message: &str) -> Response {
    Response::Error(ErrorReply::new(code, message))
}

/// Appends `body` as one frame (callers pass at most `MAX_FRAME` bytes).
pub(crate) fn push_frame(out: &mut Vec<u8>, body: &[u8]) {
    if let Some(header) = frame_header(body.len()) {
        out.extend_from_slice(&header);
        out.extend_from_slice(body);
    }
}

/// Encrypts `ServerFrame { id, last, response }` and appends it to `out` as one frame. A
/// response too large for a frame is replaced by an `Internal` error.
fn seal(
    transport: &mut snow::TransportState,
    plain: &mut [u8],
    out: &mut Vec<u8>,
    id: u32,
    last: bool,
    response: &Response,
) {
    let frame = ServerFrame {
        id,
        last,
        response: response.clone(),
    };
    let n = encode_message(&frame, plain).unwrap_or_else(|e| {
        log::error!("reply {id} does not fit a frame: {e}");
        let fallback = ServerFrame {
            id,
            last: true,
            response: error(ErrorCode::Internal, "reply too large"),
        };
        // A bare error reply is a few dozen bytes: it always fits.
        encode_message(&fallback, plain).unwrap_or(0)
    });
    let start = out.len();
    out.resize(start + HEADER_LEN + MAX_FRAME, 0);
    match transport.write_message(&plain[..n.min(MAX_MESSAGE)], &mut out[start + HEADER_LEN..]) {
        Ok(len) => {
            if let Some(header) = frame_header(len) {
                out[start..start + HEADER_LEN].copy_from_slice(&header);
                out.truncate(start + HEADER_LEN + len);
            } else {
                out.truncate(start);
            }
        }
        Err(e) => {
            log::error!("cannot encrypt reply {id}: {e}");
            out.truncate(start);
        }
    }
}

#[cfg(test)]
mod tests;
