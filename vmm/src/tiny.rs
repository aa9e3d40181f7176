//! A tiny hand-made guest: an ELF64 file whose code writes bytes to COM1 and resets through the
//! i8042. Used by tests and the start-up bench; it needs no kernel build.

/// Where the tiny guest is loaded and entered.
pub const TINY_ENTRY: u64 = 0x10_0000;

const EHDR_LEN: u16 = 64;
const PHDR_LEN: u16 = 56;

/// x86-64 code: `mov dx,0x3f8`, then `mov al,b; out dx,al` per byte, then
/// `mov al,0xfe; out 0x64,al`, then `hlt` in a loop.
pub fn tiny_code(message: &[u8]) -> Vec<u8> {
    let mut code = vec![0x66, 0xba, 0xf8, 0x03];
    for &b in message {
        code.extend_from_slice(&[0xb0, b, 0xee]);
    }
    code.extend_from_slice(&[0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd]);
    code
}

/// An ELF64 executable with one `PT_LOAD` segment holding `code` at [`TINY_ENTRY`].
pub fn tiny_elf_with_code(code: &[u8]) -> Vec<u8> {
    let offset = u64::from(EHDR_LEN + PHDR_LEN);
    let len = code.len() as u64;
    let mut f = Vec::with_capacity(usize::from(EHDR_LEN + PHDR_LEN) + code.len());
    f.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&TINY_ENTRY.to_le_bytes());
    f.extend_from_slice(&u64::from(EHDR_LEN).to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for half in [EHDR_LEN, PHDR_LEN, 1, 64, 0, 0] {
        f.extend_from_slice(&half.to_le_bytes());
    }
    f.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    f.extend_from_slice(&5u32.to_le_bytes()); // R+X
    for word in [offset, TINY_ENTRY, TINY_ENTRY, len, len, 0x1000] {
        f.extend_from_slice(&word.to_le_bytes());
    }
    f.extend_from_slice(code);
    f
}

/// The tiny guest printing `message`, then resetting.
pub fn tiny_elf(message: &[u8]) -> Vec<u8> {
    tiny_elf_with_code(&tiny_code(message))
}

/// True if `/dev/kvm` can be opened here; otherwise prints `SKIPPED <test>: <reason>` (the
/// suite's one greppable form) so the caller can return.
pub fn kvm_usable(test: &str) -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SKIPPED {test}: cannot open /dev/kvm: {e}");
            false
        }
    }
}

/// Writes a guest image to a file in the temp directory, named after this process and `name`.
pub fn write_guest(name: &str, bytes: &[u8]) -> std::io::Result<std::path::PathBuf> {
    let path = std::env::temp_dir().join(format!("kaos-vmm-{}-{name}", std::process::id()));
    std::fs::write(&path, bytes)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_elf_has_one_load_segment_at_the_entry() {
        let f = tiny_elf(b"K");
        assert_eq!(&f[..5], b"\x7fELF\x02");
        assert_eq!(f.len(), 120 + tiny_code(b"K").len());
        assert_eq!(f[24..32], TINY_ENTRY.to_le_bytes());
        assert_eq!(f[56..58], 1u16.to_le_bytes(), "e_phnum");
        assert_eq!(f[64..68], 1u32.to_le_bytes(), "PT_LOAD");
        assert_eq!(&f[120..], tiny_code(b"K"));
        assert_eq!(
            tiny_code(b"K"),
            [
                0x66, 0xba, 0xf8, 0x03, 0xb0, b'K', 0xee, 0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd
            ]
        );
    }
}
