//! One VM: KVM objects, guest memory, devices and the vCPU run loop.

use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    KVM_PIT_SPEAKER_DUMMY, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET,
    KVM_SYSTEM_EVENT_SHUTDOWN, kvm_pit_config, kvm_userspace_memory_region,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::{GuestMemory, GuestMemoryMmap, GuestMemoryRegion, MemoryRegionAddress};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::pio::{PioAction, PioBus};
use crate::serial::{COM1_IRQ, Console, Ring, SharedRing};
use crate::{ExitReason, VmConfig, VmError, boot, cpu, memory};

/// Where KVM puts the TSS it needs for real-mode emulation on Intel (three pages below 4 GiB).
const TSS_ADDR: usize = 0xfffb_d000;
/// Bytes of console output kept per VM.
pub const CONSOLE_RING: usize = 64 << 10;

/// A VM ready to run: every check passed, the kernel loaded, the boot vCPU set up.
#[derive(Debug)]
pub struct Vm<W: Write> {
    _vm: VmFd,
    _mem: GuestMemoryMmap,
    _memfd: File,
    vcpus: Vec<VcpuFd>,
    bus: PioBus<W>,
    ring: SharedRing,
}

fn kvm_err(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> VmError {
    move |e| VmError::Kvm(what, e)
}

impl<W: Write> Vm<W> {
    /// Validates `config`, then builds the VM. Bad input is refused before `/dev/kvm` is opened.
    ///
    /// # Errors
    /// [`VmError`] saying what was wrong.
    pub fn new(config: &VmConfig, console: W) -> Result<Self, VmError> {
        config.validate(memory::host_ram())?;
        let (mut kernel_file, kind) = boot::open_kernel(&config.kernel)?;
        let cmdline = boot::cmdline(&config.cmdline)?;

        let kvm = Kvm::new().map_err(kvm_err("open /dev/kvm"))?;
        let vm = kvm.create_vm().map_err(kvm_err("create VM"))?;
        // Memory first: installing a memslot waits for KVM's SRCU readers, of which a VM without
        // an irqchip or vCPUs has none yet.
        let (mem, memfd) = memory::create(config.memory)?;
        register_memory(&vm, &mem)?;
        vm.set_tss_address(TSS_ADDR)
            .map_err(kvm_err("set TSS address"))?;
        vm.create_irq_chip().map_err(kvm_err("create irqchip"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.create_pit2(pit).map_err(kvm_err("create PIT"))?;

        let kernel = boot::load_kernel(&mem, &mut kernel_file, kind)?;
        let initrd = match &config.initrd {
            Some(path) => Some(boot::load_initrd(&mem, path, kernel.end)?),
            None => None,
        };
        boot::write_tables(&mem)?;
        let cmdline_len = cmdline.as_cstring().map_or(0, |c| c.as_bytes().len());
        let params = boot::zero_page(&kernel, cmdline_len, initrd, config.memory);
        boot::write_boot_params(&mem, &cmdline, &params)?;

        let cpuid = cpu::supported_cpuid(&kvm).map_err(kvm_err("get CPUID"))?;
        let boot_vcpu = vm.create_vcpu(0).map_err(kvm_err("create vCPU"))?;
        cpu::setup_boot_vcpu(&boot_vcpu, &cpuid, kernel.entry).map_err(kvm_err("set up vCPU"))?;

        let irq = EventFd::new(EFD_NONBLOCK).map_err(VmError::Io)?;
        vm.register_irqfd(&irq, COM1_IRQ)
            .map_err(kvm_err("register serial irqfd"))?;
        let ring = Arc::new(Mutex::new(Ring::new(CONSOLE_RING)));
        let bus = PioBus::new(Console::new(irq, ring.clone(), console));
        Ok(Vm {
            _vm: vm,
            _mem: mem,
            _memfd: memfd,
            vcpus: vec![boot_vcpu],
            bus,
            ring,
        })
    }

    /// The console ring, readable while and after the VM runs.
    pub fn console_ring(&self) -> SharedRing {
        self.ring.clone()
    }

    /// Runs the boot vCPU on this thread until the guest stops; never panics on guest behaviour.
    pub fn run(&mut self) -> ExitReason {
        let reason = match self.vcpus.first_mut() {
            Some(vcpu) => run_vcpu(vcpu, &mut self.bus),
            None => ExitReason::VmmError("no vCPU".to_owned()),
        };
        self.bus.console.flush();
        reason
    }
}

fn register_memory(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), VmError> {
    for (slot, region) in (0u32..).zip(mem.iter()) {
        let host = region
            .get_host_address(MemoryRegionAddress(0))
            .map_err(|e| VmError::Memory(memory::MemoryError::Map(e.to_string())))?;
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the range is a live mapping owned by `mem`, which the `Vm` keeps alive for as
        // long as the VM file descriptor (both are dropped together), and no other slot overlaps.
        unsafe { vm.set_user_memory_region(region) }.map_err(kvm_err("register memory"))?;
    }
    Ok(())
}

/// One vCPU's loop: port I/O to the bus, MMIO logged and ignored, stops mapped to a reason.
fn run_vcpu<W: Write>(vcpu: &mut VcpuFd, bus: &mut PioBus<W>) -> ExitReason {
    let mut unhandled_mmio = 0u64;
    loop {
        let exit = match vcpu.run() {
            Ok(exit) => exit,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
            Err(e) => return ExitReason::VmmError(format!("KVM_RUN failed: {e}")),
        };
        match exit {
            VcpuExit::IoOut(port, data) => {
                if bus.write(port, data) == PioAction::Reset {
                    return ExitReason::Reset;
                }
            }
            VcpuExit::IoIn(port, data) => bus.read(port, data),
            VcpuExit::MmioRead(addr, data) => {
                unhandled_mmio += 1;
                log::debug!("unhandled MMIO read at {addr:#x}");
                data.fill(0xff);
            }
            VcpuExit::MmioWrite(addr, _) => {
                unhandled_mmio += 1;
                log::debug!("unhandled MMIO write at {addr:#x}");
            }
            VcpuExit::Shutdown => return ExitReason::TripleFault,
            VcpuExit::SystemEvent(kind, _) => return system_event(kind),
            VcpuExit::Intr => {}
            VcpuExit::Hlt => {
                return ExitReason::VmmError("vCPU halted without an interrupt source".into());
            }
            VcpuExit::FailEntry(reason, cpu) => {
                return ExitReason::VmmError(format!(
                    "VM entry failed on vCPU {cpu}: hardware reason {reason:#x}"
                ));
            }
            VcpuExit::InternalError => return ExitReason::VmmError("KVM internal error".into()),
            other => {
                return ExitReason::VmmError(format!(
                    "unexpected vCPU exit {other:?} after {unhandled_mmio} unhandled MMIO accesses"
                ));
            }
        }
    }
}

fn system_event(kind: u32) -> ExitReason {
    match kind {
        KVM_SYSTEM_EVENT_SHUTDOWN => ExitReason::PowerOff,
        KVM_SYSTEM_EVENT_RESET => ExitReason::Reset,
        KVM_SYSTEM_EVENT_CRASH => ExitReason::VmmError("guest reported a crash".into()),
        other => ExitReason::VmmError(format!("unknown system event {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_events_map_to_reasons() {
        assert_eq!(
            system_event(KVM_SYSTEM_EVENT_SHUTDOWN),
            ExitReason::PowerOff
        );
        assert_eq!(system_event(KVM_SYSTEM_EVENT_RESET), ExitReason::Reset);
        assert!(matches!(
            system_event(KVM_SYSTEM_EVENT_CRASH),
            ExitReason::VmmError(_)
        ));
        assert!(matches!(system_event(99), ExitReason::VmmError(_)));
    }
}
