//! Just enough ELF64 parsing to prove that a binary is static (has no `PT_INTERP`), which is
//! what the kernel needs to exec it as `/init` from an initramfs that holds nothing else.

use anyhow::{Context as _, Result, bail, ensure};
use std::path::Path;

const PT_INTERP: u32 = 3;
const EM_X86_64: u16 = 62;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;

/// What the program headers say about how the kernel would load this binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linkage {
    /// No `PT_INTERP`: the kernel runs it directly (static or static-pie).
    Static,
    /// Has `PT_INTERP`: needs a dynamic loader that the initramfs does not have.
    Dynamic,
}

fn u16_at(b: &[u8], off: usize) -> Result<u16> {
    let s = b.get(off..off + 2).context("ELF truncated")?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32> {
    let s = b.get(off..off + 4).context("ELF truncated")?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], off: usize) -> Result<u64> {
    let s = b.get(off..off + 8).context("ELF truncated")?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Ok(u64::from_le_bytes(a))
}

/// Classifies an x86-64 little-endian ELF64 executable by its program headers.
pub fn linkage(bytes: &[u8]) -> Result<Linkage> {
    ensure!(bytes.get(..4) == Some(b"\x7fELF"), "not an ELF file");
    ensure!(
        bytes.get(4) == Some(&2),
        "not a 64-bit ELF (EI_CLASS != ELFCLASS64)"
    );
    ensure!(bytes.get(5) == Some(&1), "not a little-endian ELF");
    let e_type = u16_at(bytes, 0x10)?;
    ensure!(
        e_type == ET_EXEC || e_type == ET_DYN,
        "not an executable (e_type {e_type})"
    );
    let machine = u16_at(bytes, 0x12)?;
    ensure!(
        machine == EM_X86_64,
        "not an x86-64 ELF (e_machine {machine})"
    );
    let phoff = usize::try_from(u64_at(bytes, 0x20)?).context("e_phoff too large")?;
    let phentsize = usize::from(u16_at(bytes, 0x36)?);
    let phnum = usize::from(u16_at(bytes, 0x38)?);
    ensure!(phentsize >= 4, "bad e_phentsize {phentsize}");
    if phnum == 0 {
        bail!("ELF has no program headers");
    }
    for i in 0..phnum {
        let off = phentsize
            .checked_mul(i)
            .and_then(|o| o.checked_add(phoff))
            .context("program header offset overflows")?;
        if u32_at(bytes, off)? == PT_INTERP {
            return Ok(Linkage::Dynamic);
        }
    }
    Ok(Linkage::Static)
}

/// Fails unless the file at `path` is a static x86-64 ELF executable.
pub fn ensure_static(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    match linkage(&bytes).with_context(|| format!("parsing ELF {}", path.display()))? {
        Linkage::Static => Ok(()),
        Linkage::Dynamic => bail!(
            "{} is dynamically linked (has a PT_INTERP program header); the initramfs has no \
             dynamic loader, so /init must be static (build with -C target-feature=+crt-static)",
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 header followed by program headers of the given types.
    fn fake_elf(types: &[u32]) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[6] = 1;
        b[0x10..0x12].copy_from_slice(&ET_DYN.to_le_bytes());
        b[0x12..0x14].copy_from_slice(&EM_X86_64.to_le_bytes());
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        let n = u16::try_from(types.len()).expect("few headers");
        b[0x38..0x3a].copy_from_slice(&n.to_le_bytes());
        for t in types {
            let mut ph = vec![0u8; 56];
            ph[..4].copy_from_slice(&t.to_le_bytes());
            b.extend_from_slice(&ph);
        }
        b
    }

    #[test]
    fn static_without_interp() {
        // PT_PHDR, PT_LOAD, PT_DYNAMIC (static-pie has one), PT_GNU_STACK
        let elf = fake_elf(&[6, 1, 2, 0x6474_e551]);
        assert_eq!(linkage(&elf).expect("valid"), Linkage::Static);
    }

    #[test]
    fn dynamic_with_interp() {
        let elf = fake_elf(&[6, PT_INTERP, 1]);
        assert_eq!(linkage(&elf).expect("valid"), Linkage::Dynamic);
    }

    #[test]
    fn rejects_garbage_and_truncation() {
        assert!(linkage(b"#!/bin/sh\n").is_err());
        let mut elf = fake_elf(&[1, 1]);
        elf.truncate(64 + 56 + 2);
        assert!(linkage(&elf).is_err());
        let mut elf32 = fake_elf(&[1]);
        elf32[4] = 1;
        assert!(linkage(&elf32).is_err());
    }

    #[test]
    fn this_test_binary_is_dynamic() {
        // The test harness itself is an ordinary dynamically linked glibc binary.
        let exe = std::env::current_exe().expect("current exe");
        let bytes = std::fs::read(exe).expect("read exe");
        assert_eq!(linkage(&bytes).expect("valid"), Linkage::Dynamic);
    }
}
