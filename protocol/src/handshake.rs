//! Connection set-up: a cleartext preamble in each direction, then a Noise `XX` handshake.
//!
//! ```text
//! client                                                   host
//!   ClientPreamble (8 B) ‖ frame(Noise XX msg 1: e) ──────▶
//!                                                          verdict: proceed / version / busy / back-off
//!   ◀────── ServerPreamble (12 B) ‖ frame(msg 2: e, ee, s, es; payload ServerHello)
//!   [client checks the host key against its pin]
//!   frame(msg 3: s, se; payload ClientHello) ─────────────▶
//!                                                          [host checks the client key and its role]
//!   ◀────── frame(transport: ServerFrame { id: 0, Welcome | Error })
//! ```
//!
//! The preambles carry the versions in clear, so a major mismatch is reported on both sides
//! before any cryptography; the client preamble is also the Noise prologue, so a version
//! rewritten on the path breaks the handshake. The host's verdict lets it refuse a source that
//! is rate limited or backing off after failed authentication without spending a single
//! Diffie-Hellman operation. Every frame after the handshake is a Noise transport message
//! carrying one postcard `ClientFrame` or `ServerFrame`; see `docs/protocol.md`.

use serde::{Deserialize, Serialize};

use crate::{MAGIC, Name, Version};

/// The Noise protocol name: XX (mutual authentication, the host's key learnt or checked by the
/// client), X25519, ChaCha20-Poly1305, BLAKE2s.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";

/// Bytes of the authentication tag on every Noise transport message.
pub const TAG_LEN: usize = 16;

/// Bytes of [`ClientPreamble`] on the wire.
pub const CLIENT_PREAMBLE_LEN: usize = 8;
/// Bytes of [`ServerPreamble`] on the wire.
pub const SERVER_PREAMBLE_LEN: usize = 12;

/// Fixed label in front of the client preamble in the Noise prologue.
const PROLOGUE_LABEL: &[u8; 10] = b"kaos-mgmt\0";

/// The client's first bytes: magic and protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientPreamble {
    /// The client's protocol version.
    pub version: Version,
}

/// Why a preamble was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreambleError {
    /// The bytes do not start with [`MAGIC`]: not a KaOS peer.
    BadMagic,
    /// Unknown verdict byte from a host.
    BadVerdict(u8),
}

impl core::fmt::Display for PreambleError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadMagic => f.write_str("not a KaOS management peer (bad magic)"),
            Self::BadVerdict(v) => write!(f, "unknown verdict {v} from the host"),
        }
    }
}

impl ClientPreamble {
    /// The preamble this build sends.
    pub const CURRENT: Self = Self {
        version: crate::VERSION,
    };

    /// Wire form: `"KAOS"`, major (u16 LE), minor (u16 LE).
    pub fn encode(&self) -> [u8; CLIENT_PREAMBLE_LEN] {
        let mut b = [0u8; CLIENT_PREAMBLE_LEN];
        put_magic_version(&mut b, self.version);
        b
    }

    /// Parses the wire form.
    pub fn decode(b: &[u8; CLIENT_PREAMBLE_LEN]) -> Result<Self, PreambleError> {
        Ok(Self {
            version: magic_version(b)?,
        })
    }

    /// The Noise prologue both sides mix into the handshake: a label and this preamble.
    pub fn prologue(&self) -> [u8; 18] {
        let mut p = [0u8; 18];
        p[..10].copy_from_slice(PROLOGUE_LABEL);
        p[10..].copy_from_slice(&self.encode());
        p
    }
}

/// What the host decided about a new connection, before any cryptography.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The handshake message 2 follows.
    Proceed,
    /// The major versions differ; the host closes.
    VersionMismatch,
    /// Too many handshakes from this source; retry after the delay.
    RateLimited,
    /// Authentication failed recently from this source; retry after the delay.
    BackingOff,
    /// The host has no room for another connection; retry after the delay.
    Busy,
}

impl Verdict {
    fn to_byte(self) -> u8 {
        match self {
            Self::Proceed => 0,
            Self::VersionMismatch => 1,
            Self::RateLimited => 2,
            Self::BackingOff => 3,
            Self::Busy => 4,
        }
    }

    fn from_byte(b: u8) -> Result<Self, PreambleError> {
        Ok(match b {
            0 => Self::Proceed,
            1 => Self::VersionMismatch,
            2 => Self::RateLimited,
            3 => Self::BackingOff,
            4 => Self::Busy,
            other => return Err(PreambleError::BadVerdict(other)),
        })
    }
}

/// The host's first bytes: magic, its version, and its verdict on this connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerPreamble {
    /// The host's protocol version.
    pub version: Version,
    /// Whether the handshake proceeds.
    pub verdict: Verdict,
    /// With a refusal: milliseconds after which a retry may succeed (0: do not retry).
    pub retry_after_ms: u16,
}

impl ServerPreamble {
    /// Wire form: `"KAOS"`, major, minor (u16 LE), verdict (u8), 0, retry_after_ms (u16 LE).
    pub fn encode(&self) -> [u8; SERVER_PREAMBLE_LEN] {
        let mut b = [0u8; SERVER_PREAMBLE_LEN];
        put_magic_version(&mut b, self.version);
        b[8] = self.verdict.to_byte();
        b[10..12].copy_from_slice(&self.retry_after_ms.to_le_bytes());
        b
    }

    /// Parses the wire form.
    /// The reserved byte 9 is ignored (sent as 0), so a later minor version may use it.
    pub fn decode(b: &[u8; SERVER_PREAMBLE_LEN]) -> Result<Self, PreambleError> {
        Ok(Self {
            version: magic_version(b)?,
            verdict: Verdict::from_byte(b[8])?,
            retry_after_ms: u16::from_le_bytes([b[10], b[11]]),
        })
    }
}

/// Writes the magic and `version` into the first 8 bytes both preambles share.
fn put_magic_version(b: &mut [u8], version: Version) {
    b[..4].copy_from_slice(&MAGIC);
    b[4..6].copy_from_slice(&version.major.to_le_bytes());
    b[6..8].copy_from_slice(&version.minor.to_le_bytes());
}

/// Reads the magic and the version from the first 8 bytes both preambles share.
fn magic_version(b: &[u8]) -> Result<Version, PreambleError> {
    match b {
        [m0, m1, m2, m3, a, b, c, d, ..] if [*m0, *m1, *m2, *m3] == MAGIC => Ok(Version {
            major: u16::from_le_bytes([*a, *b]),
            minor: u16::from_le_bytes([*c, *d]),
        }),
        _ => Err(PreambleError::BadMagic),
    }
}

/// Payload of handshake message 2 (encrypted to the client's ephemeral key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHello {
    /// The host's protocol version (authenticated, unlike the preamble's).
    pub version: Version,
    /// The host's name.
    pub hostname: Name,
    /// False when the host key lives only in memory and changes at the next boot.
    pub key_persistent: bool,
}

/// Payload of handshake message 3 (encrypted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientHello {
    /// Free-form client name for the host's log, e.g. `kaosctl 0.1.0`.
    pub client: Name,
}

impl ClientHello {
    /// A hello naming `client`, cut to fit.
    pub fn new(client: &str) -> Self {
        Self {
            client: crate::truncated(client),
        }
    }
}
