//! Key text formats and fingerprints, shared by `kattach`, `kaosctl` and `xtask`.
//!
//! Keys are X25519 (the Noise static keys of [`crate::handshake`]). Their text forms follow
//! OpenSSH so that operators recognise them:
//! - public: `kaos-x25519 <base64 of 32 bytes> [comment]` (one line, e.g. in `authorized_keys`);
//! - secret: `kaos-x25519-secret <base64 of 32 bytes>` (a file of mode 0600);
//! - fingerprint: `SHA256:<unpadded base64 of SHA-256(public key)>`.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use heapless::String;
use sha2::{Digest, Sha256};

/// Bytes of an X25519 key.
pub const KEY_LEN: usize = 32;
/// Type tag of a public key line.
pub const PUBLIC_TAG: &str = "kaos-x25519";
/// Type tag of a secret key file.
pub const SECRET_TAG: &str = "kaos-x25519-secret";

/// A static public key: a host's or a client's identity.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl core::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

/// Why a key text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// The line does not start with the expected type tag.
    WrongType,
    /// The key is not valid base64 of exactly 32 bytes.
    BadKey,
}

impl core::fmt::Display for KeyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::WrongType => write!(f, "not a `{PUBLIC_TAG}` key"),
            Self::BadKey => f.write_str("key is not base64 of 32 bytes"),
        }
    }
}

impl PublicKey {
    /// Parses `kaos-x25519 BASE64 [comment]`, returning the key and the comment (may be empty).
    pub fn parse_line(line: &str) -> Result<(Self, &str), KeyError> {
        let line = line.trim();
        let rest = line.strip_prefix(PUBLIC_TAG).ok_or(KeyError::WrongType)?;
        if !rest.starts_with(char::is_whitespace) {
            return Err(KeyError::WrongType);
        }
        let rest = rest.trim_start();
        let (b64, comment) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        Ok((Self(decode_key(b64)?), comment.trim()))
    }

    /// Parses the bare base64 form (as on a kernel command line).
    pub fn from_base64(b64: &str) -> Result<Self, KeyError> {
        decode_key(b64).map(Self)
    }

    /// The base64 form of the key alone.
    pub fn to_base64(&self) -> String<44> {
        encode_key(&self.0)
    }

    /// `kaos-x25519 BASE64` (without comment).
    pub fn to_line(&self) -> String<56> {
        let mut s = String::new();
        // 11 + 1 + 44 bytes: always fits.
        let _ = s.push_str(PUBLIC_TAG);
        let _ = s.push(' ');
        let _ = s.push_str(&self.to_base64());
        s
    }

    /// `SHA256:` and the unpadded base64 of the key's SHA-256, as OpenSSH prints fingerprints.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint(Sha256::digest(self.0).into())
    }
}

/// A key's SHA-256, shown as `SHA256:<base64>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// Parses `SHA256:<base64>` (the `SHA256:` prefix is optional).
    pub fn parse(text: &str) -> Option<Self> {
        let b64 = text.trim();
        let b64 = b64.strip_prefix("SHA256:").unwrap_or(b64);
        let mut out = [0u8; 33];
        let n = STANDARD_NO_PAD
            .decode_slice(b64.trim_end_matches('='), &mut out)
            .ok()?;
        (n == 32).then(|| {
            let mut fp = [0u8; 32];
            fp.copy_from_slice(&out[..32]);
            Self(fp)
        })
    }
}

impl core::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut buf = [0u8; 43];
        let n = STANDARD_NO_PAD
            .encode_slice(self.0, &mut buf)
            .map_err(|_| core::fmt::Error)?;
        let text = core::str::from_utf8(&buf[..n]).map_err(|_| core::fmt::Error)?;
        write!(f, "SHA256:{text}")
    }
}

impl core::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(self, f)
    }
}

/// A static secret key. Never printed: `Debug` shows only that it is secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(pub [u8; KEY_LEN]);

impl core::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// Parses the secret key file text `kaos-x25519-secret BASE64`.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let rest = text
            .trim()
            .strip_prefix(SECRET_TAG)
            .ok_or(KeyError::WrongType)?;
        decode_key(rest.trim()).map(Self)
    }

    /// A key from 32 random bytes (X25519 clamps at use, so any bytes are a valid key).
    pub fn from_random(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The matching public key (X25519 base-point multiplication).
    pub fn public(&self) -> PublicKey {
        PublicKey(curve25519_dalek::MontgomeryPoint::mul_base_clamped(self.0).to_bytes())
    }

    /// The secret key file text (with a trailing newline).
    pub fn to_text(&self) -> String<64> {
        let mut s = String::new();
        let _ = s.push_str(SECRET_TAG);
        let _ = s.push(' ');
        let _ = s.push_str(&encode_key(&self.0));
        let _ = s.push('\n');
        s
    }
}

fn decode_key(b64: &str) -> Result<[u8; KEY_LEN], KeyError> {
    // One spare byte, so a longer key is told apart from a 32-byte one.
    let mut out = [0u8; KEY_LEN + 3];
    let n = STANDARD
        .decode_slice(b64, &mut out)
        .map_err(|_| KeyError::BadKey)?;
    if n != KEY_LEN {
        return Err(KeyError::BadKey);
    }
    let mut key = [0u8; KEY_LEN];
    key.copy_from_slice(&out[..KEY_LEN]);
    Ok(key)
}

fn encode_key(key: &[u8; KEY_LEN]) -> String<44> {
    let mut buf = [0u8; 44];
    let mut s = String::new();
    if let Ok(n) = STANDARD.encode_slice(key, &mut buf) {
        for &b in &buf[..n] {
            let _ = s.push(char::from(b));
        }
    }
    s
}
