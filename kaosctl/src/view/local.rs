//! Local state: keys (`key generate|show`) and contexts (`context list`).

use kaos_protocol::keys::PublicKey;
use serde::Serialize;

use crate::config::{Config, DEFAULT_KEY};
use crate::keyfile::KeyRef;

/// A client key on disk.
#[derive(Debug, Serialize)]
pub struct KeyView {
    /// Its name (the file stem).
    pub name: String,
    /// The secret key file.
    pub secret_file: String,
    /// The public key file.
    pub public_file: String,
    /// `kaos-x25519 BASE64 NAME`, the line to give an admin for `kaosctl access add`.
    pub public_key: String,
    /// `SHA256:…`, as hosts log and list it.
    pub fingerprint: String,
}

impl KeyView {
    /// The view of `key`, whose public half is `public`.
    pub fn new(key: &KeyRef, public: &PublicKey) -> Self {
        Self {
            name: key.name.clone(),
            secret_file: key.secret.display().to_string(),
            public_file: key.public().display().to_string(),
            public_key: format!("{} {}", public.to_line(), key.name),
            fingerprint: public.fingerprint().to_string(),
        }
    }

    /// Two aligned columns.
    pub fn table(&self) -> String {
        [
            ("NAME", &self.name),
            ("SECRET", &self.secret_file),
            ("PUBLIC", &self.public_file),
            ("KEY", &self.public_key),
            ("FINGERPRINT", &self.fingerprint),
        ]
        .iter()
        .map(|(k, v)| format!("{k:<13}{v}\n"))
        .collect()
    }
}

/// One context.
#[derive(Debug, Serialize)]
pub struct ContextView {
    /// Its name.
    pub name: String,
    /// True for the current context.
    pub current: bool,
    /// `HOST:PORT`.
    pub endpoint: String,
    /// The key it uses (a name under `keys/`, or a path).
    pub key: String,
    /// The pinned host key, `kaos-x25519 BASE64`; `None` until first contact.
    pub host_key: Option<String>,
    /// Its fingerprint.
    pub host_key_fingerprint: Option<String>,
}

impl ContextView {
    /// Every context of `config`, in name order.
    pub fn all(config: &Config) -> Vec<Self> {
        config
            .contexts
            .iter()
            .map(|(name, c)| Self {
                name: name.clone(),
                current: config.current_context.as_deref() == Some(name),
                endpoint: c.endpoint.to_string(),
                key: c.key.clone().unwrap_or_else(|| DEFAULT_KEY.into()),
                host_key: c.host_key.map(|p| p.0.to_line().to_string()),
                host_key_fingerprint: c.host_key.map(|p| p.0.fingerprint().to_string()),
            })
            .collect()
    }
}

/// Contexts, the current one marked `*`.
pub fn context_table(contexts: &[ContextView]) -> String {
    let w = |f: fn(&ContextView) -> usize, min: usize| {
        contexts.iter().map(f).max().unwrap_or(0).max(min) + 2
    };
    let (name_w, endpoint_w, key_w) = (
        w(|c| c.name.len(), 4),
        w(|c| c.endpoint.len(), 8),
        w(|c| c.key.len(), 3),
    );
    let mut out = format!(
        "  {:<name_w$}{:<endpoint_w$}{:<key_w$}{}\n",
        "NAME", "ENDPOINT", "KEY", "HOST KEY"
    );
    for c in contexts {
        out += &format!(
            "{} {:<name_w$}{:<endpoint_w$}{:<key_w$}{}\n",
            if c.current { '*' } else { ' ' },
            c.name,
            c.endpoint,
            c.key,
            c.host_key_fingerprint.as_deref().unwrap_or("not pinned")
        );
    }
    if contexts.is_empty() {
        out += "(no contexts: `kaosctl context add NAME --endpoint HOST:PORT`)\n";
    }
    out
}
