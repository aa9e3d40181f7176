//! Client keys on disk: `keys/NAME.key` (the secret, mode 0600) and `keys/NAME.pub`
//! (`kaos-x25519 BASE64 NAME`, the line an admin passes to `kaosctl access add`).

use std::path::{Path, PathBuf};

use kaos_protocol::keys::{PublicKey, SecretKey};

use crate::config::{ConfigDir, ConfigError, DEFAULT_KEY, KEYS_DIR, read_optional, valid_name};

/// Where a key is, and what to call it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    /// The name (a named key), or the file stem (a path).
    pub name: String,
    /// The secret key file.
    pub secret: PathBuf,
    /// True if given by name, so `key generate NAME` can create it.
    pub named: bool,
}

impl KeyRef {
    /// The public key file beside the secret one (`NAME.pub`).
    pub fn public(&self) -> PathBuf {
        self.secret.with_extension("pub")
    }

    /// What to tell a user whose key file is missing.
    fn hint(&self) -> String {
        match (self.named, self.name.as_str()) {
            (true, DEFAULT_KEY) => "run `kaosctl key generate` to create it".into(),
            (true, name) => format!("run `kaosctl key generate {name}` to create it"),
            (false, _) => {
                "pass --key an existing key file, or run `kaosctl key generate` to create one"
                    .into()
            }
        }
    }
}

impl ConfigDir {
    /// Resolves `NAME` (a key under `keys/`) or a path. A path is anything with a `/`;
    /// relative paths are taken from `base` (the working directory for the command line, the
    /// configuration directory for a context's `key`).
    pub fn key_ref(&self, name_or_path: &str, base: &Path) -> KeyRef {
        if name_or_path.contains('/') {
            let secret = base.join(name_or_path);
            let name = secret
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            KeyRef {
                name,
                secret,
                named: false,
            }
        } else {
            KeyRef {
                name: name_or_path.to_owned(),
                secret: self
                    .path()
                    .join(KEYS_DIR)
                    .join(format!("{name_or_path}.key")),
                named: true,
            }
        }
    }

    /// Reads the secret key `key`.
    pub fn load_key(&self, key: &KeyRef) -> Result<SecretKey, ConfigError> {
        let text = read_optional(&key.secret)?.ok_or_else(|| ConfigError::KeyMissing {
            path: key.secret.clone(),
            hint: key.hint(),
        })?;
        SecretKey::parse(&text).map_err(|e| ConfigError::Malformed {
            path: key.secret.clone(),
            line: Some(1),
            reason: format!("not a kaosctl secret key ({e})"),
        })
    }

    /// Creates key `name` from the system's random generator: the secret file first, refused if
    /// it exists unless `force`, then its `.pub`.
    pub fn generate_key(
        &self,
        name: &str,
        force: bool,
    ) -> Result<(KeyRef, PublicKey), ConfigError> {
        if !valid_name(name) {
            return Err(ConfigError::Usage(format!(
                "bad key name {name:?}: 1-32 of A-Z a-z 0-9 . _ -"
            )));
        }
        let key = self.key_ref(name, self.path());
        let secret = random_key()?;
        self.create()?;
        let tmp = crate::config::write_temp(&key.secret, secret.to_text().as_bytes(), 0o600)?;
        let placed = if force {
            std::fs::rename(&tmp, &key.secret)
        } else {
            // A hard link never replaces a file: the O_EXCL of a file written in one step.
            std::fs::hard_link(&tmp, &key.secret)
        };
        let _ = std::fs::remove_file(&tmp);
        placed.map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => ConfigError::KeyExists(key.secret.clone()),
            _ => ConfigError::Io {
                path: key.secret.clone(),
                source: e,
            },
        })?;
        let public = secret.public();
        let line = format!("{} {name}\n", public.to_line());
        self.write(&key.public(), line.as_bytes(), 0o644)?;
        Ok((key, public))
    }
}

/// 32 bytes from the kernel's seeded generator (blocking until it is seeded).
fn random_key() -> Result<SecretKey, ConfigError> {
    let mut bytes = [0u8; 32];
    let n = rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty())
        .map_err(|e| ConfigError::Usage(format!("cannot read random bytes for a key: {e}")))?;
    if n != bytes.len() {
        return Err(ConfigError::Usage("short read from getrandom".into()));
    }
    Ok(SecretKey::from_random(bytes))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn names_live_under_keys_and_paths_are_taken_as_given() {
        let dir = ConfigDir::at("/c");
        let named = dir.key_ref("lab", Path::new("/cwd"));
        assert_eq!(named.secret, Path::new("/c/keys/lab.key"));
        assert_eq!(named.public(), Path::new("/c/keys/lab.pub"));
        let relative = dir.key_ref("k/ops.key", Path::new("/cwd"));
        assert_eq!((relative.name.as_str(), relative.named), ("ops", false));
        assert_eq!(relative.secret, Path::new("/cwd/k/ops.key"));
        assert_eq!(
            dir.key_ref("/abs/x.key", Path::new("/cwd")).secret,
            Path::new("/abs/x.key")
        );
    }

    #[test]
    fn a_generated_key_is_private_loads_and_is_never_overwritten_silently() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = ConfigDir::at(tmp.path().join("kaos"));
        let (key, public) = dir.generate_key("default", false).expect("generate");
        let mode = std::fs::metadata(&key.secret)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(dir.load_key(&key).expect("load").public(), public);
        let line = std::fs::read_to_string(key.public()).expect("pub");
        assert_eq!(line, format!("{} default\n", public.to_line()));

        assert!(matches!(
            dir.generate_key("default", false),
            Err(ConfigError::KeyExists(_))
        ));
        assert_eq!(dir.load_key(&key).expect("load").public(), public);
        let (_, replaced) = dir.generate_key("default", true).expect("force");
        assert_ne!(replaced, public);
        assert_eq!(dir.load_key(&key).expect("load").public(), replaced);
        let left: Vec<_> = std::fs::read_dir(dir.path().join(KEYS_DIR))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left.len(), 2, "no temporaries left: {left:?}");
    }

    #[test]
    fn a_missing_key_says_how_to_make_one() {
        let dir = ConfigDir::at("/nonexistent/kaos");
        let e = dir
            .load_key(&dir.key_ref("default", Path::new("/")))
            .expect_err("missing");
        assert!(e.to_string().contains("run `kaosctl key generate`"), "{e}");
        let e = dir
            .load_key(&dir.key_ref("ops", Path::new("/")))
            .expect_err("missing");
        assert!(e.to_string().contains("`kaosctl key generate ops`"), "{e}");
    }
}
