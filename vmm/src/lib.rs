//! `kaos-vmm`: the KVM virtual machine monitor that runs vKaOS guests.
//!
//! Design principles:
//! - **One process per VM** (`kattach vmm …`): a VMM failure ends one VM, never PID 1. This crate is
//!   the library that process runs, and [`sandbox`] is how the process confines itself before
//!   any guest code runs: new namespaces and a fork into a PID namespace of its own, an empty
//!   read-only root, no capabilities, rlimits, and a seccomp allowlist per thread kind
//!   ([`seccomp`]).
//! - **Bad input is refused before anything starts**: zero vCPUs or more than [`MAX_VCPUS`], a
//!   size below the minimum or beyond the host's RAM, a file that is neither ELF64 nor bzImage
//!   ([`VmConfig::validate`], [`boot::open_kernel`]).
//! - **The guest is hostile**: unhandled port and MMIO accesses are counted, logged and ignored;
//!   every stop is an [`ExitReason`], never a panic.
//! - **Memory is one memfd** (`vm-memory` with a `FileOffset`), so a switch process can map it.
//!
//! Today: up to [`MAX_VCPUS`] vCPUs, each on its own thread, described to the guest by an MP
//! table ([`mptable`]); in-kernel irqchip and PIT; direct 64-bit boot of an ELF or bzImage kernel
//! with an initrd made of files and in-memory archives ([`boot::InitrdPart`]); COM1 (16550) into
//! a bounded ring and a writer; the i8042 reset; and the **exit port**: a one-byte write to port
//! 0xf4 ([`pio::EXIT_PORT`], QEMU's `isa-debug-exit` address) powers the VM off, the only way a
//! Linux guest without ACPI can. Virtio devices sit on the virtio-mmio transport ([`virtio`],
//! [`Vm::with_devices`]); issue 6 puts virtio-net there.

pub mod boot;
pub mod cpu;
pub mod memory;
pub mod mptable;
pub mod pio;
pub mod sandbox;
pub mod seccomp;
pub mod serial;
pub mod tiny;
pub mod vcpu;
pub mod virtio;
mod vm;

pub use boot::InitrdPart;
pub use vm::{CONSOLE_RING, Vm};

/// The most vCPUs a VM may have (the MP table and the thread-per-vCPU model allow more; this
/// bounds what a guest may ask of a host).
pub const MAX_VCPUS: u32 = 8;

/// What to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// Path of an ELF64 or bzImage kernel.
    pub kernel: String,
    /// The initrd, concatenated from these parts in order; empty for none.
    pub initrd: Vec<InitrdPart>,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Guest RAM in bytes.
    pub memory: u64,
    /// Kernel command line.
    pub cmdline: String,
}

impl VmConfig {
    /// Checks vCPUs and memory against this VMM's limits and the host's RAM.
    ///
    /// # Errors
    /// [`VmError::Vcpus`] or [`VmError::Memory`].
    pub fn validate(&self, host_ram: u64) -> Result<(), VmError> {
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(VmError::Vcpus(self.vcpus));
        }
        memory::check_size(self.memory, host_ram)?;
        Ok(())
    }
}

/// Why a VM stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest powered off (the exit port, or an ACPI / PSCI system event).
    PowerOff,
    /// The guest reset itself (i8042 pulse or a reset system event).
    Reset,
    /// The vCPU triple-faulted (KVM shutdown exit).
    TripleFault,
    /// The VMM stopped the guest for the reason given.
    VmmError(String),
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitReason::PowerOff => f.write_str("power-off"),
            ExitReason::Reset => f.write_str("reset"),
            ExitReason::TripleFault => f.write_str("triple fault"),
            ExitReason::VmmError(why) => write!(f, "VMM error: {why}"),
        }
    }
}

/// Why a VM could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VmError {
    /// The vCPU count is zero or beyond [`MAX_VCPUS`].
    #[error("{0} vCPUs requested; this VMM runs 1 to {MAX_VCPUS}")]
    Vcpus(u32),
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    /// Kernel, initrd, command line or boot structures.
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    /// The MP table.
    #[error(transparent)]
    MpTable(#[from] mptable::MpTableError),
    /// A virtio device.
    #[error(transparent)]
    Virtio(#[from] virtio::VirtioError),
    /// A KVM call failed.
    #[error("KVM: cannot {0}: {1}")]
    Kvm(&'static str, #[source] kvm_ioctls::Error),
    /// Another system call failed.
    #[error("{0}")]
    Io(#[source] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vcpus: u32, memory: u64) -> VmConfig {
        VmConfig {
            kernel: "k".into(),
            initrd: Vec::new(),
            vcpus,
            memory,
            cmdline: String::new(),
        }
    }

    #[test]
    fn zero_vcpus_and_bad_memory_are_refused() {
        assert!(matches!(
            config(0, 128 << 20).validate(1 << 30),
            Err(VmError::Vcpus(0))
        ));
        assert!(matches!(
            config(MAX_VCPUS + 1, 128 << 20).validate(1 << 30),
            Err(VmError::Vcpus(9))
        ));
        assert!(config(2, 128 << 20).validate(1 << 30).is_ok());
        assert!(config(MAX_VCPUS, 128 << 20).validate(1 << 30).is_ok());
        assert!(matches!(
            config(1, 0).validate(1 << 30),
            Err(VmError::Memory(_))
        ));
        assert!(matches!(
            config(1, 2 << 30).validate(1 << 30),
            Err(VmError::Memory(_))
        ));
        assert!(config(1, 128 << 20).validate(1 << 30).is_ok());
    }
}
