//! `kaos-protocol`: the wire format of the KaOS management port (TCP 1289).
//!
//! Design principles:
//! - `#![no_std]`, no allocator: every message is bounded (`heapless` strings and vectors), so the
//!   same crate serves `kattach`, `kaosctl` and a bare-metal client.
//! - postcard is the encoding, so enum variants are encoded by their index: **variants and fields
//!   are only ever appended**. The golden-byte tests in [`tests`](self) pin the encoding.
//! - Every frame is length-prefixed and bounded by [`MAX_FRAME`]; a decoder never reads past the
//!   length it was given and never panics on any input.
//! - A connection starts with a cleartext preamble and a Noise `XX` handshake
//!   ([`handshake`]); a major version mismatch is reported by both sides before any
//!   cryptography, and no request is decoded before both keys are authenticated.
//!
//! See `docs/protocol.md` for the session flow and the compatibility rules.
#![no_std]
#![deny(unsafe_code)]

pub mod apps;
mod frame;
pub mod handshake;
pub mod keys;
mod message;
pub mod net;
pub mod vm;

pub use apps::*;
pub use frame::{
    FrameError, HEADER_LEN, MAX_FRAME, MAX_MESSAGE, decode_message, encode_message, frame_header,
    split_frame,
};
pub use message::*;
pub use net::*;
pub use vm::*;

/// The TCP port of the management endpoint.
pub const PORT: u16 = 1289;

/// Protocol version spoken by this build. A peer with another `major` is refused; `minor` only
/// adds messages and fields that an older peer never sends.
pub const VERSION: Version = Version { major: 1, minor: 4 };

/// First bytes of both preambles, so a stray peer of another protocol is told apart from a
/// KaOS peer with another version.
pub const MAGIC: [u8; 4] = *b"KAOS";

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_apps;
#[cfg(test)]
mod tests_module;
#[cfg(test)]
mod tests_net;
