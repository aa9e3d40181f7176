//! `cargo xtask image`: static kattach + cached kernel build = one bootable bzImage, optionally
//! with client keys built in (`--authorize PATH.pub[:ROLE]`, the image's
//! `/etc/kaos/authorized_keys`). A guest profile (`#kind guest`, e.g. `vkaos-x86_64`) builds
//! the vKaOS platform module instead: the guest kernel alone, packed as
//! `target/kaos/vkaos-<release>.aqi` ([`build_platform_module`]).

use crate::kconfig::ProfileKind;
use crate::{deps, initramfs, kattach, kernel, paths, sha256};
use anyhow::{Context as _, Result, bail, ensure};
use kaos_protocol::keys::{PublicKey, SECRET_TAG};
use kaos_protocol::{Role, valid_key_name};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The default kernel profile.
pub const DEFAULT_PROFILE: &str = "qemu-x86_64";

/// The guest profile: the vKaOS platform module's kernel.
pub const VKAOS_PROFILE: &str = "vkaos-x86_64";

/// The manifest name of the platform module a guest profile builds.
pub const PLATFORM_NAME: &str = "vkaos";

/// Debian packages `build_image` needs.
pub const IMAGE_PACKAGES: &[&str] = kernel::BUILD_PACKAGES;

/// What [`build_image`] produced.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// The bootable image (bzImage with the built-in initramfs).
    pub image: PathBuf,
    /// Its size in bytes.
    pub image_size: u64,
    /// The static `kattach` that is `/init` inside it.
    pub kattach: PathBuf,
    /// Its size in bytes.
    pub kattach_size: u64,
    /// The kernel build tree in the cache (logs, `.config`, `vmlinux`).
    pub kernel_build_dir: PathBuf,
    /// Whether the kernel was (re)built by `make` this time.
    pub kernel_rebuilt: bool,
    /// The client keys built into the image.
    pub authorized: Vec<ImageKey>,
}

fn mib(bytes: u64) -> f64 {
    // Image sizes are far below 2^52, so the conversion is exact.
    #[allow(clippy::cast_precision_loss)]
    let b = bytes as f64;
    b / (1024.0 * 1024.0)
}

impl fmt::Display for ImageInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "image:   {} ({} bytes, {:.2} MiB)",
            self.image.display(),
            self.image_size,
            mib(self.image_size)
        )?;
        writeln!(
            f,
            "kattach: {} ({} bytes, {:.2} MiB)",
            self.kattach.display(),
            self.kattach_size,
            mib(self.kattach_size)
        )?;
        if self.authorized.is_empty() {
            return write!(
                f,
                "keys:    none built in: the host refuses every client unless booted with \
                 kaos.authorize=BASE64[:ROLE]"
            );
        }
        write!(f, "keys:    {} built in", self.authorized.len())?;
        for k in &self.authorized {
            write!(
                f,
                "\n  {:<8} {:<32} {}",
                k.role.as_str(),
                k.name,
                k.key.fingerprint()
            )?;
        }
        Ok(())
    }
}

/// A client key to build into the image: one line of its `authorized_keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageKey {
    /// What the key may do.
    pub role: Role,
    /// The key.
    pub key: PublicKey,
    /// Its name on the host: the `.pub` file's comment if that is a valid key name, else the
    /// file's stem.
    pub name: String,
}

impl ImageKey {
    /// Reads `--authorize PATH[:ROLE]` (role default admin): the file must hold one
    /// `kaos-x25519 BASE64 [comment]` line, as `kaosctl key generate` writes to `NAME.pub`.
    pub fn from_arg(arg: &str) -> Result<Self> {
        let (path, role) = match arg.rsplit_once(':') {
            Some((path, role)) if !Path::new(arg).exists() => {
                let role = Role::parse(role).with_context(|| {
                    format!("--authorize {arg}: unknown role {role:?} (reader, operator, admin)")
                })?;
                (Path::new(path), role)
            }
            _ => (Path::new(arg), Role::Admin),
        };
        let text = fs::read_to_string(path)
            .with_context(|| format!("--authorize: reading {}", path.display()))?;
        Self::parse(path, &text, role).map_err(|e| anyhow::anyhow!("--authorize: {e}"))
    }

    /// Parses the text of the public key file `path`.
    pub fn parse(path: &Path, text: &str, role: Role) -> Result<Self> {
        let shown = path.display();
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        let line = lines
            .next()
            .with_context(|| format!("{shown} holds no key"))?;
        if line.starts_with(SECRET_TAG) {
            bail!("{shown} is a SECRET key; pass its public half (the .pub file)");
        }
        let (key, comment) = PublicKey::parse_line(line).map_err(|e| {
            anyhow::anyhow!(
                "{shown}: {e}; expected one line `kaos-x25519 BASE64 [comment]` \
                 (a NAME.pub written by `kaosctl key generate`)"
            )
        })?;
        ensure!(
            lines.next().is_none(),
            "{shown} holds more than one line; give each key its own file"
        );
        let name = if valid_key_name(comment) {
            comment.to_owned()
        } else {
            key_name_from_stem(path)
        };
        Ok(Self { role, key, name })
    }

    /// `ROLE kaos-x25519 BASE64 NAME`, the line kattach reads.
    pub fn line(&self) -> String {
        format!("{} {} {}", self.role, self.key.to_line(), self.name)
    }
}

/// The file stem, with characters a key name cannot hold replaced by `_`, cut to 32 bytes.
fn key_name_from_stem(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy())
        .unwrap_or_default();
    let name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    if name.is_empty() {
        "image-key".into()
    } else {
        name
    }
}

/// The image's `authorized_keys` text, or `None` without keys. Refuses a key given twice and
/// two keys with one name (kattach would keep only the first of each).
pub fn authorized_keys_text(keys: &[ImageKey]) -> Result<Option<String>> {
    if keys.is_empty() {
        return Ok(None);
    }
    let mut text = String::from(
        "# Built in by `cargo xtask image --authorize`: ROLE kaos-x25519 BASE64 NAME\n",
    );
    for (i, k) in keys.iter().enumerate() {
        if let Some(other) = keys[..i].iter().find(|o| o.key == k.key) {
            bail!(
                "--authorize: key {} is given twice ({} and {})",
                k.key.fingerprint(),
                other.name,
                k.name
            );
        }
        if keys[..i].iter().any(|o| o.name == k.name) {
            bail!(
                "--authorize: two keys are named {:?}; give one of them another comment",
                k.name
            );
        }
        text.push_str(&k.line());
        text.push('\n');
    }
    Ok(Some(text))
}

/// Default output path: `<workspace>/target/kaos/kaos-<profile>.bzImage`.
pub fn default_image_path(profile: &str) -> PathBuf {
    paths::workspace_root()
        .join("target")
        .join("kaos")
        .join(format!("kaos-{profile}.bzImage"))
}

/// Default output path of an image with keys built in:
/// `target/kaos/kaos-<profile>-auth-<8 hex digits of the key list's SHA-256>.bzImage`, so that
/// images with other keys, or none, never overwrite it (nor it them).
pub fn authorized_image_path(profile: &str, authorized_keys: &str) -> PathBuf {
    let hash = sha256::hex_digest(authorized_keys.as_bytes());
    default_image_path(profile)
        .with_file_name(format!("kaos-{profile}-auth-{}.bzImage", &hash[..8]))
}

/// Builds the host image for `profile` without built-in keys; see [`build_authorized_image`].
pub fn build_image(profile: &str, out: Option<PathBuf>) -> Result<ImageInfo> {
    build_authorized_image(profile, out, &[])
}

/// Builds the host image for `profile` (a file in `kernel/profiles/`) with `keys` built in, and
/// writes it to `out` (default: [`default_image_path`], or [`authorized_image_path`] with
/// keys). Installs missing Debian packages when root; reuses the cached kernel build when the
/// profile, kattach and keys are unchanged. Verifies that the initramfs holds `/init` as its only
/// program and nothing else but the key list.
pub fn build_authorized_image(
    profile: &str,
    out: Option<PathBuf>,
    keys: &[ImageKey],
) -> Result<ImageInfo> {
    let started = Instant::now();
    // Validate the profile and keys before any slow step.
    if kernel::profile_kind(profile)? == ProfileKind::Guest {
        bail!(
            "{profile} is a guest profile: `cargo xtask image --profile {profile}` builds its \
             platform module; it is not a host image to boot or run"
        );
    }
    let keys_text = authorized_keys_text(keys)?;
    deps::ensure_packages(IMAGE_PACKAGES)?;
    let kattach = kattach::build_static()?;
    let kattach_size = fs::metadata(&kattach)?.len();
    let kb = kernel::build(profile, &kattach, keys_text.as_deref())?;
    verify_initramfs(&kb.build_dir, keys_text.as_deref())?;

    let image = out.unwrap_or_else(|| match &keys_text {
        Some(text) => authorized_image_path(profile, text),
        None => default_image_path(profile),
    });
    copy_atomically(&kb.bzimage, &image)?;
    let image_size = fs::metadata(&image)?.len();
    eprintln!("[image] done in {:.1}s", started.elapsed().as_secs_f64());
    Ok(ImageInfo {
        image,
        image_size,
        kattach,
        kattach_size,
        kernel_build_dir: kb.build_dir.clone(),
        kernel_rebuilt: kb.rebuilt,
        authorized: keys.to_vec(),
    })
}

/// What [`build_platform_module`] produced.
#[derive(Debug, Clone)]
pub struct ModuleInfo {
    /// The platform module (`.aqi`).
    pub module: PathBuf,
    /// Its size in bytes.
    pub module_size: u64,
    /// Its identity: SHA-256 of the file, hex.
    pub sha256: String,
    /// The manifest's version: kernel release + `+` + 8 hex digits of the config hash.
    pub version: String,
    /// The kernel's release string.
    pub kernel_release: String,
    /// The bzImage inside the module, in bytes.
    pub kernel_size: u64,
    /// The kernel build tree in the cache.
    pub kernel_build_dir: PathBuf,
    /// Whether the kernel was (re)built by `make` this time.
    pub kernel_rebuilt: bool,
}

impl fmt::Display for ModuleInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "module:  {} ({} bytes, {:.2} MiB)",
            self.module.display(),
            self.module_size,
            mib(self.module_size)
        )?;
        writeln!(f, "sha256:  {}", self.sha256)?;
        writeln!(
            f,
            "content: platform {PLATFORM_NAME} {} (kernel {})",
            self.version, self.kernel_release
        )?;
        write!(
            f,
            "kernel:  bzImage {} bytes ({:.2} MiB), build tree {}",
            self.kernel_size,
            mib(self.kernel_size),
            self.kernel_build_dir.display()
        )
    }
}

/// Default path of a platform module: `<workspace>/target/kaos/vkaos-<release>.aqi`.
pub fn default_module_path(kernel_release: &str) -> PathBuf {
    default_image_path("x").with_file_name(format!("{PLATFORM_NAME}-{kernel_release}.aqi"))
}

/// Builds the guest kernel of `profile` (a `#kind guest` profile, no built-in initramfs) and
/// packs it as the platform module `vkaos` at `out` (default: [`default_module_path`]). The
/// module is read back through `kaos_module::parse` before it is written.
pub fn build_platform_module(profile: &str, out: Option<PathBuf>) -> Result<ModuleInfo> {
    let started = Instant::now();
    if kernel::profile_kind(profile)? != ProfileKind::Guest {
        bail!(
            "{profile} is a host profile: it builds a host image; platform modules come from \
             guest profiles (`#kind guest`, e.g. {VKAOS_PROFILE})"
        );
    }
    deps::ensure_packages(IMAGE_PACKAGES)?;
    let kb = kernel::build_guest(profile)?;
    let release = kb.kernel_release()?;
    let kernel =
        fs::read(&kb.bzimage).with_context(|| format!("reading {}", kb.bzimage.display()))?;
    let short_hash = kb.config_hash.get(..8).unwrap_or(&kb.config_hash);
    let version = format!("{release}+{short_hash}");
    let aqi = kaos_module::pack_platform(PLATFORM_NAME, &version, &release, &kernel)?;
    verify_platform_module(&aqi, &kernel, &version, &release)?;

    let module = out.unwrap_or_else(|| default_module_path(&release));
    write_atomically(&module, &aqi)?;
    eprintln!("[module] done in {:.1}s", started.elapsed().as_secs_f64());
    Ok(ModuleInfo {
        module_size: aqi.len() as u64,
        sha256: kaos_module::sha256_hex(&aqi),
        module,
        version,
        kernel_release: release,
        kernel_size: kernel.len() as u64,
        kernel_build_dir: kb.build_dir.clone(),
        kernel_rebuilt: kb.rebuilt,
    })
}

/// Reads `aqi` back as a host would and checks it holds exactly what was packed.
fn verify_platform_module(aqi: &[u8], kernel: &[u8], version: &str, release: &str) -> Result<()> {
    let parsed = kaos_module::parse(aqi, &kaos_module::Limits::PLATFORM)
        .context("reading the platform module back")?;
    let m = &parsed.manifest;
    let platform = match &m.kind {
        kaos_module::manifest::Kind::Platform(p) => p,
        kaos_module::manifest::Kind::App(_) => bail!("packed a platform module, read an app"),
    };
    ensure!(
        m.name == PLATFORM_NAME && m.version == version && platform.kernel_release == release,
        "the platform module's manifest reads back as {m:?}"
    );
    ensure!(
        parsed.kernel() == Some(kernel),
        "the platform module's kernel is not the bzImage that was built"
    );
    Ok(())
}

fn write_atomically(to: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut tmp = to.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, to).with_context(|| format!("renaming to {}", to.display()))?;
    Ok(())
}

/// Checks the initramfs kbuild linked into this build (while the build tree is locked).
fn verify_initramfs(build_dir: &Path, authorized_keys: Option<&str>) -> Result<()> {
    let archive_path = build_dir.join("usr").join("initramfs_data.cpio");
    let archive =
        fs::read(&archive_path).with_context(|| format!("reading {}", archive_path.display()))?;
    let list = fs::read_to_string(build_dir.join("initramfs.list"))?;
    initramfs::verify(&archive, &list, authorized_keys.map(str::as_bytes))
        .with_context(|| format!("verifying {}", archive_path.display()))
}

fn copy_atomically(from: &Path, to: &Path) -> Result<()> {
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut tmp = to.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::copy(from, &tmp)
        .with_context(|| format!("copying {} to {}", from.display(), tmp.display()))?;
    fs::rename(&tmp, to).with_context(|| format!("renaming to {}", to.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> PublicKey {
        PublicKey([n; 32])
    }

    #[test]
    fn pub_file_comment_names_the_key_else_the_stem() {
        let path = Path::new("/home/a/.config/kaos/keys/default.pub");
        let line = format!("{} laptop-1\n", key(1).to_line());
        let k = ImageKey::parse(path, &line, Role::Admin).expect("valid");
        assert_eq!(k.name, "laptop-1");
        assert_eq!(k.line(), format!("admin {} laptop-1", key(1).to_line()));

        let line = format!("{} alice@host\n", key(1).to_line());
        let k = ImageKey::parse(path, &line, Role::Reader).expect("valid");
        assert_eq!((k.name.as_str(), k.role), ("default", Role::Reader));
        let k = ImageKey::parse(Path::new("my key.pub"), &key(2).to_line(), Role::Admin);
        assert_eq!(k.expect("valid").name, "my_key");
    }

    #[test]
    fn bad_files_are_refused_naming_the_file() {
        let path = Path::new("ops.pub");
        let err = |text: &str| {
            ImageKey::parse(path, text, Role::Admin)
                .expect_err("refused")
                .to_string()
        };
        assert!(err("").contains("ops.pub holds no key"));
        assert!(err("ssh-ed25519 AAAA x").contains("ops.pub: not a `kaos-x25519` key"));
        assert!(err("kaos-x25519 AAAA x").contains("ops.pub: key is not base64"));
        assert!(err("kaos-x25519-secret AAAA").contains("SECRET"));
        let two = format!("{}\n{}\n", key(1).to_line(), key(2).to_line());
        assert!(err(&two).contains("more than one line"));
    }

    #[test]
    fn role_suffix_and_missing_files() {
        let err = |arg: &str| ImageKey::from_arg(arg).expect_err("refused").to_string();
        assert!(err("/nonexistent/a.pub:god").contains("unknown role \"god\""));
        assert!(err("/nonexistent/a.pub:reader").contains("reading /nonexistent/a.pub"));
        assert!(err("/nonexistent/a.pub").contains("reading /nonexistent/a.pub"));
    }

    #[test]
    fn key_list_text_and_duplicates() {
        let k = |n, name: &str| ImageKey {
            role: Role::Admin,
            key: key(n),
            name: name.into(),
        };
        assert_eq!(authorized_keys_text(&[]).expect("empty"), None);
        let text = authorized_keys_text(&[k(1, "a"), k(2, "b")])
            .expect("valid")
            .expect("some");
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[1].starts_with("admin kaos-x25519 ") && lines[1].ends_with(" b"));
        assert!(authorized_keys_text(&[k(1, "a"), k(1, "b")]).is_err());
        assert!(authorized_keys_text(&[k(1, "a"), k(2, "a")]).is_err());
        assert_ne!(
            authorized_image_path("p", &text),
            default_image_path("p"),
            "keyed and plain images never share a file"
        );
    }
}
