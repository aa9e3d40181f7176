//! Disk images for the tests: sparse raw files, with helpers to fingerprint them.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A raw image file, deleted on drop.
#[derive(Debug)]
pub struct DiskImage {
    path: PathBuf,
}

impl DiskImage {
    /// A blank (all-zero, sparse) image of `mib` MiB.
    pub fn blank(tag: &str, mib: u64) -> Result<Self> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("kaos-{tag}-{}-{n}.img", std::process::id()));
        let file =
            std::fs::File::create(&path).with_context(|| format!("create {}", path.display()))?;
        file.set_len(mib * 1024 * 1024)?;
        Ok(Self { path })
    }

    /// The image's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A fingerprint of the whole contents (FNV-1a 64 over every byte): equal fingerprints
    /// before and after mean nothing was written.
    pub fn fingerprint(&self) -> Result<u64> {
        let mut file = std::fs::File::open(&self.path)?;
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok(h);
            }
            for &b in &buf[..n] {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }

    /// Writes `bytes` at `offset`.
    pub fn overwrite(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = std::fs::OpenOptions::new().write(true).open(&self.path)?;
        file.seek(SeekFrom::Start(offset))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        Ok(())
    }
}

impl Drop for DiskImage {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
