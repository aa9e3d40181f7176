//! Module archives (`.aqi`): a cpio newc archive whose first entry is the manifest
//! (`kaos-module`), followed by the payload. A platform module's payload is exactly the guest
//! kernel at `boot/vmlinuz` (and its directory); an app module's is any tree of regular files
//! and directories. The identity of a module is the SHA-256 of the whole file.

use core::ops::Range;

use crate::cpio::{CpioError, FileKind, Policy, Reader, WriteError, Writer};
use crate::manifest::{self, Invalid, Kind, Manifest, Platform};

/// Name of the manifest entry, always first.
pub const MANIFEST_ENTRY: &str = "kaos-module";
/// Where a platform module keeps its kernel.
pub const KERNEL_PATH: &str = "boot/vmlinuz";

/// Bounds applied while parsing; [`Limits::PLATFORM`] and [`Limits::APP`] are the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest archive, in bytes.
    pub max_size: usize,
    /// Largest manifest entry, in bytes.
    pub max_manifest: usize,
    /// Most entries (manifest included, trailer excluded).
    pub max_entries: usize,
    /// Largest single file, in bytes.
    pub max_file_size: u32,
}

impl Limits {
    /// A platform module: a kernel of a few MiB.
    pub const PLATFORM: Self = Self {
        max_size: 64 << 20,
        max_manifest: 64 << 10,
        max_entries: 16,
        max_file_size: 64 << 20,
    };
    /// An app module: what a host stores (64 MiB in all, as a platform module), in at most
    /// 16384 entries.
    pub const APP: Self = Self {
        max_size: 64 << 20,
        max_manifest: 64 << 10,
        max_entries: 1 << 14,
        max_file_size: 64 << 20,
    };
}

/// Why a module archive was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModuleError {
    /// Larger than [`Limits::max_size`].
    #[error("module archive is {size} bytes, more than the limit of {max}")]
    TooLarge {
        /// The archive's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The cpio layer refused it.
    #[error("module archive: {0}")]
    Cpio(#[from] CpioError),
    /// The first entry is not a regular file named `kaos-module`.
    #[error(
        "module archive: the first entry must be the manifest file `kaos-module`, found {found}"
    )]
    NoManifest {
        /// What was found instead.
        found: String,
    },
    /// The manifest entry is larger than [`Limits::max_manifest`].
    #[error("module manifest is {size} bytes, more than the limit of {max}")]
    ManifestTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The manifest has a format number this build does not read.
    #[error("module manifest format {0} is not supported (this build reads format {f})", f = manifest::FORMAT)]
    UnsupportedFormat(u16),
    /// The manifest does not decode.
    #[error("module manifest does not decode: {0}")]
    ManifestDecode(String),
    /// The manifest decodes but breaks a rule.
    #[error("module manifest: {0}")]
    Invalid(#[from] Invalid),
    /// An entry that this kind of module may not hold.
    #[error("module archive: entry {name:?} at byte {offset} is not allowed in a {kind} module")]
    Unexpected {
        /// The entry's name.
        name: String,
        /// Its header's offset.
        offset: usize,
        /// `platform` or `app`.
        kind: &'static str,
    },
    /// The same path twice.
    #[error("module archive: entry {name:?} at byte {offset} appears twice")]
    Duplicate {
        /// The entry's name.
        name: String,
        /// The second header's offset.
        offset: usize,
    },
    /// A required file is missing.
    #[error("module archive: {what} {name:?} is missing")]
    Missing {
        /// The path.
        name: String,
        /// What it should be.
        what: &'static str,
    },
    /// `boot/vmlinuz` is neither a bzImage nor an ELF64 kernel.
    #[error(
        "module archive: {KERNEL_PATH} at byte {offset} is neither a bzImage (no boot signature) \
         nor an ELF64 kernel"
    )]
    NotBzImage {
        /// Offset of the kernel's data.
        offset: usize,
    },
    /// Something other than zero padding follows the trailer.
    #[error("module archive: non-zero byte at {offset} after the cpio trailer")]
    TrailingData {
        /// The first such byte.
        offset: usize,
    },
    /// Packing failed.
    #[error("packing a module: {0}")]
    Write(#[from] WriteError),
    /// An app module entry breaks a rule of its own: permission bits beyond `0o777` (no setuid,
    /// setgid or sticky bit), or a parent directory that is not an earlier entry.
    #[error("module archive: entry {name:?} at byte {offset}: {reason}")]
    BadEntry {
        /// The entry's name.
        name: String,
        /// Its header's offset.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A file given to [`crate::pack_app`] breaks a rule (the reason says which).
    #[error("module file {name:?}: {reason}")]
    BadFile {
        /// Its path in the module.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// [`crate::pack_app`] was given a manifest of another kind.
    #[error("not an app module manifest (kind platform)")]
    NotApp,
}

/// A payload member of a parsed module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its path.
    pub name: String,
    /// Regular file or directory.
    pub kind: FileKind,
    /// Its permission bits.
    pub perm: u32,
    /// Where its contents are in the archive (empty for a directory).
    pub range: Range<usize>,
}

/// A parsed, validated module archive, borrowing the archive's bytes.
#[derive(Debug, Clone)]
pub struct Module<'a> {
    /// The manifest.
    pub manifest: Manifest,
    /// The payload, in archive order (manifest excluded).
    pub members: Vec<Member>,
    bytes: &'a [u8],
}

impl<'a> Module<'a> {
    /// The whole archive.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The contents of the regular file `name`.
    pub fn file(&self, name: &str) -> Option<&'a [u8]> {
        self.members
            .iter()
            .find(|m| m.kind == FileKind::File && m.name == name)
            .and_then(|m| self.bytes.get(m.range.clone()))
    }

    /// A platform module's kernel (bzImage); `None` for an app module.
    pub fn kernel(&self) -> Option<&'a [u8]> {
        match self.manifest.kind {
            Kind::Platform(_) => self.file(KERNEL_PATH),
            Kind::App(_) => None,
        }
    }

    /// The module's identity: SHA-256 of the whole archive, hex.
    pub fn sha256_hex(&self) -> String {
        crate::sha256_hex(self.bytes)
    }
}

/// Packs a platform module: the manifest (`name`, `version`, `kernel_release`), then
/// `boot/vmlinuz` = `kernel`. Refuses invalid manifest fields.
pub fn pack_platform(
    name: &str,
    version: &str,
    kernel_release: &str,
    kernel: &[u8],
) -> Result<Vec<u8>, ModuleError> {
    let manifest = Manifest {
        format: manifest::FORMAT,
        name: name.to_owned(),
        version: version.to_owned(),
        kind: Kind::Platform(Platform {
            kernel_release: kernel_release.to_owned(),
        }),
    };
    manifest.validate()?;
    let encoded = postcard::to_allocvec(&manifest)
        .map_err(|e| ModuleError::ManifestDecode(format!("encoding: {e}")))?;
    let mut w = Writer::new();
    w.file(MANIFEST_ENTRY, 0o444, &encoded)?;
    w.dir("boot", 0o755)?;
    w.file(KERNEL_PATH, 0o444, kernel)?;
    Ok(w.finish())
}

/// Parses and validates a module archive within `limits`.
pub fn parse<'a>(bytes: &'a [u8], limits: &Limits) -> Result<Module<'a>, ModuleError> {
    if bytes.len() > limits.max_size {
        return Err(ModuleError::TooLarge {
            size: bytes.len(),
            max: limits.max_size,
        });
    }
    let policy = Policy {
        max_entries: limits.max_entries,
        max_file_size: limits.max_file_size,
        ..Policy::STRICT
    };
    let mut reader = Reader::new(bytes, policy);
    let first = reader.next().transpose()?;
    let manifest = match first {
        Some(e) if e.name == MANIFEST_ENTRY && e.kind == FileKind::File => {
            decode_manifest(e.data, limits)?
        }
        Some(e) => {
            return Err(ModuleError::NoManifest {
                found: format!("{:?} at byte {}", e.name, e.offset),
            });
        }
        None => {
            return Err(ModuleError::NoManifest {
                found: "an empty archive".into(),
            });
        }
    };
    let kind = match manifest.kind {
        Kind::Platform(_) => "platform",
        Kind::App(_) => "app",
    };
    let mut members: Vec<Member> = Vec::new();
    let mut seen = std::collections::BTreeMap::new();
    for entry in reader.by_ref() {
        let e = entry?;
        if let Kind::App(_) = manifest.kind {
            check_app_entry(&e, &seen)?;
        }
        let allowed = match manifest.kind {
            Kind::Platform(_) => matches!(
                (e.name, e.kind),
                ("boot", FileKind::Dir) | (KERNEL_PATH, FileKind::File)
            ),
            Kind::App(_) => e.name != MANIFEST_ENTRY,
        };
        if !allowed {
            return Err(ModuleError::Unexpected {
                name: e.name.to_owned(),
                offset: e.offset,
                kind,
            });
        }
        if seen.insert(e.name, e.kind).is_some() {
            return Err(ModuleError::Duplicate {
                name: e.name.to_owned(),
                offset: e.offset,
            });
        }
        let end = e.data_offset.saturating_add(e.data.len());
        members.push(Member {
            name: e.name.to_owned(),
            kind: e.kind,
            perm: e.mode & 0o7777,
            range: e.data_offset..end,
        });
    }
    if let Some(end) = reader.end() {
        let tail = bytes.get(end..).unwrap_or_default();
        if let Some(i) = tail.iter().position(|&b| b != 0) {
            return Err(ModuleError::TrailingData {
                offset: end.saturating_add(i),
            });
        }
    }
    let module = Module {
        manifest,
        members,
        bytes,
    };
    check_payload(&module)?;
    Ok(module)
}

/// What an app module's entries must be beyond the cpio rules: plain permissions (no setuid,
/// setgid or sticky bit), and a parent that came before as a directory, so the tree unpacks in
/// archive order (as the kernel unpacks an initramfs) under a root of the guest's choosing.
fn check_app_entry(
    e: &crate::cpio::Entry<'_>,
    seen: &std::collections::BTreeMap<&str, FileKind>,
) -> Result<(), ModuleError> {
    let bad = |reason| ModuleError::BadEntry {
        name: e.name.to_owned(),
        offset: e.offset,
        reason,
    };
    if e.mode & 0o7000 != 0 {
        return Err(bad("setuid, setgid or sticky bit"));
    }
    if let Some((parent, _)) = e.name.rsplit_once('/')
        && seen.get(parent) != Some(&FileKind::Dir)
    {
        return Err(bad("its parent directory is not an earlier entry"));
    }
    Ok(())
}

/// Decodes and validates the bytes of a manifest entry on their own (what `module inspect`
/// receives from a host), within [`Limits::APP`].
pub fn decode_manifest_entry(data: &[u8]) -> Result<Manifest, ModuleError> {
    decode_manifest(data, &Limits::APP)
}

fn decode_manifest(data: &[u8], limits: &Limits) -> Result<Manifest, ModuleError> {
    if data.len() > limits.max_manifest {
        return Err(ModuleError::ManifestTooLarge {
            size: data.len(),
            max: limits.max_manifest,
        });
    }
    let (format, _) = postcard::take_from_bytes::<u16>(data)
        .map_err(|e| ModuleError::ManifestDecode(e.to_string()))?;
    if format != manifest::FORMAT {
        return Err(ModuleError::UnsupportedFormat(format));
    }
    let (manifest, rest) = postcard::take_from_bytes::<Manifest>(data)
        .map_err(|e| ModuleError::ManifestDecode(e.to_string()))?;
    if !rest.is_empty() {
        return Err(ModuleError::ManifestDecode(format!(
            "{} bytes after the manifest",
            rest.len()
        )));
    }
    manifest.validate()?;
    Ok(manifest)
}

/// What each kind's payload must hold.
fn check_payload(module: &Module<'_>) -> Result<(), ModuleError> {
    match &module.manifest.kind {
        Kind::Platform(_) => {
            let member = module
                .members
                .iter()
                .find(|m| m.name == KERNEL_PATH)
                .ok_or(ModuleError::Missing {
                    name: KERNEL_PATH.into(),
                    what: "the kernel",
                })?;
            let kernel = module.bytes.get(member.range.clone()).unwrap_or_default();
            if !is_bzimage(kernel) && !is_elf64(kernel) {
                return Err(ModuleError::NotBzImage {
                    offset: member.range.start,
                });
            }
        }
        Kind::App(app) => {
            for e in &app.entrypoints {
                let is_program = module
                    .members
                    .iter()
                    .any(|m| m.name == e.exec && m.kind == FileKind::File && m.perm & 0o111 != 0);
                if !is_program {
                    return Err(ModuleError::Missing {
                        name: e.exec.clone(),
                        what: "the executable file of an entrypoint",
                    });
                }
            }
        }
    }
    Ok(())
}

/// An ELF64 kernel (a `vmlinux`, or a hand-made guest), which the VMM boots as well.
pub fn is_elf64(kernel: &[u8]) -> bool {
    kernel.get(..5) == Some(b"\x7fELF\x02".as_slice())
}

/// A Linux x86 boot image: boot sector signature 0xAA55 at 0x1FE and `HdrS` at 0x202.
pub fn is_bzimage(kernel: &[u8]) -> bool {
    kernel.get(0x1FE..0x200) == Some(&[0x55, 0xAA][..]) && kernel.get(0x202..0x206) == Some(b"HdrS")
}

#[cfg(test)]
mod tests;
