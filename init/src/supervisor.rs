//! The supervisor loop of PID 1 (and of a hosted `kattach`): take signals synchronously, reap
//! children, carry out power actions. It never returns and never panics on its own errors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, WaitOptions, kill_process, waitpid};
use rustix::system::RebootCommand;

use crate::host::{Host, PowerAction};
use crate::sys;

/// Time granted to replies in flight (e.g. the `Accepted` of a reboot request) before acting.
const REPLY_GRACE: Duration = Duration::from_millis(300);
/// Time granted to other processes between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Runs forever: signals in, actions out.
pub fn run(host: &Arc<Host>) -> ! {
    let set = sys::supervised_signals();
    loop {
        match sys::wait(&set, Duration::from_secs(5)) {
            Ok(Some(sig)) => on_signal(host, sig),
            Ok(None) => {}
            Err(e) => {
                log::error!("sigtimedwait: {e}");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        reap(host);
    }
}

fn on_signal(host: &Arc<Host>, sig: Signal) {
    let action = match sig {
        Signal::CHILD => None,
        // Remote requests wake the supervisor with SIGUSR1.
        Signal::USR1 => host.take_power(),
        // Ctrl-Alt-Del (SIGINT with CAD off) and SIGTERM reboot, as busybox and sysvinit do.
        Signal::INT | Signal::TERM => Some(PowerAction::Reboot),
        // Power failure and the busybox power-off signal.
        Signal::POWER | Signal::USR2 => Some(PowerAction::PowerOff),
        other => {
            log::info!("ignoring signal {}", other.as_raw());
            None
        }
    };
    if let Some(action) = action {
        if host.hosted {
            hosted_power(sig, action);
        } else {
            power(host, action);
        }
    }
}

/// Reaps every exited child without blocking; a VMM's status goes to its VM's runner.
fn reap(host: &Host) {
    while let Ok(Some((pid, status))) = waitpid(None, WaitOptions::NOHANG) {
        let raw = pid.as_raw_nonzero().get();
        let Ok(pid) = u32::try_from(raw) else {
            continue;
        };
        if host.vms.child_exited(pid, status.as_raw()) {
            continue;
        }
        let mut orphaned = Vec::new();
        if host.net.child_exited(pid, status.as_raw(), &mut orphaned) {
            restart_vms(host, orphaned);
            continue;
        }
        log::debug!("reaped {raw}: {status:?}");
    }
}

/// Restarts VMs whose NICs lost their switch (on a thread: a restart waits for the old VMM).
fn restart_vms(host: &Host, names: Vec<String>) {
    if names.is_empty() {
        return;
    }
    let (vms, config) = (host.vms.clone(), host.config.clone());
    let spawned = std::thread::Builder::new()
        .name("net-restart".into())
        .spawn(move || {
            for name in names {
                if let Err(e) = vms.act(&config, &name, kaos_protocol::VmAction::Restart) {
                    log::error!(
                        "VM {name}: restart after the switch exited: {}",
                        e.reply().message
                    );
                }
            }
        });
    if let Err(e) = spawned {
        log::error!("cannot start the restart thread: {e}");
    }
}

/// Orderly reboot or power-off as PID 1: stop every other process, sync, then tell the kernel.
fn power(host: &Host, action: PowerAction) {
    log::info!("{action:?}: stopping");
    std::thread::sleep(REPLY_GRACE);
    // VMs keep their desired state (they come back after the boot) but must not be restarted
    // while everything is stopped.
    host.vms.begin_shutdown();
    host.net.begin_shutdown();
    stop_all(host);
    rustix::fs::sync();
    let cmd = match action {
        PowerAction::Reboot => RebootCommand::Restart,
        PowerAction::PowerOff => RebootCommand::PowerOff,
    };
    if let Err(e) = rustix::system::reboot(cmd) {
        // Without a way to stop, keep serving: PID 1 must not exit.
        log::error!("{action:?} failed: {e}");
    }
}

/// SIGTERM to every other process, SIGKILL to what is left after [`STOP_GRACE`].
fn stop_all(host: &Host) {
    let me = rustix::process::getpid();
    let others = || {
        crate::procs::userspace_pids()
            .into_iter()
            .filter_map(Pid::from_raw)
            .filter(|p| *p != me)
            .collect::<Vec<_>>()
    };
    for pid in others() {
        let _ = kill_process(pid, Signal::TERM);
    }
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline && !others().is_empty() {
        reap(host);
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in others() {
        let _ = kill_process(pid, Signal::KILL);
    }
    reap(host);
}

/// Hosted: signals stop the process; a remote reboot re-executes it in place.
fn hosted_power(sig: Signal, action: PowerAction) {
    match (sig, action) {
        (Signal::USR1, PowerAction::Reboot) => {
            std::thread::sleep(REPLY_GRACE);
            log::info!("hosted reboot: re-executing");
            let args: Vec<String> = std::env::args().skip(1).collect();
            use std::os::unix::process::CommandExt as _;
            let err = std::process::Command::new("/proc/self/exe")
                .args(args)
                .exec();
            log::error!("re-exec failed: {err}");
        }
        (Signal::USR1, PowerAction::PowerOff) => {
            std::thread::sleep(REPLY_GRACE);
            log::info!("hosted shutdown: exiting");
            std::process::exit(0);
        }
        _ => {
            log::info!("signal {}: exiting", sig.as_raw());
            std::process::exit(0);
        }
    }
}

/// Installs the panic hook: log, then (PID 1) reboot after a grace period instead of letting
/// the kernel panic on a dead init, or (hosted) abort.
pub fn install_panic_hook(pid1: bool) {
    std::panic::set_hook(Box::new(move |info| {
        log::error!("panic: {info}");
        eprintln!("kattach: panic: {info}");
        if pid1 {
            eprintln!("kattach: rebooting in 5 s");
            std::thread::sleep(Duration::from_secs(5));
            rustix::fs::sync();
            let _ = rustix::system::reboot(RebootCommand::Restart);
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        std::process::abort();
    }));
}
