//! The vCPU threads: one per vCPU, each running `KVM_RUN` in a loop, and the stop that ends them
//! all when any one of them ends the VM.
//!
//! **Stopping.** The first vCPU to stop the VM (reset, power-off, triple fault, error) records
//! the [`ExitReason`] in a [`Stop`] and kicks every other vCPU thread with [`kick_signal`]. Each
//! vCPU thread keeps that signal blocked, and asks KVM (`KVM_SET_SIGNAL_MASK`) to unblock it only
//! while inside `KVM_RUN`: a kick that arrives during `KVM_RUN` (an application processor waiting
//! for SIPI, a halted vCPU, a running guest) makes it return `EINTR`; one that arrives while the
//! thread is in the VMM stays pending and makes the next `KVM_RUN` return `EINTR` at once. No kick
//! is lost and no signal handler exists (kattach has no asynchronous handlers anywhere).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use kvm_bindings::{
    KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN, kvm_signal_mask,
};
use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::ExitReason;
use crate::pio::{PioAction, PioBus};
use crate::virtio::MmioBus;

/// `KVM_SET_SIGNAL_MASK`: `_IOW(KVMIO, 0x8b, struct kvm_signal_mask)`.
const KVM_SET_SIGNAL_MASK: libc::c_ulong = (1 << 30)
    | ((std::mem::size_of::<kvm_signal_mask>() as libc::c_ulong) << 16)
    | (0xae << 8)
    | 0x8b;
/// The kernel's signal set is 64 bits on x86-64.
const KERNEL_SIGSET_LEN: u32 = 8;

/// The signal that kicks a vCPU thread out of `KVM_RUN`: the first real-time signal left to
/// applications.
pub fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a vCPU thread panicked; the data is still the best we have.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The shared end of a VM's run: the first reason wins, every other vCPU thread is kicked.
#[derive(Debug, Default)]
pub struct Stop {
    stopping: AtomicBool,
    reason: Mutex<Option<ExitReason>>,
    /// vCPU threads that can be kicked: registered once their kick signal is blocked,
    /// deregistered before they return, so a kick never reaches a thread that is gone.
    threads: Mutex<Vec<libc::pthread_t>>,
}

impl Stop {
    /// True once any vCPU ended the VM.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Records `reason` if it is the first, then kicks every other registered vCPU thread.
    pub fn finish(&self, reason: ExitReason) {
        lock(&self.reason).get_or_insert(reason);
        self.stopping.store(true, Ordering::SeqCst);
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        for &t in lock(&self.threads).iter() {
            // SAFETY: both are thread handles; pthread_equal only compares them.
            if unsafe { libc::pthread_equal(t, me) } == 0 {
                // SAFETY: `t` is registered, so its thread has not returned and its handle is
                // live (threads deregister under this lock before they return). The signal is
                // blocked in that thread outside KVM_RUN, so it never runs a default action.
                unsafe { libc::pthread_kill(t, kick_signal()) };
            }
        }
    }

    /// The reason recorded first, if any.
    pub fn reason(&self) -> Option<ExitReason> {
        lock(&self.reason).clone()
    }

    fn register(&self) {
        // SAFETY: pthread_self has no preconditions.
        lock(&self.threads).push(unsafe { libc::pthread_self() });
    }

    fn deregister(&self) {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        // SAFETY: pthread_equal only compares handles.
        lock(&self.threads).retain(|&t| unsafe { libc::pthread_equal(t, me) } == 0);
    }
}

/// Blocks the kick signal on this thread and lets KVM unblock it during `KVM_RUN` only, then
/// registers the thread with `stop`.
///
/// # Errors
/// The failed call's error.
pub fn prepare_thread(vcpu: &VcpuFd, stop: &Stop) -> std::io::Result<()> {
    // SAFETY: sigset_t is plain data that sigemptyset initialises.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t owned by this frame.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, kick_signal());
    }
    let mut old: libc::sigset_t = set;
    // SAFETY: both pointers are to live sigset_t values in this frame.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    // Inside KVM_RUN: what the thread blocked before, without the kick signal.
    let mut mask = 0u64;
    for sig in 1..=64 {
        // SAFETY: `old` is a valid sigset_t; sigismember reads it.
        if sig != kick_signal() && unsafe { libc::sigismember(&old, sig) } == 1 {
            mask |= 1 << (sig - 1);
        }
    }
    let mut arg = [0u8; 12];
    arg[..4].copy_from_slice(&KERNEL_SIGSET_LEN.to_ne_bytes());
    arg[4..].copy_from_slice(&mask.to_ne_bytes());
    // SAFETY: KVM_SET_SIGNAL_MASK reads a kvm_signal_mask header (len) followed by `len` bytes
    // of signal set; `arg` holds exactly that and outlives the call. `vcpu` is a vCPU fd.
    let rc =
        unsafe { vmm_sys_util::ioctl::ioctl_with_ptr(vcpu, KVM_SET_SIGNAL_MASK, arg.as_ptr()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    stop.register();
    Ok(())
}

/// Runs one vCPU until it stops the VM or is stopped; records its reason in `stop`. Port I/O
/// goes to `bus`, MMIO to the virtio devices of `mmio`.
pub fn run<W: Write>(vcpu: &mut VcpuFd, bus: &Mutex<PioBus<W>>, mmio: &MmioBus, stop: &Stop) {
    if let Some(reason) = run_loop(vcpu, bus, mmio, stop) {
        stop.finish(reason);
    }
    stop.deregister();
}

/// Ends this thread's part without running: setup failed (`reason`) or the VM already stopped.
pub fn abandon(stop: &Stop, reason: Option<ExitReason>) {
    if let Some(reason) = reason {
        stop.finish(reason);
    }
    stop.deregister();
}

/// The loop: port I/O to the bus, MMIO to the virtio devices (elsewhere logged and ignored,
/// reads all ones), stops mapped to a reason. `None` when another vCPU stopped the VM.
fn run_loop<W: Write>(
    vcpu: &mut VcpuFd,
    bus: &Mutex<PioBus<W>>,
    mmio: &MmioBus,
    stop: &Stop,
) -> Option<ExitReason> {
    let mut unhandled_mmio = 0u64;
    loop {
        if stop.stopping() {
            return None;
        }
        let exit = match vcpu.run() {
            Ok(exit) => exit,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
            Err(e) => return Some(ExitReason::VmmError(format!("KVM_RUN failed: {e}"))),
        };
        match exit {
            VcpuExit::IoOut(port, data) => match lock(bus).write(port, data) {
                PioAction::Continue => {}
                PioAction::Reset => return Some(ExitReason::Reset),
                PioAction::PowerOff => return Some(ExitReason::PowerOff),
            },
            VcpuExit::IoIn(port, data) => lock(bus).read(port, data),
            VcpuExit::MmioRead(addr, data) => {
                if !mmio.read(addr, data) {
                    unhandled_mmio += 1;
                    log::debug!("unhandled MMIO read at {addr:#x}");
                    data.fill(0xff);
                }
            }
            VcpuExit::MmioWrite(addr, data) => {
                if !mmio.write(addr, data) {
                    unhandled_mmio += 1;
                    log::debug!("unhandled MMIO write at {addr:#x}");
                }
            }
            VcpuExit::Intr => {}
            other => return Some(stop_reason(other, unhandled_mmio)),
        }
    }
}

/// The reason for an exit that ends the VM.
fn stop_reason(exit: VcpuExit<'_>, unhandled_mmio: u64) -> ExitReason {
    match exit {
        VcpuExit::Shutdown => ExitReason::TripleFault,
        VcpuExit::SystemEvent(kind, _) => system_event(kind),
        VcpuExit::Hlt => ExitReason::VmmError("vCPU halted without an interrupt source".into()),
        VcpuExit::FailEntry(reason, cpu) => ExitReason::VmmError(format!(
            "VM entry failed on vCPU {cpu}: hardware reason {reason:#x}"
        )),
        VcpuExit::InternalError => ExitReason::VmmError("KVM internal error".into()),
        other => ExitReason::VmmError(format!(
            "unexpected vCPU exit {other:?} after {unhandled_mmio} unhandled MMIO accesses"
        )),
    }
}

/// A KVM system event's reason.
pub fn system_event(kind: u32) -> ExitReason {
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
    fn system_events_and_stops_map_to_reasons() {
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
        assert_eq!(stop_reason(VcpuExit::Shutdown, 0), ExitReason::TripleFault);
        assert!(matches!(
            stop_reason(VcpuExit::Hlt, 0),
            ExitReason::VmmError(_)
        ));
    }

    #[test]
    fn the_first_reason_wins() {
        let stop = Stop::default();
        assert!(!stop.stopping());
        stop.finish(ExitReason::TripleFault);
        stop.finish(ExitReason::PowerOff);
        assert!(stop.stopping());
        assert_eq!(stop.reason(), Some(ExitReason::TripleFault));
    }

    #[test]
    fn set_signal_mask_has_the_kernel_number() {
        assert_eq!(KVM_SET_SIGNAL_MASK, 0x4004_ae8b);
    }
}
