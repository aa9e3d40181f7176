//! The switch process's seccomp allowlist, as data: each entry a system call, what it may be
//! passed, and why the switch needs it. Found with `strace -f` over the vhost-user tests and
//! kept to what the switch's threads do once it serves: the control thread, each port's
//! vhost-user request and epoll threads (started at run time, so thread creation is allowed),
//! the uplinks' receive threads.
//!
//! One filter for every thread (they share the work: a TX thread writes into other ports'
//! memory and interrupts their guests). A call outside the list kills the whole process
//! (`SECCOMP_RET_KILL_PROCESS`): a switch that makes a call it never makes has been subverted
//! or is broken, and must not go on carrying other guests' frames. `clone3`, whose flags live
//! in memory a filter cannot read, fails with `ENOSYS` instead (a second filter), so glibc
//! falls back to `clone`, whose flags must include `CLONE_THREAD`: threads, never processes.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// What an allowed call may be passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Args {
    /// Anything.
    Any,
    /// Argument `.0` without any bit of `.1`.
    Without(u8, u64),
    /// Argument `.0` with every bit of `.1`.
    With(u8, u64),
}

/// One allowed system call.
#[derive(Debug, Clone, Copy)]
pub struct Allow {
    /// The number.
    pub nr: libc::c_long,
    /// What it may be passed.
    pub args: Args,
    /// Why the switch needs it.
    pub why: &'static str,
}

const fn allow(nr: libc::c_long, args: Args, why: &'static str) -> Allow {
    Allow { nr, args, why }
}

const NO_EXEC: Args = Args::Without(2, libc::PROT_EXEC as u64);
const THREAD: Args = Args::With(0, libc::CLONE_THREAD as u64);

/// The allowlist.
pub const ALLOWLIST: &[Allow] = &[
    allow(
        libc::SYS_read,
        Args::Any,
        "eventfds (kicks, exit events), sockets",
    ),
    allow(
        libc::SYS_write,
        Args::Any,
        "call eventfds (guest interrupts), stderr logging",
    ),
    allow(
        libc::SYS_recvmsg,
        Args::Any,
        "control channel and vhost-user messages with descriptors",
    ),
    allow(
        libc::SYS_sendmsg,
        Args::Any,
        "control channel and vhost-user replies",
    ),
    allow(libc::SYS_sendmmsg, Args::Any, "uplink: batched transmit"),
    allow(libc::SYS_sendto, Args::Any, "uplink: single frames"),
    allow(libc::SYS_recvfrom, Args::Any, "uplink and vhost-user reads"),
    allow(
        libc::SYS_accept4,
        Args::Any,
        "the vhost-user connection waiting on a port's listener",
    ),
    allow(
        libc::SYS_getsockopt,
        Args::Any,
        "checking a listener; uplink ring statistics",
    ),
    allow(
        libc::SYS_getsockname,
        Args::Any,
        "checking a listener's family",
    ),
    allow(libc::SYS_shutdown, Args::Any, "closing connections"),
    allow(libc::SYS_close, Args::Any, "descriptors of removed ports"),
    allow(
        libc::SYS_fcntl,
        Args::Any,
        "descriptor flags of received descriptors, dup of the uplink fd",
    ),
    allow(
        libc::SYS_epoll_create1,
        Args::Any,
        "a new port's epoll thread",
    ),
    allow(libc::SYS_epoll_ctl, Args::Any, "registering kick eventfds"),
    allow(libc::SYS_epoll_wait, Args::Any, "ports' epoll threads"),
    allow(
        libc::SYS_epoll_pwait,
        Args::Any,
        "ports' epoll threads (some libcs)",
    ),
    allow(
        libc::SYS_eventfd2,
        Args::Any,
        "exit and re-arm events of a new port",
    ),
    allow(libc::SYS_poll, Args::Any, "uplink receive thread"),
    allow(libc::SYS_ppoll, Args::Any, "uplink receive thread"),
    allow(
        libc::SYS_mmap,
        NO_EXEC,
        "guest memory (SET_MEM_TABLE), malloc, thread stacks; never executable",
    ),
    allow(
        libc::SYS_mprotect,
        NO_EXEC,
        "malloc arenas, thread stack guards; never executable",
    ),
    allow(
        libc::SYS_munmap,
        Args::Any,
        "guest memory replaced, free, thread stacks",
    ),
    allow(libc::SYS_mremap, Args::Any, "realloc of large buffers"),
    allow(
        libc::SYS_madvise,
        Args::Any,
        "malloc trimming, exited threads' stacks",
    ),
    allow(libc::SYS_brk, Args::Any, "malloc: the main arena"),
    allow(libc::SYS_fstat, Args::Any, "mapping a memory region's file"),
    allow(
        libc::SYS_newfstatat,
        Args::Any,
        "mapping a memory region's file",
    ),
    allow(libc::SYS_statx, Args::Any, "mapping a memory region's file"),
    allow(libc::SYS_lseek, Args::Any, "a memory region's file size"),
    allow(
        libc::SYS_futex,
        Args::Any,
        "locks: the fabric, vrings, scratch",
    ),
    allow(
        libc::SYS_clone,
        THREAD,
        "a new port's threads; threads only",
    ),
    allow(
        libc::SYS_clone3,
        Args::Any,
        "refused with ENOSYS by the first filter (see above)",
    ),
    allow(libc::SYS_set_robust_list, Args::Any, "new threads"),
    allow(libc::SYS_rseq, Args::Any, "new threads"),
    allow(libc::SYS_prctl, Args::Any, "thread names"),
    allow(libc::SYS_gettid, Args::Any, "thread ids (std, logging)"),
    allow(
        libc::SYS_getpid,
        Args::Any,
        "abort and thread signalling in glibc",
    ),
    allow(
        libc::SYS_tgkill,
        Args::Any,
        "abort() of a thread of this process",
    ),
    allow(libc::SYS_sched_getaffinity, Args::Any, "std's thread spawn"),
    allow(libc::SYS_sched_yield, Args::Any, "spinning locks"),
    allow(libc::SYS_getrandom, Args::Any, "hash map keys"),
    allow(
        libc::SYS_clock_gettime,
        Args::Any,
        "the core's clock without the vDSO",
    ),
    allow(libc::SYS_clock_nanosleep, Args::Any, "sleeps"),
    allow(libc::SYS_nanosleep, Args::Any, "sleeps"),
    allow(
        libc::SYS_rt_sigprocmask,
        Args::Any,
        "glibc masks signals around thread creation and exit",
    ),
    allow(
        libc::SYS_rt_sigreturn,
        Args::Any,
        "return from a signal handler",
    ),
    allow(
        libc::SYS_sigaltstack,
        Args::Any,
        "Rust's stack-overflow guard per thread",
    ),
    allow(libc::SYS_exit, Args::Any, "thread exit"),
    allow(
        libc::SYS_exit_group,
        Args::Any,
        "process exit when the host hangs up",
    ),
];

/// Errors from compiling or installing the filters.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SeccompError {
    /// The allowlist does not compile.
    #[error("cannot compile the seccomp filter: {0}")]
    Compile(#[source] seccompiler::BackendError),
    /// The handler that reports a refused call could not be installed.
    #[error("cannot install the SIGSYS handler: {0}")]
    Handler(#[source] std::io::Error),
    /// The kernel refused a filter.
    #[error("cannot install the seccomp filter: {0}")]
    Install(#[source] seccompiler::Error),
}

fn rules(args: Args) -> Result<Vec<SeccompRule>, SeccompError> {
    let (arg, op) = match args {
        Args::Any => return Ok(Vec::new()),
        Args::Without(arg, bits) => (arg, SeccompCmpOp::MaskedEq(bits)),
        Args::With(arg, bits) => (arg, SeccompCmpOp::MaskedEq(bits)),
    };
    let value = match args {
        Args::With(_, bits) => bits,
        _ => 0,
    };
    let c = SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value)
        .map_err(SeccompError::Compile)?;
    Ok(vec![
        SeccompRule::new(vec![c]).map_err(SeccompError::Compile)?,
    ])
}

/// The two filters: `clone3` → `ENOSYS`, then the allowlist.
///
/// # Errors
/// [`SeccompError::Compile`].
pub fn compile() -> Result<[BpfProgram; 2], SeccompError> {
    let mut enosys = BTreeMap::new();
    enosys.insert(libc::SYS_clone3, Vec::new());
    let first = SeccompFilter::new(
        enosys,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        TargetArch::x86_64,
    )
    .map_err(SeccompError::Compile)?;
    let mut map: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for a in ALLOWLIST {
        map.entry(a.nr).or_default().extend(rules(a.args)?);
    }
    let second = SeccompFilter::new(
        map,
        SeccompAction::Trap,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(SeccompError::Compile)?;
    Ok([
        BpfProgram::try_from(first).map_err(SeccompError::Compile)?,
        BpfProgram::try_from(second).map_err(SeccompError::Compile)?,
    ])
}

/// Exit status of a switch that made a call outside the allowlist: 128 + `SIGSYS`, as if the
/// signal had killed it.
pub const EXIT_REFUSED: i32 = 128 + libc::SIGSYS;

/// `SIGSYS` from the filter (`SECCOMP_RET_TRAP`): says which call was refused on stderr, then
/// ends the whole process, as `SECCOMP_RET_KILL_PROCESS` would, but with the call named.
extern "C" fn refused(
    _signal: libc::c_int,
    info: *mut libc::siginfo_t,
    _context: *mut libc::c_void,
) {
    // On x86-64 `siginfo_t._sifields._sigsys` is { void *call_addr; int syscall; unsigned arch }
    // at offset 16: the call number is at offset 24.
    // SAFETY: the kernel passes a whole siginfo_t for a seccomp SIGSYS.
    let nr = unsafe { info.cast::<u8>().add(24).cast::<i32>().read_unaligned() };
    let mut line = *b"kattach switch: seccomp refused system call 000\n";
    let digits = line.len() - 4;
    let mut n = nr.clamp(0, 999).unsigned_abs();
    for i in (0..3).rev() {
        line[digits + i] = b'0' + u8::try_from(n % 10).unwrap_or(0);
        n /= 10;
    }
    // SAFETY: write and exit_group with valid arguments; both are on the allowlist.
    unsafe {
        libc::write(libc::STDERR_FILENO, line.as_ptr().cast(), line.len());
        libc::syscall(libc::SYS_exit_group, EXIT_REFUSED);
    }
}

/// Installs both filters on the calling thread; threads it starts later inherit them. Call it
/// before the first thread exists. Needs `PR_SET_NO_NEW_PRIVS` or `CAP_SYS_ADMIN`.
///
/// # Errors
/// [`SeccompError`].
pub fn install() -> Result<(), SeccompError> {
    let programs = compile()?;
    // SAFETY: `refused` only makes async-signal-safe system calls (write, exit_group), both on
    // the allowlist; the sigaction struct is fully initialised.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = refused;
        action.sa_sigaction = handler as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_SIGINFO;
        if libc::sigaction(libc::SIGSYS, &raw const action, std::ptr::null_mut()) != 0 {
            return Err(SeccompError::Handler(std::io::Error::last_os_error()));
        }
    }
    for program in programs {
        seccompiler::apply_filter(&program).map_err(SeccompError::Install)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_compile_and_each_call_is_listed_once() {
        assert!(compile().is_ok());
        let mut seen = std::collections::BTreeSet::new();
        for a in ALLOWLIST {
            assert!(seen.insert(a.nr), "{} listed twice", a.nr);
            assert!(!a.why.is_empty());
        }
        assert!(!seen.contains(&libc::SYS_execve) && !seen.contains(&libc::SYS_fork));
        assert!(!seen.contains(&libc::SYS_openat) && !seen.contains(&libc::SYS_socket));
    }
}
