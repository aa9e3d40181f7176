//! How a VMM process confines itself before any guest code runs. Each layer assumes the guest
//! has taken over the VMM, and limits what that buys it:
//!
//! 1. [`isolate`], before any KVM object exists: new mount, network, IPC, UTS and PID namespaces,
//!    then one fork. The child is PID 1 of its own PID namespace and does all the VM work; it
//!    sees no other process (no `kill`, no `ptrace` target), no network interface but a down
//!    loopback, no System V IPC of the host, and gets `SIGKILL` if its parent dies
//!    (`PR_SET_PDEATHSIG`). The fork is needed because a new PID namespace only applies to
//!    children, and it has to come first because KVM file descriptors cannot be used from another
//!    address space. The parent stays outside, blocks its signals, turns `SIGTERM`/`SIGINT`/
//!    `SIGHUP`/`SIGQUIT` into a `SIGKILL` of the child (PID 1 of a namespace ignores signals it
//!    has no handler for), and reports how the child ended.
//! 2. [`confine`], once the kernel and initrd are loaded and every file the VM needs is open:
//!    - **an empty root**: mounts made private, a read-only, `nosuid,nodev,noexec` tmpfs put on
//!      `/` and entered with `pivot_root`, the old root detached. Where the old root is the
//!      initramfs (`rootfs` cannot be pivoted, as on a KaOS host), the tmpfs is entered with
//!      `chroot` instead: the old root stays mounted beneath it, out of reach of a process
//!      without `CAP_SYS_CHROOT`. No path leads anywhere, so nothing can be opened.
//!    - **rlimits**: `RLIMIT_NOFILE` at the descriptors already open (no new ones), `RLIMIT_CORE`
//!      0 (no core file of guest memory), `RLIMIT_MEMLOCK` and `RLIMIT_MSGQUEUE` 0.
//!      `RLIMIT_FSIZE` is left alone, because the console may be a file, and `RLIMIT_NPROC`
//!      too, because the kernel does not enforce it for uid 0 (the seccomp filters refuse every
//!      `fork` and `clone` instead).
//!    - **no capabilities**: the bounding and ambient sets emptied, then the effective,
//!      permitted and inheritable sets; `PR_SET_NO_NEW_PRIVS` so no `execve` could regain any.
//! 3. **seccomp** ([`crate::seccomp`]): each vCPU thread installs the vCPU allowlist, the main
//!    thread the main allowlist once the vCPU threads exist, and only then does any guest code
//!    run ([`crate::Vm::run_confined`]).

use std::io;
use std::os::fd::AsFd;

use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountPropagationFlags, MoveMountFlags, UnmountFlags,
};
use rustix::process::{Resource, Rlimit};
use rustix::thread::{CapabilitySet, CapabilitySets, UnshareFlags};

/// Errors from setting up the sandbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// The namespaces could not be created: not root, or in a container that forbids it.
    #[error(
        "cannot create the sandbox's namespaces ({0}); the VMM needs CAP_SYS_ADMIN \
         (run as root, or pass --no-sandbox to debug without the sandbox)"
    )]
    Namespaces(#[source] io::Error),
    /// A step of the sandbox failed.
    #[error("sandbox: cannot {0}: {1}")]
    Step(&'static str, #[source] io::Error),
}

fn step(what: &'static str) -> impl Fn(rustix::io::Errno) -> SandboxError {
    move |e| SandboxError::Step(what, e.into())
}

/// Which side of [`isolate`]'s fork this process is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The sandboxed child: build and run the VM.
    Child,
    /// The parent, after the child ended: report it and exit.
    Parent(ChildEnd),
}

/// How the sandboxed child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildEnd {
    /// It exited with this status.
    Exited(i32),
    /// It was killed by this signal (`SIGSYS`: a call outside the seccomp allowlist).
    Killed(i32),
    /// The parent received this signal and killed the child.
    Stopped(i32),
}

/// Signals the parent turns into a `SIGKILL` of the child.
const FORWARDED: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live sigset_t and every signal number is valid.
    unsafe {
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
    }
    set
}

/// Creates the namespaces and forks. Must be called while the process has one thread and before
/// any KVM object exists. Returns [`Side::Child`] in the child and, in the parent, how the child
/// ended.
///
/// # Errors
/// [`SandboxError::Namespaces`] without `CAP_SYS_ADMIN`; [`SandboxError::Step`] otherwise.
pub fn isolate() -> Result<Side, SandboxError> {
    let flags = UnshareFlags::NEWNS
        | UnshareFlags::NEWNET
        | UnshareFlags::NEWIPC
        | UnshareFlags::NEWUTS
        | UnshareFlags::NEWPID;
    // SAFETY: UnshareFlags::FILES is not among the flags, so no thread can lose descriptors;
    // the process has one thread.
    unsafe { rustix::thread::unshare_unsafe(flags) }
        .map_err(|e| SandboxError::Namespaces(e.into()))?;

    let mut signals = FORWARDED.to_vec();
    signals.push(libc::SIGCHLD);
    let watched = sigset(&signals);
    // SAFETY: sigset_t is plain data, filled in by pthread_sigmask.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live sigset_t values.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &watched, &mut old) };
    if rc != 0 {
        return Err(SandboxError::Step(
            "block signals",
            io::Error::from_raw_os_error(rc),
        ));
    }
    // The child learns of a parent that died before PR_SET_PDEATHSIG was armed from this pipe:
    // only the parent holds the write end.
    let (alive_r, alive_w) = io::pipe().map_err(|e| SandboxError::Step("make a pipe", e))?;

    // SAFETY: the process has one thread (checked by the caller's contract), so the child has a
    // consistent copy of every lock and allocation.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(SandboxError::Step("fork", io::Error::last_os_error())),
        0 => {
            drop(alive_w);
            // SAFETY: `old` is the mask saved above.
            let rc =
                unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
            if rc != 0 {
                return Err(SandboxError::Step(
                    "restore signals",
                    io::Error::from_raw_os_error(rc),
                ));
            }
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(step("set the parent-death signal"))?;
            let mut fds = [rustix::event::PollFd::new(
                &alive_r,
                rustix::event::PollFlags::IN,
            )];
            let now = rustix::event::Timespec::default();
            if rustix::event::poll(&mut fds, Some(&now)).is_ok_and(|n| n > 0) {
                // Readable without data: the parent is gone.
                std::process::exit(1);
            }
            Ok(Side::Child)
        }
        child => {
            drop(alive_r);
            let end = supervise(child, &watched);
            drop(alive_w);
            Ok(Side::Parent(end))
        }
    }
}

/// The parent's loop: waits for the child, forwarding stop signals as `SIGKILL`.
fn supervise(child: libc::pid_t, watched: &libc::sigset_t) -> ChildEnd {
    loop {
        // SAFETY: `watched` is a live sigset_t; no siginfo is asked for.
        let sig = unsafe { libc::sigwaitinfo(watched, std::ptr::null_mut()) };
        if sig == libc::SIGCHLD || sig < 0 {
            if let Some(end) = reap(child, libc::WNOHANG) {
                return end;
            }
            continue;
        }
        // SAFETY: `child` is our own child, not yet reaped.
        unsafe { libc::kill(child, libc::SIGKILL) };
        reap(child, 0);
        return ChildEnd::Stopped(sig);
    }
}

fn reap(child: libc::pid_t, options: libc::c_int) -> Option<ChildEnd> {
    let mut status = 0;
    // SAFETY: `status` is a live int; `child` is our own child.
    let rc = unsafe { libc::waitpid(child, &mut status, options) };
    if rc != child {
        return None;
    }
    if libc::WIFEXITED(status) {
        Some(ChildEnd::Exited(libc::WEXITSTATUS(status)))
    } else if libc::WIFSIGNALED(status) {
        Some(ChildEnd::Killed(libc::WTERMSIG(status)))
    } else {
        None
    }
}

/// Enters an empty root, sets the rlimits and drops every capability (layer 2 above). Call it
/// after every file the VM needs is open and before any vCPU thread exists.
///
/// # Errors
/// [`SandboxError::Step`] naming the step that failed.
pub fn confine() -> Result<(), SandboxError> {
    // glibc's malloc reads /sys/devices/system/cpu/online (an openat no filter allows, in a
    // root where the file is not) the first time a thread needs an arena of its own, to bound
    // their number; with the bound set now it never looks. glibc would allow 8 per CPU; the
    // few threads of a VMM or the switch do with 2 per CPU.
    let arenas = std::thread::available_parallelism().map_or(8, |n| n.get().saturating_mul(2));
    // SAFETY: mallopt takes two integers; it changes a malloc parameter, nothing else.
    unsafe {
        libc::mallopt(
            libc::M_ARENA_MAX,
            i32::try_from(arenas.min(64)).unwrap_or(8),
        )
    };
    let open_fds = highest_open_fd()? + 1;
    empty_root()?;
    let limit = |n| Rlimit {
        current: Some(n),
        maximum: Some(n),
    };
    for (resource, value) in [
        (Resource::Nofile, open_fds),
        (Resource::Core, 0),
        (Resource::Memlock, 0),
        (Resource::Msgqueue, 0),
    ] {
        rustix::process::setrlimit(resource, limit(value)).map_err(step("set an rlimit"))?;
    }
    drop_capabilities()?;
    rustix::thread::set_no_new_privs(true).map_err(step("set no_new_privs"))
}

fn highest_open_fd() -> Result<u64, SandboxError> {
    let dir = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| SandboxError::Step("list open descriptors", e))?;
    Ok(dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap_or(2))
}

/// A read-only empty tmpfs becomes `/`; the old root is detached (or hidden, on rootfs).
fn empty_root() -> Result<(), SandboxError> {
    use rustix::mount;
    mount::mount_change(
        "/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .map_err(step("make mounts private"))?;
    let fs = mount::fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC).map_err(step("open tmpfs"))?;
    mount::fsconfig_create(&fs).map_err(step("create tmpfs"))?;
    let attrs = MountAttrFlags::MOUNT_ATTR_RDONLY
        | MountAttrFlags::MOUNT_ATTR_NOSUID
        | MountAttrFlags::MOUNT_ATTR_NODEV
        | MountAttrFlags::MOUNT_ATTR_NOEXEC;
    let root =
        mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs).map_err(step("mount tmpfs"))?;
    rustix::process::fchdir(&root).map_err(step("enter the new root"))?;
    mount::move_mount(
        root.as_fd(),
        "",
        rustix::fs::CWD,
        "/",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(step("put the new root on /"))?;
    match rustix::process::pivot_root(".", ".") {
        // The old root now sits on top of the new one at "."; detach it.
        Ok(()) => mount::unmount(".", UnmountFlags::DETACH).map_err(step("detach the old root"))?,
        Err(rustix::io::Errno::INVAL) => {
            rustix::process::chroot(".").map_err(step("enter the new root"))?;
        }
        Err(e) => return Err(step("pivot_root")(e)),
    }
    rustix::process::chdir("/").map_err(step("enter the new root"))?;
    Ok(())
}

fn drop_capabilities() -> Result<(), SandboxError> {
    for cap in 0..64 {
        let set = CapabilitySet::from_bits_retain(1 << cap);
        match rustix::thread::remove_capability_from_bounding_set(set) {
            // Beyond the kernel's last capability.
            Ok(()) | Err(rustix::io::Errno::INVAL) => {}
            Err(e) => return Err(step("drop the capability bounding set")(e)),
        }
    }
    rustix::thread::clear_ambient_capability_set().map_err(step("clear ambient capabilities"))?;
    let none = CapabilitySets {
        effective: CapabilitySet::empty(),
        permitted: CapabilitySet::empty(),
        inheritable: CapabilitySet::empty(),
    };
    rustix::thread::set_capabilities(None, none).map_err(step("drop capabilities"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_error_suggests_no_sandbox() {
        let e = SandboxError::Namespaces(io::Error::from_raw_os_error(libc::EPERM));
        let m = e.to_string();
        assert!(
            m.contains("CAP_SYS_ADMIN") && m.contains("--no-sandbox"),
            "{m}"
        );
    }

    #[test]
    fn signal_sets_hold_what_they_are_given() {
        let set = sigset(&FORWARDED);
        for s in FORWARDED {
            // SAFETY: `set` is a live sigset_t.
            assert_eq!(unsafe { libc::sigismember(&set, s) }, 1);
        }
        // SAFETY: as above.
        assert_eq!(unsafe { libc::sigismember(&set, libc::SIGCHLD) }, 0);
    }
}
