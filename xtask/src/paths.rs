//! Well-known locations: workspace root, cargo target dir, xtask cache.

use anyhow::{Context as _, Result};
use std::path::PathBuf;

/// The workspace root (parent of the `xtask` crate).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` or `<root>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                workspace_root().join(d)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// The cache for expensive artefacts (extracted kernel source, kernel build trees):
/// `$KAOS_CACHE_DIR`, else `$HOME/.cache/kaos-rs`. Deliberately outside the repository so that
/// fresh clones on the same machine (CI) reuse kernel builds.
pub fn cache_dir() -> Result<PathBuf> {
    let dir = match std::env::var_os("KAOS_CACHE_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => {
            let home = std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .context("neither KAOS_CACHE_DIR nor HOME is set")?;
            PathBuf::from(home).join(".cache").join("kaos-rs")
        }
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating cache dir {}", dir.display()))?;
    std::path::absolute(&dir).with_context(|| format!("resolving {}", dir.display()))
}

/// The cargo executable running us (`$CARGO`), else `cargo`.
pub fn cargo() -> PathBuf {
    std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("cargo"))
}
