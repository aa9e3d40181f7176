//! `kaos-protocol`: the wire format of the KaOS management port (TCP 1289).
//!
//! Design principles:
//! - `#![no_std]`, no allocator: every message is bounded (`heapless` strings and vectors), so the
//!   same crate serves `kattach`, `kaosctl` and a bare-metal client.
//! - postcard is the encoding, so enum variants are encoded by their index: **variants and fields
//!   are only ever appended**. The golden-byte tests in [`tests`](self) pin the encoding.
//! - Every frame is length-prefixed and bounded by [`MAX_FRAME`]; a decoder never reads past the
//!   length it was given and never panics on any input.
//! - A connection starts with [`Request::Hello`]; a major version mismatch is refused with
//!   [`ErrorCode::VersionMismatch`] before anything else is decoded.
//!
//! See `docs/protocol.md` for the session flow and the compatibility rules.
#![no_std]
#![deny(unsafe_code)]

mod frame;
mod message;

pub use frame::{FrameError, HEADER_LEN, MAX_FRAME, decode_frame, encode_frame};
pub use message::*;

/// The TCP port of the management endpoint.
pub const PORT: u16 = 1289;

/// Protocol version spoken by this build. A peer with another `major` is refused; `minor` only
/// adds messages and fields that an older peer never sends.
pub const VERSION: Version = Version { major: 0, minor: 2 };

/// First bytes of every client hello, so a stray client of another protocol is told apart from a
/// KaOS client with a bad version.
pub const MAGIC: [u8; 4] = *b"KAOS";

#[cfg(test)]
mod tests;
