//! The configuration directory: named contexts in `config.toml`, pins of bare endpoints in
//! `known_hosts`, client keys in `keys/`.
//!
//! ```toml
//! current-context = "lab"
//! [contexts.lab]
//! endpoint = "10.0.0.5:1289"
//! key = "default"                   # a key name under keys/, or a path
//! host-key = "kaos-x25519 BASE64"   # pinned at first contact
//! ```
//!
//! Files are validated when read, into typed values; a malformed file is an error naming the
//! file and line, never a panic. Every write replaces the file atomically (a temporary file in
//! the same directory, then a rename), so a crash leaves the old file or the new one.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use kaos_protocol::keys::PublicKey;
use serde::{Deserialize, Serialize};

/// The main file.
pub const CONFIG_FILE: &str = "config.toml";
/// Pins of endpoints used without a context.
pub const KNOWN_HOSTS: &str = "known_hosts";
/// Where named keys live.
pub const KEYS_DIR: &str = "keys";
/// The key used when neither the command line nor the context names one.
pub const DEFAULT_KEY: &str = "default";
/// The endpoint used when neither the command line nor a current context names one.
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:1289";

/// A local configuration problem. All of them exit with code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Neither `KAOS_CONFIG_DIR`, `XDG_CONFIG_HOME` nor `HOME` is set.
    #[error("no configuration directory: set KAOS_CONFIG_DIR or HOME")]
    NoDirectory,
    /// A file could not be read or written.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file does not parse, or holds a value that is not valid.
    #[error("{}{}: {reason}", .path.display(), .line.map(|l| format!(":{l}")).unwrap_or_default())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The line, 1-based, when known.
        line: Option<usize>,
        /// What is wrong.
        reason: String,
    },
    /// The secret key file does not exist.
    #[error("no key at {}: {hint}", .path.display())]
    KeyMissing {
        /// Where it was looked for.
        path: PathBuf,
        /// What to do about it.
        hint: String,
    },
    /// `key generate` would overwrite a key.
    #[error("{} exists; pass --force to replace it (the old key is lost)", .0.display())]
    KeyExists(PathBuf),
    /// The command line or the configuration asks for something inconsistent.
    #[error("{0}")]
    Usage(String),
}

impl ConfigError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }

    fn malformed(path: &Path, line: Option<usize>, reason: impl Into<String>) -> Self {
        Self::Malformed {
            path: path.to_owned(),
            line,
            reason: reason.into(),
        }
    }
}

/// `config.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// The context used when the command line names neither a context nor an endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    /// Contexts by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub contexts: BTreeMap<String, Context>,
}

/// One named host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Context {
    /// `HOST:PORT`.
    pub endpoint: Endpoint,
    /// A key name under `keys/`, or a path (relative to the configuration directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The host key pinned at first contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<Pin>,
}

/// A checked `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Endpoint(String);

impl Endpoint {
    /// The text, e.g. `10.0.0.5:1289`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Endpoint {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let port = text
            .rsplit_once(':')
            .filter(|(host, _)| !host.is_empty())
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .filter(|&p| p != 0);
        match port {
            Some(_) => Ok(Self(text)),
            None => Err(format!("endpoint {text:?} is not HOST:PORT")),
        }
    }
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::try_from(s.to_owned())
    }
}

impl From<Endpoint> for String {
    fn from(e: Endpoint) -> Self {
        e.0
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A pinned host key, written `kaos-x25519 BASE64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Pin(pub PublicKey);

impl TryFrom<String> for Pin {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        PublicKey::parse_line(&text)
            .map(|(key, _)| Self(key))
            .map_err(|e| format!("host-key {text:?}: {e}"))
    }
}

impl From<Pin> for String {
    fn from(p: Pin) -> Self {
        p.0.to_line().to_string()
    }
}

impl Config {
    /// Parses `text`, the contents of `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            ConfigError::malformed(path, line, e.message().trim())
        })
    }

    /// The file's text.
    pub fn to_text(&self) -> String {
        let body = toml::to_string(self).unwrap_or_else(|e| {
            // Strings, tables and optional strings always serialise.
            unreachable!("config does not serialise: {e}")
        });
        format!("# Written by kaosctl; see `kaosctl context --help`.\n{body}")
    }

    /// The context named `name`, or an error listing the known ones.
    pub fn context(&self, name: &str) -> Result<&Context, ConfigError> {
        self.contexts.get(name).ok_or_else(|| self.unknown(name))
    }

    /// As [`Config::context`], mutable.
    pub fn context_mut(&mut self, name: &str) -> Result<&mut Context, ConfigError> {
        let unknown = self.unknown(name);
        self.contexts.get_mut(name).ok_or(unknown)
    }

    fn unknown(&self, name: &str) -> ConfigError {
        let known: Vec<&str> = self.contexts.keys().map(String::as_str).collect();
        ConfigError::Usage(if known.is_empty() {
            format!("no context {name:?}: none is configured (`kaosctl context add`)")
        } else {
            format!("no context {name:?} (known: {})", known.join(", "))
        })
    }
}

/// True if `name` may name a context or a key: 1 to 32 of `A-Z a-z 0-9 . _ -`.
pub fn valid_name(name: &str) -> bool {
    kaos_protocol::valid_key_name(name)
}

/// 1-based line of byte `offset` in `text`.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The configuration directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigDir {
    path: PathBuf,
}

impl ConfigDir {
    /// `$KAOS_CONFIG_DIR`, else `$XDG_CONFIG_HOME/kaos`, else `$HOME/.config/kaos`.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(|name| std::env::var_os(name))
    }

    /// As [`ConfigDir::from_env`], with the environment given by `var` (empty values are
    /// unset, as XDG says).
    pub fn from_vars(
        var: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<Self, ConfigError> {
        let var = |name| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let path = var("KAOS_CONFIG_DIR")
            .or_else(|| var("XDG_CONFIG_HOME").map(|x| x.join("kaos")))
            .or_else(|| var("HOME").map(|h| h.join(".config").join("kaos")))
            .ok_or(ConfigError::NoDirectory)?;
        Ok(Self { path })
    }

    /// The directory at `path`.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `config.toml`'s path.
    pub fn config_file(&self) -> PathBuf {
        self.path.join(CONFIG_FILE)
    }

    /// Reads `config.toml`; a missing file is an empty configuration.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let path = self.config_file();
        match read_optional(&path)? {
            Some(text) => Config::parse(&text, &path),
            None => Ok(Config::default()),
        }
    }

    /// Replaces `config.toml`.
    pub fn save(&self, config: &Config) -> Result<(), ConfigError> {
        self.write(&self.config_file(), config.to_text().as_bytes(), 0o600)
    }

    /// Creates the directory (mode 0700) and its `keys/` if missing.
    pub fn create(&self) -> Result<(), ConfigError> {
        let keys = self.path.join(KEYS_DIR);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&keys)
            .map_err(|e| ConfigError::io(&keys, e))
    }

    /// Writes `contents` to `path` (inside this directory) atomically, with `mode`.
    pub(crate) fn write(&self, path: &Path, contents: &[u8], mode: u32) -> Result<(), ConfigError> {
        self.create()?;
        let tmp = write_temp(path, contents, mode)?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            ConfigError::io(path, e)
        })
    }
}

/// A file's text, or `None` if it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ConfigError::io(path, e)),
    }
}

/// Writes `contents` to a new temporary file beside `path`, created with `mode` and synced;
/// returns its path.
pub(crate) fn write_temp(path: &Path, contents: &[u8], mode: u32) -> Result<PathBuf, ConfigError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    // A leftover of a crashed run with our pid: its mode may be wrong, so never reuse it.
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(contents)?;
            f.sync_all()
        });
    match written {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(ConfigError::io(path, e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "kaos-x25519 AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/c/config.toml"))
    }

    #[test]
    fn a_full_config_parses_and_round_trips() {
        let text = format!(
            "current-context = \"lab\"\n[contexts.lab]\nendpoint = \"10.0.0.5:1289\"\n\
             key = \"default\"\nhost-key = \"{KEY}\"\n[contexts.b]\nendpoint = \"h:1\"\n"
        );
        let config = parse(&text).expect("valid");
        assert_eq!(config.current_context.as_deref(), Some("lab"));
        let lab = config.context("lab").expect("lab");
        assert_eq!(lab.endpoint.as_str(), "10.0.0.5:1289");
        assert_eq!(lab.host_key, Some(Pin(PublicKey([1; 32]))));
        assert_eq!(config.context("b").expect("b").key, None);
        assert_eq!(parse(&config.to_text()).expect("reparses"), config);
    }

    #[test]
    fn malformed_files_name_the_line() {
        let cases = [
            (
                "current-context = \"a\"\n[contexts.a]\nendpoint = \n",
                3,
                "",
            ),
            (
                "[contexts.a]\nendpoint = \"x:1\"\ncolour = 1\n",
                3,
                "unknown field",
            ),
            (
                "\n[contexts.a]\nendpoint = \"no-port\"\n",
                3,
                "not HOST:PORT",
            ),
            (
                "[contexts.a]\nendpoint = \"h:1\"\nhost-key = \"ssh-rsa AAA\"\n",
                3,
                "host-key",
            ),
            ("[contexts.a]\nkey = \"k\"\n", 1, "endpoint"),
        ];
        for (text, line, needle) in cases {
            match parse(text) {
                Err(e @ ConfigError::Malformed { .. }) => {
                    let shown = e.to_string();
                    assert!(
                        shown.starts_with(&format!("/c/config.toml:{line}: ")),
                        "{text:?}: {shown}"
                    );
                    assert!(shown.contains(needle), "{text:?}: {shown}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn endpoints_need_a_host_and_a_port() {
        for good in ["h:1", "10.0.0.5:1289", "[::1]:1289"] {
            assert!(good.parse::<Endpoint>().is_ok(), "{good}");
        }
        for bad in ["h", ":1289", "h:", "h:0", "h:70000", "h:x"] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_directory_follows_kaos_then_xdg_then_home() {
        let dir = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            ConfigDir::from_vars(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.into()))
                .map(|d| d.path().to_owned())
        };
        let all = [
            ("KAOS_CONFIG_DIR", "/k"),
            ("XDG_CONFIG_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(dir(&all).ok(), Some(PathBuf::from("/k")));
        assert_eq!(dir(&all[1..]).ok(), Some(PathBuf::from("/x/kaos")));
        assert_eq!(dir(&all[2..]).ok(), Some(PathBuf::from("/h/.config/kaos")));
        assert_eq!(
            dir(&[("XDG_CONFIG_HOME", ""), ("HOME", "/h")]).ok(),
            Some(PathBuf::from("/h/.config/kaos"))
        );
        assert!(matches!(dir(&[]), Err(ConfigError::NoDirectory)));
    }

    #[test]
    fn saves_replace_the_file_and_leave_no_temporary() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = ConfigDir::at(tmp.path().join("kaos"));
        assert_eq!(dir.load().expect("missing is empty"), Config::default());
        let mut config = Config::default();
        config.contexts.insert(
            "a".into(),
            Context {
                endpoint: "h:1".parse().expect("endpoint"),
                key: None,
                host_key: None,
            },
        );
        dir.save(&config).expect("save");
        dir.save(&config).expect("save again");
        assert_eq!(dir.load().expect("load"), config);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 2, "config.toml and keys/: {names:?}");
    }
}
