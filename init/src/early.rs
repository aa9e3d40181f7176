//! Early boot as PID 1: the pseudo-filesystems, with the most restrictive flags they allow.

use rustix::fs::Mode;
use rustix::mount::{MountFlags, mount};

/// (source, target, type, flags, data). `/dev` keeps exec off and device nodes on; nothing here
/// holds binaries, so everything is `noexec`.
const MOUNTS: [(&str, &str, &str, MountFlags, &str); 4] = [
    (
        "proc",
        "/proc",
        "proc",
        MountFlags::NOSUID
            .union(MountFlags::NODEV)
            .union(MountFlags::NOEXEC),
        "hidepid=invisible",
    ),
    (
        "sysfs",
        "/sys",
        "sysfs",
        MountFlags::NOSUID
            .union(MountFlags::NODEV)
            .union(MountFlags::NOEXEC),
        "",
    ),
    (
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MountFlags::NOSUID.union(MountFlags::NOEXEC),
        "mode=0755",
    ),
    (
        "tmpfs",
        "/run",
        "tmpfs",
        MountFlags::NOSUID
            .union(MountFlags::NODEV)
            .union(MountFlags::NOEXEC),
        "mode=0755,size=16m",
    ),
];

/// Mounts proc, sys, dev and run. Failures are returned as messages, not fatal: the endpoint
/// may still come up and report them.
pub fn mount_all() -> Vec<String> {
    let mut problems = Vec::new();
    for (source, target, fstype, flags, data) in MOUNTS {
        let _ = rustix::fs::mkdir(target, Mode::from_raw_mode(0o755));
        let data = std::ffi::CString::new(data).unwrap_or_default();
        let data = (!data.is_empty()).then_some(data.as_c_str());
        if let Err(e) = mount(source, target, fstype, flags, data) {
            problems.push(format!("mount {fstype} on {target}: {e}"));
        }
    }
    problems
}
