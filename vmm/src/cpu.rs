//! vCPU state for a direct 64-bit entry: long mode, flat segments, identity paging, `rsi` at the
//! zero page, on the boot vCPU only. Every vCPU gets a CPUID naming its own APIC id and the
//! topology (one package, one thread per core, `vcpus` cores); the application processors are
//! left as KVM creates them, waiting for INIT and SIPI from the guest.

use std::os::raw::c_char;

use kvm_bindings::{
    CpuId, KVM_MAX_CPUID_ENTRIES, kvm_cpuid_entry2, kvm_fpu, kvm_regs, kvm_segment, kvm_sregs,
};
use kvm_ioctls::{Kvm, VcpuFd};

use crate::boot::{
    BOOT_STACK, CODE_SELECTOR, DATA_SELECTOR, GDT, GDT_ADDR, IDT_ADDR, PML4_ADDR, TSS_SELECTOR,
    ZERO_PAGE,
};

const CR0_PE: u64 = 1;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// Local APIC register offsets of the LINT0 and LINT1 local vector table entries.
const APIC_LVT_LINT0: usize = 0x350;
const APIC_LVT_LINT1: usize = 0x360;
/// LVT delivery modes (bits 8..=10).
const APIC_MODE_EXTINT: u32 = 0b111;
const APIC_MODE_NMI: u32 = 0b100;

fn lapic_reg(regs: &[c_char; 1024], offset: usize) -> u32 {
    let mut b = [0u8; 4];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = regs.get(offset + i).map_or(0, |c| c.to_ne_bytes()[0]);
    }
    u32::from_le_bytes(b)
}

fn set_lapic_reg(regs: &mut [c_char; 1024], offset: usize, value: u32) {
    for (i, b) in value.to_le_bytes().into_iter().enumerate() {
        if let Some(slot) = regs.get_mut(offset + i) {
            *slot = c_char::from_ne_bytes([b]);
        }
    }
}

/// Routes the legacy PIC through LINT0 (ExtINT) and NMIs through LINT1, as a PC's BIOS leaves
/// them; Linux relies on it for the timer check at boot.
pub fn set_lint_modes(regs: &mut [c_char; 1024]) {
    for (offset, mode) in [
        (APIC_LVT_LINT0, APIC_MODE_EXTINT),
        (APIC_LVT_LINT1, APIC_MODE_NMI),
    ] {
        let v = lapic_reg(regs, offset);
        set_lapic_reg(regs, offset, (v & !0x700) | (mode << 8));
    }
}

/// The FPU state after `FNINIT` with SSE exceptions masked.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

/// A KVM segment from a GDT entry and its selector.
pub fn segment(selector: u16, entry: u64) -> kvm_segment {
    let bit = |n: u32| u8::from(entry >> n & 1 == 1);
    let base = (entry >> 16 & 0x00ff_ffff) | (entry >> 32 & 0xff00_0000);
    let limit = (entry & 0xffff) | (entry >> 32 & 0x000f_0000);
    let limit = u32::try_from(limit).unwrap_or(0);
    kvm_segment {
        base,
        // With the granularity bit, the limit counts 4 KiB pages.
        limit: if bit(55) == 1 {
            limit << 12 | 0xfff
        } else {
            limit
        },
        selector,
        type_: u8::try_from(entry >> 40 & 0xf).unwrap_or(0),
        present: bit(47),
        dpl: u8::try_from(entry >> 45 & 3).unwrap_or(0),
        db: bit(54),
        s: bit(44),
        l: bit(53),
        g: bit(55),
        avl: bit(52),
        unusable: u8::from(bit(47) == 0),
        padding: 0,
    }
}

/// Special registers for long mode, starting from the vCPU's current ones.
pub fn long_mode_sregs(mut s: kvm_sregs) -> kvm_sregs {
    let code = segment(CODE_SELECTOR, GDT[1]);
    let data = segment(DATA_SELECTOR, GDT[2]);
    s.cs = code;
    (s.ds, s.es, s.fs, s.gs, s.ss) = (data, data, data, data, data);
    s.tr = segment(TSS_SELECTOR, GDT[3]);
    s.gdt.base = GDT_ADDR;
    s.gdt.limit = u16::try_from(GDT.len() * 8 - 1).unwrap_or(u16::MAX);
    s.idt.base = IDT_ADDR;
    s.idt.limit = 7;
    s.cr3 = PML4_ADDR;
    s.cr4 |= CR4_PAE;
    s.cr0 |= CR0_PE | CR0_PG;
    s.efer |= EFER_LME | EFER_LMA;
    s
}

/// General registers at the kernel entry.
pub fn boot_regs(entry: u64) -> kvm_regs {
    kvm_regs {
        rflags: 0x2,
        rip: entry,
        rsp: BOOT_STACK,
        rbp: BOOT_STACK,
        rsi: ZERO_PAGE,
        ..Default::default()
    }
}

/// The host's supported CPUID, to be given to every vCPU.
///
/// # Errors
/// The KVM error.
pub fn supported_cpuid(kvm: &Kvm) -> Result<CpuId, kvm_ioctls::Error> {
    kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
}

/// Bits of an APIC id that number the cores of a package of `vcpus` cores.
fn core_bits(vcpus: u8) -> u32 {
    u32::from(vcpus).next_power_of_two().trailing_zeros()
}

/// Rewrites one CPUID entry for the vCPU with `apic_id` among `vcpus`.
fn set_topology(e: &mut kvm_cpuid_entry2, apic_id: u8, vcpus: u8) {
    let id = u32::from(apic_id);
    let count = u32::from(vcpus);
    match e.function {
        // Initial APIC id, addressable ids per package, HTT when there is more than one.
        0x1 => {
            let ids = count.next_power_of_two().min(0xff);
            e.ebx = (e.ebx & 0xffff) | (id << 24) | (ids << 16);
            e.edx = if vcpus > 1 {
                e.edx | 1 << 28
            } else {
                e.edx & !(1 << 28)
            };
        }
        // Extended topology: level 0 is SMT (one thread), level 1 the cores, then invalid.
        0xb | 0x1f => {
            (e.eax, e.ebx, e.ecx) = match e.index {
                0 => (0, 1, 1 << 8),
                1 => (core_bits(vcpus), count, 2 << 8 | 1),
                n => (0, 0, n & 0xff),
            };
            e.edx = id;
        }
        // AMD: cores per package and the APIC id bits that number them.
        0x8000_0008 => e.ecx = (e.ecx & !0xf0ff) | core_bits(vcpus) << 12 | (count - 1),
        // AMD extended APIC id, core id, one thread per core, one node.
        0x8000_001e => (e.eax, e.ebx, e.ecx) = (id, id, 0),
        _ => {}
    }
}

/// The CPUID of the vCPU with `apic_id` among `vcpus`: the host's supported leaves with the
/// APIC id and topology rewritten.
pub fn vcpu_cpuid(base: &CpuId, apic_id: u8, vcpus: u8) -> CpuId {
    let mut cpuid = base.clone();
    for e in cpuid.as_mut_slice() {
        set_topology(e, apic_id, vcpus);
    }
    cpuid
}

/// Sets CPUID, special and general registers of the boot vCPU.
///
/// # Errors
/// The KVM error.
pub fn setup_boot_vcpu(vcpu: &VcpuFd, cpuid: &CpuId, entry: u64) -> Result<(), kvm_ioctls::Error> {
    vcpu.set_cpuid2(cpuid)?;
    let mut lapic = vcpu.get_lapic()?;
    set_lint_modes(&mut lapic.regs);
    vcpu.set_lapic(&lapic)?;
    vcpu.set_fpu(&boot_fpu())?;
    let sregs = long_mode_sregs(vcpu.get_sregs()?);
    vcpu.set_sregs(&sregs)?;
    vcpu.set_regs(&boot_regs(entry))
}

/// Sets the CPUID of an application processor; KVM leaves it waiting for INIT and SIPI.
///
/// # Errors
/// The KVM error.
pub fn setup_ap_vcpu(vcpu: &VcpuFd, cpuid: &CpuId) -> Result<(), kvm_ioctls::Error> {
    vcpu.set_cpuid2(cpuid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_decode_the_boot_gdt() {
        let cs = segment(CODE_SELECTOR, GDT[1]);
        assert_eq!(
            (cs.l, cs.db, cs.g, cs.present, cs.s, cs.type_),
            (1, 0, 1, 1, 1, 0xb)
        );
        assert_eq!((cs.base, cs.limit, cs.unusable), (0, 0xffff_ffff, 0));
        let ds = segment(DATA_SELECTOR, GDT[2]);
        assert_eq!((ds.l, ds.db, ds.type_), (0, 1, 3));
        let tr = segment(TSS_SELECTOR, GDT[3]);
        assert_eq!((tr.s, tr.type_), (0, 0xb));
        assert_eq!(segment(0, GDT[0]).unusable, 1);
    }

    #[test]
    fn lint0_is_extint_and_lint1_is_nmi() {
        let mut regs = [0 as c_char; 1024];
        set_lapic_reg(&mut regs, APIC_LVT_LINT0, 0x0001_0700);
        set_lapic_reg(&mut regs, APIC_LVT_LINT1, 0x0001_0000);
        set_lint_modes(&mut regs);
        assert_eq!(lapic_reg(&regs, APIC_LVT_LINT0), 0x0001_0700);
        assert_eq!(lapic_reg(&regs, APIC_LVT_LINT1), 0x0001_0400);
        assert_eq!(lapic_reg(&regs, 0x340), 0, "neighbours untouched");
        assert_eq!(lapic_reg(&regs, 1022), 0, "reads past the end are zero");
        assert_eq!((boot_fpu().fcw, boot_fpu().mxcsr), (0x37f, 0x1f80));
    }

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: 0xdead,
            ebx: 0x0001_0800,
            ecx: 0xffff_ffff,
            edx: 0,
            ..Default::default()
        }
    }

    #[test]
    fn cpuid_names_each_vcpus_apic_id_and_the_topology() -> Result<(), Box<dyn std::error::Error>> {
        let base = CpuId::from_entries(&[
            entry(0x1, 0),
            entry(0xb, 0),
            entry(0xb, 1),
            entry(0xb, 2),
            entry(0x8000_0008, 0),
            entry(0x8000_001e, 0),
            entry(0x7, 0),
        ])
        .map_err(|e| format!("{e:?}"))?;
        let c = vcpu_cpuid(&base, 5, 6);
        let e = c.as_slice();
        assert_eq!(
            e[0].ebx, 0x0508_0800,
            "APIC id 5, 8 addressable ids, low half kept"
        );
        assert_eq!(e[0].edx, 1 << 28, "HTT");
        assert_eq!((e[1].eax, e[1].ebx, e[1].ecx, e[1].edx), (0, 1, 0x100, 5));
        assert_eq!((e[2].eax, e[2].ebx, e[2].ecx, e[2].edx), (3, 6, 0x201, 5));
        assert_eq!((e[3].eax, e[3].ebx, e[3].ecx, e[3].edx), (0, 0, 2, 5));
        assert_eq!(e[4].ecx, 0xffff_3f05, "ApicIdCoreIdSize 3, 6 cores");
        assert_eq!((e[5].eax, e[5].ebx, e[5].ecx), (5, 5, 0));
        assert_eq!(
            (e[6].eax, e[6].ebx),
            (0xdead, 0x0001_0800),
            "other leaves untouched"
        );
        let one = vcpu_cpuid(&base, 0, 1);
        assert_eq!(one.as_slice()[0].ebx, 0x0001_0800);
        assert_eq!(one.as_slice()[0].edx, 0, "no HTT with one vCPU");
        assert_eq!(one.as_slice()[2].eax, 0);
        Ok(())
    }

    #[test]
    fn sregs_enter_long_mode_with_paging() {
        let s = long_mode_sregs(kvm_sregs::default());
        assert_eq!(s.cr3, PML4_ADDR);
        assert_ne!(s.cr0 & CR0_PG, 0);
        assert_ne!(s.cr0 & CR0_PE, 0);
        assert_ne!(s.cr4 & CR4_PAE, 0);
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!((s.gdt.base, s.gdt.limit), (GDT_ADDR, 31));
        let r = boot_regs(0x10_0000);
        assert_eq!((r.rip, r.rsi, r.rflags), (0x10_0000, ZERO_PAGE, 2));
    }
}
