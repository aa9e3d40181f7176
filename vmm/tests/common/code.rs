//! Machine code for hand-made guests that touch virtio-mmio windows and print what they read.

use kaos_vmm::virtio::MMIO_BASE;

/// A page directory for the fourth GiB, which the boot page tables leave unmapped.
const PD_4TH_GIB: u32 = 0xc000;
/// The boot page-directory-pointer table (`kaos_vmm::boot::PDPTE_ADDR`).
const PDPTE: u32 = 0xa000;

/// Maps the 2 MiB page at `MMIO_BASE` (uncached), puts `MMIO_BASE` in `rbx` and COM1 in `dx`.
pub fn map_window() -> Vec<u8> {
    let base = u32::try_from(MMIO_BASE).expect("the windows are below 4 GiB");
    let index = (base >> 21) & 511;
    let mut code = vec![0xb8]; // mov eax, PD | present | writable
    code.extend_from_slice(&(PD_4TH_GIB | 3).to_le_bytes());
    code.extend_from_slice(&[0x89, 0x04, 0x25]); // mov [PDPTE + 3 * 8], eax
    code.extend_from_slice(&(PDPTE + 3 * 8).to_le_bytes());
    code.push(0xb8); // mov eax, base | PS | PCD | PWT | writable | present
    code.extend_from_slice(&(base | 0x9b).to_le_bytes());
    code.extend_from_slice(&[0x89, 0x04, 0x25]); // mov [PD + index * 8], eax
    code.extend_from_slice(&(PD_4TH_GIB + index * 8).to_le_bytes());
    code.extend_from_slice(&[0x0f, 0x20, 0xd8, 0x0f, 0x22, 0xd8]); // mov rax,cr3; mov cr3,rax
    code.push(0xbb); // mov ebx, base
    code.extend_from_slice(&base.to_le_bytes());
    code.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03]); // mov dx, 0x3f8
    code
}

/// `mov esi, [rbx + offset]`, then prints esi as eight upper-case hex digits and a space.
pub fn print_read(offset: u32) -> Vec<u8> {
    let mut code = vec![0x8b, 0xb3]; // mov esi, [rbx + disp32]
    code.extend_from_slice(&offset.to_le_bytes());
    code.extend_from_slice(&[0xb9, 8, 0, 0, 0]); // mov ecx, 8
    code.extend_from_slice(&[
        0xc1, 0xc6, 0x04, // rol esi, 4
        0x89, 0xf0, // mov eax, esi
        0x24, 0x0f, // and al, 0xf
        0x04, 0x30, // add al, '0'
        0x3c, 0x39, // cmp al, '9'
        0x76, 0x02, // jbe +2
        0x04, 0x07, // add al, 'A' - '9' - 1
        0xee, // out dx, al
        0xff, 0xc9, // dec ecx
        0x75, 0xec, // jnz back to rol (-20)
        0xb0, b' ', 0xee, // mov al, ' '; out dx, al
    ]);
    code
}

/// `mov dword [rbx + offset], value`.
pub fn write32(offset: u32, value: u32) -> Vec<u8> {
    let mut code = vec![0xc7, 0x83];
    code.extend_from_slice(&offset.to_le_bytes());
    code.extend_from_slice(&value.to_le_bytes());
    code
}
