//! The seccomp allowlists, one per thread kind, as data: each entry names a system call, what may
//! be passed to it, and why the thread needs it. Found by running the VMM under `strace -f` and
//! kept to what its threads do once the guest can run.
//!
//! A call outside the list kills the whole process (`SECCOMP_RET_KILL_PROCESS`, seen as
//! `SIGSYS` by whoever waits for it) rather than failing with `EPERM`: a VMM that makes a call
//! it never makes in normal operation has been subverted or is broken, and must not go on
//! running a guest in either case. `kattach vmm run` reports the signal as a VMM failure.

use std::collections::BTreeMap;
use std::os::fd::RawFd;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// `KVM_RUN`: `_IO(KVMIO, 0x80)`.
const KVM_RUN: u64 = 0xae80;

/// The threads of a VMM process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    /// The thread that built the VM and waits for the vCPU threads.
    Main,
    /// A thread running one vCPU.
    Vcpu,
}

/// What an allowed call may be passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Args {
    /// Anything.
    Any,
    /// A file descriptor (argument 0) among the console's and the devices'.
    OutputFd,
    /// Argument `.0` equal to `.1`.
    Eq(u8, u64),
    /// A signal (argument 2 of `tgkill`) that is the vCPU kick signal.
    KickSignal,
    /// Argument `.0` without any bit of `.1` (memory protections without `PROT_EXEC`).
    Without(u8, u64),
    /// A file descriptor (argument 0) among the devices' sockets (vhost-user).
    SocketFd,
}

/// One allowed system call.
#[derive(Debug, Clone, Copy)]
pub struct Allow {
    /// The system call number.
    pub nr: libc::c_long,
    /// What it may be passed.
    pub args: Args,
    /// Why the thread needs it.
    pub why: &'static str,
}

const fn allow(nr: libc::c_long, args: Args, why: &'static str) -> Allow {
    Allow { nr, args, why }
}

const NO_EXEC: Args = Args::Without(2, libc::PROT_EXEC as u64);

/// Calls every thread makes: memory for allocations, locks, thread exit.
const COMMON: &[Allow] = &[
    allow(
        libc::SYS_futex,
        Args::Any,
        "locks: the bus, the stop, the start gate",
    ),
    allow(
        libc::SYS_write,
        Args::OutputFd,
        "console output, messages on stderr, the serial irqfd",
    ),
    allow(
        libc::SYS_mmap,
        NO_EXEC,
        "malloc: new arenas and large allocations, never executable",
    ),
    allow(
        libc::SYS_mprotect,
        NO_EXEC,
        "malloc: growing an arena, never executable",
    ),
    allow(
        libc::SYS_munmap,
        Args::Any,
        "free of large allocations; thread stacks",
    ),
    allow(
        libc::SYS_madvise,
        Args::Any,
        "malloc trimming; glibc releasing an exited thread's stack",
    ),
    allow(libc::SYS_brk, Args::Any, "malloc: the main arena"),
    allow(
        libc::SYS_rt_sigprocmask,
        Args::Any,
        "glibc masks signals around thread exit and pthread_kill",
    ),
    allow(
        libc::SYS_sigaltstack,
        Args::Any,
        "Rust's stack-overflow guard is removed at thread exit",
    ),
    allow(libc::SYS_exit, Args::Any, "thread exit"),
    allow(
        libc::SYS_exit_group,
        Args::Any,
        "process exit (kattach vmm exits when the guest stops)",
    ),
];

/// Calls only the vCPU threads make.
const VCPU: &[Allow] = &[
    allow(
        libc::SYS_ioctl,
        Args::Eq(1, KVM_RUN),
        "KVM_RUN, and no other KVM call",
    ),
    allow(
        libc::SYS_getpid,
        Args::Any,
        "pthread_kill names the thread group",
    ),
    allow(
        libc::SYS_tgkill,
        Args::KickSignal,
        "kicking the other vCPU threads out of KVM_RUN",
    ),
    allow(
        libc::SYS_sendmsg,
        Args::SocketFd,
        "vhost-user requests when the guest's driver starts or resets a NIC",
    ),
    allow(
        libc::SYS_recvmsg,
        Args::SocketFd,
        "vhost-user replies when the guest's driver starts or resets a NIC",
    ),
];

/// Calls only the main thread makes: none beyond the common ones (it waits for the vCPUs).
const MAIN: &[Allow] = &[];

/// The allowlist of a thread kind.
pub fn allowlist(kind: ThreadKind) -> impl Iterator<Item = &'static Allow> {
    let own = match kind {
        ThreadKind::Main => MAIN,
        ThreadKind::Vcpu => VCPU,
    };
    COMMON.iter().chain(own)
}

/// Errors from compiling or installing a filter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SeccompError {
    /// The allowlist does not compile.
    #[error("cannot compile the seccomp filter: {0}")]
    Compile(#[source] seccompiler::BackendError),
    /// The kernel refused the filter.
    #[error("cannot install the seccomp filter: {0}")]
    Install(#[source] seccompiler::Error),
}

/// The compiled filters of a VMM process.
#[derive(Debug, Clone)]
pub struct Filters {
    main: BpfProgram,
    vcpu: BpfProgram,
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value).map_err(SeccompError::Compile)
}

/// The descriptors a filter lets threads use.
#[derive(Debug, Clone, Copy)]
struct Fds<'a> {
    output: &'a [RawFd],
    sockets: &'a [RawFd],
}

fn rules(args: Args, fds: Fds<'_>) -> Result<Vec<SeccompRule>, SeccompError> {
    let one = |c: SeccompCondition| SeccompRule::new(vec![c]).map_err(SeccompError::Compile);
    Ok(match args {
        Args::Any => Vec::new(),
        Args::Eq(arg, value) => vec![one(cond(arg, SeccompCmpOp::Eq, value)?)?],
        Args::KickSignal => {
            let sig = u64::try_from(crate::vcpu::kick_signal()).unwrap_or(u64::MAX);
            vec![one(cond(2, SeccompCmpOp::Eq, sig)?)?]
        }
        Args::Without(arg, bits) => vec![one(cond(arg, SeccompCmpOp::MaskedEq(bits), 0)?)?],
        Args::OutputFd => fd_rules(fds.output)?,
        Args::SocketFd => fd_rules(fds.sockets)?,
    })
}

/// One rule per descriptor: argument 0 is it. An empty list allows nothing: seccompiler
/// drops a call with no rule from the map (see [`compile`]).
fn fd_rules(fds: &[RawFd]) -> Result<Vec<SeccompRule>, SeccompError> {
    fds.iter()
        .map(|fd| {
            let c = cond(0, SeccompCmpOp::Eq, u64::try_from(*fd).unwrap_or(u64::MAX))?;
            SeccompRule::new(vec![c]).map_err(SeccompError::Compile)
        })
        .collect()
}

/// Compiles the allowlist of `kind`; writes go only to `output`, socket messages only to
/// `sockets`.
///
/// # Errors
/// [`SeccompError::Compile`].
pub fn compile(
    kind: ThreadKind,
    output: &[RawFd],
    sockets: &[RawFd],
) -> Result<BpfProgram, SeccompError> {
    let fds = Fds { output, sockets };
    let mut map: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for a in allowlist(kind) {
        let rules = rules(a.args, fds)?;
        // To seccompiler an empty rule list means "always allowed": a call restricted to
        // descriptors of which there are none is left out instead (and so kills).
        if rules.is_empty() && a.args != Args::Any {
            continue;
        }
        map.entry(a.nr).or_default().extend(rules);
    }
    let filter = SeccompFilter::new(
        map,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(SeccompError::Compile)?;
    BpfProgram::try_from(filter).map_err(SeccompError::Compile)
}

impl Filters {
    /// The filters of a VMM whose threads write to stdout, stderr and `device_fds`, and
    /// whose vCPU threads talk on `socket_fds` (vhost-user).
    ///
    /// # Errors
    /// [`SeccompError::Compile`].
    pub fn new(device_fds: &[RawFd], socket_fds: &[RawFd]) -> Result<Self, SeccompError> {
        let mut fds = vec![libc::STDOUT_FILENO, libc::STDERR_FILENO];
        fds.extend_from_slice(device_fds);
        Ok(Filters {
            main: compile(ThreadKind::Main, &fds, &[])?,
            vcpu: compile(ThreadKind::Vcpu, &fds, socket_fds)?,
        })
    }

    /// Installs the filter of `kind` on the calling thread (threads it starts later inherit it).
    /// Needs `PR_SET_NO_NEW_PRIVS` or `CAP_SYS_ADMIN`.
    ///
    /// # Errors
    /// [`SeccompError::Install`].
    pub fn apply(&self, kind: ThreadKind) -> Result<(), SeccompError> {
        let program = match kind {
            ThreadKind::Main => &self.main,
            ThreadKind::Vcpu => &self.vcpu,
        };
        seccompiler::apply_filter(program).map_err(SeccompError::Install)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_allowed_call_says_why_and_appears_once() {
        for kind in [ThreadKind::Main, ThreadKind::Vcpu] {
            let mut seen = std::collections::BTreeSet::new();
            for a in allowlist(kind) {
                assert!(!a.why.is_empty());
                assert!(seen.insert(a.nr), "{} listed twice", a.nr);
            }
        }
        let main: Vec<_> = allowlist(ThreadKind::Main).map(|a| a.nr).collect();
        for forbidden in [
            libc::SYS_ioctl,
            libc::SYS_openat,
            libc::SYS_execve,
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_socket,
        ] {
            assert!(!main.contains(&forbidden), "main thread allows {forbidden}");
        }
        assert!(
            !allowlist(ThreadKind::Vcpu).any(|a| a.nr == libc::SYS_openat),
            "vCPU threads open nothing"
        );
    }

    #[test]
    fn filters_compile() -> Result<(), SeccompError> {
        let f = Filters::new(&[7], &[])?;
        assert!(!f.main.is_empty());
        let with_socket = Filters::new(&[7], &[9])?;
        assert!(
            with_socket.vcpu.len() > f.vcpu.len(),
            "sendmsg and recvmsg appear only with a socket to use them on"
        );
        assert!(f.vcpu.len() > f.main.len(), "the vCPU list is the longer");
        Ok(())
    }

    /// In a forked child (so the test process stays unfiltered): a listed call works, an
    /// unlisted one kills the process with SIGSYS.
    #[test]
    fn an_unlisted_call_kills_the_process_with_sigsys() -> Result<(), SeccompError> {
        let filters = Filters::new(&[], &[])?;
        let program = filters.vcpu.clone();
        // SAFETY: the child only makes raw system calls (prctl, seccomp, getppid, _exit) and
        // touches memory allocated before the fork; no lock another thread may hold is taken.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            let prog = libc::sock_fprog {
                len: u16::try_from(program.len()).unwrap_or(0),
                filter: program.as_ptr().cast_mut().cast(),
            };
            // SAFETY: `prog` points at the compiled program, alive until _exit.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    &raw const prog,
                )
            };
            if rc != 0 {
                // SAFETY: _exit is always safe.
                unsafe { libc::_exit(3) };
            }
            // SAFETY: getpid is listed; getppid is not and must not return.
            unsafe {
                libc::syscall(libc::SYS_getpid);
                libc::syscall(libc::SYS_getppid);
                libc::_exit(0);
            }
        }
        assert!(pid > 0, "fork failed");
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFSIGNALED(status), "child exited with {status:#x}");
        assert_eq!(libc::WTERMSIG(status), libc::SIGSYS);
        Ok(())
    }
}
