//! From the global flags to an authenticated connection: which endpoint, which key, which host
//! key to expect, and where to save the pin after a first contact.
//!
//! The host key check, in order: a key pinned for the endpoint (in its context, or in
//! `known_hosts` for a bare endpoint) must match, whatever the flags say; else `--host-key
//! FINGERPRINT` must match; else `--trust-new-host` accepts the key presented; else the
//! connection is refused, telling the user the fingerprint. A successful first contact pins the
//! key, so a changed key is a hard error from then on.

use std::path::Path;
use std::time::Duration;

use kaos_protocol::keys::{Fingerprint, PublicKey};

use crate::client::{Client, ClientError, ConnectOptions, HostKeyCheck};
use crate::config::{ConfigDir, ConfigError, DEFAULT_ENDPOINT, DEFAULT_KEY, Pin};
use crate::keyfile::KeyRef;

/// Seconds `--timeout` defaults to.
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;

/// Why a command failed: the local configuration, or the host.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration directory or the command line.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The connection or the host.
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl Error {
    /// The process exit code (see `kaosctl --help`).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) => 2,
            Self::Client(e) => e.exit_code(),
        }
    }
}

/// The flags that choose a host and how to authenticate to it.
#[derive(Debug, Clone)]
pub struct Selection {
    /// `--context NAME`.
    pub context: Option<String>,
    /// `--endpoint HOST:PORT` (not with a context).
    pub endpoint: Option<String>,
    /// `--key NAME|PATH`; a relative path is taken from the working directory.
    pub key: Option<String>,
    /// `--host-key FINGERPRINT`: the key a first contact must present.
    pub host_key: Option<Fingerprint>,
    /// `--trust-new-host`: accept the key a first contact presents.
    pub trust_new_host: bool,
    /// `--timeout`.
    pub timeout: Duration,
}

impl Default for Selection {
    fn default() -> Self {
        Self {
            context: None,
            endpoint: None,
            key: None,
            host_key: None,
            trust_new_host: false,
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
        }
    }
}

/// Where an endpoint's pin is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSlot {
    /// The `host-key` of this context.
    Context(String),
    /// The endpoint's line in `known_hosts`.
    KnownHosts,
}

/// A resolved selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `HOST:PORT`.
    pub endpoint: String,
    /// Where the pin lives.
    pub slot: PinSlot,
    /// The pinned host key, if any.
    pub pinned: Option<PublicKey>,
    /// Our key.
    pub key: KeyRef,
}

impl Target {
    /// How to check the host's key, given the flags.
    pub fn check(&self, selection: &Selection) -> HostKeyCheck {
        match (self.pinned, selection.host_key) {
            (Some(key), _) => HostKeyCheck::Pinned(key),
            (None, Some(fp)) => HostKeyCheck::Fingerprint(fp),
            (None, None) if selection.trust_new_host => HostKeyCheck::TrustNew,
            (None, None) => HostKeyCheck::Refuse,
        }
    }

    /// Where the pin is, in words: `context lab` or `known_hosts`.
    pub fn slot_name(&self) -> String {
        match &self.slot {
            PinSlot::Context(name) => format!("context {name}"),
            PinSlot::KnownHosts => crate::config::KNOWN_HOSTS.into(),
        }
    }
}

/// A connection, and the pin a first contact saved.
#[derive(Debug)]
pub struct Connected {
    /// The authenticated client.
    pub client: Client,
    /// What it connected to.
    pub target: Target,
    /// The host key pinned by this connection (a first contact).
    pub pinned_now: Option<Fingerprint>,
}

/// Resolves the endpoint, the pin and the key: `--context`, else `--endpoint`, else the current
/// context, else [`DEFAULT_ENDPOINT`]; `--key`, else the context's key, else [`DEFAULT_KEY`].
pub fn resolve(dir: &ConfigDir, selection: &Selection) -> Result<Target, ConfigError> {
    if selection.context.is_some() && selection.endpoint.is_some() {
        return Err(ConfigError::Usage(
            "give --context or --endpoint, not both".into(),
        ));
    }
    let config = dir.load()?;
    let current = || {
        let name = config.current_context.clone()?;
        Some(config.context(&name).map(|c| (name.clone(), c)).map_err(|_| {
            ConfigError::Usage(format!(
                "current-context {name:?} in {} names no context; run `kaosctl context use NAME`",
                dir.config_file().display()
            ))
        }))
    };
    let context = match (&selection.context, &selection.endpoint) {
        (Some(name), _) => Some(config.context(name).map(|c| (name.clone(), c))?),
        (None, Some(_)) => None,
        (None, None) => current().transpose()?,
    };
    let key = |context_key: Option<&String>| match (&selection.key, context_key) {
        (Some(key), _) => dir.key_ref(key, Path::new("")),
        (None, Some(key)) => dir.key_ref(key, dir.path()),
        (None, None) => dir.key_ref(DEFAULT_KEY, dir.path()),
    };
    Ok(match context {
        Some((name, context)) => Target {
            endpoint: context.endpoint.to_string(),
            slot: PinSlot::Context(name),
            pinned: context.host_key.map(|p| p.0),
            key: key(context.key.as_ref()),
        },
        None => {
            let endpoint = selection
                .endpoint
                .clone()
                .unwrap_or_else(|| DEFAULT_ENDPOINT.into());
            Target {
                pinned: dir.known_hosts()?.get(&endpoint),
                endpoint,
                slot: PinSlot::KnownHosts,
                key: key(None),
            }
        }
    })
}

/// Resolves, loads our key, connects, and pins the host key of a first contact.
pub fn connect(dir: &ConfigDir, selection: &Selection) -> Result<Connected, Error> {
    let target = resolve(dir, selection)?;
    let key = dir.load_key(&target.key)?;
    let options = ConnectOptions::new(key, target.check(selection), selection.timeout);
    let client = Client::connect(&target.endpoint, &options)?;
    let pinned_now = match target.pinned {
        Some(_) => None,
        None => {
            dir.pin(&target, client.host_key())?;
            Some(client.host_key().fingerprint())
        }
    };
    Ok(Connected {
        client,
        target,
        pinned_now,
    })
}

impl ConfigDir {
    /// Pins `key` for `target`'s endpoint.
    pub fn pin(&self, target: &Target, key: PublicKey) -> Result<(), ConfigError> {
        match &target.slot {
            PinSlot::Context(name) => {
                let mut config = self.load()?;
                config.context_mut(name)?.host_key = Some(Pin(key));
                self.save(&config)
            }
            PinSlot::KnownHosts => {
                let mut hosts = self.known_hosts()?;
                hosts.set(&target.endpoint, key);
                self.save_known_hosts(&hosts)
            }
        }
    }

    /// Drops `target`'s pin, returning it (`None`: nothing was pinned, nothing written).
    pub fn unpin(&self, target: &Target) -> Result<Option<PublicKey>, ConfigError> {
        match &target.slot {
            PinSlot::Context(name) => {
                let mut config = self.load()?;
                let old = config.context_mut(name)?.host_key.take();
                if old.is_some() {
                    self.save(&config)?;
                }
                Ok(old.map(|p| p.0))
            }
            PinSlot::KnownHosts => {
                let mut hosts = self.known_hosts()?;
                let old = hosts.remove(&target.endpoint);
                if old.is_some() {
                    self.save_known_hosts(&hosts)?;
                }
                Ok(old)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Context};

    fn dir_with(config: &Config) -> (tempfile::TempDir, ConfigDir) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = ConfigDir::at(tmp.path());
        dir.save(config).expect("save");
        (tmp, dir)
    }

    fn lab() -> Config {
        let mut config = Config {
            current_context: Some("lab".into()),
            ..Config::default()
        };
        config.contexts.insert(
            "lab".into(),
            Context {
                endpoint: "10.0.0.5:1289".parse().expect("endpoint"),
                key: Some("ops".into()),
                host_key: Some(Pin(PublicKey([7; 32]))),
            },
        );
        config
    }

    #[test]
    fn the_current_context_is_used_unless_an_endpoint_is_given() {
        let (_tmp, dir) = dir_with(&lab());
        let target = resolve(&dir, &Selection::default()).expect("resolve");
        assert_eq!(target.endpoint, "10.0.0.5:1289");
        assert_eq!(target.slot, PinSlot::Context("lab".into()));
        assert_eq!(target.key.secret, dir.path().join("keys/ops.key"));
        assert_eq!(
            target.check(&Selection {
                trust_new_host: true,
                ..Selection::default()
            }),
            HostKeyCheck::Pinned(PublicKey([7; 32])),
            "a pin wins over --trust-new-host"
        );

        let bare = Selection {
            endpoint: Some("h:1".into()),
            key: Some("k/x.key".into()),
            ..Selection::default()
        };
        let target = resolve(&dir, &bare).expect("resolve");
        assert_eq!(target.slot, PinSlot::KnownHosts);
        assert_eq!((target.endpoint.as_str(), target.pinned), ("h:1", None));
        assert_eq!(target.key.secret, Path::new("k/x.key"));
        assert_eq!(target.check(&bare), HostKeyCheck::Refuse);
    }

    #[test]
    fn without_any_configuration_the_local_host_and_default_key_are_used() {
        let (_tmp, dir) = dir_with(&Config::default());
        let target = resolve(&dir, &Selection::default()).expect("resolve");
        assert_eq!(target.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(target.key.secret, dir.path().join("keys/default.key"));
        let fp = PublicKey([3; 32]).fingerprint();
        let flags = Selection {
            host_key: Some(fp),
            trust_new_host: true,
            ..Selection::default()
        };
        assert_eq!(target.check(&flags), HostKeyCheck::Fingerprint(fp));
    }

    #[test]
    fn context_and_endpoint_together_and_unknown_contexts_are_usage_errors() {
        let (_tmp, dir) = dir_with(&lab());
        let both = Selection {
            context: Some("lab".into()),
            endpoint: Some("h:1".into()),
            ..Selection::default()
        };
        assert!(matches!(resolve(&dir, &both), Err(ConfigError::Usage(_))));
        let unknown = Selection {
            context: Some("prod".into()),
            ..Selection::default()
        };
        let e = resolve(&dir, &unknown).expect_err("unknown");
        assert!(e.to_string().contains("known: lab"), "{e}");

        let mut stale = lab();
        stale.current_context = Some("gone".into());
        dir.save(&stale).expect("save");
        let e = resolve(&dir, &Selection::default()).expect_err("stale");
        assert!(e.to_string().contains("current-context \"gone\""), "{e}");
    }

    #[test]
    fn pins_go_to_the_context_or_to_known_hosts_and_can_be_dropped() {
        let mut config = lab();
        config.contexts.get_mut("lab").expect("lab").host_key = None;
        let (_tmp, dir) = dir_with(&config);
        let key = PublicKey([9; 32]);
        let target = resolve(&dir, &Selection::default()).expect("resolve");
        dir.pin(&target, key).expect("pin");
        assert_eq!(
            resolve(&dir, &Selection::default()).expect("r").pinned,
            Some(key)
        );

        let bare = Selection {
            endpoint: Some("h:1".into()),
            ..Selection::default()
        };
        let target = resolve(&dir, &bare).expect("resolve");
        dir.pin(&target, key).expect("pin");
        assert_eq!(resolve(&dir, &bare).expect("r").pinned, Some(key));
        assert_eq!(dir.unpin(&target).expect("unpin"), Some(key));
        assert_eq!(dir.unpin(&target).expect("unpin"), None);
        assert_eq!(resolve(&dir, &bare).expect("r").pinned, None);
        assert_eq!(
            resolve(&dir, &Selection::default()).expect("r").pinned,
            Some(key),
            "the context's pin is untouched"
        );
    }
}
