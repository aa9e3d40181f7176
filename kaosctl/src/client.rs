//! A blocking client of the management protocol over kernel TCP.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use kaos_protocol::{
    ClientFrame, ErrorCode, ErrorReply, HEADER_LEN, Hello, MAX_FRAME, Request, Response,
    ServerFrame, ServerHello, decode_frame, encode_frame,
};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The command line asks for something the protocol cannot carry.
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
    /// The host sent bytes that are not a valid frame.
    #[error("invalid reply from {endpoint}: {reason}")]
    Protocol {
        /// The endpoint.
        endpoint: String,
        /// What was wrong.
        reason: String,
    },
    /// The host refused the request.
    #[error("host refused the request: {message} (error {})", .code.code())]
    Refused {
        /// Stable code.
        code: ErrorCode,
        /// The host's message.
        message: String,
    },
}

/// A greeted connection to one host.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    endpoint: String,
    next_id: u32,
    rx: Vec<u8>,
    server: ServerHello,
}

impl Client {
    /// Connects to `endpoint` (`HOST:PORT`) and exchanges hellos, each step bounded by `timeout`.
    pub fn connect(endpoint: &str, timeout: Duration) -> Result<Self, ClientError> {
        let addrs: Vec<SocketAddr> = endpoint
            .to_socket_addrs()
            .map_err(|_| ClientError::Resolve(endpoint.into()))?
            .collect();
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(stream) => {
                    return Self::greet(stream, endpoint, timeout);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(ClientError::Connect {
            endpoint: endpoint.into(),
            source: last.unwrap_or_else(|| std::io::ErrorKind::NotFound.into()),
        })
    }

    fn greet(stream: TcpStream, endpoint: &str, timeout: Duration) -> Result<Self, ClientError> {
        let io = |source| ClientError::Io {
            endpoint: endpoint.into(),
            source,
        };
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let _ = stream.set_nodelay(true);
        let mut client = Self {
            stream,
            endpoint: endpoint.into(),
            next_id: 1,
            rx: Vec::new(),
            server: ServerHello {
                version: kaos_protocol::VERSION,
                hostname: heapless::String::new(),
            },
        };
        let hello = Hello::new(concat!("kaosctl ", env!("CARGO_PKG_VERSION")));
        match client.request(Request::Hello(hello))? {
            Response::Hello(server) => client.server = server,
            other => return Err(client.unexpected(&other)),
        }
        Ok(client)
    }

    /// The host's hello.
    pub fn server(&self) -> &ServerHello {
        &self.server
    }

    /// Sends one request and waits for its response. Error replies become [`ClientError::Refused`].
    pub fn request(&mut self, request: Request) -> Result<Response, ClientError> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let mut buf = vec![0u8; HEADER_LEN + MAX_FRAME];
        let n = encode_frame(&ClientFrame { id, request }, &mut buf)
            .map_err(|e| self.protocol(e.to_string()))?;
        self.stream
            .write_all(&buf[..n])
            .map_err(|source| ClientError::Io {
                endpoint: self.endpoint.clone(),
                source,
            })?;
        loop {
            match decode_frame::<ServerFrame>(&self.rx) {
                Ok(Some((frame, used))) => {
                    self.rx.drain(..used);
                    if frame.id != id {
                        return Err(
                            self.protocol(format!("reply to {} for request {id}", frame.id))
                        );
                    }
                    return match frame.response {
                        Response::Error(e) => Err(refused(e)),
                        response => Ok(response),
                    };
                }
                Ok(None) => self.fill()?,
                Err(e) => return Err(self.protocol(e.to_string())),
            }
        }
    }

    fn fill(&mut self) -> Result<(), ClientError> {
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err(ClientError::Closed(self.endpoint.clone())),
            Ok(n) => {
                self.rx.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(source) => Err(ClientError::Io {
                endpoint: self.endpoint.clone(),
                source,
            }),
        }
    }

    /// An error for a response of the wrong kind.
    pub fn unexpected(&self, response: &Response) -> ClientError {
        self.protocol(format!("unexpected response {response:?}"))
    }

    fn protocol(&self, reason: String) -> ClientError {
        ClientError::Protocol {
            endpoint: self.endpoint.clone(),
            reason,
        }
    }
}

fn refused(e: ErrorReply) -> ClientError {
    ClientError::Refused {
        code: e.code,
        message: e.message.to_string(),
    }
}
