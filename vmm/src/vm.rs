//! One VM: KVM objects, guest memory, devices, and its vCPU threads.

use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use kvm_bindings::{KVM_PIT_SPEAKER_DUMMY, kvm_pit_config, kvm_userspace_memory_region};
use kvm_ioctls::{IoEventAddress, Kvm, VcpuFd, VmFd};
use vm_memory::{GuestMemory, GuestMemoryMmap, GuestMemoryRegion, MemoryRegionAddress};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::mptable::MpTable;
use crate::pio::PioBus;
use crate::seccomp::{Filters, ThreadKind};
use crate::serial::{COM1_IRQ, Console, Ring, SharedRing};
use crate::vcpu::{self, Stop};
use crate::virtio::{Interrupt, MmioBus, MmioTransport, VirtioDevice, VirtioError};
use crate::{ExitReason, VmConfig, VmError, boot, cpu, memory};

/// Where KVM puts the TSS it needs for real-mode emulation on Intel (three pages below 4 GiB).
const TSS_ADDR: usize = 0xfffb_d000;
/// Bytes of console output kept per VM.
pub const CONSOLE_RING: usize = 64 << 10;

/// A VM ready to run: every check passed, the kernel loaded, every vCPU created.
#[derive(Debug)]
pub struct Vm<W: Write + Send> {
    _vm: VmFd,
    _mem: GuestMemoryMmap,
    _memfd: File,
    vcpus: Vec<VcpuFd>,
    bus: Mutex<PioBus<W>>,
    mmio: MmioBus,
    ring: SharedRing,
    irq_fd: i32,
}

fn kvm_err(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> VmError {
    move |e| VmError::Kvm(what, e)
}

impl<W: Write + Send> Vm<W> {
    /// Validates `config`, then builds the VM. Bad input is refused before `/dev/kvm` is opened.
    ///
    /// # Errors
    /// [`VmError`] saying what was wrong.
    pub fn new(config: &VmConfig, console: W) -> Result<Self, VmError> {
        Self::with_devices(config, console, Vec::new())
    }

    /// [`Vm::new`] with virtio-mmio `devices`, each in the window and on the interrupt line of
    /// its place in the list ([`MmioBus::slot`]); the kernel command line starts with their
    /// `virtio_mmio.device=` fragments (first, so they stay before any `--`).
    ///
    /// # Errors
    /// [`VmError`] saying what was wrong; too many devices, or a device with bad queue sizes,
    /// before `/dev/kvm` is opened.
    pub fn with_devices(
        config: &VmConfig,
        console: W,
        devices: Vec<Box<dyn VirtioDevice>>,
    ) -> Result<Self, VmError> {
        config.validate(memory::host_ram())?;
        let (mut kernel_file, kind) = boot::open_kernel(&config.kernel)?;
        let cmdline = boot::cmdline(&virtio_cmdline(&config.cmdline, devices.len())?)?;
        for device in &devices {
            crate::virtio::queue_regs(device.as_ref())?;
        }
        let mptable = MpTable::new(config.vcpus)?;

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
        let initrd = boot::load_initrd(&mem, &config.initrd, kernel.end)?;
        boot::write_tables(&mem)?;
        mptable.write(&mem)?;
        let cmdline_len = cmdline.as_cstring().map_or(0, |c| c.as_bytes().len());
        let params = boot::zero_page(&kernel, cmdline_len, initrd, config.memory);
        boot::write_boot_params(&mem, &cmdline, &params)?;

        let vcpus = create_vcpus(&kvm, &vm, config.vcpus, kernel.entry)?;

        let irq = EventFd::new(EFD_NONBLOCK).map_err(VmError::Io)?;
        vm.register_irqfd(&irq, COM1_IRQ)
            .map_err(kvm_err("register serial irqfd"))?;
        let irq_fd = std::os::fd::AsRawFd::as_raw_fd(&irq);
        let mmio = attach_devices(&vm, &mem, devices)?;
        let ring = Arc::new(Mutex::new(Ring::new(CONSOLE_RING)));
        let bus = Mutex::new(PioBus::new(Console::new(irq, ring.clone(), console)));
        Ok(Vm {
            _vm: vm,
            _mem: mem,
            _memfd: memfd,
            vcpus,
            bus,
            mmio,
            ring,
            irq_fd,
        })
    }

    /// The console ring, readable while and after the VM runs.
    pub fn console_ring(&self) -> SharedRing {
        self.ring.clone()
    }

    /// The descriptors the vCPU threads write to besides the console: the serial interrupt's
    /// eventfd and each virtio device's (for the seccomp filters).
    pub fn device_fds(&self) -> Vec<i32> {
        let mut fds = vec![self.irq_fd];
        fds.extend(self.mmio.irqfds());
        fds
    }

    /// The sockets virtio devices talk on from the vCPU threads (for the seccomp filters).
    pub fn socket_fds(&self) -> Vec<i32> {
        self.mmio.socket_fds()
    }

    /// The virtio devices.
    pub fn virtio(&self) -> &MmioBus {
        &self.mmio
    }

    /// Runs every vCPU on a thread of its own until the guest stops; never panics on guest
    /// behaviour.
    pub fn run(&mut self) -> ExitReason {
        self.run_confined(None)
    }

    /// [`Vm::run`], each thread confined by its seccomp filter before any guest code runs: every
    /// vCPU thread installs the vCPU filter, the calling thread the main filter once all vCPU
    /// threads exist, and only then does the first vCPU enter the guest.
    pub fn run_confined(&mut self, filters: Option<&Filters>) -> ExitReason {
        let stop = Stop::default();
        let gate = Gate::default();
        let (bus, mmio) = (&self.bus, &self.mmio);
        std::thread::scope(|scope| {
            let mut spawned = 0;
            for (i, vcpu) in self.vcpus.iter_mut().enumerate() {
                let (stop, gate) = (&stop, &gate);
                let thread = std::thread::Builder::new()
                    .name(format!("vcpu{i}"))
                    .spawn_scoped(scope, move || {
                        let ready = vcpu::prepare_thread(vcpu, stop)
                            .map_err(|e| format!("cannot prepare vCPU {i}: {e}"))
                            .and_then(|()| apply(filters, ThreadKind::Vcpu));
                        gate.arrive_and_wait();
                        match ready {
                            Ok(()) => vcpu::run(vcpu, bus, mmio, stop),
                            Err(why) => vcpu::abandon(stop, Some(ExitReason::VmmError(why))),
                        }
                    });
                match thread {
                    Ok(_) => spawned += 1,
                    Err(e) => {
                        stop.finish(ExitReason::VmmError(format!("cannot start vCPU {i}: {e}")));
                        break;
                    }
                }
            }
            gate.wait_for(spawned);
            if let Err(why) = apply(filters, ThreadKind::Main) {
                stop.finish(ExitReason::VmmError(why));
            }
            gate.open();
        });
        bus.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .console
            .flush();
        stop.reason()
            .unwrap_or_else(|| ExitReason::VmmError("every vCPU stopped without a reason".into()))
    }
}

fn apply(filters: Option<&Filters>, kind: ThreadKind) -> Result<(), String> {
    filters.map_or(Ok(()), |f| f.apply(kind).map_err(|e| e.to_string()))
}

/// Holds the vCPU threads until the main thread has seen them all ready and confined itself.
#[derive(Debug, Default)]
struct Gate {
    state: Mutex<(usize, bool)>,
    changed: Condvar,
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, bool)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn arrive_and_wait(&self) {
        let mut s = self.lock();
        s.0 += 1;
        self.changed.notify_all();
        while !s.1 {
            s = self.changed.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn wait_for(&self, threads: usize) {
        let mut s = self.lock();
        while s.0 < threads {
            s = self.changed.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn open(&self) {
        self.lock().1 = true;
        self.changed.notify_all();
    }
}

/// Creates `count` vCPUs: each with a CPUID naming its APIC id, the boot vCPU (0) with the
/// registers of the kernel entry; the others wait for the guest's INIT and SIPI.
fn create_vcpus(kvm: &Kvm, vm: &VmFd, count: u32, entry: u64) -> Result<Vec<VcpuFd>, VmError> {
    let cpuid = cpu::supported_cpuid(kvm).map_err(kvm_err("get CPUID"))?;
    let total = u8::try_from(count).map_err(|_| VmError::Vcpus(count))?;
    let mut vcpus = Vec::with_capacity(usize::from(total));
    for id in 0..total {
        let vcpu = vm
            .create_vcpu(u64::from(id))
            .map_err(kvm_err("create vCPU"))?;
        let own = cpu::vcpu_cpuid(&cpuid, id, total);
        if id == 0 {
            cpu::setup_boot_vcpu(&vcpu, &own, entry).map_err(kvm_err("set up the boot vCPU"))?;
        } else {
            cpu::setup_ap_vcpu(&vcpu, &own).map_err(kvm_err("set up a vCPU"))?;
        }
        vcpus.push(vcpu);
    }
    Ok(vcpus)
}

/// The command line with the virtio devices' fragments first.
fn virtio_cmdline(cmdline: &str, devices: usize) -> Result<String, VmError> {
    let mut parts = Vec::with_capacity(devices + 1);
    for i in 0..devices {
        let (base, gsi) = MmioBus::slot(i).ok_or(VirtioError::TooMany(devices))?;
        parts.push(crate::virtio::cmdline_fragment(base, gsi));
    }
    if !cmdline.is_empty() {
        parts.push(cmdline.to_owned());
    }
    Ok(parts.join(" "))
}

/// Puts each device behind a transport on the bus, its interrupt an irqfd on its GSI.
fn attach_devices(
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    devices: Vec<Box<dyn VirtioDevice>>,
) -> Result<MmioBus, VmError> {
    let mut bus = MmioBus::default();
    for mut device in devices {
        let (base, gsi) = MmioBus::slot(bus.len()).ok_or(VirtioError::TooMany(bus.len() + 1))?;
        let irqfd = EventFd::new(EFD_NONBLOCK).map_err(VmError::Io)?;
        vm.register_irqfd(&irqfd, gsi)
            .map_err(kvm_err("register a virtio irqfd"))?;
        // A queue served by another process is kicked through KVM straight to that process:
        // Linux writes the queue's index, 32 bits wide, to QueueNotify.
        let notify = IoEventAddress::Mmio(
            base + u64::from(virtio_bindings::virtio_mmio::VIRTIO_MMIO_QUEUE_NOTIFY),
        );
        device.wire(&irqfd).map_err(VmError::Io)?;
        for (queue, fd) in device.kick_fds() {
            vm.register_ioevent(fd, &notify, u32::from(queue))
                .map_err(kvm_err("register a virtio ioeventfd"))?;
        }
        let transport = MmioTransport::new(device, mem.clone(), Interrupt::new(irqfd))?;
        bus.add(transport)?;
    }
    Ok(bus)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtio_fragments_come_first_so_they_stay_before_any_double_dash() {
        let two = virtio_cmdline("console=ttyS0 -- init-arg", 2).ok();
        assert_eq!(
            two.as_deref(),
            Some(
                "virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6 \
                 console=ttyS0 -- init-arg"
            )
        );
        let none = virtio_cmdline("console=ttyS0", 0).ok();
        assert_eq!(
            none.as_deref(),
            Some("console=ttyS0"),
            "no device, no change"
        );
        let bare = virtio_cmdline("", 1).ok();
        assert_eq!(bare.as_deref(), Some("virtio_mmio.device=4K@0xd0000000:5"));
        assert!(virtio_cmdline("", crate::virtio::GSIS.len() + 1).is_err());
    }
}
