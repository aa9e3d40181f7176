//! Who may manage this host: the host's own static key and every authorised client key.
//!
//! Client keys come from four places, listed in this order by `kaosctl access list`:
//! - the image (`/etc/kaos/authorized_keys`, written by `cargo xtask image --authorize`);
//! - the kernel command line (`kaos.authorize=BASE64[:ROLE],…`);
//! - a file given to a hosted `kattach` (`--authorized-keys`);
//! - the store (`kaosctl access add`), the only ones that can be removed at run time.
//!
//! There is no default key and no password: a host whose image and command line authorise
//! nobody can only be managed once someone boots it with a key. The host key is generated on
//! first boot and kept in the store; without a store disk it lives in memory and changes at the
//! next boot, which `status` and the handshake report.

use std::sync::{PoisonError, RwLock};

use kaos_protocol::keys::{PublicKey, SecretKey};
use kaos_protocol::{
    AccessEntry, AccessList, ErrorCode, Identity, KeySource, MAX_ACCESS_ENTRIES, Role, truncated,
    valid_key_name,
};
use kaos_store::ClientKey;

use crate::config::{Config, Refusal};

/// Where the image's keys are.
pub const IMAGE_KEYS: &str = "/etc/kaos/authorized_keys";

/// Parses an `authorized_keys` file: one `ROLE kaos-x25519 BASE64 [NAME]` per line; blank lines
/// and `#` comments are skipped. Returns the entries and one message per refused line.
pub fn parse_authorized_keys(text: &str, source: KeySource) -> (Vec<AccessEntry>, Vec<String>) {
    let prefix = match source {
        KeySource::Image => "image",
        KeySource::CommandLine => "cmdline",
        KeySource::Store => "store",
        KeySource::File => "file",
    };
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| "expected `ROLE kaos-x25519 BASE64 [NAME]`".to_owned())
            .and_then(|(role, rest)| {
                let role = Role::parse(role)
                    .ok_or_else(|| format!("unknown role {role:?} (reader, operator, admin)"))?;
                let (key, name) = PublicKey::parse_line(rest).map_err(|e| e.to_string())?;
                let name = if name.is_empty() {
                    format!("{prefix}-{}", n + 1)
                } else {
                    name.to_owned()
                };
                if !valid_key_name(&name) {
                    return Err(format!("bad key name {name:?} (1-32 of A-Z a-z 0-9 . _ -)"));
                }
                Ok(AccessEntry {
                    name: truncated(&name),
                    role,
                    key,
                    source,
                })
            });
        match parsed {
            Ok(entry) => entries.push(entry),
            Err(e) => problems.push(format!("line {}: {e}", n + 1)),
        }
    }
    (entries, problems)
}

/// Parses a `kaos.authorize=` value: `BASE64[:ROLE]`, comma-separated; the role defaults to
/// admin (the point of a command-line key is to get into a host that has none).
pub fn parse_cmdline_keys(value: &str) -> Result<Vec<(PublicKey, Role)>, String> {
    value
        .split(',')
        .filter(|v| !v.is_empty())
        .map(|item| {
            let (b64, role) = item.split_once(':').unwrap_or((item, "admin"));
            let key = PublicKey::from_base64(b64).map_err(|e| e.to_string())?;
            let role = Role::parse(role).ok_or_else(|| format!("unknown role {role:?}"))?;
            Ok((key, role))
        })
        .collect()
}

/// Fills `buf` from the kernel's seeded generator, blocking until it is seeded. Retries: a
/// host key must never be made of anything else (getrandom(2) fails only on EINTR here).
pub fn secure_random(buf: &mut [u8]) {
    let mut logged = false;
    loop {
        match rustix::rand::getrandom(&mut *buf, rustix::rand::GetRandomFlags::empty()) {
            Ok(n) if n == buf.len() => return,
            Ok(_) => {}
            Err(e) if !logged => {
                log::error!("getrandom: {e}; retrying");
                logged = true;
            }
            Err(_) => {}
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The host's identity and its table of authorised keys.
#[derive(Debug)]
pub struct Access {
    /// The host's static key and its public half (computed once: it is in every `status`).
    host_key: RwLock<Option<(SecretKey, PublicKey)>>,
    /// Image, command line and file keys: fixed for this boot.
    fixed: Vec<AccessEntry>,
    /// A copy of the store's keys, refreshed on every change.
    stored: RwLock<Vec<AccessEntry>>,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

impl Access {
    /// A table with the boot's fixed keys; no host key until [`Access::load`].
    pub fn new(fixed: Vec<AccessEntry>) -> Self {
        Self {
            host_key: RwLock::new(None),
            fixed,
            stored: RwLock::new(Vec::new()),
        }
    }

    /// Loads (or creates and persists) the host key and the stored client keys. Runs once the
    /// store is open; until then, handshakes wait.
    pub fn load(&self, config: &Config) {
        // Every handshake draws an ephemeral key. Make sure the kernel's generator is seeded
        // here, in the store thread, before any handshake may start: a blocking getrandom(2)
        // also makes Linux seed itself from CPU jitter, where merely waiting does not.
        let mut bytes = [0u8; 32];
        secure_random(&mut bytes);
        let secret = match config.host_key() {
            Some(secret) => SecretKey(secret),
            None => {
                let secret = SecretKey::from_random(bytes);
                if let Err(e) = config.set_host_key(&secret.0) {
                    log::error!("host key not stored: {}", e.message);
                }
                secret
            }
        };
        let fingerprint = secret.public().fingerprint();
        if config.persistent() {
            log::info!("host key {fingerprint}");
        } else {
            log::warn!("host key {fingerprint} (in memory only: it changes at the next boot)");
        }
        let public = secret.public();
        *write(&self.host_key) = Some((secret, public));
        self.refresh(config);
        if self.fixed.is_empty() && read(&self.stored).is_empty() {
            log::warn!(
                "no management key is authorised: build the image with `--authorize` or boot \
                 with kaos.authorize=KEY"
            );
        }
    }

    fn refresh(&self, config: &Config) {
        let stored = config
            .client_keys()
            .into_iter()
            .map(|(name, k)| AccessEntry {
                name: truncated(&name),
                role: k.role,
                key: k.key,
                source: KeySource::Store,
            })
            .collect();
        *write(&self.stored) = stored;
    }

    /// The host's static key, once loaded.
    pub fn host_key(&self) -> Option<SecretKey> {
        read(&self.host_key)
            .as_ref()
            .map(|(secret, _)| secret.clone())
    }

    /// The host's public key, once loaded.
    pub fn host_public_key(&self) -> Option<PublicKey> {
        read(&self.host_key).as_ref().map(|(_, public)| *public)
    }

    /// The identity `key` has now, if any (fixed keys first).
    pub fn lookup(&self, key: &PublicKey) -> Option<Identity> {
        let stored = read(&self.stored);
        self.fixed
            .iter()
            .chain(stored.iter())
            .find(|e| e.key == *key)
            .map(|e| Identity {
                name: e.name.clone(),
                role: e.role,
                key: e.key,
                source: e.source,
            })
    }

    /// Every authorised key: fixed ones first, then the store's, each in name order.
    pub fn list(&self) -> AccessList {
        let stored = read(&self.stored);
        let mut entries = heapless::Vec::new();
        for e in self.fixed.iter().chain(stored.iter()) {
            if entries.push(e.clone()).is_err() {
                break;
            }
        }
        AccessList { entries }
    }

    /// Authorises `key` as `name` with `role`, in the store.
    pub fn add(
        &self,
        config: &Config,
        name: &str,
        role: Role,
        key: PublicKey,
    ) -> Result<AccessList, Refusal> {
        if !valid_key_name(name) {
            return Err(Refusal::new(
                ErrorCode::InvalidArgument,
                format!("bad key name {name:?}: 1-32 of A-Z a-z 0-9 . _ -"),
            ));
        }
        let list = self.list();
        if let Some(e) = list.entries.iter().find(|e| e.name.as_str() == name) {
            return Err(Refusal::new(
                ErrorCode::Conflict,
                format!("a key named {name} exists ({})", e.key.fingerprint()),
            ));
        }
        if let Some(e) = list.entries.iter().find(|e| e.key == key) {
            return Err(Refusal::new(
                ErrorCode::Conflict,
                format!("that key is already authorised as {}", e.name),
            ));
        }
        if list.entries.len() >= MAX_ACCESS_ENTRIES {
            return Err(Refusal::new(
                ErrorCode::Conflict,
                format!("at most {MAX_ACCESS_ENTRIES} keys"),
            ));
        }
        let stored = config.put_client_key(name, &ClientKey { role, key });
        // Refresh even on failure: a degraded store kept the key in memory.
        self.refresh(config);
        stored?;
        Ok(self.list())
    }

    /// Withdraws store key `name`. Refused for fixed keys, and for the last admin key (which
    /// would lock every admin out).
    pub fn remove(&self, config: &Config, name: &str) -> Result<AccessList, Refusal> {
        let list = self.list();
        let Some(entry) = list.entries.iter().find(|e| e.name.as_str() == name) else {
            return Err(Refusal::new(
                ErrorCode::NotFound,
                format!("no key named {name}"),
            ));
        };
        if entry.source != KeySource::Store {
            return Err(Refusal::new(
                ErrorCode::Conflict,
                format!(
                    "{name} comes from the {}; it cannot be removed at run time",
                    match entry.source {
                        KeySource::Image => "image (rebuild without it)",
                        KeySource::CommandLine => "kernel command line",
                        _ => "hosted --authorized-keys file",
                    }
                ),
            ));
        }
        let admins = list
            .entries
            .iter()
            .filter(|e| e.role == Role::Admin)
            .count();
        if entry.role == Role::Admin && admins == 1 {
            return Err(Refusal::new(
                ErrorCode::Conflict,
                format!("{name} is the last admin key; add another admin first"),
            ));
        }
        let removed = config.remove_client_key(name);
        self.refresh(config);
        removed?;
        Ok(self.list())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorized_keys_lines_are_parsed_and_bad_ones_reported() {
        let a = PublicKey([1; 32]).to_line();
        let b = PublicKey([2; 32]).to_line();
        let text = format!(
            "# keys\n\nadmin {a} alice\nreader {b}\nroot {a} x\nadmin kaos-x25519 AAAA y\n\
             operator {b} bad/name\n"
        );
        let (entries, problems) = parse_authorized_keys(&text, KeySource::Image);
        assert_eq!(entries.len(), 2);
        assert_eq!(
            (entries[0].name.as_str(), entries[0].role, entries[0].key),
            ("alice", Role::Admin, PublicKey([1; 32]))
        );
        assert_eq!(
            entries[1].name.as_str(),
            "image-4",
            "unnamed: source and line"
        );
        assert_eq!(entries[1].source, KeySource::Image);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("line 5: unknown role"));
        assert!(problems[1].contains("base64"));
        assert!(problems[2].contains("bad key name"));
    }

    fn memory_config() -> Config {
        let config = Config::new(crate::config::DiskSource::Paths(Vec::new()), [0; 16]);
        config.select(&crate::config::StoreChoice::Memory);
        config
    }

    #[test]
    fn the_host_key_is_made_once_and_kept_by_the_store() {
        let config = memory_config();
        let access = Access::new(Vec::new());
        assert!(
            access.host_key().is_none(),
            "no key before the store is open"
        );
        access.load(&config);
        let key = access.host_key().expect("generated");
        assert_eq!(access.host_public_key(), Some(key.public()));
        let again = Access::new(Vec::new());
        again.load(&config);
        assert_eq!(again.host_key(), Some(key), "the stored key is reused");
    }

    #[test]
    fn the_last_admin_cannot_be_removed_and_fixed_keys_stay() {
        let config = memory_config();
        let fixed = AccessEntry {
            name: truncated("image-1"),
            role: Role::Reader,
            key: PublicKey([9; 32]),
            source: KeySource::Image,
        };
        let access = Access::new(vec![fixed]);
        access.load(&config);
        access
            .add(&config, "root", Role::Admin, PublicKey([1; 32]))
            .expect("add");
        let last = access.remove(&config, "root").expect_err("last admin");
        assert_eq!(last.code, ErrorCode::Conflict);
        access
            .add(&config, "second", Role::Admin, PublicKey([2; 32]))
            .expect("add");
        access
            .remove(&config, "root")
            .expect("another admin remains");
        let fixed = access.remove(&config, "image-1").expect_err("fixed");
        assert!(fixed.message.contains("image"), "{}", fixed.message);
        assert_eq!(
            access
                .add(&config, "bad name", Role::Reader, PublicKey([3; 32]))
                .map(drop),
            Err(Refusal::new(
                ErrorCode::InvalidArgument,
                "bad key name \"bad name\": 1-32 of A-Z a-z 0-9 . _ -"
            ))
        );
        let names: Vec<_> = access
            .list()
            .entries
            .iter()
            .map(|e| e.name.to_string())
            .collect();
        assert_eq!(names, ["image-1", "second"]);
        assert_eq!(
            access.lookup(&PublicKey([2; 32])).map(|i| i.role),
            Some(Role::Admin)
        );
        assert_eq!(access.lookup(&PublicKey([1; 32])), None);
    }

    #[test]
    fn cmdline_keys_default_to_admin() {
        let a = PublicKey([1; 32]).to_base64();
        let b = PublicKey([2; 32]).to_base64();
        assert_eq!(
            parse_cmdline_keys(&format!("{a},{b}:reader")),
            Ok(vec![
                (PublicKey([1; 32]), Role::Admin),
                (PublicKey([2; 32]), Role::Reader)
            ])
        );
        assert!(parse_cmdline_keys(&format!("{a}:god")).is_err());
        assert!(parse_cmdline_keys("AAAA").is_err());
    }
}
