//! Module uploads: pieces of a `.aqi` file arrive in order over any number of connections (an
//! upload resumes where a lost connection left it), then the whole file is checked against its
//! SHA-256, parsed, and stored in one transaction. Nothing is stored unless everything checks.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use kaos_protocol::{
    ErrorCode, ModuleInfo, ModuleKind, ModuleList, ModuleUpload, UploadState, truncated,
};
use sha2::{Digest as _, Sha256};

use crate::config::{Config, Refusal};
use crate::host::boot_ms;

/// Largest module file accepted.
pub const MAX_MODULE_BYTES: u64 = 64 << 20;
/// Most bytes held by unfinished uploads together; the oldest is dropped to make room.
const MAX_PENDING_BYTES: u64 = 128 << 20;

#[derive(Debug)]
struct Partial {
    size: u64,
    data: Vec<u8>,
    touched_ms: u64,
}

/// Unfinished uploads, by SHA-256.
#[derive(Debug, Default)]
pub struct Uploads {
    partial: Mutex<HashMap<[u8; 32], Partial>>,
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal::new(code, message)
}

impl Uploads {
    /// Handles one [`ModuleUpload`] step.
    pub fn step(&self, config: &Config, up: &ModuleUpload) -> Result<UploadState, Refusal> {
        // Already stored (content-addressed): nothing to send. Asked once, at the start, not
        // for every piece.
        let starting = up.data.is_empty() || up.offset == 0;
        if let Some(info) = starting
            .then(|| config.modules().into_iter().find(|m| m.sha256 == up.sha256))
            .flatten()
        {
            return Ok(UploadState {
                received: info.size,
                module: Some(info),
            });
        }
        if up.size == 0 || up.size > MAX_MODULE_BYTES {
            return Err(refuse(
                ErrorCode::InvalidArgument,
                format!(
                    "a module of {} bytes: modules hold 1 byte to {} MiB",
                    up.size,
                    MAX_MODULE_BYTES >> 20
                ),
            ));
        }
        let mut partial = self.partial.lock().unwrap_or_else(PoisonError::into_inner);
        if !partial.contains_key(&up.sha256) {
            make_room(&mut partial, up.size);
            partial.insert(
                up.sha256,
                Partial {
                    size: up.size,
                    data: Vec::new(),
                    touched_ms: boot_ms(),
                },
            );
        }
        let Some(p) = partial.get_mut(&up.sha256) else {
            return Err(refuse(ErrorCode::Internal, "upload vanished"));
        };
        if p.size != up.size {
            return Err(refuse(
                ErrorCode::Conflict,
                format!(
                    "an upload with this SHA-256 is {} bytes, not {}",
                    p.size, up.size
                ),
            ));
        }
        p.touched_ms = boot_ms();
        let received = p.data.len() as u64;
        if up.data.is_empty() {
            return Ok(UploadState {
                received,
                module: None,
            });
        }
        if up.offset != received {
            return Err(refuse(
                ErrorCode::Conflict,
                format!(
                    "piece at offset {}, but the host holds {received} bytes: resume there",
                    up.offset
                ),
            ));
        }
        if received + up.data.len() as u64 > p.size {
            return Err(refuse(
                ErrorCode::InvalidArgument,
                format!("piece runs past the announced size of {} bytes", p.size),
            ));
        }
        p.data.extend_from_slice(&up.data);
        if (p.data.len() as u64) < p.size {
            return Ok(UploadState {
                received: p.data.len() as u64,
                module: None,
            });
        }
        // Complete: whatever happens next, this upload is over.
        let Some(done) = partial.remove(&up.sha256) else {
            return Err(refuse(ErrorCode::Internal, "upload vanished"));
        };
        drop(partial);
        let info = check(&done.data, up.sha256)?;
        config.put_module(&info, &done.data)?;
        log::info!(
            "stored {} module {} {} ({} bytes)",
            info.kind.as_str(),
            info.name,
            info.version,
            info.size
        );
        Ok(UploadState {
            received: info.size,
            module: Some(info),
        })
    }
}

/// Drops the least recently touched uploads until `incoming` more bytes fit.
fn make_room(partial: &mut HashMap<[u8; 32], Partial>, incoming: u64) {
    while partial.values().map(|p| p.size).sum::<u64>() + incoming > MAX_PENDING_BYTES {
        let Some(oldest) = partial
            .iter()
            .min_by_key(|(_, p)| p.touched_ms)
            .map(|(k, _)| *k)
        else {
            return;
        };
        log::warn!("dropping an unfinished module upload to make room");
        partial.remove(&oldest);
    }
}

/// Verifies a complete upload: the SHA-256 it was announced with, then the archive itself.
fn check(bytes: &[u8], sha256: [u8; 32]) -> Result<ModuleInfo, Refusal> {
    let actual: [u8; 32] = Sha256::digest(bytes).into();
    if actual != sha256 {
        return Err(refuse(
            ErrorCode::InvalidArgument,
            "the file's SHA-256 differs from the one announced: corrupted in transit or changed \
             during the upload; nothing was stored",
        ));
    }
    let module = kaos_module::parse(bytes, &kaos_module::Limits::APP).map_err(|e| {
        refuse(
            ErrorCode::InvalidArgument,
            format!("{e}; nothing was stored"),
        )
    })?;
    let kind = match module.manifest.kind {
        kaos_module::manifest::Kind::Platform(_) => {
            if module.kernel().is_none() {
                return Err(refuse(
                    ErrorCode::InvalidArgument,
                    "platform module without a kernel; nothing was stored",
                ));
            }
            if bytes.len() > kaos_module::Limits::PLATFORM.max_size {
                return Err(refuse(
                    ErrorCode::InvalidArgument,
                    "platform module too large; nothing was stored",
                ));
            }
            ModuleKind::Platform
        }
        kaos_module::manifest::Kind::App(_) => ModuleKind::App,
    };
    Ok(ModuleInfo {
        name: truncated(&module.manifest.name),
        version: truncated(&module.manifest.version),
        kind,
        sha256,
        size: bytes.len() as u64,
    })
}

/// Every stored module, sorted by name.
pub fn list(config: &Config) -> ModuleList {
    let mut entries = heapless::Vec::new();
    for m in config.modules() {
        if entries.push(m).is_err() {
            break;
        }
    }
    ModuleList { entries }
}

/// (1.3) Module `q.name` and its manifest from `q.offset` on, at most
/// [`MANIFEST_PART`](kaos_protocol::MANIFEST_PART) bytes of it. The stored archive is read (every
/// chunk re-checked) and parsed again, so what is sent is what the host would run.
pub fn inspect(
    config: &Config,
    q: &kaos_protocol::ModuleInspectQuery,
) -> Result<kaos_protocol::ModuleManifest, Refusal> {
    let Some((module, bytes)) = config.module_bytes(&q.name)? else {
        return Err(refuse(
            ErrorCode::NotFound,
            format!("no module named {}", q.name),
        ));
    };
    kaos_module::parse(&bytes, &kaos_module::Limits::APP).map_err(|e| {
        refuse(
            ErrorCode::Internal,
            format!("stored module {}: {e}", q.name),
        )
    })?;
    let manifest = kaos_module::cpio::Reader::new(&bytes, kaos_module::cpio::Policy::STRICT)
        .next()
        .and_then(Result::ok)
        .filter(|e| e.name == kaos_module::MANIFEST_ENTRY)
        .map(|e| e.data)
        .ok_or_else(|| refuse(ErrorCode::Internal, "stored module without a manifest"))?;
    let total = u32::try_from(manifest.len()).unwrap_or(u32::MAX);
    let start = usize::try_from(q.offset)
        .unwrap_or(usize::MAX)
        .min(manifest.len());
    let end = start
        .saturating_add(kaos_protocol::MANIFEST_PART)
        .min(manifest.len());
    let mut data = heapless::Vec::new();
    // At most MANIFEST_PART bytes: the slice fits.
    let _ = data.extend_from_slice(manifest.get(start..end).unwrap_or_default());
    Ok(kaos_protocol::ModuleManifest {
        module,
        total,
        offset: q.offset,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(kernel: &[u8]) -> Vec<u8> {
        kaos_module::pack_platform("vkaos", "6.1.0-test", "6.1.0", kernel).unwrap_or_default()
    }

    fn bzimage() -> Vec<u8> {
        let mut k = vec![0u8; 4096];
        k[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
        k[0x202..0x206].copy_from_slice(b"HdrS");
        k
    }

    fn sha(bytes: &[u8]) -> [u8; 32] {
        Sha256::digest(bytes).into()
    }

    fn piece(file: &[u8], offset: usize, len: usize) -> ModuleUpload {
        let mut data = heapless::Vec::new();
        let end = (offset + len).min(file.len());
        let _ = data.extend_from_slice(&file[offset..end]);
        ModuleUpload {
            sha256: sha(file),
            size: file.len() as u64,
            offset: offset as u64,
            data,
        }
    }

    fn config() -> Config {
        Config::new(crate::config::DiskSource::Paths(Vec::new()), [0; 16])
    }

    #[test]
    fn an_upload_resumes_and_stores_once_whole() -> Result<(), Refusal> {
        let config = config();
        let uploads = Uploads::default();
        let file = platform(&bzimage());
        assert!(file.len() > 1000);
        // Start: the host holds nothing.
        assert_eq!(uploads.step(&config, &piece(&file, 0, 0))?.received, 0);
        assert_eq!(
            uploads.step(&config, &piece(&file, 0, 1000))?.received,
            1000
        );
        // A piece at the wrong offset is refused with where to resume.
        let err = uploads.step(&config, &piece(&file, 2000, 10)).err();
        assert_eq!(err.map(|e| e.reply().code), Some(ErrorCode::Conflict));
        // "Reconnect": ask where it stands, then finish.
        assert_eq!(uploads.step(&config, &piece(&file, 0, 0))?.received, 1000);
        let done = uploads.step(&config, &piece(&file, 1000, file.len()))?;
        let info = done
            .module
            .ok_or_else(|| refuse(ErrorCode::Internal, "not stored"))?;
        assert_eq!(info.name.as_str(), "vkaos");
        assert_eq!(info.kind, ModuleKind::Platform);
        assert_eq!(config.modules(), vec![info.clone()]);
        // The same file again is recognised at once.
        assert_eq!(
            uploads.step(&config, &piece(&file, 0, 0))?.module,
            Some(info)
        );
        Ok(())
    }

    #[test]
    fn a_wrong_hash_or_a_bad_archive_stores_nothing() {
        let config = config();
        let uploads = Uploads::default();
        let file = platform(&bzimage());
        let mut lie = piece(&file, 0, file.len());
        lie.sha256[0] ^= 1;
        let err = uploads
            .step(&config, &lie)
            .err()
            .map(|e| e.reply().message.to_string());
        assert!(err.is_some_and(|m| m.contains("SHA-256")));
        let garbage = b"this is not a cpio archive".to_vec();
        let err = uploads
            .step(&config, &piece(&garbage, 0, garbage.len()))
            .err();
        assert_eq!(
            err.map(|e| e.reply().code),
            Some(ErrorCode::InvalidArgument)
        );
        assert!(config.modules().is_empty());
        let too_big = ModuleUpload {
            size: MAX_MODULE_BYTES + 1,
            ..piece(&file, 0, 0)
        };
        assert!(uploads.step(&config, &too_big).is_err());
    }

    #[test]
    fn inspect_sends_the_stored_manifest_in_parts() -> Result<(), Refusal> {
        use kaos_module::manifest::{App, Entrypoint, Kind, Manifest, Restart};
        let config = config();
        let manifest = Manifest {
            format: kaos_module::manifest::FORMAT,
            name: "httpd".into(),
            version: "0.1.0".into(),
            kind: Kind::App(App {
                entrypoints: ["a", "b"]
                    .map(|name| Entrypoint {
                        name: name.into(),
                        exec: "bin/httpd".into(),
                        args: vec!["x".repeat(250); 32],
                        restart: Restart::OnFailure,
                    })
                    .to_vec(),
                ..App::default()
            }),
        };
        let file = kaos_module::pack_app(
            &manifest,
            &[kaos_module::AppFile::file(
                "bin/httpd",
                0o755,
                b"\x7fELF".to_vec(),
            )],
        )
        .map_err(|e| refuse(ErrorCode::Internal, e.to_string()))?;
        let uploads = Uploads::default();
        for offset in (0..file.len()).step_by(kaos_protocol::UPLOAD_CHUNK) {
            uploads.step(&config, &piece(&file, offset, kaos_protocol::UPLOAD_CHUNK))?;
        }
        let query = |offset| kaos_protocol::ModuleInspectQuery {
            name: truncated("httpd"),
            offset,
        };
        let mut bytes = Vec::new();
        loop {
            let part = inspect(&config, &query(u32::try_from(bytes.len()).unwrap_or(0)))?;
            assert_eq!(part.module.kind, ModuleKind::App);
            bytes.extend_from_slice(&part.data);
            if bytes.len() >= part.total as usize {
                break;
            }
        }
        // 64 arguments of 250 bytes: more than one part.
        assert!(bytes.len() > kaos_protocol::MANIFEST_PART);
        let decoded = kaos_module::decode_manifest_entry(&bytes)
            .map_err(|e| refuse(ErrorCode::Internal, e.to_string()))?;
        assert_eq!(decoded, manifest);
        assert!(inspect(&config, &query(u32::MAX))?.data.is_empty());
        let missing = kaos_protocol::ModuleInspectQuery {
            name: truncated("nginx"),
            offset: 0,
        };
        let err = inspect(&config, &missing).err();
        assert_eq!(err.map(|e| e.reply().code), Some(ErrorCode::NotFound));
        Ok(())
    }
}
