//! Building an App Module from a directory (feature `build`): what `kaosctl module build DIR` and
//! `cargo xtask module httpd` both call.
//!
//! ```text
//! DIR/kaos-module.toml   the manifest, as an operator writes it (below)
//! DIR/files/             the module's root: every file and directory under it is shipped,
//!                        at the same relative path (DIR/files/bin/httpd -> bin/httpd)
//! DIR/*                  anything else (a README, build scripts) is not shipped
//! ```
//!
//! ```toml
//! name = "httpd"                 # 1-32 of a-z 0-9 -
//! version = "0.1.0"              # 1-64 of A-Z a-z 0-9 . + _ -
//!
//! [[entrypoint]]                 # programs the guest starts, in order (at most 16)
//! name = "httpd"
//! exec = "bin/httpd"             # a path under files/, executable
//! args = ["--port", "80"]        # optional
//! restart = "on-failure"         # never | on-failure (default) | always
//!
//! [[port]]                       # ports the application serves (at most 64)
//! name = "http"
//! protocol = "tcp"               # tcp | udp
//! port = 80
//!
//! [config.greeting]              # the keys a configuration group may set (at most 128)
//! type = "string"                # string | int | bool | port | ipv4
//! default = "hello from KaOS"    # optional: without it every group must set the key
//! description = "First line of the page"
//! ```
//!
//! The walk is deterministic: entries sorted by path, owner root, mtime 0, and permissions
//! normalised to `0o755` (directories, and files with any execute bit) or `0o644` (other files),
//! so the same tree gives the same bytes wherever it was checked out. Refused, naming the path:
//! names that are not UTF-8, device nodes, fifos and sockets, setuid/setgid/sticky files,
//! symlinks that are broken, point to a directory or lead outside `files/` (a symlink to a file
//! inside is shipped as a copy of that file: archives hold no links).

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::app::{AppFile, pack_app};
use crate::archive::ModuleError;
use crate::manifest::{
    self, App, ConfigKey, ConfigType, ConfigValue, Entrypoint, Invalid, Kind, Manifest, Port,
    Protocol, Restart,
};

/// The manifest file in a module directory.
pub const MANIFEST_FILE: &str = "kaos-module.toml";
/// The directory whose tree is shipped.
pub const FILES_DIR: &str = "files";

/// Why a module directory could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Reading the directory failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// What was read.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The manifest file is not valid TOML or has an unknown or mistyped field.
    #[error("{}: {message}", path.display())]
    Toml {
        /// The manifest file.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A manifest field breaks a rule.
    #[error("kaos-module.toml: {0}")]
    Manifest(#[from] Invalid),
    /// A file under `files/` cannot be shipped.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Packing or the final parse refused the module.
    #[error(transparent)]
    Module(#[from] ModuleError),
}

/// `kaos-module.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Source {
    name: String,
    version: String,
    #[serde(default)]
    entrypoint: Vec<EntrySource>,
    #[serde(default)]
    port: Vec<PortSource>,
    #[serde(default)]
    config: BTreeMap<String, KeySource>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntrySource {
    name: String,
    exec: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    restart: RestartSource,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RestartSource {
    Never,
    #[default]
    OnFailure,
    Always,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PortSource {
    name: String,
    protocol: ProtocolSource,
    port: u16,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ProtocolSource {
    Tcp,
    Udp,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeySource {
    #[serde(rename = "type")]
    ty: TypeSource,
    default: Option<toml::Value>,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum TypeSource {
    String,
    Int,
    Bool,
    Port,
    Ipv4,
}

/// Parses and validates the text of a `kaos-module.toml`.
pub fn parse_manifest(text: &str) -> Result<Manifest, BuildError> {
    let src: Source = toml::from_str(text).map_err(|e| BuildError::Toml {
        path: MANIFEST_FILE.into(),
        message: e.to_string(),
    })?;
    let entrypoints = src.entrypoint.into_iter().map(entrypoint).collect();
    let ports = src.port.into_iter().map(port).collect();
    let config = src
        .config
        .into_iter()
        .map(|(key, k)| config_key(key, k))
        .collect::<Result<_, _>>()?;
    let manifest = Manifest {
        format: manifest::FORMAT,
        name: src.name,
        version: src.version,
        kind: Kind::App(App {
            entrypoints,
            ports,
            config,
        }),
    };
    manifest.validate()?;
    Ok(manifest)
}

fn entrypoint(e: EntrySource) -> Entrypoint {
    Entrypoint {
        name: e.name,
        exec: e.exec,
        args: e.args,
        restart: match e.restart {
            RestartSource::Never => Restart::Never,
            RestartSource::OnFailure => Restart::OnFailure,
            RestartSource::Always => Restart::Always,
        },
    }
}

fn port(p: PortSource) -> Port {
    Port {
        name: p.name,
        protocol: match p.protocol {
            ProtocolSource::Tcp => Protocol::Tcp,
            ProtocolSource::Udp => Protocol::Udp,
        },
        port: p.port,
    }
}

fn config_key(key: String, k: KeySource) -> Result<ConfigKey, Invalid> {
    let ty = match k.ty {
        TypeSource::String => ConfigType::String,
        TypeSource::Int => ConfigType::Int,
        TypeSource::Bool => ConfigType::Bool,
        TypeSource::Port => ConfigType::Port,
        TypeSource::Ipv4 => ConfigType::Ipv4,
    };
    let default = k
        .default
        .map(|v| {
            config_value(ty, &v).ok_or_else(|| Invalid {
                field: format!("config.{key}.default"),
                reason: format!("{v} is not a valid {}", ty.as_str()),
            })
        })
        .transpose()?;
    Ok(ConfigKey {
        key,
        ty,
        default,
        description: k.description,
    })
}

/// `value` as a configuration value of type `ty`, if it is one (`--set` will use the same rules).
pub fn config_value(ty: ConfigType, value: &toml::Value) -> Option<ConfigValue> {
    use toml::Value as V;
    Some(match (ty, value) {
        (ConfigType::String, V::String(s)) => ConfigValue::String(s.clone()),
        (ConfigType::Int, V::Integer(i)) => ConfigValue::Int(*i),
        (ConfigType::Bool, V::Boolean(b)) => ConfigValue::Bool(*b),
        (ConfigType::Port, V::Integer(i)) => {
            ConfigValue::Port(u16::try_from(*i).ok().filter(|p| *p != 0)?)
        }
        (ConfigType::Ipv4, V::String(s)) => {
            ConfigValue::Ipv4(s.parse::<std::net::Ipv4Addr>().ok()?.octets())
        }
        _ => return None,
    })
}

/// Builds the App Module in `dir` (see the module docs): the `.aqi` bytes.
pub fn build_dir(dir: &Path) -> Result<Vec<u8>, BuildError> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&manifest_path).map_err(|source| BuildError::Io {
        path: manifest_path.clone(),
        source,
    })?;
    let manifest = parse_manifest(&text).map_err(|e| match e {
        BuildError::Toml { message, .. } => BuildError::Toml {
            path: manifest_path,
            message,
        },
        other => other,
    })?;
    let files = read_tree(&dir.join(FILES_DIR))?;
    Ok(pack_app(&manifest, &files)?)
}

/// Every file and directory under `root`, with paths relative to it.
pub fn read_tree(root: &Path) -> Result<Vec<AppFile>, BuildError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| BuildError::Io { path, source }
    };
    let canonical_root = root.canonicalize().map_err(io(root))?;
    let mut out = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let dir = root.join(&rel);
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let path = entry.path();
            let rel = rel.join(entry.file_name());
            let name = rel
                .to_str()
                .ok_or_else(|| file_error(&path, "the name is not UTF-8"))?
                .to_owned();
            let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
            let ty = meta.file_type();
            if ty.is_dir() {
                out.push(AppFile::dir(name, 0o755));
                pending.push(rel);
            } else if ty.is_file() {
                out.push(regular(&path, name, &meta)?);
            } else if ty.is_symlink() {
                out.push(followed(&path, name, &canonical_root)?);
            } else if ty.is_block_device() || ty.is_char_device() {
                return Err(file_error(&path, "a device node: modules hold none"));
            } else {
                return Err(file_error(&path, "a fifo or socket: modules hold none"));
            }
        }
    }
    Ok(out)
}

fn file_error(path: &Path, reason: impl Into<String>) -> BuildError {
    BuildError::File {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// A regular file, its permissions normalised.
fn regular(path: &Path, name: String, meta: &std::fs::Metadata) -> Result<AppFile, BuildError> {
    let mode = meta.permissions().mode();
    if mode & 0o7000 != 0 {
        return Err(file_error(
            path,
            format!("mode {:o}: setuid, setgid or sticky bit", mode & 0o7777),
        ));
    }
    let perm = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
    let data = std::fs::read(path).map_err(|source| BuildError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(AppFile::file(name, perm, data))
}

/// A symlink inside `root` to a regular file, shipped as a copy of that file.
fn followed(path: &Path, name: String, root: &Path) -> Result<AppFile, BuildError> {
    let target = path
        .canonicalize()
        .map_err(|e| file_error(path, format!("a symlink that does not resolve ({e})")))?;
    if !target.starts_with(root) {
        return Err(file_error(
            path,
            format!(
                "a symlink to {}, outside the module root {}",
                target.display(),
                root.display()
            ),
        ));
    }
    let meta = std::fs::metadata(&target).map_err(|source| BuildError::Io {
        path: target.clone(),
        source,
    })?;
    if !meta.is_file() {
        return Err(file_error(
            path,
            "a symlink to something other than a regular file (archives hold no links)",
        ));
    }
    regular(&target, name, &meta)
}

#[cfg(test)]
mod tests;
