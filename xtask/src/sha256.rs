//! SHA-256 for cache keys and build stamps (the `sha2` crate), with hex output.

use sha2::{Digest as _, Sha256};

/// Lower-case hex SHA-256 of the concatenation of `parts`.
pub fn hex_digest_of(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for part in parts {
        h.update(part);
    }
    to_hex(&h.finalize())
}

/// Lower-case hex SHA-256 of `data`.
pub fn hex_digest(data: &[u8]) -> String {
    hex_digest_of(&[data])
}

/// Lower-case hex encoding.
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_vector() {
        assert_eq!(
            super::hex_digest(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            super::hex_digest_of(&[b"a", b"bc"]),
            super::hex_digest(b"abc")
        );
    }
}
