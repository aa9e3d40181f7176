//! Kernel builds: Debian's `linux-source-6.1` + `tinyconfig` + a profile fragment (after the
//! fragments it `#include`s) + the generated initramfs (host profiles; guest profiles have
//! none), built out of tree in a cache keyed by (source version, hash of the merged settings).
//!
//! Cache layout (`paths::cache_dir()`):
//!
//! ```text
//! src/linux-source-<debian version>/           extracted once, read-only afterwards
//! kernel/<profile>-<srcversion>-<hash>/        `make O=` build tree, one per config
//!     .xtask.lock            exclusive lock held while configuring/building/copying
//!     xtask-recipe.config    generated fragment (initramfs settings)
//!     initramfs.list         gen_init_cpio list; initramfs/init is the kattach copy,
//!                            initramfs/authorized_keys the image's key list (if any);
//!                            host profiles only
//!     config.log build.log   full output of the configure and build steps
//!     xtask-config.stamp     written once the .config is generated and verified
//!     xtask-build.stamp      config, kattach and key-list hashes of the last successful build
//! ```

use crate::{cmd, initramfs, kconfig, paths, sha256};
use anyhow::{Context as _, Result, bail, ensure};
use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Bump whenever the way a kernel is configured or built changes (the generated fragment below,
/// the configure steps, make flags): it is part of the build-dir hash, so a bump forces fresh
/// build trees instead of reusing ones made by an older recipe.
pub const RECIPE_VERSION: &str = "kaos-xtask-kernel-recipe-1";

/// Debian package that ships the kernel source tarball.
pub const SOURCE_PACKAGE: &str = "linux-source-6.1";
const SOURCE_TARBALL: &str = "/usr/src/linux-source-6.1.tar.xz";
const TARBALL_TOP_DIR: &str = "linux-source-6.1";

/// Debian packages needed to build a kernel image.
pub const BUILD_PACKAGES: &[&str] = &[
    SOURCE_PACKAGE,
    "flex",
    "bison",
    "libelf-dev",
    "libssl-dev",
    "bc",
    "cpio",
    "xz-utils",
    "make",
    "gcc",
];

/// Kernel `ARCH=` for every make call (with `ARCH=x86_64`, `tinyconfig` is 64-bit).
const ARCH: &str = "x86_64";
/// The bzImage inside a build tree.
const BZIMAGE: &str = "arch/x86/boot/bzImage";

/// A finished kernel build. Holds the build tree's lock until dropped, so the caller can copy
/// `bzimage` out without racing another build of the same tree.
#[derive(Debug)]
pub struct KernelBuild {
    /// The `make O=` tree.
    pub build_dir: PathBuf,
    /// The bzImage inside it.
    pub bzimage: PathBuf,
    /// Debian source package version (e.g. `6.1.192-2`).
    pub src_version: String,
    /// Hash of recipe version + profile fragment (hex, as in the build dir name).
    pub config_hash: String,
    /// Whether `make` ran (false: the stamp proved the bzImage up to date).
    pub rebuilt: bool,
    _lock: File,
}

impl KernelBuild {
    /// The kernel's release string (`uname -r`), as kbuild recorded it.
    pub fn kernel_release(&self) -> Result<String> {
        let path = self.build_dir.join("include/config/kernel.release");
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let release = text.trim();
        ensure!(!release.is_empty(), "{} is empty", path.display());
        Ok(release.to_owned())
    }
}

/// What a build puts around the kernel.
#[derive(Debug, Clone, Copy)]
enum Payload<'a> {
    /// A host image: `kattach` as `/init` of the built-in initramfs, and the image's key list.
    Initramfs {
        kattach: &'a Path,
        authorized_keys: Option<&'a str>,
    },
    /// A guest kernel: no built-in initramfs (the VMM hands the guest its initrd).
    Guest,
}

/// The directory holding profile fragments (`kernel/profiles`).
pub fn profiles_dir() -> PathBuf {
    paths::workspace_root().join("kernel").join("profiles")
}

/// Names of the available profiles (fragment files without `.config`).
pub fn available_profiles() -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(profiles_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".config"))
                .map(str::to_owned)
        })
        .collect();
    v.sort();
    v
}

/// Path of the fragment for `profile`, failing with the list of profiles if it does not exist.
pub fn profile_path(profile: &str) -> Result<PathBuf> {
    ensure!(
        kconfig::is_profile_name(profile),
        "invalid profile name {profile:?}"
    );
    let p = profiles_dir().join(format!("{profile}.config"));
    if !p.is_file() {
        bail!(
            "no kernel profile {profile:?} ({} missing); available: {}",
            p.display(),
            available_profiles().join(", ")
        );
    }
    Ok(p)
}

/// What `profile` builds: its own `#kind` line, `host` if it has none.
pub fn profile_kind(profile: &str) -> Result<kconfig::ProfileKind> {
    let path = profile_path(profile)?;
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let parsed = kconfig::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(parsed.kind.map(|(k, _)| k).unwrap_or_default())
}

/// A profile's layers in merge order (its `#include`d files first, the profile last).
pub fn profile_layers(profile_path: &Path) -> Result<Vec<kconfig::Layer>> {
    let layers = kconfig::resolve_profile(profile_path, &mut |p| fs::read_to_string(p))?;
    for r in kconfig::redundant(&layers) {
        eprintln!(
            "[kernel] warning: {}:{}: {} repeats {}:{} (same value); drop one of them",
            r.path.display(),
            r.setting.line,
            r.setting.name,
            r.first.display(),
            r.first_line
        );
    }
    Ok(layers)
}

/// Build-dir hash for a profile: SHA-256 over the recipe version, the kind (guests only, so
/// host hashes are what they always were) and the settings of all its layers in merge order, in
/// canonical form (`CONFIG_X=v` / `CONFIG_X=n`, one per line), shortened to 16 hex digits.
/// Comments, blank lines and how settings are split into files do not count, so documenting or
/// reorganising a profile does not cost a five-minute rebuild; changing a setting in an
/// included file does.
pub fn config_hash(kind: kconfig::ProfileKind, layers: &[kconfig::Layer]) -> String {
    let mut canonical = format!("{RECIPE_VERSION}\n");
    if kind == kconfig::ProfileKind::Guest {
        canonical.push_str("kind=guest\n");
    }
    for s in layers.iter().flat_map(|l| &l.settings) {
        let value = s.value.as_deref().unwrap_or("n");
        canonical.push_str(&format!("{}={value}\n", s.name));
    }
    let mut hex = sha256::hex_digest(canonical.as_bytes());
    hex.truncate(16);
    hex
}

/// The fragment xtask adds on top of every profile: the built-in initramfs.
pub fn recipe_fragment(list_file: &Path) -> Result<String> {
    let list = list_file
        .to_str()
        .context("initramfs list path is not UTF-8")?;
    Ok(format!(
        "\
# Generated by cargo xtask ({RECIPE_VERSION}); do not edit.
# Built-in initramfs support.
CONFIG_BLK_DEV_INITRD=y
# The generated gen_init_cpio list: /init (kattach) and a few device nodes.
CONFIG_INITRAMFS_SOURCE={}
# Store the initramfs uncompressed: the whole bzImage payload is compressed already, and
# compressing twice only costs boot time.
CONFIG_INITRAMFS_COMPRESSION_NONE=y
",
        kconfig::quote(list)
    ))
}

/// The fragment xtask adds on top of a guest profile: initrd support, no built-in initramfs.
pub fn guest_recipe_fragment() -> String {
    format!(
        "\
# Generated by cargo xtask ({RECIPE_VERSION}, guest); do not edit.
# The VMM hands the guest its initrd at start (kaos_module::guest_initrd: the host's kattach).
CONFIG_BLK_DEV_INITRD=y
# No built-in initramfs: the kernel is the same for every guest and every kattach.
CONFIG_INITRAMFS_SOURCE=\"\"
"
    )
}

fn sanitize(version: &str) -> String {
    version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Locks `path` exclusively, telling the user if we have to wait.
fn lock_file(path: &Path) -> Result<File> {
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening lock file {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            eprintln!(
                "[kernel] waiting for another xtask holding {}",
                path.display()
            );
            f.lock()
                .with_context(|| format!("locking {}", path.display()))?;
        }
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
    }
    Ok(f)
}

/// Writes `contents` to `path` unless it already holds exactly that (keeps mtimes stable so
/// kbuild does not redo work). Returns whether it wrote.
fn write_if_changed(path: &Path, contents: &[u8]) -> Result<bool> {
    if fs::read(path).ok().as_deref() == Some(contents) {
        return Ok(false);
    }
    let tmp = path.with_extension("xtask-tmp");
    fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(true)
}

/// The extracted kernel source tree in the cache and its Debian version. Extracts the tarball on
/// first use into a temporary directory that is renamed into place only when complete.
pub fn source_tree(cache: &Path) -> Result<(PathBuf, String)> {
    let version =
        cmd::output(Command::new("dpkg-query").args(["-W", "-f=${Version}", SOURCE_PACKAGE]))?;
    let version = sanitize(version.trim());
    ensure!(!version.is_empty(), "empty version for {SOURCE_PACKAGE}");
    let src_root = cache.join("src");
    fs::create_dir_all(&src_root)?;
    let dir = src_root.join(format!("linux-source-{version}"));
    let _lock = lock_file(&src_root.join(".extract.lock"))?;
    if dir.join("Makefile").is_file() {
        return Ok((dir, version));
    }
    // Leftovers of interrupted extractions are never reused.
    for e in fs::read_dir(&src_root)?.flatten() {
        if e.file_name().to_string_lossy().starts_with(".tmp-") {
            fs::remove_dir_all(e.path())
                .with_context(|| format!("removing stale {}", e.path().display()))?;
        }
    }
    let tmp = src_root.join(format!(".tmp-{}", std::process::id()));
    fs::create_dir_all(&tmp)?;
    eprintln!(
        "[kernel] extracting {SOURCE_TARBALL} into {}",
        dir.display()
    );
    let t = Instant::now();
    cmd::run(
        Command::new("tar")
            .arg("-xf")
            .arg(SOURCE_TARBALL)
            .arg("-C")
            .arg(&tmp),
    )?;
    fs::rename(tmp.join(TARBALL_TOP_DIR), &dir)
        .with_context(|| format!("moving extracted source to {}", dir.display()))?;
    fs::remove_dir_all(&tmp)?;
    eprintln!("[kernel] extracted in {:.1}s", t.elapsed().as_secs_f64());
    Ok((dir, version))
}

fn make(src: &Path, build_dir: &Path) -> Command {
    let mut c = Command::new("make");
    c.arg("-C")
        .arg(src)
        .arg(format!("O={}", build_dir.display()))
        .arg(format!("ARCH={ARCH}"))
        // Reproducible-ish version banner, independent of who builds.
        .env("KBUILD_BUILD_USER", "kaos")
        .env("KBUILD_BUILD_HOST", "xtask")
        // Never inherit a parent make's jobserver or flags.
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL");
    c
}

/// Builds (or reuses) the kernel for the host `profile` with `kattach` as `/init` and, if given,
/// `authorized_keys` as the image's key list ([`initramfs::AUTHORIZED_KEYS`]).
pub fn build(profile: &str, kattach: &Path, authorized_keys: Option<&str>) -> Result<KernelBuild> {
    build_with(
        profile,
        Payload::Initramfs {
            kattach,
            authorized_keys,
        },
    )
}

/// Builds (or reuses) the kernel for the guest `profile`: no built-in initramfs.
pub fn build_guest(profile: &str) -> Result<KernelBuild> {
    build_with(profile, Payload::Guest)
}

fn build_with(profile: &str, payload: Payload<'_>) -> Result<KernelBuild> {
    let path = profile_path(profile)?;
    let kind = profile_kind(profile)?;
    match (kind, payload) {
        (kconfig::ProfileKind::Host, Payload::Initramfs { .. })
        | (kconfig::ProfileKind::Guest, Payload::Guest) => {}
        (kconfig::ProfileKind::Guest, _) => bail!(
            "{profile} is a guest profile (`#kind guest`): it builds a platform module, not a \
             host image"
        ),
        (kconfig::ProfileKind::Host, _) => {
            bail!("{profile} is a host profile: it builds a host image, not a guest kernel")
        }
    }
    let layers = profile_layers(&path)?;

    let cache = paths::cache_dir()?;
    let (src, src_version) = source_tree(&cache)?;
    let hash = config_hash(kind, &layers);
    let build_dir = cache
        .join("kernel")
        .join(format!("{profile}-{src_version}-{hash}"));
    fs::create_dir_all(&build_dir).with_context(|| format!("creating {}", build_dir.display()))?;
    let lock = lock_file(&build_dir.join(".xtask.lock"))?;
    eprintln!("[kernel] build tree {}", build_dir.display());

    let config_stamp = build_dir.join("xtask-config.stamp");
    let build_stamp = build_dir.join("xtask-build.stamp");

    // 1. What goes around the kernel, and what the build stamp vouches for.
    let mut stamp = format!("recipe={RECIPE_VERSION}\nconfig={hash}\n");
    let recipe = match payload {
        Payload::Initramfs {
            kattach,
            authorized_keys,
        } => {
            let list_file = initramfs_inputs(&build_dir, kattach, authorized_keys, &mut stamp)?;
            recipe_fragment(&list_file)?
        }
        Payload::Guest => {
            stamp.push_str("kind=guest\n");
            guest_recipe_fragment()
        }
    };

    // 2. Configuration, once per build tree.
    if fs::read_to_string(&config_stamp).ok().as_deref() != Some(hash.as_str())
        || !build_dir.join(".config").is_file()
    {
        let _ = fs::remove_file(&config_stamp);
        let _ = fs::remove_file(&build_stamp);
        configure(&src, &build_dir, &layers, &recipe)?;
        fs::write(&config_stamp, &hash)?;
    }

    // 3. Build, unless the last successful build used exactly this config and payload.
    let bzimage = build_dir.join(BZIMAGE);
    let force = std::env::var_os("KAOS_XTASK_FORCE_MAKE").is_some_and(|v| v == "1");
    let up_to_date = !force
        && bzimage.is_file()
        && fs::read_to_string(&build_stamp).ok().as_deref() == Some(stamp.as_str());
    if up_to_date {
        eprintln!("[kernel] up to date (config and payload unchanged), make skipped");
    } else {
        let _ = fs::remove_file(&build_stamp);
        let jobs = std::thread::available_parallelism().map_or(1, |n| n.get()) + 1;
        let log = build_dir.join("build.log");
        File::create(&log)?;
        eprintln!("[kernel] make -j{jobs} bzImage (log: {})", log.display());
        let t = Instant::now();
        cmd::run_logged(
            make(&src, &build_dir)
                .arg(format!("-j{jobs}"))
                .arg("bzImage"),
            &log,
            "kernel",
        )?;
        eprintln!("[kernel] built in {:.1}s", t.elapsed().as_secs_f64());
        ensure!(
            bzimage.is_file(),
            "make succeeded but {} is missing",
            bzimage.display()
        );
        fs::write(&build_stamp, &stamp)?;
    }
    Ok(KernelBuild {
        build_dir,
        bzimage,
        src_version,
        config_hash: hash,
        rebuilt: !up_to_date,
        _lock: lock,
    })
}

/// Writes a host build's initramfs inputs into `build_dir` (the kattach copy, the key list, the
/// gen_init_cpio list), adds their hashes to `stamp`, and returns the list's path. The copy is
/// only rewritten when kattach changed, so an unchanged kattach leaves kbuild's dependency on it
/// untouched.
fn initramfs_inputs(
    build_dir: &Path,
    kattach: &Path,
    authorized_keys: Option<&str>,
    stamp: &mut String,
) -> Result<PathBuf> {
    let build_stamp = build_dir.join("xtask-build.stamp");
    let list_file = build_dir.join("initramfs.list");
    let init_copy = build_dir.join("initramfs").join("init");
    let keys_copy = build_dir.join("initramfs").join("authorized_keys");
    fs::create_dir_all(build_dir.join("initramfs"))?;
    let kattach_bytes =
        fs::read(kattach).with_context(|| format!("reading {}", kattach.display()))?;
    if fs::read(&init_copy).ok().as_deref() != Some(&kattach_bytes[..]) {
        // Invalidate the stamp before touching the input it vouches for.
        let _ = fs::remove_file(&build_stamp);
        write_if_changed(&init_copy, &kattach_bytes)?;
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(&init_copy, fs::Permissions::from_mode(0o755))?;
    }
    let keys_bytes = authorized_keys.map(str::as_bytes);
    if fs::read(&keys_copy).ok().as_deref() != keys_bytes {
        let _ = fs::remove_file(&build_stamp);
        match keys_bytes {
            Some(bytes) => drop(write_if_changed(&keys_copy, bytes)?),
            None => fs::remove_file(&keys_copy)?,
        }
    }
    let keys_file = keys_bytes.map(|_| keys_copy.as_path());
    write_if_changed(
        &list_file,
        initramfs::list(&init_copy, keys_file)?.as_bytes(),
    )?;
    // An image without keys keeps the stamp format it always had.
    stamp.push_str(&format!("kattach={}\n", sha256::hex_digest(&kattach_bytes)));
    if let Some(bytes) = keys_bytes {
        stamp.push_str(&format!("authorized_keys={}\n", sha256::hex_digest(bytes)));
    }
    Ok(list_file)
}

/// `tinyconfig`, merge the profile's layers and the generated recipe fragment (`recipe_text`),
/// `olddefconfig`, verify.
fn configure(
    src: &Path,
    build_dir: &Path,
    layers: &[kconfig::Layer],
    recipe_text: &str,
) -> Result<()> {
    let log = build_dir.join("config.log");
    File::create(&log)?;
    let names: Vec<String> = layers
        .iter()
        .map(|l| l.path.display().to_string())
        .collect();
    eprintln!("[kernel] configuring: tinyconfig + {}", names.join(" + "));
    cmd::run_logged(make(src, build_dir).arg("tinyconfig"), &log, "config")?;

    let recipe_path = build_dir.join("xtask-recipe.config");
    fs::write(&recipe_path, recipe_text)?;
    let recipe = kconfig::parse_fragment(recipe_text)
        .map_err(|e| anyhow::anyhow!("generated recipe fragment: {e}"))?;

    let dot_config = build_dir.join(".config");
    cmd::run_logged(
        Command::new("sh")
            .arg(src.join("scripts/kconfig/merge_config.sh"))
            .arg("-m")
            .arg("-O")
            .arg(build_dir)
            .arg(&dot_config)
            .args(layers.iter().map(|l| &l.path))
            .arg(&recipe_path)
            .current_dir(build_dir),
        &log,
        "config",
    )?;
    cmd::run_logged(make(src, build_dir).arg("olddefconfig"), &log, "config")?;

    let final_text = fs::read_to_string(&dot_config)?;
    let final_config = kconfig::parse_dotconfig(&final_text);
    let recipe_name = recipe_path.display().to_string();
    let mut checked: Vec<(&str, &[kconfig::Setting])> = names
        .iter()
        .zip(layers)
        .map(|(n, l)| (n.as_str(), l.settings.as_slice()))
        .collect();
    checked.push((&recipe_name, &recipe));
    let mismatches = kconfig::verify_layers(&checked, &final_config);
    if !mismatches.is_empty() {
        let list: Vec<String> = mismatches.iter().map(|m| format!("  {m}")).collect();
        bail!(
            "the final kernel .config does not honour {} fragment line(s) (unmet Kconfig \
             dependencies or invalid values; see {}):\n{}",
            mismatches.len(),
            log.display(),
            list.join("\n")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Layers of a profile made of in-memory files: `(name, text)`, the last one is the profile.
    fn layers(files: &[(&str, &str)]) -> Vec<kconfig::Layer> {
        let (profile, _) = files.last().expect("a profile");
        kconfig::resolve_profile(Path::new(profile), &mut |p| {
            files
                .iter()
                .find(|(n, _)| Path::new(n) == p)
                .map(|(_, t)| (*t).to_owned())
                .ok_or_else(|| std::io::ErrorKind::NotFound.into())
        })
        .expect("resolves")
    }

    #[test]
    fn hash_is_stable_and_sensitive() {
        let h = |t: &str| config_hash(kconfig::ProfileKind::Host, &layers(&[("p.config", t)]));
        let a = h("CONFIG_A=y\n");
        assert_eq!(a.len(), 16);
        assert_eq!(a, h("# why\nCONFIG_A=y\n\n"), "comments do not count");
        assert_ne!(a, h("CONFIG_A=n\n"));
        assert_eq!(h("CONFIG_A=n\n"), h("# CONFIG_A is not set\n"));
        assert_ne!(h("CONFIG_A=y\nCONFIG_B=y\n"), h("CONFIG_B=y\nCONFIG_A=y\n"));
    }

    #[test]
    fn hash_covers_included_settings() {
        let h = |base: &str| {
            config_hash(
                kconfig::ProfileKind::Host,
                &layers(&[
                    ("base.config", base),
                    ("p.config", "#include base.config\nCONFIG_B=y\n"),
                ]),
            )
        };
        let split = h("CONFIG_A=y\n");
        assert_ne!(split, h("CONFIG_A=n\n"), "an included setting counts");
        assert_eq!(
            split,
            config_hash(
                kconfig::ProfileKind::Host,
                &layers(&[("p.config", "CONFIG_A=y\nCONFIG_B=y\n")])
            ),
            "the same settings in one file hash the same"
        );
    }

    #[test]
    fn host_hashes_are_unchanged_and_guests_differ() {
        let l = layers(&[("p.config", "CONFIG_A=y\n")]);
        // The canonical text of a host profile is what it was before kinds existed, so adding
        // them cost no host rebuild.
        let mut old = format!("{RECIPE_VERSION}\nCONFIG_A=y\n");
        old = sha256::hex_digest(old.as_bytes());
        old.truncate(16);
        assert_eq!(config_hash(kconfig::ProfileKind::Host, &l), old);
        assert_ne!(config_hash(kconfig::ProfileKind::Guest, &l), old);
    }

    #[test]
    fn every_profile_resolves_without_duplication() {
        let profiles = available_profiles();
        for name in [
            "base-x86_64",
            "qemu-x86_64",
            "generic-x86_64",
            "vkaos-x86_64",
        ] {
            assert!(profiles.iter().any(|p| p == name), "{name} in {profiles:?}");
        }
        let base = profiles_dir().join("base-x86_64.config");
        for name in &profiles {
            let path = profile_path(name).expect("exists");
            let layers = kconfig::resolve_profile(&path, &mut |p| fs::read_to_string(p))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let redundant = kconfig::redundant(&layers);
            assert!(redundant.is_empty(), "{name}: {redundant:?}");
            let kind = profile_kind(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            match kind {
                _ if name == "base-x86_64" => {}
                kconfig::ProfileKind::Host => {
                    assert_eq!(
                        layers[0].path, base,
                        "host profile {name} builds on the base"
                    );
                }
                kconfig::ProfileKind::Guest => assert!(
                    layers.iter().all(|l| l.path != base),
                    "guest profile {name} must not include the host layer"
                ),
            }
        }
        assert_eq!(
            profile_kind("vkaos-x86_64").expect("readable"),
            kconfig::ProfileKind::Guest
        );
        assert_eq!(
            profile_kind("qemu-x86_64").expect("readable"),
            kconfig::ProfileKind::Host
        );
    }

    #[test]
    fn guest_recipe_has_no_built_in_initramfs() {
        let s = kconfig::parse_fragment(&guest_recipe_fragment()).expect("valid fragment");
        let get = |n: &str| s.iter().find(|s| s.name == n).and_then(|s| s.value.clone());
        assert_eq!(get("CONFIG_BLK_DEV_INITRD").as_deref(), Some("y"));
        assert_eq!(get("CONFIG_INITRAMFS_SOURCE").as_deref(), Some("\"\""));
    }

    #[test]
    fn recipe_fragment_parses() {
        let text = recipe_fragment(Path::new("/c/k/initramfs.list")).expect("utf-8 path");
        let s = kconfig::parse_fragment(&text).expect("valid fragment");
        assert!(s.iter().any(|s| s.name == "CONFIG_INITRAMFS_SOURCE"
            && s.value.as_deref() == Some("\"/c/k/initramfs.list\"")));
    }

    #[test]
    fn version_sanitizing() {
        assert_eq!(sanitize("6.1.192-2"), "6.1.192-2");
        assert_eq!(sanitize("1:6.1~rc/x"), "1_6.1_rc_x");
    }
}
