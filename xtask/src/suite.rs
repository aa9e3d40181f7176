//! `cargo xtask test`: everything CI checks, in the order that fails fastest.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use crate::{deps, image, paths};

/// Debian packages the whole suite needs (image build, QEMU, namespaces).
pub const TEST_PACKAGES: &[&str] = &["qemu-system-x86", "iproute2"];

/// The image the qemu-tests boot on emulated server hardware (`tests/generic.rs`).
pub const GENERIC_PROFILE: &str = "generic-x86_64";

/// Runs fmt, clippy, unit and hosted tests, builds both images and runs the qemu-tests.
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
    let mut built = None;
    step(
        &format!("host image ({})", image::DEFAULT_PROFILE),
        &mut || {
            let info = image::build_image(image::DEFAULT_PROFILE, None)?;
            println!("{info}");
            built = Some(info.image);
            Ok(())
        },
    )?;
    let image = built.context("image step produced no image")?;
    let mut built = None;
    step(&format!("host image ({GENERIC_PROFILE})"), &mut || {
        let info = image::build_image(GENERIC_PROFILE, None)?;
        println!("{info}");
        built = Some(info.image);
        Ok(())
    })?;
    let generic = built.context("image step produced no image")?;
    step("qemu-tests (two at a time)", &mut || {
        let status = Command::new(paths::cargo())
            .current_dir(paths::workspace_root())
            .args(["test", "-p", "kaos-qemu-tests", "--", "--test-threads=2"])
            .env("KAOS_IMAGE", &image)
            .env("KAOS_IMAGE_GENERIC", &generic)
            .status()
            .context("run cargo")?;
        if !status.success() {
            bail!("qemu-tests failed ({status})");
        }
        Ok(())
    })?;
    println!(
        "\n==> all passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    for (name, secs) in steps {
        println!("    {secs:>7.1} s  {name}");
    }
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
