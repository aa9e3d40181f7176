//! Tiny hand-made guests: ELF64 files whose code writes bytes to COM1, then resets through the
//! i8042, powers off through the exit port, or idles; an SMP one that starts an application
//! processor; one that echoes its initrd. Used by tests and the start-up bench; they need no
//! kernel build.

/// Where the tiny guest is loaded and entered.
pub const TINY_ENTRY: u64 = 0x10_0000;

const EHDR_LEN: u16 = 64;
const PHDR_LEN: u16 = 56;

/// x86-64 code: `mov dx,0x3f8`, then `mov al,b; out dx,al` per byte, then
/// `mov al,0xfe; out 0x64,al`, then `hlt` in a loop.
pub fn tiny_code(message: &[u8]) -> Vec<u8> {
    let mut code = print_code(message);
    code.extend_from_slice(&[0xb0, 0xfe, 0xe6, 0x64]);
    code.extend_from_slice(&HALT_LOOP);
    code
}

/// `mov dx,0x3f8`, then `mov al,b; out dx,al` per byte of `message`.
fn print_code(message: &[u8]) -> Vec<u8> {
    let mut code = vec![0x66, 0xba, 0xf8, 0x03];
    for &b in message {
        code.extend_from_slice(&[0xb0, b, 0xee]);
    }
    code
}

/// `hlt` in a loop: with interrupts off and the in-kernel irqchip, the vCPU sleeps in KVM.
const HALT_LOOP: [u8; 3] = [0xf4, 0xeb, 0xfd];

/// Prints `message`, then halts for ever: a guest that stays alive until the VMM is stopped.
pub fn idle_code(message: &[u8]) -> Vec<u8> {
    let mut code = print_code(message);
    code.extend_from_slice(&HALT_LOOP);
    code
}

/// Prints `message`, then writes the exit port (`out 0xf4,al`).
pub fn exit_port_code(message: &[u8]) -> Vec<u8> {
    let mut code = print_code(message);
    code.extend_from_slice(&[0xe6, 0xf4]);
    code.extend_from_slice(&HALT_LOOP);
    code
}

/// Prints the first `n` (at most 127) bytes of the initrd, found through the zero page's
/// `ramdisk_image`, then resets.
pub fn initrd_echo_code(n: u8) -> Vec<u8> {
    // mov eax,[0x7218]; mov rbx,rax; mov dx,0x3f8
    let mut code = vec![0x8b, 0x04, 0x25, 0x18, 0x72, 0, 0, 0x48, 0x89, 0xc3];
    code.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03]);
    for i in 0..n.min(127) {
        code.extend_from_slice(&[0x8a, 0x43, i, 0xee]); // mov al,[rbx+i]; out dx,al
    }
    code.extend_from_slice(&[0xb0, 0xfe, 0xe6, 0x64]);
    code.extend_from_slice(&HALT_LOOP);
    code
}

/// Where the SMP guest puts its application processor's real-mode code (SIPI vector 0x10).
pub const AP_CODE_ADDR: u32 = 0x1_0000;

/// Two vCPUs: the boot vCPU copies real-mode code to [`AP_CODE_ADDR`], switches its local APIC
/// to x2APIC mode and sends INIT and SIPI to APIC 1, then halts; the application processor
/// prints `A` and writes the exit port. The VM powers off only if the AP really ran.
pub fn smp_code() -> Vec<u8> {
    // Real mode: mov dx,0x3f8; mov al,'A'; out dx,al; out 0xf4,al; hlt loop.
    let mut ap = vec![0xba, 0xf8, 0x03, 0xb0, b'A', 0xee, 0xe6, 0xf4];
    ap.extend_from_slice(&HALT_LOOP);
    let mut bsp: Vec<u8> = Vec::new();
    let bsp_len: u32 = 60;
    bsp.extend_from_slice(&[0x48, 0x8d, 0x35]); // lea rsi,[rip+disp32]
    bsp.extend_from_slice(&(bsp_len - 7).to_le_bytes());
    bsp.push(0xbf); // mov edi,AP_CODE_ADDR
    bsp.extend_from_slice(&AP_CODE_ADDR.to_le_bytes());
    bsp.push(0xb9); // mov ecx,len
    bsp.extend_from_slice(&u32::try_from(ap.len()).unwrap_or(0).to_le_bytes());
    bsp.extend_from_slice(&[0xf3, 0xa4]); // rep movsb
    bsp.extend_from_slice(&[0xb9, 0x1b, 0, 0, 0, 0x0f, 0x32]); // IA32_APIC_BASE: rdmsr
    bsp.extend_from_slice(&[0x0d, 0x00, 0x0c, 0, 0, 0x0f, 0x30]); // or eax,EN|EXTD; wrmsr
    bsp.extend_from_slice(&[0xb9, 0x30, 0x08, 0, 0]); // mov ecx,0x830 (x2APIC ICR)
    bsp.extend_from_slice(&[0xba, 1, 0, 0, 0]); // mov edx,1 (destination APIC 1)
    bsp.extend_from_slice(&[0xb8, 0x00, 0x45, 0, 0, 0x0f, 0x30]); // INIT, assert; wrmsr
    bsp.extend_from_slice(&[0xb8, 0x10, 0x46, 0, 0, 0x0f, 0x30]); // SIPI vector 0x10; wrmsr
    bsp.extend_from_slice(&HALT_LOOP);
    debug_assert_eq!(bsp.len(), 60);
    bsp.extend_from_slice(&ap);
    bsp
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
            // Uncaptured by the test harness, so the skip shows in every log.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("SKIPPED {test}: cannot open /dev/kvm: {e}\n").as_bytes(),
            );
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
        assert_eq!(smp_code().len(), 60 + 11);
        assert_eq!(
            smp_code()[3..7],
            53u32.to_le_bytes(),
            "lea reaches the AP code"
        );
        assert_eq!(idle_code(b"")[4..], HALT_LOOP);
        assert_eq!(exit_port_code(b"")[4..6], [0xe6, 0xf4]);
        assert_eq!(initrd_echo_code(2).len(), 14 + 8 + 7);
        assert_eq!(
            tiny_code(b"K"),
            [
                0x66, 0xba, 0xf8, 0x03, 0xb0, b'K', 0xee, 0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd
            ]
        );
    }
}
