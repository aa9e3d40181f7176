//! Length-prefixed framing: a 4-byte little-endian body length, then a postcard body.

use serde::{Serialize, de::DeserializeOwned};

/// Bytes in a frame header (the body length, `u32` little-endian).
pub const HEADER_LEN: usize = 4;

/// Largest frame body either side accepts. A header announcing more closes the connection.
pub const MAX_FRAME: usize = 16 * 1024;

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The header announces a body larger than [`MAX_FRAME`].
    Oversize(u32),
    /// The body is not a valid encoding of the expected message.
    Malformed,
    /// The body decoded, but bytes were left over after the message.
    TrailingBytes,
    /// The output buffer is too small for the encoded frame.
    BufferTooSmall,
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Oversize(n) => write!(f, "frame of {n} bytes exceeds the {MAX_FRAME}-byte limit"),
            Self::Malformed => f.write_str("frame body is not a valid message"),
            Self::TrailingBytes => f.write_str("frame body has bytes after the message"),
            Self::BufferTooSmall => f.write_str("frame does not fit the output buffer"),
        }
    }
}

/// Encodes `msg` as one frame into `out`, returning the bytes written.
pub fn encode_frame<T: Serialize>(msg: &T, out: &mut [u8]) -> Result<usize, FrameError> {
    let (header, body) = out
        .split_at_mut_checked(HEADER_LEN)
        .ok_or(FrameError::BufferTooSmall)?;
    let limit = body.len().min(MAX_FRAME);
    let len = postcard::to_slice(msg, &mut body[..limit])
        .map_err(|_| FrameError::BufferTooSmall)?
        .len();
    // `len <= MAX_FRAME`, which fits in a u32.
    let len32 = u32::try_from(len).map_err(|_| FrameError::BufferTooSmall)?;
    header.copy_from_slice(&len32.to_le_bytes());
    Ok(HEADER_LEN + len)
}

/// Decodes the first frame in `buf`.
///
/// Returns `Ok(None)` while `buf` holds less than one whole frame, and `Ok(Some((msg, used)))`
/// once it does, where `used` is the number of bytes the frame took. An oversize header is
/// reported as soon as the header is complete, before any body byte arrives.
pub fn decode_frame<T: DeserializeOwned>(buf: &[u8]) -> Result<Option<(T, usize)>, FrameError> {
    let Some((header, rest)) = buf.split_first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let announced = u32::from_le_bytes(*header);
    let len = usize::try_from(announced).map_err(|_| FrameError::Oversize(announced))?;
    if len > MAX_FRAME {
        return Err(FrameError::Oversize(announced));
    }
    let Some(body) = rest.get(..len) else {
        return Ok(None);
    };
    let (msg, left) = postcard::take_from_bytes(body).map_err(|_| FrameError::Malformed)?;
    if !left.is_empty() {
        return Err(FrameError::TrailingBytes);
    }
    Ok(Some((msg, HEADER_LEN + len)))
}
