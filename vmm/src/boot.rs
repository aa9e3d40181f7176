//! x86-64 boot: guest layout, the kernel image, the zero page, GDT and identity page tables.
//!
//! The layout follows the Linux boot protocol's conventions for a direct 64-bit entry: boot
//! structures in the first MiB, the kernel at or above 1 MiB, `rsi` pointing at the zero page.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::{BzImage, Elf, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap};

use crate::memory::{MMIO_HOLE_START, ram_ranges};

/// Guest-physical address of the GDT.
pub const GDT_ADDR: u64 = 0x500;
/// Guest-physical address of the (empty) IDT.
pub const IDT_ADDR: u64 = 0x520;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK: u64 = 0x8ff0;
/// The zero page (`struct boot_params`).
pub const ZERO_PAGE: u64 = 0x7000;
/// Top-level page table.
pub const PML4_ADDR: u64 = 0x9000;
/// Page-directory-pointer table.
pub const PDPTE_ADDR: u64 = 0xa000;
/// Page directory: 512 entries of 2 MiB, the first GiB identity-mapped.
pub const PDE_ADDR: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_ADDR: u32 = 0x20000;
/// Longest command line accepted.
pub const CMDLINE_MAX: usize = 4096;
/// Kernels load at or above 1 MiB.
pub const HIGHMEM_START: u64 = 0x10_0000;
/// Start of the EBDA: RAM between here and 1 MiB is reserved in the e820 map.
pub const EBDA_START: u64 = 0x9fc00;

/// The boot GDT: null, 64-bit code, data, TSS (flags in the KVM segment encoding).
pub const GDT: [u64; 4] = [
    gdt_entry(0, 0, 0),
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
];
/// Selector of the code segment.
pub const CODE_SELECTOR: u16 = 0x08;
/// Selector of the data segment.
pub const DATA_SELECTOR: u16 = 0x10;
/// Selector of the TSS.
pub const TSS_SELECTOR: u16 = 0x18;

/// Errors from loading the kernel or writing boot structures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootError {
    /// The kernel file cannot be read.
    #[error("cannot read kernel {path}: {source}")]
    KernelFile {
        /// The file named.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The kernel file is neither an ELF64 nor a bzImage.
    #[error("kernel {0} is neither an ELF64 file nor a bzImage")]
    NotAKernel(String),
    /// The kernel could not be loaded into guest memory.
    #[error("cannot load kernel: {0}")]
    Load(String),
    /// The initrd cannot be read or does not fit.
    #[error("initrd: {0}")]
    Initrd(String),
    /// The command line is too long or has invalid characters.
    #[error("kernel command line: {0}")]
    Cmdline(String),
    /// A boot structure did not fit in guest memory.
    #[error("cannot write boot structures to guest memory: {0}")]
    Write(String),
}

/// The kind of a kernel image, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelKind {
    /// ELF64 (`vmlinux` or a hand-made guest): 64-bit entry at `e_entry`.
    Elf,
    /// bzImage: 64-bit entry at load address + 0x200.
    BzImage,
}

/// Recognises a kernel from its first 0x208 bytes (the ELF magic or the `HdrS` setup signature).
pub fn kernel_kind(head: &[u8]) -> Option<KernelKind> {
    if head.len() >= 5 && head[..4] == *b"\x7fELF" && head[4] == 2 {
        return Some(KernelKind::Elf);
    }
    if head.get(0x202..0x206) == Some(b"HdrS".as_slice()) {
        return Some(KernelKind::BzImage);
    }
    None
}

/// Opens and classifies a kernel file without touching guest memory.
///
/// # Errors
/// [`BootError::KernelFile`] or [`BootError::NotAKernel`].
pub fn open_kernel(path: &str) -> Result<(File, KernelKind), BootError> {
    let io = |source| BootError::KernelFile {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let mut head = Vec::with_capacity(0x208);
    (&mut file).take(0x208).read_to_end(&mut head).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let kind = kernel_kind(&head).ok_or_else(|| BootError::NotAKernel(path.to_owned()))?;
    Ok((file, kind))
}

/// Where the kernel landed.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    /// 64-bit entry point.
    pub entry: u64,
    /// The setup header to copy into the zero page (bzImage only).
    pub setup_header: Option<linux_loader::loader::bootparam::setup_header>,
    /// First byte after the kernel.
    pub end: u64,
}

/// Loads an ELF or bzImage kernel at or above [`HIGHMEM_START`].
///
/// # Errors
/// [`BootError::Load`] when the image is malformed or does not fit.
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    file: &mut File,
    kind: KernelKind,
) -> Result<LoadedKernel, BootError> {
    let high = Some(GuestAddress(HIGHMEM_START));
    let load = |e: linux_loader::loader::Error| BootError::Load(e.to_string());
    match kind {
        KernelKind::Elf => {
            let r = Elf::load(mem, None, file, high).map_err(load)?;
            Ok(LoadedKernel {
                entry: r.kernel_load.0,
                setup_header: None,
                end: r.kernel_end,
            })
        }
        KernelKind::BzImage => {
            let r = BzImage::load(mem, None, file, high).map_err(load)?;
            Ok(LoadedKernel {
                entry: r
                    .kernel_load
                    .0
                    .checked_add(0x200)
                    .ok_or_else(|| BootError::Load("bzImage load address overflows".to_owned()))?,
                setup_header: r.setup_header,
                end: r.kernel_end,
            })
        }
    }
}

/// Encodes one GDT entry from KVM-style flags, base and limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let (flags, base, limit) = (flags as u64, base as u64, limit as u64);
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0x0000_ffff)
}

/// The page tables identity-mapping the first GiB with 2 MiB pages: (address, entry) pairs.
pub fn page_table_entries() -> impl Iterator<Item = (u64, u64)> {
    let pml4 = std::iter::once((PML4_ADDR, PDPTE_ADDR | 0x03));
    let pdpte = std::iter::once((PDPTE_ADDR, PDE_ADDR | 0x03));
    let pde = (0..512u64).map(|i| (PDE_ADDR + i * 8, (i << 21) | 0x83));
    pml4.chain(pdpte).chain(pde)
}

/// Writes the GDT, an empty IDT and the identity page tables.
///
/// # Errors
/// [`BootError::Write`] when memory is too small.
pub fn write_tables(mem: &GuestMemoryMmap) -> Result<(), BootError> {
    let w = |e: vm_memory::GuestMemoryError| BootError::Write(e.to_string());
    for (i, entry) in (0u64..).zip(GDT) {
        mem.write_obj(entry, GuestAddress(GDT_ADDR + i * 8))
            .map_err(w)?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_ADDR)).map_err(w)?;
    for (addr, entry) in page_table_entries() {
        mem.write_obj(entry, GuestAddress(addr)).map_err(w)?;
    }
    Ok(())
}

/// Builds the kernel command line.
///
/// # Errors
/// [`BootError::Cmdline`] when it is too long or has invalid characters.
pub fn cmdline(text: &str) -> Result<Cmdline, BootError> {
    let e = |e: linux_loader::cmdline::Error| BootError::Cmdline(e.to_string());
    let mut c = Cmdline::new(CMDLINE_MAX).map_err(e)?;
    if !text.is_empty() {
        c.insert_str(text).map_err(e)?;
    }
    Ok(c)
}

/// The initrd's place in guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Initrd {
    /// Guest-physical start.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
}

/// One piece of the initrd. Linux unpacks concatenated cpio archives (compressed or not) one
/// after the other, so an initrd can be a file followed by archives made in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitrdPart {
    /// The contents of a file.
    File(String),
    /// Bytes made by the caller, e.g. a cpio archive holding the guest's init.
    Bytes(Vec<u8>),
}

impl InitrdPart {
    fn label(&self) -> String {
        match self {
            InitrdPart::File(path) => path.clone(),
            InitrdPart::Bytes(b) => format!("{} bytes in memory", b.len()),
        }
    }
}

/// Parts start 4-byte aligned, as the kernel's unpacker expects of each archive's first header;
/// the padding between them is zeros, which it skips.
const INITRD_PART_ALIGN: u64 = 4;

fn align_part(size: u64) -> Option<u64> {
    size.checked_next_multiple_of(INITRD_PART_ALIGN)
}

/// Loads the initrd parts, concatenated, at the top of low RAM, page-aligned. No parts, no
/// initrd.
///
/// # Errors
/// [`BootError::Initrd`] when a part cannot be read or the whole would overlap the kernel.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    parts: &[InitrdPart],
    kernel_end: u64,
) -> Result<Option<Initrd>, BootError> {
    let e = |what: &str, m: String| BootError::Initrd(format!("{what}: {m}"));
    let mut sources = Vec::with_capacity(parts.len());
    let mut size = 0u64;
    for part in parts {
        let (file, len) = match part {
            InitrdPart::File(path) => {
                let file = File::open(path).map_err(|x| e(path, x.to_string()))?;
                let len = file.metadata().map_err(|x| e(path, x.to_string()))?.len();
                (Some(file), len)
            }
            InitrdPart::Bytes(b) => (None, b.len() as u64),
        };
        size = align_part(len)
            .and_then(|l| size.checked_add(l))
            .ok_or_else(|| e(&part.label(), "too large".to_owned()))?;
        sources.push((part, file, len));
    }
    if sources.is_empty() {
        return Ok(None);
    }
    let low_end = ram_ranges(mem.last_addr().0 + 1)
        .first()
        .map_or(0, |r| r.1)
        .min(MMIO_HOLE_START);
    let addr = low_end
        .checked_sub(size)
        .map(|a| a & !0xfff)
        .filter(|a| *a >= kernel_end)
        .ok_or_else(|| {
            e(
                "initrd",
                format!("{size} bytes do not fit above the kernel"),
            )
        })?;
    // Guest memory is a fresh memfd: the padding between parts is already zero.
    let mut at = addr;
    for (part, file, len) in sources {
        let fail = |x: vm_memory::GuestMemoryError| e(&part.label(), x.to_string());
        match (part, file) {
            (_, Some(mut file)) => {
                let n = usize::try_from(len).map_err(|x| e(&part.label(), x.to_string()))?;
                mem.read_exact_volatile_from(GuestAddress(at), &mut file, n)
                    .map_err(fail)?;
            }
            (InitrdPart::Bytes(b), None) => mem.write_slice(b, GuestAddress(at)).map_err(fail)?,
            (InitrdPart::File(_), None) => {}
        }
        at += align_part(len).unwrap_or(len);
    }
    Ok(Some(Initrd { addr, size }))
}

/// Fills the zero page: setup header, command line, initrd and the e820 map.
pub fn zero_page(
    kernel: &LoadedKernel,
    cmdline_len: usize,
    initrd: Option<Initrd>,
    mem_bytes: u64,
) -> boot_params {
    let mut p = boot_params::default();
    if let Some(h) = kernel.setup_header {
        p.hdr = h;
    }
    p.hdr.type_of_loader = 0xff;
    p.hdr.boot_flag = 0xaa55;
    p.hdr.header = 0x5372_6448; // "HdrS"
    p.hdr.cmd_line_ptr = CMDLINE_ADDR;
    p.hdr.cmdline_size = u32::try_from(cmdline_len).unwrap_or(u32::MAX);
    p.hdr.kernel_alignment = 0x0100_0000;
    if let Some(rd) = initrd {
        p.hdr.ramdisk_image = u32::try_from(rd.addr).unwrap_or(0);
        p.hdr.ramdisk_size = u32::try_from(rd.size).unwrap_or(0);
    }
    let mut e820 = vec![(0, EBDA_START)];
    for (gpa, len, _) in ram_ranges(mem_bytes) {
        let start = gpa.max(HIGHMEM_START);
        if gpa + len > start {
            e820.push((start, gpa + len - start));
        }
    }
    for (slot, (addr, size)) in p.e820_table.iter_mut().zip(&e820) {
        *slot = boot_e820_entry {
            addr: *addr,
            size: *size,
            type_: 1,
        };
    }
    p.e820_entries = u8::try_from(e820.len()).unwrap_or(0);
    p
}

/// Writes the command line and the zero page.
///
/// # Errors
/// [`BootError::Write`] when they do not fit.
pub fn write_boot_params(
    mem: &GuestMemoryMmap,
    cmdline: &Cmdline,
    params: &boot_params,
) -> Result<(), BootError> {
    linux_loader::loader::load_cmdline(mem, GuestAddress(u64::from(CMDLINE_ADDR)), cmdline)
        .map_err(|e| BootError::Write(e.to_string()))?;
    let bp = BootParams::new(params, GuestAddress(ZERO_PAGE));
    LinuxBootConfigurator::write_bootparams(&bp, mem).map_err(|e| BootError::Write(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_match_the_long_mode_encoding() {
        assert_eq!(GDT[0], 0);
        assert_eq!(GDT[1], 0x00af_9b00_0000_ffff);
        assert_eq!(GDT[2], 0x00cf_9300_0000_ffff);
        assert_eq!(GDT[3], 0x008f_8b00_0000_ffff);
    }

    #[test]
    fn page_tables_identity_map_the_first_gib() {
        let entries: Vec<_> = page_table_entries().collect();
        assert_eq!(entries.len(), 514);
        assert_eq!(entries[0], (PML4_ADDR, PDPTE_ADDR | 3));
        assert_eq!(entries[1], (PDPTE_ADDR, PDE_ADDR | 3));
        assert_eq!(entries[2], (PDE_ADDR, 0x83));
        assert_eq!(entries[513], (PDE_ADDR + 511 * 8, (511 << 21) | 0x83));
    }

    #[test]
    fn kernels_are_recognised_by_their_magic() {
        assert_eq!(kernel_kind(b"\x7fELF\x02\x01\x01"), Some(KernelKind::Elf));
        assert_eq!(
            kernel_kind(b"\x7fELF\x01\x01\x01"),
            None,
            "ELF32 is refused"
        );
        let mut bz = vec![0u8; 0x208];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(kernel_kind(&bz), Some(KernelKind::BzImage));
        assert_eq!(kernel_kind(b"#!/bin/sh\n"), None);
        assert_eq!(kernel_kind(b""), None);
    }

    #[test]
    fn zero_page_has_cmdline_initrd_and_e820() {
        let k = LoadedKernel {
            entry: HIGHMEM_START,
            setup_header: None,
            end: 0x20_0000,
        };
        let rd = Initrd {
            addr: 0x700_0000,
            size: 0x1000,
        };
        let p = zero_page(&k, 12, Some(rd), 128 << 20);
        assert_eq!({ p.hdr.boot_flag }, 0xaa55);
        assert_eq!({ p.hdr.header }, 0x5372_6448);
        assert_eq!({ p.hdr.type_of_loader }, 0xff);
        assert_eq!({ p.hdr.cmd_line_ptr }, 0x20000);
        assert_eq!({ p.hdr.cmdline_size }, 12);
        assert_eq!({ p.hdr.ramdisk_image }, 0x700_0000);
        assert_eq!({ p.hdr.ramdisk_size }, 0x1000);
        assert_eq!(p.e820_entries, 2);
        assert_eq!({ p.e820_table[0].size }, EBDA_START);
        assert_eq!({ p.e820_table[1].addr }, HIGHMEM_START);
        assert_eq!({ p.e820_table[1].size }, (128 << 20) - HIGHMEM_START);
    }

    #[test]
    fn non_kernels_are_refused_before_loading() {
        let dir = std::env::temp_dir().join(format!("kaos-vmm-boot-{}", std::process::id()));
        std::fs::write(&dir, b"not a kernel at all").ok();
        let path = dir.to_string_lossy().into_owned();
        assert!(matches!(open_kernel(&path), Err(BootError::NotAKernel(_))));
        std::fs::remove_file(&dir).ok();
        assert!(matches!(
            open_kernel("/nonexistent/kernel"),
            Err(BootError::KernelFile { .. })
        ));
    }

    fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("kaos-vmm-{}-{name}", std::process::id()));
        assert!(
            std::fs::write(&path, bytes).is_ok(),
            "cannot write {}",
            path.display()
        );
        path
    }

    #[test]
    fn tiny_elf_loads_at_its_entry() -> Result<(), Box<dyn std::error::Error>> {
        let (mem, _fd) = crate::memory::create(16 << 20)?;
        let path = temp_file("load.elf", &crate::tiny::tiny_elf(b"K"));
        let opened = open_kernel(&path.to_string_lossy());
        std::fs::remove_file(&path).ok();
        let (mut file, kind) = opened?;
        let k = load_kernel(&mem, &mut file, kind)?;
        assert_eq!(k.entry, crate::tiny::TINY_ENTRY);
        let code = crate::tiny::tiny_code(b"K");
        assert_eq!(k.end, crate::tiny::TINY_ENTRY + code.len() as u64);
        let mut got = vec![0u8; code.len()];
        mem.read_slice(&mut got, GuestAddress(k.entry))?;
        assert_eq!(got, code);
        Ok(())
    }

    #[test]
    fn malformed_elf_is_a_load_error() -> Result<(), Box<dyn std::error::Error>> {
        let (mem, _fd) = crate::memory::create(16 << 20)?;
        let mut bad = crate::tiny::tiny_elf(b"K");
        bad[54] = 0x20; // e_phentsize no longer 56
        let path = temp_file("bad.elf", &bad);
        let opened = open_kernel(&path.to_string_lossy());
        std::fs::remove_file(&path).ok();
        let (mut file, kind) = opened?;
        assert!(matches!(
            load_kernel(&mem, &mut file, kind),
            Err(BootError::Load(_))
        ));
        Ok(())
    }

    #[test]
    fn initrd_goes_to_the_top_of_ram_page_aligned() -> Result<(), Box<dyn std::error::Error>> {
        let (mem, _fd) = crate::memory::create(16 << 20)?;
        let path = temp_file("initrd", &[7u8; 5000]);
        let parts = [InitrdPart::File(path.to_string_lossy().into_owned())];
        let rd = load_initrd(&mem, &parts, 0x20_0000);
        let too_high = load_initrd(&mem, &parts, 16 << 20);
        std::fs::remove_file(&path).ok();
        let rd = rd?;
        assert_eq!(
            rd,
            Some(Initrd {
                addr: ((16 << 20) - 5000) & !0xfff,
                size: 5000
            })
        );
        let addr = rd.map_or(0, |r| r.addr);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(addr + 4999))?, 7);
        assert!(matches!(too_high, Err(BootError::Initrd(_))));
        assert_eq!(load_initrd(&mem, &[], 0x20_0000)?, None);
        Ok(())
    }

    #[test]
    fn initrd_parts_are_concatenated_4_byte_aligned() -> Result<(), Box<dyn std::error::Error>> {
        let (mem, _fd) = crate::memory::create(16 << 20)?;
        let path = temp_file("initrd-part", b"FILE!");
        let parts = [
            InitrdPart::File(path.to_string_lossy().into_owned()),
            InitrdPart::Bytes(b"cpio".to_vec()),
            InitrdPart::Bytes(b"xyz".to_vec()),
        ];
        let rd = load_initrd(&mem, &parts, 0x20_0000);
        std::fs::remove_file(&path).ok();
        let rd = rd?.ok_or("no initrd")?;
        assert_eq!(rd.size, 8 + 4 + 4);
        assert_eq!(rd.addr % 4096, 0);
        let mut got = vec![0u8; 16];
        mem.read_slice(&mut got, GuestAddress(rd.addr))?;
        assert_eq!(got, b"FILE!\0\0\0cpioxyz\0");
        let missing = [InitrdPart::File("/nonexistent/initrd".into())];
        let err = load_initrd(&mem, &missing, 0x20_0000)
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|m| m.contains("/nonexistent/initrd")));
        Ok(())
    }
}
