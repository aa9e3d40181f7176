//! `cargo xtask image`: static kattach + cached kernel build = one bootable bzImage.

use crate::{deps, kattach, kernel, paths};
use anyhow::{Context as _, Result};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The default kernel profile.
pub const DEFAULT_PROFILE: &str = "qemu-x86_64";

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
        write!(
            f,
            "kattach: {} ({} bytes, {:.2} MiB)",
            self.kattach.display(),
            self.kattach_size,
            mib(self.kattach_size)
        )
    }
}

/// Default output path: `<workspace>/target/kaos/kaos-<profile>.bzImage`.
pub fn default_image_path(profile: &str) -> PathBuf {
    paths::workspace_root()
        .join("target")
        .join("kaos")
        .join(format!("kaos-{profile}.bzImage"))
}

/// Builds the host image for `profile` (a file in `kernel/profiles/`) and writes it to `out`
/// (default: [`default_image_path`]). Installs missing Debian packages when root; reuses the
/// cached kernel build when the profile and kattach are unchanged.
pub fn build_image(profile: &str, out: Option<PathBuf>) -> Result<ImageInfo> {
    let started = Instant::now();
    // Validate the profile before any slow step.
    kernel::profile_path(profile)?;
    deps::ensure_packages(IMAGE_PACKAGES)?;
    let kattach = kattach::build_static()?;
    let kattach_size = fs::metadata(&kattach)?.len();
    let kb = kernel::build(profile, &kattach)?;

    let image = out.unwrap_or_else(|| default_image_path(profile));
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
    })
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
