//! `access list|add|remove` and `whoami`.

use kaos_protocol::keys::PublicKey;
use kaos_protocol::{AccessEntry, Identity, KeySource, Role};
use serde::Serialize;

use super::kebab;

/// One authorised key, or the caller's own identity.
#[derive(Debug, Serialize)]
pub struct AccessView {
    /// Its name on the host.
    pub name: String,
    /// reader, operator or admin.
    pub role: String,
    /// image, command-line, file or store (only store keys can be removed).
    pub source: String,
    /// `SHA256:…`.
    pub fingerprint: String,
    /// `kaos-x25519 BASE64`.
    pub key: String,
}

impl AccessView {
    fn new(name: &str, role: Role, source: KeySource, key: &PublicKey) -> Self {
        Self {
            name: name.into(),
            role: role.as_str().into(),
            source: kebab(&format!("{source:?}")),
            fingerprint: key.fingerprint().to_string(),
            key: key.to_line().to_string(),
        }
    }

    /// Two aligned columns, for `whoami`.
    pub fn identity_table(&self) -> String {
        [
            ("NAME", &self.name),
            ("ROLE", &self.role),
            ("SOURCE", &self.source),
            ("FINGERPRINT", &self.fingerprint),
            ("KEY", &self.key),
        ]
        .iter()
        .map(|(k, v)| format!("{k:<16}{v}\n"))
        .collect()
    }
}

impl From<&AccessEntry> for AccessView {
    fn from(e: &AccessEntry) -> Self {
        Self::new(&e.name, e.role, e.source, &e.key)
    }
}

impl From<&Identity> for AccessView {
    fn from(i: &Identity) -> Self {
        Self::new(&i.name, i.role, i.source, &i.key)
    }
}

/// Authorised keys, one per line.
pub fn access_table(entries: &[AccessView]) -> String {
    let width = entries
        .iter()
        .map(|e| e.name.len())
        .max()
        .unwrap_or(0)
        .max(4)
        + 2;
    let mut out = format!(
        "{:<width$}{:<10}{:<14}{}\n",
        "NAME", "ROLE", "SOURCE", "FINGERPRINT"
    );
    for e in entries {
        out += &format!(
            "{:<width$}{:<10}{:<14}{}\n",
            e.name, e.role, e.source, e.fingerprint
        );
    }
    if entries.is_empty() {
        out += "(no keys)\n";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_listed_by_name_role_source_and_fingerprint() {
        let key = PublicKey([1; 32]);
        let entry = AccessEntry {
            name: kaos_protocol::truncated("ops-laptop"),
            role: Role::Operator,
            key,
            source: KeySource::CommandLine,
        };
        let table = access_table(&[AccessView::from(&entry)]);
        let fp = key.fingerprint().to_string();
        assert_eq!(
            table,
            format!(
                "NAME        ROLE      SOURCE        FINGERPRINT\n\
                 ops-laptop  operator  command-line  {fp}\n"
            )
        );
    }
}
