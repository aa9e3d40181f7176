//! The unsafe corner of `kattach`: signal masks and synchronous signal waits. Signals are never
//! handled asynchronously; they are blocked in every thread and taken by the supervisor loop.
//!
//! These two calls go through the C library rather than rustix: glibc's `pthread_sigmask` keeps
//! the signals it reserves for itself out of any mask, which a raw `rt_sigprocmask` would not.
#![allow(unsafe_code)] // The fence: every block names its invariant.

use rustix::io;
use rustix::process::Signal;

/// The signals the supervisor takes synchronously.
const SUPERVISED: [Signal; 7] = [
    Signal::CHILD,
    Signal::TERM,
    Signal::INT,
    Signal::POWER,
    Signal::HUP,
    Signal::USR1,
    Signal::USR2,
];

/// A set of signals.
#[derive(Debug, Clone, Copy)]
pub struct SigSet(libc::sigset_t);

/// The signals the supervisor takes synchronously.
pub fn supervised_signals() -> SigSet {
    // SAFETY: `sigset_t` is plain data; `sigemptyset` initialises it before any other use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, exclusively borrowed `sigset_t`; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        for sig in SUPERVISED {
            libc::sigaddset(&mut set, sig.as_raw());
        }
    }
    SigSet(set)
}

/// Blocks `set` in the calling thread; threads spawned afterwards inherit the mask.
pub fn block(set: &SigSet) -> io::Result<()> {
    // SAFETY: `set` is an initialised `sigset_t`; the old mask is not requested (null).
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set.0, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Errno::from_raw_os_error(rc))
    }
}

/// Waits up to `timeout` for one signal of `set` (which must be blocked). `Ok(None)` on timeout.
pub fn wait(set: &SigSet, timeout: std::time::Duration) -> io::Result<Option<Signal>> {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(timeout.subsec_nanos()),
    };
    // SAFETY: `set` and `ts` are initialised and outlive the call; no siginfo is requested.
    let signo = unsafe { libc::sigtimedwait(&set.0, std::ptr::null_mut(), &ts) };
    if signo > 0 {
        return Ok(Signal::from_named_raw(signo));
    }
    match io::Errno::from_io_error(&std::io::Error::last_os_error()) {
        Some(io::Errno::AGAIN | io::Errno::INTR) => Ok(None),
        Some(e) => Err(e),
        None => Err(io::Errno::IO),
    }
}
