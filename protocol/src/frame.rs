//! Framing: every message on the wire is a 4-byte little-endian length and that many bytes.
//!
//! During the handshake a frame carries a Noise handshake message; after it, a Noise transport
//! message whose plaintext is one postcard-encoded [`ClientFrame`](crate::ClientFrame) or
//! [`ServerFrame`](crate::ServerFrame). This module only splits and bounds frames and encodes
//! and decodes plaintext messages; the encryption lives with the peers.

use serde::{Serialize, de::DeserializeOwned};

use crate::handshake::TAG_LEN;

/// Bytes in a frame header (the body length, `u32` little-endian).
pub const HEADER_LEN: usize = 4;

/// Largest frame body either side accepts. A header announcing more closes the connection.
pub const MAX_FRAME: usize = 16 * 1024;

/// Largest plaintext message: a frame body less the authentication tag.
pub const MAX_MESSAGE: usize = MAX_FRAME - TAG_LEN;

/// Why a frame or message could not be encoded or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The header announces a body larger than [`MAX_FRAME`].
    Oversize(u32),
    /// The body is not a valid encoding of the expected message.
    Malformed,
    /// The body decoded, but bytes were left over after the message.
    TrailingBytes,
    /// The output buffer is too small for the encoded message.
    BufferTooSmall,
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Oversize(n) => write!(f, "frame of {n} bytes exceeds the {MAX_FRAME}-byte limit"),
            Self::Malformed => f.write_str("frame body is not a valid message"),
            Self::TrailingBytes => f.write_str("frame body has bytes after the message"),
            Self::BufferTooSmall => f.write_str("message does not fit the output buffer"),
        }
    }
}

/// Finds the first frame in `buf`.
///
/// Returns `Ok(None)` while `buf` holds less than one whole frame, and `Ok(Some((body, used)))`
/// once it does, where `used` counts the header too. An oversize header is reported as soon as
/// the header is complete, before any body byte arrives.
pub fn split_frame(buf: &[u8]) -> Result<Option<(&[u8], usize)>, FrameError> {
    let Some((header, rest)) = buf.split_first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let announced = u32::from_le_bytes(*header);
    let len = usize::try_from(announced).map_err(|_| FrameError::Oversize(announced))?;
    if len > MAX_FRAME {
        return Err(FrameError::Oversize(announced));
    }
    Ok(rest.get(..len).map(|body| (body, HEADER_LEN + len)))
}

/// The header of a frame with a body of `len` bytes; `None` if `len` exceeds [`MAX_FRAME`].
pub fn frame_header(len: usize) -> Option<[u8; HEADER_LEN]> {
    if len > MAX_FRAME {
        return None;
    }
    u32::try_from(len).ok().map(u32::to_le_bytes)
}

/// Encodes `msg` (postcard) into `out`, at most [`MAX_MESSAGE`] bytes; returns the length.
pub fn encode_message<T: Serialize>(msg: &T, out: &mut [u8]) -> Result<usize, FrameError> {
    let limit = out.len().min(MAX_MESSAGE);
    postcard::to_slice(msg, &mut out[..limit])
        .map(|b| b.len())
        .map_err(|_| FrameError::BufferTooSmall)
}

/// Decodes exactly one message from `body`; bytes left over are an error.
pub fn decode_message<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    if body.len() > MAX_MESSAGE {
        return Err(FrameError::Malformed);
    }
    let (msg, left) = postcard::take_from_bytes(body).map_err(|_| FrameError::Malformed)?;
    if !left.is_empty() {
        return Err(FrameError::TrailingBytes);
    }
    Ok(msg)
}
