//! The Intel MultiProcessor table (MP spec 1.4): how a guest without ACPI finds its CPUs, its
//! I/O APIC and the routing of the ISA interrupts.
//!
//! Linux (`CONFIG_X86_MPPARSE`) scans the last KiB of base memory (639 KiB) for the floating
//! pointer, which is where the EBDA starts in our layout: the e820 map already leaves
//! [`crate::boot::EBDA_START`]..1 MiB out of RAM, so the table is never handed to the allocator.
//!
//! The table is built as plain bytes ([`MpTable::bytes`]) and copied into guest memory once, so
//! it can be checked (and parsed back) in tests without a guest.
//!
//! Interrupt routing follows KVM's default GSI routing (`kvm_setup_default_irq_routing`): ISA IRQ
//! *n* drives I/O APIC pin *n*, IRQ 0 (the in-kernel PIT) included. QEMU sends IRQ 0 to pin 2,
//! but only because it installs a routing table of its own; this VMM keeps KVM's, so the table
//! says identity.

use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap};

/// Where the floating pointer goes: the start of the EBDA (the last KiB of base memory).
pub const MPTABLE_START: u64 = crate::boot::EBDA_START;
/// The room the EBDA gives the table (up to the VGA hole at 640 KiB).
pub const MPTABLE_ROOM: u64 = 0xa_0000 - MPTABLE_START;
/// The local APIC's default address.
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
/// The I/O APIC's default address.
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// ISA interrupts described (the I/O APIC's first 16 pins).
pub const ISA_IRQS: u8 = 16;

/// Length of the floating pointer structure.
pub const FLOATING_LEN: usize = 16;
/// Length of the configuration table header.
pub const HEADER_LEN: usize = 44;
/// Length of a processor entry.
pub const CPU_ENTRY_LEN: usize = 20;
/// Length of every other entry (bus, I/O APIC, I/O and local interrupt).
pub const SHORT_ENTRY_LEN: usize = 8;

/// Entry types.
pub const ENTRY_CPU: u8 = 0;
/// A bus entry.
pub const ENTRY_BUS: u8 = 1;
/// An I/O APIC entry.
pub const ENTRY_IOAPIC: u8 = 2;
/// An I/O interrupt assignment.
pub const ENTRY_IO_INT: u8 = 3;
/// A local interrupt assignment.
pub const ENTRY_LOCAL_INT: u8 = 4;

/// Interrupt types of I/O and local interrupt entries.
pub const INT_INT: u8 = 0;
/// A non-maskable interrupt.
pub const INT_NMI: u8 = 1;
/// An interrupt from an external 8259 PIC.
pub const INT_EXTINT: u8 = 3;

const SPEC_REV: u8 = 4;
const LAPIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BSP: u8 = 2;
/// Family 6 in the processor signature; APIC and FPU in its feature flags.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = 0x201;
const ISA_BUS: u8 = 0;

/// Errors from building or writing the table.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum MpTableError {
    /// The vCPU count cannot be described (zero, or APIC ids would run into the I/O APIC's).
    #[error("an MP table cannot describe {0} vCPUs")]
    Cpus(u32),
    /// The table does not fit in the EBDA.
    #[error("the MP table needs {0} bytes; the EBDA holds {MPTABLE_ROOM}")]
    TooLarge(usize),
    /// Guest memory does not cover the EBDA.
    #[error("cannot write the MP table to guest memory: {0}")]
    Write(String),
}

/// A built table: the floating pointer followed by the configuration table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpTable {
    bytes: Vec<u8>,
}

/// The 8-bit sum that makes `bytes` add up to zero.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, b| sum.wrapping_add(*b))
        .wrapping_neg()
}

fn cpu_entry(apic_id: u8) -> [u8; CPU_ENTRY_LEN] {
    let mut e = [0u8; CPU_ENTRY_LEN];
    e[0] = ENTRY_CPU;
    e[1] = apic_id;
    e[2] = LAPIC_VERSION;
    e[3] = CPU_ENABLED | if apic_id == 0 { CPU_BSP } else { 0 };
    e[4..8].copy_from_slice(&CPU_SIGNATURE.to_le_bytes());
    e[8..12].copy_from_slice(&CPU_FEATURES.to_le_bytes());
    e
}

fn short_entry(kind: u8, body: [u8; 7]) -> [u8; SHORT_ENTRY_LEN] {
    let mut e = [kind; SHORT_ENTRY_LEN];
    e[1..].copy_from_slice(&body);
    e
}

/// An interrupt entry: type, interrupt type, flags 0 (conforms to the bus), source bus and IRQ,
/// destination APIC and pin.
fn int_entry(kind: u8, int_type: u8, src_irq: u8, dst: u8, dst_pin: u8) -> [u8; SHORT_ENTRY_LEN] {
    short_entry(kind, [int_type, 0, 0, ISA_BUS, src_irq, dst, dst_pin])
}

impl MpTable {
    /// The table for `vcpus` processors with APIC ids 0..vcpus (0 is the BSP) and one I/O APIC
    /// with id `vcpus`.
    ///
    /// # Errors
    /// [`MpTableError::Cpus`] for 0 or more than 254 vCPUs, [`MpTableError::TooLarge`] when it
    /// would not fit in the EBDA.
    pub fn new(vcpus: u32) -> Result<Self, MpTableError> {
        let ioapic_id = u8::try_from(vcpus)
            .ok()
            .filter(|n| (1..0xff).contains(n))
            .ok_or(MpTableError::Cpus(vcpus))?;
        let mut entries: Vec<u8> = Vec::new();
        let mut count = 0u16;
        for id in 0..ioapic_id {
            entries.extend_from_slice(&cpu_entry(id));
            count += 1;
        }
        let mut short = vec![
            short_entry(ENTRY_BUS, [ISA_BUS, b'I', b'S', b'A', b' ', b' ', b' ']),
            short_entry(ENTRY_IOAPIC, [ioapic_id, IOAPIC_VERSION, 1, 0, 0, 0, 0]),
        ];
        short[1][4..8].copy_from_slice(&IOAPIC_ADDR.to_le_bytes());
        for irq in 0..ISA_IRQS {
            short.push(int_entry(ENTRY_IO_INT, INT_INT, irq, ioapic_id, irq));
        }
        short.push(int_entry(ENTRY_LOCAL_INT, INT_EXTINT, 0, 0, 0));
        short.push(int_entry(ENTRY_LOCAL_INT, INT_NMI, 0, 0xff, 1));
        for e in &short {
            entries.extend_from_slice(e);
            count += 1;
        }

        let table_len = HEADER_LEN + entries.len();
        let total = FLOATING_LEN + table_len;
        if total as u64 > MPTABLE_ROOM {
            return Err(MpTableError::TooLarge(total));
        }
        let mut header = [0u8; HEADER_LEN];
        header[0..4].copy_from_slice(b"PCMP");
        let len16 = u16::try_from(table_len).map_err(|_| MpTableError::TooLarge(total))?;
        header[4..6].copy_from_slice(&len16.to_le_bytes());
        header[6] = SPEC_REV;
        header[8..16].copy_from_slice(b"KAOS    ");
        header[16..28].copy_from_slice(b"KAOS-VMM    ");
        header[34..36].copy_from_slice(&count.to_le_bytes());
        header[36..40].copy_from_slice(&LAPIC_ADDR.to_le_bytes());

        let mut bytes = Vec::with_capacity(total);
        let mut floating = [0u8; FLOATING_LEN];
        floating[0..4].copy_from_slice(b"_MP_");
        // The configuration table follows the floating pointer, below 1 MiB.
        let table_addr = u32::try_from(MPTABLE_START + FLOATING_LEN as u64)
            .map_err(|_| MpTableError::TooLarge(total))?;
        floating[4..8].copy_from_slice(&table_addr.to_le_bytes());
        floating[8] = 1; // length in 16-byte paragraphs
        floating[9] = SPEC_REV;
        floating[10] = checksum(&floating);
        bytes.extend_from_slice(&floating);
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&entries);
        let table_sum = checksum(&bytes[FLOATING_LEN..]);
        bytes[FLOATING_LEN + 7] = table_sum;
        Ok(MpTable { bytes })
    }

    /// The floating pointer and the configuration table, as the guest sees them.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Copies the table to [`MPTABLE_START`].
    ///
    /// # Errors
    /// [`MpTableError::Write`] when guest memory does not cover the EBDA.
    pub fn write(&self, mem: &GuestMemoryMmap) -> Result<(), MpTableError> {
        let at = GuestAddress(MPTABLE_START);
        let end = at.0 + self.bytes.len() as u64 - 1;
        if !mem.address_in_range(GuestAddress(end)) {
            return Err(MpTableError::Write(format!("{end:#x} is beyond guest RAM")));
        }
        mem.write_slice(&self.bytes, at)
            .map_err(|e| MpTableError::Write(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a guest learns from a table: (APIC id, flags) per processor, I/O APIC (id, address),
    /// (source IRQ, pin) per I/O interrupt, (type, destination, LINT) per local interrupt.
    #[derive(Debug, Default)]
    struct Parsed {
        cpus: Vec<(u8, u8)>,
        buses: Vec<[u8; 6]>,
        ioapics: Vec<(u8, u32)>,
        io_ints: Vec<(u8, u8)>,
        local_ints: Vec<(u8, u8, u8)>,
        lapic: u32,
    }

    fn u16_at(b: &[u8], at: usize) -> usize {
        usize::from(u16::from_le_bytes([b[at], b[at + 1]]))
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    /// Parses like Linux's `smp_scan_config` and `smp_read_mpc`: signatures, checksums, lengths.
    fn parse(mem: &[u8], base: u64) -> Parsed {
        assert_eq!(&mem[0..4], b"_MP_");
        assert_eq!(mem[8], 1);
        assert_eq!(checksum(&mem[..FLOATING_LEN]), 0, "floating pointer sum");
        assert_eq!(
            mem[11], 0,
            "a configuration table, not a default configuration"
        );
        let table = usize::try_from(u64::from(u32_at(mem, 4)) - base).unwrap_or(usize::MAX);
        let t = &mem[table..];
        assert_eq!(&t[0..4], b"PCMP");
        let len = u16_at(t, 4);
        assert_eq!(checksum(&t[..len]), 0, "configuration table sum");
        let mut p = Parsed {
            lapic: u32_at(t, 36),
            ..Parsed::default()
        };
        let (mut at, mut seen) = (HEADER_LEN, 0);
        while at < len {
            let e = &t[at..];
            at += match e[0] {
                ENTRY_CPU => {
                    p.cpus.push((e[1], e[3]));
                    CPU_ENTRY_LEN
                }
                ENTRY_BUS => {
                    p.buses.push([e[2], e[3], e[4], e[5], e[6], e[7]]);
                    SHORT_ENTRY_LEN
                }
                ENTRY_IOAPIC => {
                    p.ioapics.push((e[1], u32_at(e, 4)));
                    SHORT_ENTRY_LEN
                }
                ENTRY_IO_INT => {
                    assert_eq!((e[1], e[4]), (INT_INT, ISA_BUS));
                    p.io_ints.push((e[5], e[7]));
                    SHORT_ENTRY_LEN
                }
                ENTRY_LOCAL_INT => {
                    p.local_ints.push((e[1], e[6], e[7]));
                    SHORT_ENTRY_LEN
                }
                other => panic!("unknown entry type {other}"),
            };
            seen += 1;
        }
        assert_eq!(at, len, "entries end exactly at the table's length");
        assert_eq!(seen, u16_at(t, 34), "entry count");
        p
    }

    #[test]
    fn table_parses_back_with_one_entry_per_vcpu() -> Result<(), MpTableError> {
        for vcpus in [1, 2, crate::MAX_VCPUS] {
            let table = MpTable::new(vcpus)?;
            let p = parse(table.bytes(), MPTABLE_START);
            let n = u8::try_from(vcpus).unwrap_or(0);
            let cpus: Vec<(u8, u8)> = (0..n).map(|i| (i, if i == 0 { 3 } else { 1 })).collect();
            assert_eq!(p.cpus, cpus, "{vcpus} vCPUs, BSP flag on APIC 0 only");
            assert_eq!(p.buses, [*b"ISA   "]);
            assert_eq!(p.ioapics, [(n, IOAPIC_ADDR)]);
            let identity: Vec<(u8, u8)> = (0..ISA_IRQS).map(|i| (i, i)).collect();
            assert_eq!(p.io_ints, identity);
            assert_eq!(p.local_ints, [(INT_EXTINT, 0, 0), (INT_NMI, 0xff, 1)]);
            assert_eq!(p.lapic, LAPIC_ADDR);
        }
        Ok(())
    }

    #[test]
    fn table_fits_in_the_ebda_for_every_vcpu_count() -> Result<(), MpTableError> {
        for vcpus in 1..=crate::MAX_VCPUS {
            let len = MpTable::new(vcpus)?.bytes().len();
            let n = usize::try_from(vcpus).unwrap_or(usize::MAX);
            let short = 2 + usize::from(ISA_IRQS) + 2;
            assert_eq!(
                len,
                FLOATING_LEN + HEADER_LEN + n * CPU_ENTRY_LEN + short * SHORT_ENTRY_LEN
            );
            assert!(len as u64 <= MPTABLE_ROOM);
        }
        assert_eq!(MpTable::new(0), Err(MpTableError::Cpus(0)));
        assert_eq!(MpTable::new(255), Err(MpTableError::Cpus(255)));
        // 254 processors are describable but do not fit in one KiB.
        assert!(matches!(MpTable::new(254), Err(MpTableError::TooLarge(_))));
        Ok(())
    }

    #[test]
    fn table_lands_in_the_ebda_of_guest_memory() -> Result<(), Box<dyn std::error::Error>> {
        let (mem, _fd) = crate::memory::create(crate::memory::MIN_MEMORY)?;
        let table = MpTable::new(4)?;
        table.write(&mem)?;
        let mut back = vec![0u8; table.bytes().len()];
        mem.read_slice(&mut back, GuestAddress(MPTABLE_START))?;
        assert_eq!(parse(&back, MPTABLE_START).cpus.len(), 4);
        Ok(())
    }

    #[test]
    fn checksum_makes_the_sum_zero() {
        let data = [1u8, 2, 250, 7];
        let c = checksum(&data);
        let sum = data.iter().fold(c, |s, b| s.wrapping_add(*b));
        assert_eq!(sum, 0);
        assert_eq!(checksum(&[]), 0);
    }
}
