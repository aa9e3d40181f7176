//! The manifest: the first entry of every module archive, `kaos-module`, postcard-encoded.
//!
//! postcard is a wire format: fields are encoded in declaration order and enum variants by
//! index, so a field or variant is only ever appended, and anything else is a new
//! [`FORMAT`]. `format` comes first so that a reader can refuse a newer format by that number
//! alone, before it tries to decode the rest.
//!
//! The app layout (`App` and what it holds) was settled when the first builder of app modules
//! (`kaosctl module build`, issue 7) arrived: no app module existed before, so the fields it
//! gained then (`Entrypoint::restart`, `ConfigKey::description`, the `Ipv4` type) did not need a
//! new format. From here on the same append-only rule applies to it.

use serde::{Deserialize, Serialize};

/// The manifest format this crate writes and reads.
pub const FORMAT: u16 = 1;

/// Limits on what a manifest may hold (a manifest is at most a few KiB).
const MAX_NAME: usize = 32;
const MAX_VERSION: usize = 64;
const MAX_ENTRYPOINTS: usize = 16;
const MAX_ARGS: usize = 32;
const MAX_ARG: usize = 256;
const MAX_PORTS: usize = 64;
const MAX_CONFIG: usize = 128;
const MAX_KEY: usize = 64;
const MAX_STRING_DEFAULT: usize = 1024;
const MAX_DESCRIPTION: usize = 256;

/// What a module archive is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u16,
    /// Short name: 1–32 of `a-z`, `0-9`, `-`, not starting or ending with `-`.
    pub name: String,
    /// Version: 1–64 of `A-Z a-z 0-9 . + _ -`.
    pub version: String,
    /// Platform or app, with what only that kind has.
    pub kind: Kind,
}

/// The two kinds of module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A vKaOS guest platform: the guest kernel at `boot/vmlinuz` (a bzImage).
    Platform(Platform),
    /// An application: files plus how to start and configure them (issue 7).
    App(App),
}

/// What a platform module declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// The kernel's release string (`uname -r` in the guest), e.g. `6.1.192`.
    pub kernel_release: String,
}

/// What an application module declares.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    /// Programs the guest starts, in order.
    pub entrypoints: Vec<Entrypoint>,
    /// Ports the application serves.
    pub ports: Vec<Port>,
    /// The keys a configuration group may set.
    pub config: Vec<ConfigKey>,
}

/// A program the guest `kattach` starts and supervises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entrypoint {
    /// Its name (same rules as a module name).
    pub name: String,
    /// The program: a path of a regular file in the archive.
    pub exec: String,
    /// Its arguments (without the program name).
    pub args: Vec<String>,
    /// What the guest does when it exits.
    pub restart: Restart,
}

/// What the guest `kattach` does when an entrypoint exits. Variants append.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Restart {
    /// Leave it stopped.
    Never,
    /// Start it again unless it exited with status 0.
    #[default]
    OnFailure,
    /// Always start it again.
    Always,
}

impl Restart {
    /// Name as written in `kaos-module.toml` and shown by `kaosctl module inspect`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::OnFailure => "on-failure",
            Self::Always => "always",
        }
    }
}

/// A port the application listens on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    /// Its name (same rules as a module name), e.g. `http`.
    pub name: String,
    /// Transport.
    pub protocol: Protocol,
    /// Port number, not 0.
    pub port: u16,
}

/// Transport protocol of a [`Port`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// One key of the configuration schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigKey {
    /// The key: 1–64 of `a-z 0-9 _ . -`.
    pub key: String,
    /// Its type.
    pub ty: ConfigType,
    /// Its default; `None`: a group must set it.
    pub default: Option<ConfigValue>,
    /// One line for operators (`kaosctl module inspect`), at most 256 bytes, may be empty.
    pub description: String,
}

/// Type of a configuration value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigType {
    /// UTF-8 text.
    String,
    /// A signed 64-bit integer.
    Int,
    /// `true` or `false`.
    Bool,
    /// A port number, 1–65535.
    Port,
    /// An IPv4 address, written `a.b.c.d`.
    Ipv4,
}

impl ConfigType {
    /// Name as written in `kaos-module.toml`: `string`, `int`, `bool`, `port`, `ipv4`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Int => "int",
            Self::Bool => "bool",
            Self::Port => "port",
            Self::Ipv4 => "ipv4",
        }
    }
}

/// A configuration value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigValue {
    /// Text.
    String(String),
    /// Integer.
    Int(i64),
    /// Boolean.
    Bool(bool),
    /// Port number.
    Port(u16),
    /// IPv4 address (four octets).
    Ipv4([u8; 4]),
}

impl core::fmt::Display for ConfigValue {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::String(s) => write!(f, "{s:?}"),
            Self::Int(i) => write!(f, "{i}"),
            Self::Bool(b) => write!(f, "{b}"),
            Self::Port(p) => write!(f, "{p}"),
            Self::Ipv4([a, b, c, d]) => write!(f, "{a}.{b}.{c}.{d}"),
        }
    }
}

impl ConfigValue {
    /// The type of this value.
    pub fn ty(&self) -> ConfigType {
        match self {
            Self::String(_) => ConfigType::String,
            Self::Int(_) => ConfigType::Int,
            Self::Bool(_) => ConfigType::Bool,
            Self::Port(_) => ConfigType::Port,
            Self::Ipv4(_) => ConfigType::Ipv4,
        }
    }
}

/// A manifest field that breaks the rules: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("manifest field `{field}`: {reason}")]
pub struct Invalid {
    /// The field (`name`, `app.ports[2].port`, ...).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Checks a module, entrypoint or port name.
pub fn check_name(field: &str, name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    ok.then_some(()).ok_or_else(|| {
        invalid(
            field,
            format!("{name:?} is not 1-{MAX_NAME} of a-z, 0-9 and `-` (not at either end)"),
        )
    })
}

/// Checks a version or kernel release string.
pub fn check_version(field: &str, version: &str) -> Result<(), Invalid> {
    let ok = !version.is_empty()
        && version.len() <= MAX_VERSION
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
    ok.then_some(()).ok_or_else(|| {
        invalid(
            field,
            format!("{version:?} is not 1-{MAX_VERSION} of A-Z, a-z, 0-9 and `._+-`"),
        )
    })
}

impl Manifest {
    /// Checks every field against its rules (the format number is checked by the decoder).
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.format != FORMAT {
            return Err(invalid(
                "format",
                format!("{} is not the supported format {FORMAT}", self.format),
            ));
        }
        check_name("name", &self.name)?;
        check_version("version", &self.version)?;
        match &self.kind {
            Kind::Platform(p) => check_version("platform.kernel_release", &p.kernel_release),
            Kind::App(app) => app.validate(),
        }
    }
}

impl App {
    fn validate(&self) -> Result<(), Invalid> {
        let too_many = |field: &str, max: usize| invalid(field, format!("more than {max}"));
        if self.entrypoints.len() > MAX_ENTRYPOINTS {
            return Err(too_many("app.entrypoints", MAX_ENTRYPOINTS));
        }
        for (i, e) in self.entrypoints.iter().enumerate() {
            let at = |f: &str| format!("app.entrypoints[{i}].{f}");
            check_name(&at("name"), &e.name)?;
            if self.entrypoints[..i].iter().any(|o| o.name == e.name) {
                return Err(invalid(
                    at("name"),
                    format!("{:?} is declared twice", e.name),
                ));
            }
            crate::cpio::check_path(&e.exec).map_err(|p| invalid(at("exec"), p.to_string()))?;
            if e.args.len() > MAX_ARGS {
                return Err(too_many(&at("args"), MAX_ARGS));
            }
            if let Some(a) = e
                .args
                .iter()
                .find(|a| a.len() > MAX_ARG || a.contains('\0'))
            {
                return Err(invalid(
                    at("args"),
                    format!("{a:?}: longer than {MAX_ARG} bytes or holds a NUL"),
                ));
            }
        }
        if self.ports.len() > MAX_PORTS {
            return Err(too_many("app.ports", MAX_PORTS));
        }
        for (i, p) in self.ports.iter().enumerate() {
            check_name(&format!("app.ports[{i}].name"), &p.name)?;
            if self.ports[..i].iter().any(|o| o.name == p.name) {
                return Err(invalid(
                    format!("app.ports[{i}].name"),
                    format!("{:?} is declared twice", p.name),
                ));
            }
            if p.port == 0 {
                return Err(invalid(format!("app.ports[{i}].port"), "port 0"));
            }
        }
        if self.config.len() > MAX_CONFIG {
            return Err(too_many("app.config", MAX_CONFIG));
        }
        for (i, c) in self.config.iter().enumerate() {
            c.validate(&format!("app.config[{i}]"))?;
            if self.config[..i].iter().any(|o| o.key == c.key) {
                return Err(invalid(
                    format!("app.config[{i}].key"),
                    format!("{:?} is declared twice", c.key),
                ));
            }
        }
        Ok(())
    }
}

impl ConfigKey {
    fn validate(&self, at: &str) -> Result<(), Invalid> {
        let key_ok = !self.key.is_empty()
            && self.key.len() <= MAX_KEY
            && self
                .key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
        if !key_ok {
            return Err(invalid(
                format!("{at}.key"),
                format!("{:?} is not 1-{MAX_KEY} of a-z, 0-9 and `_.-`", self.key),
            ));
        }
        if self.description.len() > MAX_DESCRIPTION || self.description.contains(char::is_control) {
            return Err(invalid(
                format!("{at}.description"),
                format!("longer than {MAX_DESCRIPTION} bytes or holds a control character"),
            ));
        }
        match &self.default {
            Some(v) if v.ty() != self.ty => Err(invalid(
                format!("{at}.default"),
                format!("a {:?} value for a {:?} key", v.ty(), self.ty),
            )),
            Some(ConfigValue::Port(0)) => Err(invalid(format!("{at}.default"), "port 0")),
            Some(ConfigValue::String(s)) if s.len() > MAX_STRING_DEFAULT => Err(invalid(
                format!("{at}.default"),
                format!("longer than {MAX_STRING_DEFAULT} bytes"),
            )),
            _ => Ok(()),
        }
    }
}
