//! `cargo xtask test`: everything CI checks, in the order that fails fastest.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use kaos_protocol::Role;
use kaos_protocol::keys::SecretKey;

use crate::{deps, image, paths};

/// Debian packages the whole suite needs (image build, QEMU, namespaces).
pub const TEST_PACKAGES: &[&str] = &["qemu-system-x86", "iproute2"];

/// The image the qemu-tests boot on emulated server hardware (`tests/generic.rs`).
pub const GENERIC_PROFILE: &str = "generic-x86_64";

/// Seconds each fuzz target runs in the suite's smoke.
const SUITE_FUZZ_SECONDS: u64 = 6;

/// The environment variable that gives the qemu-tests the secret key built into `$KAOS_IMAGE`.
pub const IMAGE_KEY_ENV: &str = "KAOS_IMAGE_KEY";

/// The CI admin key pair built into the qemu image: `target/kaos-ci/admin.key` (secret, mode
/// 0600) and `admin.pub`. Generated once; later runs reuse it, so the image (named after its
/// keys) and its kernel build stay cached.
#[derive(Debug, Clone)]
pub struct CiKey {
    /// The secret key file, for the tests (`$KAOS_IMAGE_KEY`).
    pub secret: PathBuf,
    /// The public key file, for `--authorize`.
    pub public: PathBuf,
}

/// Returns the CI key pair in `target/kaos-ci`, generating whatever part of it is missing.
pub fn ensure_ci_key() -> Result<CiKey> {
    ci_key_in(&paths::target_dir().join("kaos-ci"))
}

/// Returns the key pair `admin.key` + `admin.pub` in `dir`, generating what is missing.
pub fn ci_key_in(dir: &Path) -> Result<CiKey> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = CiKey {
        secret: dir.join("admin.key"),
        public: dir.join("admin.pub"),
    };
    let secret = match std::fs::read_to_string(&key.secret) {
        Ok(text) => SecretKey::parse(&text).map_err(|e| {
            anyhow::anyhow!("{}: {e}; delete it to get a new one", key.secret.display())
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty())
                .context("getrandom")?;
            let secret = SecretKey::from_random(bytes);
            write_new(&key.secret, 0o600, secret.to_text().as_bytes())?;
            println!("generated the CI admin key {}", key.secret.display());
            secret
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", key.secret.display())),
    };
    let public = format!("{} ci-admin\n", secret.public().to_line());
    if std::fs::read_to_string(&key.public).ok().as_deref() != Some(public.as_str()) {
        let _ = std::fs::remove_file(&key.public);
        write_new(&key.public, 0o644, public.as_bytes())?;
    }
    Ok(key)
}

/// Creates `path` (which must not exist) with `mode` from the start, then writes `bytes`.
fn write_new(path: &Path, mode: u32, bytes: &[u8]) -> Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .with_context(|| format!("writing {}", path.display()))
}

/// Runs fmt, clippy, the no_std check, unit and hosted tests, builds both images, runs the
/// qemu-tests and the fuzz smoke.
pub fn run() -> Result<()> {
    let started = Instant::now();
    let mut steps: Vec<(String, f64)> = Vec::new();
    let mut step = |name: &str, f: &mut dyn FnMut() -> Result<()>| -> Result<()> {
        println!("\n==> {name}");
        let t = Instant::now();
        f().with_context(|| format!("step failed: {name}"))?;
        steps.push((name.to_owned(), t.elapsed().as_secs_f64()));
        Ok(())
    };
    step("system packages", &mut || {
        deps::ensure_packages(image::IMAGE_PACKAGES)?;
        deps::ensure_packages(TEST_PACKAGES)
    })?;
    // Test output is captured by libtest, so say here, loudly, what will be skipped and why.
    if let Some(reason) = kaos_qemu_tests::netns::unavailable() {
        println!("NOTE: hosted tests will be SKIPPED: {reason}");
    }
    step("cargo fmt --check", &mut || {
        cargo(&["fmt", "--all", "--check"])
    })?;
    step("cargo clippy (warnings denied)", &mut || {
        cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
    })?;
    step(
        "kaos-protocol is no_std (no std or alloc feature in its tree)",
        &mut || no_std_check(),
    )?;
    step("unit and hosted tests", &mut || {
        cargo(&[
            "test",
            "--workspace",
            "--exclude",
            "kaos-qemu-tests",
            "--exclude",
            "xtask",
        ])?;
        cargo(&["test", "-p", "xtask"])
    })?;
    // Kernel builds are cached (~/.cache/kaos-rs): a fresh machine builds two kernels (~10 min
    // on 2 cores), later runs only relink when kattach changed.
    // The qemu image has the CI admin key built in (the tests also authorise a per-process key
    // on the command line; `boot.rs` boots without it to prove the built-in one works).
    let mut built = None;
    step(
        &format!("host image ({}, CI key built in)", image::DEFAULT_PROFILE),
        &mut || {
            let key = ensure_ci_key()?;
            let text = std::fs::read_to_string(&key.public)?;
            let keys = [image::ImageKey::parse(&key.public, &text, Role::Admin)?];
            let info = image::build_authorized_image(image::DEFAULT_PROFILE, None, &keys)?;
            println!("{info}");
            built = Some((info.image, key.secret));
            Ok(())
        },
    )?;
    let (image, image_key) = built.context("image step produced no image")?;
    let mut built = None;
    step(&format!("host image ({GENERIC_PROFILE})"), &mut || {
        let info = image::build_image(GENERIC_PROFILE, None)?;
        println!("{info}");
        built = Some(info.image);
        Ok(())
    })?;
    let generic = built.context("image step produced no image")?;
    // The vKaOS platform module the VM tests push into the host (a third cached kernel).
    let mut built = None;
    step(
        &format!("platform module ({})", image::VKAOS_PROFILE),
        &mut || {
            let info = image::build_platform_module(image::VKAOS_PROFILE, None)?;
            println!("{info}");
            built = Some(info.module);
            Ok(())
        },
    )?;
    let platform = built.context("module step produced no module")?;
    // The example App Module the image-deployment test pushes (a static binary, no kernel).
    let mut built = None;
    step("app module (modules/httpd)", &mut || {
        built = Some(crate::module::build("httpd", None)?);
        Ok(())
    })?;
    let app = built.context("module step produced no module")?;
    step("qemu-tests (two at a time)", &mut || {
        let status = Command::new(paths::cargo())
            .current_dir(paths::workspace_root())
            .args(["test", "-p", "kaos-qemu-tests", "--", "--test-threads=2"])
            .env("KAOS_IMAGE", &image)
            .env(IMAGE_KEY_ENV, &image_key)
            .env("KAOS_IMAGE_GENERIC", &generic)
            .env("KAOS_PLATFORM_MODULE", &platform)
            .env("KAOS_APP_MODULE", &app)
            .status()
            .context("run cargo")?;
        if !status.success() {
            bail!("qemu-tests failed ({status})");
        }
        Ok(())
    })?;
    // Every parser of network or disk bytes has a fuzz target; a short run of each catches a
    // harness that no longer builds and the shallow crashes.
    // 6 s each: ten targets, most of the step is building them, and the whole suite must stay
    // under 30 minutes on a fresh machine (`cargo xtask fuzz --smoke` runs longer).
    match crate::fuzz::available() {
        Ok(()) => step("fuzz smoke (every target, 6 s each)", &mut || {
            crate::fuzz::smoke(SUITE_FUZZ_SECONDS)
        })?,
        Err(reason) => println!("\nSKIPPED fuzz smoke: {reason}"),
    }
    println!(
        "\n==> all passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    for (name, secs) in steps {
        println!("    {secs:>7.1} s  {name}");
    }
    Ok(())
}

/// `kaos-protocol` must build without std (a bare-metal client uses it). No bare-metal target
/// is installed here, so check what can pull std in: the features of its normal dependencies.
fn no_std_check() -> Result<()> {
    let out = Command::new(paths::cargo())
        .current_dir(paths::workspace_root())
        .args([
            "tree",
            "-p",
            "kaos-protocol",
            "-e",
            "normal,features",
            "--prefix",
            "none",
        ])
        .output()
        .context("run cargo tree")?;
    if !out.status.success() {
        bail!(
            "cargo tree failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let offending: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("feature \"std\"") || l.contains("feature \"alloc\""))
        .collect();
    if !offending.is_empty() {
        bail!(
            "kaos-protocol's dependencies enable std or alloc:\n{}",
            offending.join("\n")
        );
    }
    let lib = std::fs::read_to_string(paths::workspace_root().join("protocol/src/lib.rs"))?;
    if !lib.contains("#![no_std]") {
        bail!("protocol/src/lib.rs lost #![no_std]");
    }
    println!("kaos-protocol: #![no_std], no std/alloc feature among its dependencies");
    Ok(())
}

fn cargo(args: &[&str]) -> Result<()> {
    let status = Command::new(paths::cargo())
        .current_dir(paths::workspace_root())
        .args(args)
        .status()
        .context("run cargo")?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn ci_key_is_made_once_with_a_private_secret() {
        let dir = std::env::temp_dir().join(format!("kaos-ci-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let key = ci_key_in(&dir).expect("generated");
        let mode = |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode(&key.secret), 0o600);
        let read = |p: &Path| std::fs::read_to_string(p).expect("readable");
        let (secret, public) = (read(&key.secret), read(&key.public));
        let parsed = SecretKey::parse(&secret).expect("a secret key");
        let image_key = image::ImageKey::parse(&key.public, &public, Role::Admin).expect("a key");
        assert_eq!(image_key.key, parsed.public());
        assert_eq!(image_key.name, "ci-admin");

        std::fs::remove_file(&key.public).expect("remove");
        ci_key_in(&dir).expect("reused");
        assert_eq!((read(&key.secret), read(&key.public)), (secret, public));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
