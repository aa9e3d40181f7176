//! Module upload: resumable, pipelined, checked by the host against the file's SHA-256.

use std::collections::VecDeque;

use kaos_protocol::{ModuleInfo, ModuleUpload, Request, Response, UPLOAD_CHUNK};
use sha2::{Digest as _, Sha256};

use crate::{Client, ClientError};

/// Pieces in flight at once: enough to hide the round trip, few enough to stay far from the
/// host's buffers.
pub const WINDOW: usize = 8;

fn piece(bytes: &[u8], sha256: [u8; 32], offset: u64) -> Request {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let end = (start + UPLOAD_CHUNK).min(bytes.len());
    let mut data = heapless::Vec::new();
    // At most UPLOAD_CHUNK bytes: cannot fail.
    let _ = data.extend_from_slice(&bytes[start..end]);
    Request::ModuleUpload(ModuleUpload {
        sha256,
        size: bytes.len() as u64,
        offset,
        data,
    })
}

fn refused(e: &kaos_protocol::ErrorReply) -> ClientError {
    ClientError::Refused {
        code: e.code,
        message: e.message.to_string(),
    }
}

/// Uploads a module file. First asks the host how much it holds (an interrupted upload resumes
/// there; a module it already stores completes at once), then sends the rest with [`WINDOW`]
/// pieces in flight. `progress` is called with the bytes the host holds, the first time with
/// the resume point.
///
/// # Errors
/// The host's refusal (bad archive, hash mismatch, no room) or a connection error.
pub fn push(
    c: &mut Client,
    bytes: &[u8],
    mut progress: impl FnMut(u64),
) -> Result<ModuleInfo, ClientError> {
    let sha256: [u8; 32] = Sha256::digest(bytes).into();
    let size = bytes.len() as u64;
    // An empty piece asks where the upload stands.
    let mut probe = piece(bytes, sha256, size);
    if let Request::ModuleUpload(up) = &mut probe {
        up.data.clear();
    }
    let state = match c.request(probe)? {
        Response::Upload(state) => state,
        Response::Error(e) => return Err(refused(&e)),
        other => return Err(c.unexpected(&other)),
    };
    progress(state.received);
    let mut module = state.module;
    let mut next = state.received;
    let mut in_flight: VecDeque<u32> = VecDeque::new();
    while module.is_none() {
        while in_flight.len() < WINDOW && next < size {
            in_flight.push_back(c.send(piece(bytes, sha256, next))?);
            next = (next + UPLOAD_CHUNK as u64).min(size);
        }
        let Some(id) = in_flight.pop_front() else {
            return Err(ClientError::Protocol {
                endpoint: c.server().hostname.to_string(),
                reason: "every piece was accepted but the upload did not complete".into(),
            });
        };
        let frame = c.next_frame()?;
        if frame.id != id {
            return Err(c.unexpected(&frame.response));
        }
        match frame.response {
            Response::Upload(state) => {
                progress(state.received);
                module = state.module;
            }
            Response::Error(e) => return Err(refused(&e)),
            other => return Err(c.unexpected(&other)),
        }
    }
    module.ok_or_else(|| ClientError::Protocol {
        endpoint: c.server().hostname.to_string(),
        reason: "no module in the final answer".into(),
    })
}
