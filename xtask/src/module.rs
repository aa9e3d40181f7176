//! `cargo xtask module NAME`: builds the example App Module `modules/NAME` into
//! `target/kaos/NAME-<version>.aqi` with the builder `kaosctl module build` uses.
//!
//! `modules/NAME` is a workspace crate `kaos-NAME` with a binary `NAME`, and
//! `modules/NAME/module/kaos-module.toml` its manifest. The binary is built statically for
//! x86_64 (glibc with `+crt-static`, as `kattach`), checked to have no ELF interpreter, and
//! staged with the manifest in `target/kaos/module-NAME/` as `files/bin/NAME`; that directory is
//! then packed exactly as `kaosctl module build target/kaos/module-NAME --out FILE` would.

use anyhow::{Context as _, Result, bail};
use std::path::PathBuf;
use std::process::Command;

use crate::{cmd, elf, kattach, paths};

/// The same flags as `kattach`'s build (`kattach::build_static`): other flags for the same
/// target would make cargo rebuild the shared dependencies at every switch between the two.
const RUSTFLAGS: &str = "-C target-feature=+crt-static --cfg getrandom_backend=\"linux_getrandom\"";

/// Builds module `name`; returns the `.aqi` path (or writes to `out`).
pub fn build(name: &str, out: Option<PathBuf>) -> Result<PathBuf> {
    let root = paths::workspace_root();
    let source = root.join("modules").join(name);
    let manifest = source
        .join("module")
        .join(kaos_module::source::MANIFEST_FILE);
    if !manifest.is_file() {
        bail!(
            "no module {name:?}: {} does not exist (modules live in modules/NAME)",
            manifest.display()
        );
    }
    let package = format!("kaos-{name}");
    let target = kattach::TARGET;
    eprintln!("[module] cargo build --release -p {package} --target {target} (crt-static)");
    cmd::run(
        Command::new(paths::cargo())
            .current_dir(&root)
            .args(["build", "--release", "-p", &package, "--target", target])
            .env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS", RUSTFLAGS),
    )
    .with_context(|| format!("building {package}"))?;
    let bin = paths::target_dir().join(target).join("release").join(name);
    elf::ensure_static(&bin)?;

    let stage = paths::target_dir()
        .join("kaos")
        .join(format!("module-{name}"));
    if stage.exists() {
        std::fs::remove_dir_all(&stage).with_context(|| format!("clearing {}", stage.display()))?;
    }
    let bin_dir = stage.join(kaos_module::source::FILES_DIR).join("bin");
    std::fs::create_dir_all(&bin_dir).with_context(|| format!("creating {}", bin_dir.display()))?;
    std::fs::copy(&manifest, stage.join(kaos_module::source::MANIFEST_FILE))
        .with_context(|| format!("copying {}", manifest.display()))?;
    std::fs::copy(&bin, bin_dir.join(name))
        .with_context(|| format!("copying {}", bin.display()))?;

    let bytes = kaos_module::source::build_dir(&stage)?;
    let module = kaos_module::parse(&bytes, &kaos_module::Limits::APP)?;
    let out = out.unwrap_or_else(|| {
        paths::target_dir().join("kaos").join(format!(
            "{}-{}.aqi",
            module.manifest.name, module.manifest.version
        ))
    });
    std::fs::write(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "[module] {} {}: {} bytes, sha256 {}",
        module.manifest.name,
        module.manifest.version,
        bytes.len(),
        module.sha256_hex()
    );
    Ok(out)
}
