//! `known_hosts`: the host keys of endpoints used without a context, one
//! `ENDPOINT kaos-x25519 BASE64` per line (blank lines and `#` comments are kept as they are).

use std::path::{Path, PathBuf};

use kaos_protocol::keys::PublicKey;

use crate::config::{ConfigDir, ConfigError, KNOWN_HOSTS, read_optional};

/// The parsed file. Lines that are not pins are kept, so a rewrite changes only the pin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownHosts {
    lines: Vec<Line>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    Pin(String, PublicKey),
    Other(String),
}

impl KnownHosts {
    /// Parses `text`, the contents of `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut lines = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                lines.push(Line::Other(raw.to_owned()));
                continue;
            }
            let malformed = |reason: String| ConfigError::Malformed {
                path: path.to_owned(),
                line: Some(n + 1),
                reason,
            };
            let (endpoint, key) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| malformed("expected `ENDPOINT kaos-x25519 BASE64`".into()))?;
            let (key, _) = PublicKey::parse_line(key).map_err(|e| malformed(e.to_string()))?;
            lines.push(Line::Pin(endpoint.to_owned(), key));
        }
        Ok(Self { lines })
    }

    /// The file's text.
    pub fn to_text(&self) -> String {
        self.lines
            .iter()
            .map(|l| match l {
                Line::Pin(endpoint, key) => format!("{endpoint} {}\n", key.to_line()),
                Line::Other(text) => format!("{text}\n"),
            })
            .collect()
    }

    /// The key pinned for `endpoint` (the first line for it).
    pub fn get(&self, endpoint: &str) -> Option<PublicKey> {
        self.lines.iter().find_map(|l| match l {
            Line::Pin(e, key) if e == endpoint => Some(*key),
            _ => None,
        })
    }

    /// Pins `key` for `endpoint`, replacing any pin it had.
    pub fn set(&mut self, endpoint: &str, key: PublicKey) {
        self.remove(endpoint);
        self.lines.push(Line::Pin(endpoint.to_owned(), key));
    }

    /// Drops `endpoint`'s pin, returning it.
    pub fn remove(&mut self, endpoint: &str) -> Option<PublicKey> {
        let old = self.get(endpoint);
        self.lines
            .retain(|l| !matches!(l, Line::Pin(e, _) if e == endpoint));
        old
    }
}

impl ConfigDir {
    /// `known_hosts`'s path.
    pub fn known_hosts_file(&self) -> PathBuf {
        self.path().join(KNOWN_HOSTS)
    }

    /// Reads `known_hosts`; a missing file pins nothing.
    pub fn known_hosts(&self) -> Result<KnownHosts, ConfigError> {
        let path = self.known_hosts_file();
        match read_optional(&path)? {
            Some(text) => KnownHosts::parse(&text, &path),
            None => Ok(KnownHosts::default()),
        }
    }

    /// Replaces `known_hosts`.
    pub fn save_known_hosts(&self, hosts: &KnownHosts) -> Result<(), ConfigError> {
        self.write(&self.known_hosts_file(), hosts.to_text().as_bytes(), 0o644)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> &'static Path {
        Path::new("/c/known_hosts")
    }

    #[test]
    fn pins_are_read_replaced_and_removed_keeping_comments() {
        let a = PublicKey([1; 32]);
        let b = PublicKey([2; 32]);
        let text = format!("# pins\n\nh:1 {}\nh:2 {} old\n", a.to_line(), b.to_line());
        let mut hosts = KnownHosts::parse(&text, path()).expect("valid");
        assert_eq!(hosts.get("h:1"), Some(a));
        assert_eq!(hosts.get("h:2"), Some(b));
        assert_eq!(hosts.get("h:3"), None);
        hosts.set("h:1", b);
        assert_eq!(hosts.remove("h:2"), Some(b));
        assert_eq!(hosts.remove("h:2"), None);
        assert_eq!(hosts.to_text(), format!("# pins\n\nh:1 {}\n", b.to_line()));
        assert_eq!(
            KnownHosts::parse(&hosts.to_text(), path()).expect("reparses"),
            hosts
        );
    }

    #[test]
    fn a_bad_line_is_reported_with_its_number() {
        let text = format!(
            "h:1 {}\nh:2\nh:3 kaos-x25519 AAAA\n",
            PublicKey([1; 32]).to_line()
        );
        let e = KnownHosts::parse(&text, path()).expect_err("line 2");
        assert!(
            e.to_string().starts_with("/c/known_hosts:2: expected"),
            "{e}"
        );
        let e = KnownHosts::parse(&text.replace("h:2\n", ""), path()).expect_err("line 2");
        assert!(
            e.to_string()
                .starts_with("/c/known_hosts:2: key is not base64"),
            "{e}"
        );
    }
}
