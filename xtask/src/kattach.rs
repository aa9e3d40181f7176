//! Building `kattach` as a static x86-64 binary for the initramfs.

use crate::{cmd, elf, paths};
use anyhow::{Context as _, Result};
use std::path::PathBuf;
use std::process::Command;

/// Target triple for the host image's `kattach`. No musl target exists on these machines, so
/// this is glibc linked statically (`+crt-static`; NSS must not be used).
pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// `cargo build --release -p kattach --target x86_64-unknown-linux-gnu` with `+crt-static`,
/// then checks the result has no ELF interpreter. Returns the binary's path.
pub fn build_static() -> Result<PathBuf> {
    let root = paths::workspace_root();
    eprintln!("[kattach] cargo build --release -p kattach --target {TARGET} (crt-static)");
    cmd::run(
        Command::new(paths::cargo())
            .current_dir(&root)
            .args(["build", "--release", "-p", "kattach", "--target", TARGET])
            // Target-specific RUSTFLAGS: applies to kattach and its deps but not to build
            // scripts and proc macros, which run on the host and stay dynamically linked.
            // `getrandom_backend`: the getrandom crate (snow's ephemeral keys) otherwise looks
            // libc's getrandom up at run time, which a static binary cannot, and falls back to
            // polling /dev/random, which on Linux 6.1 never starts the kernel's jitter seeding:
            // a rebooted host whose key came from its store hung at its first handshake.
            .env(
                "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
                "-C target-feature=+crt-static --cfg getrandom_backend=\"linux_getrandom\"",
            ),
    )
    .context("building kattach")?;
    let bin = paths::target_dir()
        .join(TARGET)
        .join("release")
        .join("kattach");
    elf::ensure_static(&bin)?;
    Ok(bin)
}
