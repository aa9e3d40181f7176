//! `kaos-module`: the archives a KaOS host runs guests from.
//!
//! Design principles:
//! - **One container format, cpio newc**, because it is what the Linux kernel unpacks as an
//!   initramfs: a module can be handed to a guest as it is stored, and several archives
//!   concatenated are still one initrd. [`cpio`] writes them deterministically and reads them
//!   under a [`cpio::Policy`].
//! - **Untrusted until parsed**: a module arrives from a client (`kaosctl module push`) or a
//!   disk. The reader never panics and never indexes past its input; it refuses absolute paths,
//!   `..`, symlinks and device nodes unless the caller's policy allows them, names over 4 KiB,
//!   sizes beyond the input or a limit; every error names the entry and its byte offset. The
//!   `module_archive` fuzz target feeds it arbitrary bytes.
//! - **The manifest comes first** (`kaos-module`, postcard, [`manifest::FORMAT`] leading), so
//!   a reader knows what it holds before it looks at the payload, and a newer format is refused
//!   by number.
//! - **Identity is content**: a module is named by the SHA-256 of the whole `.aqi` file
//!   ([`sha256_hex`]); the host stores and verifies it by that hash.
//!
//! Two kinds exist: a *platform* module (`vkaos-<release>.aqi`, built by `cargo xtask image
//! --profile vkaos-x86_64`) holds the guest kernel; an *app* module (issue 7) holds programs,
//! ports and a configuration schema, packed by [`pack_app`] (from a directory with a
//! `kaos-module.toml`: `source::build_dir`, feature `build`). [`guest_initrd`] makes the archive a guest boots with: the
//! host's own `kattach` as `/init`.

#![forbid(unsafe_code)]

pub mod app;
pub mod archive;
pub mod cpio;
pub mod group;
pub mod manifest;
pub mod plan;
pub mod report;
#[cfg(feature = "build")]
pub mod source;

pub use app::{AppFile, Payload, pack_app};
pub use archive::{
    KERNEL_PATH, Limits, MANIFEST_ENTRY, Member, Module, ModuleError, decode_manifest_entry,
    pack_platform, parse,
};
pub use manifest::Manifest;

use sha2::{Digest as _, Sha256};

/// SHA-256 of `bytes`, 64 lowercase hex digits: a module's identity.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use core::fmt::Write as _;
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The initrd of a vKaOS guest: the mount points and device nodes `kattach` needs before it can
/// mount devtmpfs, and `/init` = `init_exe` (the host's own `kattach`, so host and guest never
/// disagree). Uncompressed: the guest kernel needs no decompressor for it.
///
/// ```text
/// dev/          0755     dev/console  c 5:1 0600     dev/null  c 1:3 0666
/// proc/ 0555    sys/ 0555    run/ 0755    tmp/ 1777    etc/ 0755
/// init          0755     init_exe
/// ```
///
/// Fails only for an `init_exe` of 4 GiB or more, which newc cannot hold.
pub fn guest_initrd(init_exe: &[u8]) -> Result<Vec<u8>, cpio::WriteError> {
    let mut w = cpio::Writer::new();
    w.dir("dev", 0o755)?;
    // The kernel opens /dev/console for init's stdin/stdout/stderr before devtmpfs is mounted.
    w.char_device("dev/console", 0o600, 5, 1)?;
    w.char_device("dev/null", 0o666, 1, 3)?;
    w.dir("proc", 0o555)?;
    w.dir("sys", 0o555)?;
    w.dir("run", 0o755)?;
    w.dir("tmp", 0o1777)?;
    w.dir("etc", 0o755)?;
    w.file("init", 0o755, init_exe)?;
    Ok(w.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_input() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn guest_initrd_lists_what_the_guest_needs() {
        let initrd = guest_initrd(b"\x7fELF-ish").expect("small");
        let entries: Vec<_> = cpio::Reader::new(&initrd, cpio::Policy::INITRAMFS)
            .map(|e| e.expect("valid"))
            .map(|e| (e.name, e.mode, e.rdev, e.data))
            .collect();
        assert_eq!(
            entries,
            [
                ("dev", 0o040_755, (0, 0), &b""[..]),
                ("dev/console", 0o020_600, (5, 1), b""),
                ("dev/null", 0o020_666, (1, 3), b""),
                ("proc", 0o040_555, (0, 0), b""),
                ("sys", 0o040_555, (0, 0), b""),
                ("run", 0o040_755, (0, 0), b""),
                ("tmp", 0o041_777, (0, 0), b""),
                ("etc", 0o040_755, (0, 0), b""),
                ("init", 0o100_755, (0, 0), b"\x7fELF-ish"),
            ]
        );
        // Device nodes are refused unless the policy allows them.
        assert!(
            cpio::Reader::new(&initrd, cpio::Policy::STRICT)
                .any(|e| e.is_err_and(|e| e.to_string().contains("device node")))
        );
    }
}
