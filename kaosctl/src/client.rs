//! A blocking client of the management protocol over kernel TCP: the Noise handshake (with the
//! host key checked against a pin), then requests, streams and cancellation.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use kaos_net::client::{ClientHandshake, HostReply, Transport};
use kaos_protocol::handshake::{ClientHello, ServerHello, Verdict};
use kaos_protocol::keys::{Fingerprint, PublicKey, SecretKey};
use kaos_protocol::{ClientFrame, ErrorCode, ErrorReply, Identity, Request, Response, ServerFrame};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The command line asks for something the protocol cannot carry, or local setup is
    /// missing (no key, no context).
    #[error("{0}")]
    Usage(String),
    /// The endpoint string does not resolve to an address.
    #[error("cannot resolve endpoint {0:?}")]
    Resolve(String),
    /// No TCP connection could be made.
    #[error("cannot reach {endpoint}: {source}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// The error.
        source: std::io::Error,
    },
    /// The connection failed or timed out mid-exchange.
    #[error("connection to {endpoint} failed: {source}")]
    Io {
        /// The endpoint.
        endpoint: String,
        /// The error.
        source: std::io::Error,
    },
    /// The host closed the connection before answering.
    #[error("{0} closed the connection")]
    Closed(String),
    /// The host sent bytes that are not valid protocol, or a handshake failed.
    #[error("invalid reply from {endpoint}: {reason}")]
    Protocol {
        /// The endpoint.
        endpoint: String,
        /// What was wrong.
        reason: String,
    },
    /// The host speaks another major protocol version.
    #[error(
        "{endpoint} speaks management protocol {host}, this kaosctl speaks {ours}; \
         use a kaosctl of the host's major version"
    )]
    VersionMismatch {
        /// The endpoint.
        endpoint: String,
        /// The host's version.
        host: kaos_protocol::Version,
        /// Ours.
        ours: kaos_protocol::Version,
    },
    /// The host asked us to come back later, and the timeout did not allow it.
    #[error("{endpoint} refused the connection for now ({reason}); retry in {retry_ms} ms")]
    TryLater {
        /// The endpoint.
        endpoint: String,
        /// Rate limited, backing off after failed authentication, or busy.
        reason: &'static str,
        /// When the host said to retry.
        retry_ms: u16,
    },
    /// No host key is pinned for this endpoint, and none was trusted on the command line.
    #[error(
        "{endpoint} presents host key {fingerprint}, which is not pinned. Check it against the \
         host's console or `status` on a trusted path, then rerun with --trust-new-host or \
         --host-key {fingerprint}"
    )]
    HostKeyUnknown {
        /// The endpoint.
        endpoint: String,
        /// The key it presented.
        fingerprint: Fingerprint,
    },
    /// The host presented another key than the pinned one: someone may be impersonating it.
    #[error(
        "HOST KEY CHANGED for {endpoint}: pinned {pinned}, presented {presented}. Someone may \
         be impersonating the host, or it was reinstalled without its store. If the change is \
         expected, remove the pin (`kaosctl context unpin [NAME]`, or `kaosctl context unpin \
         --endpoint {endpoint}`) and verify the new key"
    )]
    HostKeyChanged {
        /// The endpoint.
        endpoint: String,
        /// The pinned key.
        pinned: Fingerprint,
        /// The key presented.
        presented: Fingerprint,
    },
    /// The host's key does not have the fingerprint given with `--host-key`.
    #[error(
        "{endpoint} presents host key {presented}, not the expected {expected}: wrong \
         fingerprint, or someone is impersonating the host"
    )]
    HostKeyMismatch {
        /// The endpoint.
        endpoint: String,
        /// The fingerprint the user gave.
        expected: Fingerprint,
        /// The key presented.
        presented: Fingerprint,
    },
    /// The host does not know our key.
    #[error("{0}")]
    Unauthorized(String),
    /// The host refused the request.
    #[error("host refused the request: {message} (error {})", .code.code())]
    Refused {
        /// Stable code.
        code: ErrorCode,
        /// The host's message.
        message: String,
    },
}

impl ClientError {
    /// The process exit code `kaosctl` uses for this error (see `kaosctl --help`).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            Self::Resolve(_)
            | Self::Connect { .. }
            | Self::Io { .. }
            | Self::Closed(_)
            | Self::TryLater { .. } => 3,
            Self::HostKeyUnknown { .. }
            | Self::HostKeyChanged { .. }
            | Self::HostKeyMismatch { .. }
            | Self::Unauthorized(_) => 4,
            // A key withdrawn while its session was open.
            Self::Refused {
                code: ErrorCode::Unauthorized,
                ..
            } => 4,
            Self::Refused {
                code: ErrorCode::Busy,
                ..
            } => 3,
            Self::Protocol { .. } | Self::VersionMismatch { .. } | Self::Refused { .. } => 1,
        }
    }
}

/// How the host's key is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyCheck {
    /// It must be this key.
    Pinned(PublicKey),
    /// It must have this fingerprint (a first contact verified out of band).
    Fingerprint(Fingerprint),
    /// Accept whatever key the host presents (a first contact on a trusted network).
    TrustNew,
    /// Nothing pinned and nothing trusted: refuse, telling the user the fingerprint.
    Refuse,
}

/// Everything a connection needs.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Our static key.
    pub key: SecretKey,
    /// How to check the host's.
    pub host_key: HostKeyCheck,
    /// Bounds the connection, each reply, and waiting on a host that said "retry later".
    pub timeout: Duration,
    /// Our name in the host's log.
    pub client_name: String,
}

impl ConnectOptions {
    /// Options with `key`, a check, a timeout, and this kaosctl's name.
    pub fn new(key: SecretKey, host_key: HostKeyCheck, timeout: Duration) -> Self {
        Self {
            key,
            host_key,
            timeout,
            client_name: concat!("kaosctl ", env!("CARGO_PKG_VERSION")).into(),
        }
    }
}

/// An authenticated connection to one host.
pub struct Client {
    conn: Conn,
    next_id: u32,
    transport: Transport,
    server: ServerHello,
    host_key: PublicKey,
    identity: Identity,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.conn.endpoint)
            .field("host_key", &self.host_key)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to `endpoint` (`HOST:PORT`), completes the handshake and checks the host key.
    /// A host that answers "retry later" is retried while `options.timeout` allows.
    pub fn connect(endpoint: &str, options: &ConnectOptions) -> Result<Self, ClientError> {
        let deadline = Instant::now() + options.timeout;
        loop {
            match Self::connect_once(endpoint, options) {
                Err(ClientError::TryLater {
                    retry_ms,
                    endpoint,
                    reason,
                }) => {
                    let wait = Duration::from_millis(u64::from(retry_ms.max(50)));
                    if retry_ms == 0 || Instant::now() + wait >= deadline {
                        return Err(ClientError::TryLater {
                            endpoint,
                            reason,
                            retry_ms,
                        });
                    }
                    std::thread::sleep(wait);
                }
                other => return other,
            }
        }
    }

    fn connect_once(endpoint: &str, options: &ConnectOptions) -> Result<Self, ClientError> {
        let addrs: Vec<SocketAddr> = endpoint
            .to_socket_addrs()
            .map_err(|_| ClientError::Resolve(endpoint.into()))?
            .collect();
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, options.timeout) {
                Ok(stream) => return Self::handshake(stream, endpoint, options),
                Err(e) => last = Some(e),
            }
        }
        Err(ClientError::Connect {
            endpoint: endpoint.into(),
            source: last.unwrap_or_else(|| std::io::ErrorKind::NotFound.into()),
        })
    }

    fn handshake(
        stream: TcpStream,
        endpoint: &str,
        options: &ConnectOptions,
    ) -> Result<Self, ClientError> {
        let io = |source| ClientError::Io {
            endpoint: endpoint.into(),
            source,
        };
        let protocol = |reason: String| ClientError::Protocol {
            endpoint: endpoint.into(),
            reason,
        };
        stream.set_read_timeout(Some(options.timeout)).map_err(io)?;
        stream
            .set_write_timeout(Some(options.timeout))
            .map_err(io)?;
        let _ = stream.set_nodelay(true);
        let mut conn = Conn {
            stream,
            endpoint: endpoint.into(),
            rx: Vec::new(),
        };
        let (mut hs, first) =
            ClientHandshake::start(&options.key).map_err(|e| protocol(e.to_string()))?;
        conn.send(&first)?;
        let reply = loop {
            match hs
                .read_reply(&conn.rx)
                .map_err(|e| protocol(e.to_string()))?
            {
                Some((reply, used)) => {
                    conn.rx.drain(..used);
                    break reply;
                }
                None => conn.fill()?,
            }
        };
        let (host_key, server) = match reply {
            HostReply::Hello { host_key, hello } => (host_key, hello),
            HostReply::Refused(p) => {
                let reason = match p.verdict {
                    Verdict::VersionMismatch | Verdict::Proceed => {
                        return Err(ClientError::VersionMismatch {
                            endpoint: endpoint.into(),
                            host: p.version,
                            ours: kaos_protocol::VERSION,
                        });
                    }
                    Verdict::RateLimited => "too many connections from this address",
                    Verdict::BackingOff => "a recent authentication failure from this address",
                    Verdict::Busy => "the host is busy",
                };
                return Err(ClientError::TryLater {
                    endpoint: endpoint.into(),
                    reason,
                    retry_ms: p.retry_after_ms,
                });
            }
        };
        check_host_key(endpoint, options.host_key, &host_key)?;
        let (mut transport, msg3) = hs
            .finish(&ClientHello::new(&options.client_name))
            .map_err(|e| protocol(e.to_string()))?;
        conn.send(&msg3)?;
        let welcome = conn.next_frame(&mut transport)?;
        let identity = match welcome.response {
            Response::Identity(identity) if welcome.id == 0 => identity,
            Response::Error(e) if e.code == ErrorCode::Unauthorized => {
                return Err(ClientError::Unauthorized(e.message.to_string()));
            }
            Response::Error(e) => return Err(refused(e)),
            other => return Err(protocol(format!("unexpected welcome {other:?}"))),
        };
        Ok(Self {
            conn,
            next_id: 1,
            transport,
            server,
            host_key,
            identity,
        })
    }

    /// The host's hello (name, version, whether its key is persistent).
    pub fn server(&self) -> &ServerHello {
        &self.server
    }

    /// The host's static key, as authenticated by the handshake.
    pub fn host_key(&self) -> PublicKey {
        self.host_key
    }

    /// Who the host says we are.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Sends one request and waits for its response. Error replies become
    /// [`ClientError::Refused`].
    pub fn request(&mut self, request: Request) -> Result<Response, ClientError> {
        let id = self.send(request)?;
        let frame = self.next_frame()?;
        if frame.id != id || !frame.last {
            return Err(self.protocol(format!("reply to {} for request {id}", frame.id)));
        }
        match frame.response {
            Response::Error(e) => Err(refused(e)),
            response => Ok(response),
        }
    }

    /// Sends a request without waiting; returns its id (for streams and [`Client::cancel`]).
    pub fn send(&mut self, request: Request) -> Result<u32, ClientError> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let mut buf = Vec::new();
        self.transport
            .seal(&ClientFrame { id, request }, &mut buf)
            .map_err(|e| self.protocol(e.to_string()))?;
        self.conn.send(&buf)?;
        Ok(id)
    }

    /// Asks the host to end the stream of request `id` (its last frame follows).
    pub fn cancel(&mut self, id: u32) -> Result<u32, ClientError> {
        self.send(Request::Cancel(id))
    }

    /// The next frame from the host, whatever request it answers.
    pub fn next_frame(&mut self) -> Result<ServerFrame, ClientError> {
        self.conn.next_frame(&mut self.transport)
    }

    /// The next frame while following a stream: when the host stays silent for the read
    /// timeout, one `Ping` goes out (its `Pong` is swallowed here); silence after that is an
    /// error, so a lost connection is noticed. `ping` carries the outstanding ping between calls.
    pub fn next_keepalive(&mut self, ping: &mut Option<u32>) -> Result<ServerFrame, ClientError> {
        loop {
            let frame = match self.next_frame() {
                Ok(frame) => frame,
                Err(ClientError::Io { source, .. })
                    if ping.is_none()
                        && matches!(
                            source.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                {
                    *ping = Some(self.send(Request::Ping)?);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if frame.response == Response::Pong && Some(frame.id) == *ping {
                *ping = None;
                continue;
            }
            return Ok(frame);
        }
    }

    /// The console a host holds for VM `name` (up to 64 KiB), as `kaosctl vm logs` prints it.
    pub fn console(&mut self, name: &str) -> Result<Vec<u8>, ClientError> {
        let id = self.send(Request::VmLogs(kaos_protocol::VmLogsQuery {
            name: kaos_protocol::truncated(name),
            follow: false,
        }))?;
        let mut text = Vec::new();
        loop {
            let frame = self.next_frame()?;
            match frame.response {
                Response::Console(chunk) if frame.id == id => {
                    text.extend_from_slice(&chunk.data);
                }
                Response::Error(e) => {
                    return Err(ClientError::Refused {
                        code: e.code,
                        message: e.message.to_string(),
                    });
                }
                other => return Err(self.unexpected(&other)),
            }
            if frame.last {
                return Ok(text);
            }
        }
    }

    /// Changes how long a reply may take (e.g. none while following a stream).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.conn
            .stream
            .set_read_timeout(timeout)
            .map_err(|source| ClientError::Io {
                endpoint: self.conn.endpoint.clone(),
                source,
            })
    }

    /// An error for a response of the wrong kind.
    pub fn unexpected(&self, response: &Response) -> ClientError {
        self.protocol(format!("unexpected response {response:?}"))
    }

    fn protocol(&self, reason: String) -> ClientError {
        ClientError::Protocol {
            endpoint: self.conn.endpoint.clone(),
            reason,
        }
    }
}

/// The raw connection while the client is being built.
struct Conn {
    stream: TcpStream,
    endpoint: String,
    rx: Vec<u8>,
}

impl Conn {
    fn send(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream
            .write_all(bytes)
            .map_err(|source| ClientError::Io {
                endpoint: self.endpoint.clone(),
                source,
            })
    }

    fn fill(&mut self) -> Result<(), ClientError> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ClientError::Closed(self.endpoint.clone())),
                Ok(n) => {
                    self.rx.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                // A signal ended the wait, not the host: a read with a timeout fails so even
                // without a handler, after a stop and continue (signal(7)). Wait again.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(ClientError::Io {
                        endpoint: self.endpoint.clone(),
                        source,
                    });
                }
            }
        }
    }

    fn next_frame(&mut self, transport: &mut Transport) -> Result<ServerFrame, ClientError> {
        loop {
            match transport.open(&self.rx) {
                Ok(Some((frame, used))) => {
                    self.rx.drain(..used);
                    return Ok(frame);
                }
                Ok(None) => self.fill()?,
                Err(e) => {
                    return Err(ClientError::Protocol {
                        endpoint: self.endpoint.clone(),
                        reason: e.to_string(),
                    });
                }
            }
        }
    }
}

fn check_host_key(
    endpoint: &str,
    check: HostKeyCheck,
    presented: &PublicKey,
) -> Result<(), ClientError> {
    let fingerprint = presented.fingerprint();
    match check {
        HostKeyCheck::TrustNew => Ok(()),
        HostKeyCheck::Pinned(pinned) if pinned == *presented => Ok(()),
        HostKeyCheck::Fingerprint(fp) if fp == fingerprint => Ok(()),
        HostKeyCheck::Pinned(pinned) => Err(ClientError::HostKeyChanged {
            endpoint: endpoint.into(),
            pinned: pinned.fingerprint(),
            presented: fingerprint,
        }),
        HostKeyCheck::Fingerprint(fp) => Err(ClientError::HostKeyMismatch {
            endpoint: endpoint.into(),
            expected: fp,
            presented: fingerprint,
        }),
        HostKeyCheck::Refuse => Err(ClientError::HostKeyUnknown {
            endpoint: endpoint.into(),
            fingerprint,
        }),
    }
}

fn refused(e: ErrorReply) -> ClientError {
    ClientError::Refused {
        code: e.code,
        message: e.message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::net::TcpListener;
    use std::process::Command;

    use rustix::process::{Pid, Signal, kill_process};

    use super::*;

    const CHILD: &str = "KAOS_TEST_FILL_FROM";

    /// A client waiting for a reply is stopped and continued (Ctrl-Z and `fg` in a shell; a
    /// scheduler freezing it): its read, which has a timeout, then fails with `Interrupted`
    /// even without a signal handler (signal(7)). The client waits on and gets the reply. The
    /// test binary runs itself as the waiting client, so that only it is stopped.
    #[test]
    fn a_reply_arrives_across_a_stop_and_continue() {
        if let Ok(addr) = std::env::var(CHILD) {
            let stream = TcpStream::connect(&addr).expect("connect");
            stream
                .set_read_timeout(Some(Duration::from_secs(20)))
                .expect("timeout");
            let mut conn = Conn {
                stream,
                endpoint: addr,
                rx: Vec::new(),
            };
            conn.fill().expect("the reply, not an error");
            assert_eq!(conn.rx, b"late");
            return;
        }
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address").to_string();
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "client::tests::a_reply_arrives_across_a_stop_and_continue",
            ])
            .env(CHILD, &addr)
            .spawn()
            .expect("spawn");
        let (mut peer, _) = listener.accept().expect("accept");
        let pid = Pid::from_child(&child);
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(100));
            kill_process(pid, Signal::STOP).expect("stop");
            std::thread::sleep(Duration::from_millis(50));
            kill_process(pid, Signal::CONT).expect("continue");
        }
        peer.write_all(b"late").expect("reply");
        let status = child.wait().expect("wait");
        assert!(status.success(), "the waiting client failed: {status}");
    }
}
