//! One management connection's protocol state, without I/O: bytes in, reply frames out.
//!
//! The endpoint feeds received bytes with [`Session::receive`] and calls [`Session::process`],
//! which decodes every complete frame, asks the [`Handler`] for answers and appends the encoded
//! replies to an output buffer. A frame that cannot be decoded is fatal for this connection only.

use kaos_protocol::{
    ClientFrame, ErrorCode, ErrorReply, FrameError, HEADER_LEN, MAX_FRAME, Request, Response,
    ServerFrame, ServerHello, decode_frame, encode_frame,
};

/// What a connection can ask of the host.
pub trait Handler {
    /// The answer to an accepted hello.
    fn hello(&mut self) -> ServerHello;
    /// The answer to any request but a hello.
    fn request(&mut self, request: &Request) -> Response;
}

/// Why a session ended abruptly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The client sent bytes that are not a valid frame.
    #[error("{0}")]
    Frame(FrameError),
}

/// Protocol state of one connection.
#[derive(Debug, Default)]
pub struct Session {
    rx: Vec<u8>,
    greeted: bool,
    closing: bool,
}

impl Session {
    /// Takes as many bytes of `data` as fit the frame buffer, returning how many were taken.
    /// The buffer holds exactly one maximal frame, so a valid client is never refused here.
    pub fn receive(&mut self, data: &[u8]) -> usize {
        let room = (HEADER_LEN + MAX_FRAME).saturating_sub(self.rx.len());
        let n = data.len().min(room);
        self.rx.extend_from_slice(&data[..n]);
        n
    }

    /// True once a reply was produced after which the connection closes (a refused hello, an
    /// accepted reboot or shutdown). Bytes received after that are ignored.
    pub fn closing(&self) -> bool {
        self.closing
    }

    /// Answers every complete frame received so far, appending encoded replies to `out`.
    pub fn process(
        &mut self,
        handler: &mut impl Handler,
        out: &mut Vec<u8>,
    ) -> Result<(), SessionError> {
        while !self.closing {
            let (frame, used) = match decode_frame::<ClientFrame>(&self.rx) {
                Ok(Some(decoded)) => decoded,
                Ok(None) => break,
                Err(e) => return Err(SessionError::Frame(e)),
            };
            self.rx.drain(..used);
            let response = self.answer(handler, &frame.request);
            push_frame(
                out,
                &ServerFrame {
                    id: frame.id,
                    response,
                },
            );
        }
        Ok(())
    }

    fn answer(&mut self, handler: &mut impl Handler, request: &Request) -> Response {
        match (self.greeted, request) {
            (false, Request::Hello(hello)) => {
                if hello.magic != kaos_protocol::MAGIC {
                    self.closing = true;
                    return error(ErrorCode::BadMagic, "not a KaOS client");
                }
                if hello.version.major != kaos_protocol::VERSION.major {
                    self.closing = true;
                    let mut msg = String::new();
                    use std::fmt::Write as _;
                    let _ = write!(
                        msg,
                        "host speaks protocol {}, client {}",
                        kaos_protocol::VERSION,
                        hello.version
                    );
                    return error(ErrorCode::VersionMismatch, &msg);
                }
                self.greeted = true;
                Response::Hello(handler.hello())
            }
            (false, _) => {
                self.closing = true;
                error(
                    ErrorCode::HelloRequired,
                    "the first request must be a hello",
                )
            }
            (true, Request::Hello(_)) => error(ErrorCode::HelloRequired, "already greeted"),
            (true, request) => {
                let response = handler.request(request);
                let ends = matches!(request, Request::Reboot | Request::Shutdown);
                if ends && response == Response::Accepted {
                    self.closing = true;
                }
                response
            }
        }
    }
}

fn error(code: ErrorCode, message: &str) -> Response {
    Response::Error(ErrorReply::new(code, message))
}

/// Appends `frame` to `out`; a reply too large for a frame becomes an `Internal` error reply.
fn push_frame(out: &mut Vec<u8>, frame: &ServerFrame) {
    let start = out.len();
    out.resize(start + HEADER_LEN + MAX_FRAME, 0);
    let written = encode_frame(frame, &mut out[start..]).unwrap_or_else(|e| {
        log::error!("reply {} does not fit a frame: {e}", frame.id);
        let fallback = ServerFrame {
            id: frame.id,
            response: error(ErrorCode::Internal, "reply too large"),
        };
        // A bare error reply is a few dozen bytes: it always fits.
        encode_frame(&fallback, &mut out[start..]).unwrap_or(0)
    });
    out.truncate(start + written);
}

#[cfg(test)]
mod tests;
