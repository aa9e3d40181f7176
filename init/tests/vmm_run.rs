//! `kattach vmm run` as a user runs it: a tiny hand-made guest prints on stdout and resets, the
//! process exits 3 (a power-off exits 0); a file that is not a kernel is refused with a message and a non-zero status;
//! the sandbox is in force while the guest runs (seccomp, no capabilities, own namespaces, an
//! empty root) and `SIGTERM` ends the VM. Guest boots are skipped, with the reason printed, where
//! `/dev/kvm` cannot be opened; sandbox checks also where this is not root.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kaos_vmm::tiny::kvm_usable;

fn guest_file(name: &str, bytes: &[u8]) -> PathBuf {
    kaos_vmm::tiny::write_guest(name, bytes).expect("write the guest file")
}

fn vmm_run(kernel: &std::path::Path, extra: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_kattach"))
        .args(["vmm", "run", "--kernel"])
        .arg(kernel)
        .args(["--vcpus", "1", "--memory", "128M"])
        .args(extra)
        .output();
    std::fs::remove_file(kernel).ok();
    match out {
        Ok(out) => out,
        Err(e) => panic!("cannot run kattach: {e}"),
    }
}

#[test]
fn tiny_guest_prints_on_stdout_and_exits_3_on_reset() {
    if !kvm_usable("tiny_guest_prints_on_stdout_and_exits_3_on_reset") {
        return;
    }
    let kernel = guest_file("tiny.elf", &kaos_vmm::tiny::tiny_elf(b"K\n"));
    let out = vmm_run(&kernel, &["--cmdline", "console=ttyS0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr: {stderr}");
    assert_eq!(out.stdout, b"K\n");
}

#[test]
fn triple_fault_exits_non_zero_with_a_message() {
    if !kvm_usable("triple_fault_exits_non_zero_with_a_message") {
        return;
    }
    let kernel = guest_file(
        "ud2.elf",
        &kaos_vmm::tiny::tiny_elf_with_code(&[0x0f, 0x0b]),
    );
    let out = vmm_run(&kernel, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("triple fault"), "stderr: {stderr}");
}

#[test]
fn a_non_kernel_file_is_refused_before_anything_starts() {
    let kernel = guest_file("script.sh", b"#!/bin/sh\necho hello\n");
    let out = vmm_run(&kernel, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("neither an ELF64 file nor a bzImage"),
        "stderr: {stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn zero_vcpus_and_huge_memory_are_refused() {
    for (vcpus, memory, expect) in [("0", "128M", "vCPUs"), ("1", "999999G", "host's RAM")] {
        let kernel = guest_file("tiny2.elf", &kaos_vmm::tiny::tiny_elf(b"x"));
        let out = Command::new(env!("CARGO_BIN_EXE_kattach"))
            .args(["vmm", "run", "--kernel"])
            .arg(&kernel)
            .args(["--vcpus", vcpus, "--memory", memory])
            .output();
        std::fs::remove_file(&kernel).ok();
        let out = out.unwrap_or_else(|e| panic!("cannot run kattach: {e}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
        assert!(stderr.contains(expect), "stderr: {stderr}");
    }
}

fn root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        // Uncaptured by the test harness, so the skip shows in every log.
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("SKIPPED {test}: the sandbox needs root (CAP_SYS_ADMIN)\n").as_bytes(),
        );
    }
    euid == 0
}

#[test]
fn no_sandbox_runs_the_guest_in_process() {
    if !kvm_usable("no_sandbox_runs_the_guest_in_process") {
        return;
    }
    let kernel = guest_file("nosandbox.elf", &kaos_vmm::tiny::tiny_elf(b"K\n"));
    let out = vmm_run(&kernel, &["--no-sandbox"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr: {stderr}");
    assert_eq!(out.stdout, b"K\n");
}

#[test]
fn two_vcpus_boot_and_the_exit_port_powers_off() {
    if !kvm_usable("two_vcpus_boot_and_the_exit_port_powers_off") {
        return;
    }
    let code = kaos_vmm::tiny::smp_code();
    let kernel = guest_file("smp.elf", &kaos_vmm::tiny::tiny_elf_with_code(&code));
    let out = Command::new(env!("CARGO_BIN_EXE_kattach"))
        .args(["vmm", "run", "--kernel"])
        .arg(&kernel)
        .args(["--vcpus", "2", "--memory", "128M"])
        .output();
    std::fs::remove_file(&kernel).ok();
    let out = out.unwrap_or_else(|e| panic!("cannot run kattach: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(out.stdout, b"A", "the application processor printed");
}

#[test]
fn without_privileges_the_sandbox_refuses_and_suggests_no_sandbox() {
    if !root("without_privileges_the_sandbox_refuses_and_suggests_no_sandbox") {
        return;
    }
    let kernel = guest_file("unpriv.elf", &kaos_vmm::tiny::tiny_elf(b"x"));
    let out = Command::new(env!("CARGO_BIN_EXE_kattach"))
        .args(["vmm", "run", "--kernel"])
        .arg(&kernel)
        .args(["--vcpus", "1", "--memory", "16M"])
        .uid(65534)
        .gid(65534)
        .output();
    std::fs::remove_file(&kernel).ok();
    let out = out.unwrap_or_else(|e| panic!("cannot run kattach: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("--no-sandbox"), "stderr: {stderr}");
    assert!(out.stdout.is_empty());
}

/// A sandboxed VMM whose guest printed `up` and now idles; killed when dropped.
struct Running {
    parent: Child,
    vmm: u32,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.parent.kill().ok();
        self.parent.wait().ok();
    }
}

fn start_idle_guest(kernel: &std::path::Path) -> Running {
    let mut parent = Command::new(env!("CARGO_BIN_EXE_kattach"))
        .args(["vmm", "run", "--kernel"])
        .arg(kernel)
        .args(["--vcpus", "2", "--memory", "128M"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run kattach: {e}"));
    let mut stdout = parent.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut byte = [0u8];
        while stdout.read(&mut byte).is_ok_and(|n| n == 1) {
            seen.push(byte[0]);
            if seen.ends_with(b"up\n") {
                tx.send(()).ok();
            }
        }
    });
    let printed = rx.recv_timeout(Duration::from_secs(10));
    let pid = parent.id();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"));
    let vmm = children
        .ok()
        .and_then(|c| c.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let running = Running { parent, vmm };
    assert!(printed.is_ok(), "the guest never printed");
    assert_ne!(running.vmm, 0, "no sandboxed child under {pid}");
    running
}

fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

#[test]
fn the_sandbox_is_in_force_while_the_guest_runs_and_sigterm_ends_it() {
    let test = "the_sandbox_is_in_force_while_the_guest_runs_and_sigterm_ends_it";
    if !kvm_usable(test) || !root(test) {
        return;
    }
    let code = kaos_vmm::tiny::idle_code(b"up\n");
    let kernel = guest_file("idle.elf", &kaos_vmm::tiny::tiny_elf_with_code(&code));
    let mut run = start_idle_guest(&kernel);
    std::fs::remove_file(&kernel).ok();
    let vmm = run.vmm;

    assert_eq!(status_field(vmm, "Seccomp"), "2", "seccomp filter mode");
    assert_eq!(status_field(vmm, "NoNewPrivs"), "1");
    for caps in ["CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(vmm, caps), "0000000000000000", "{caps}");
    }
    for task in std::fs::read_dir(format!("/proc/{vmm}/task"))
        .into_iter()
        .flatten()
    {
        let task = task.map(|t| t.file_name()).unwrap_or_default();
        let status = std::fs::read_to_string(format!(
            "/proc/{vmm}/task/{}/status",
            task.to_string_lossy()
        ))
        .unwrap_or_default();
        assert!(status.contains("Seccomp:\t2"), "thread {task:?} unfiltered");
    }
    for ns in ["mnt", "net", "ipc", "uts", "pid"] {
        let theirs = std::fs::read_link(format!("/proc/{vmm}/ns/{ns}"));
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}"));
        assert!(theirs.is_ok(), "cannot read the VMM's {ns} namespace");
        assert_ne!(theirs.ok(), ours.ok(), "{ns} namespace shared");
    }
    let root: Vec<_> = std::fs::read_dir(format!("/proc/{vmm}/root"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_else(|e| panic!("cannot list the VMM's root: {e}"));
    assert!(root.is_empty(), "the VMM's root holds {root:?}");

    // SAFETY: signalling our own child.
    unsafe { libc::kill(i32::try_from(run.parent.id()).unwrap_or(0), libc::SIGTERM) };
    let started = Instant::now();
    let status = loop {
        match run.parent.try_wait() {
            Ok(Some(status)) => break status,
            _ if started.elapsed() > Duration::from_secs(5) => panic!("SIGTERM did not end the VM"),
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    assert!(
        !std::path::Path::new(&format!("/proc/{vmm}")).exists(),
        "the sandboxed VMM outlived its parent"
    );
}

#[test]
fn guest_init_packs_this_kattach_into_the_initrd() {
    if !kvm_usable("guest_init_packs_this_kattach_into_the_initrd") {
        return;
    }
    // The guest prints the initrd's first 6 bytes: the newc magic of the packed archive.
    let code = kaos_vmm::tiny::initrd_echo_code(6);
    let kernel = guest_file("echo.elf", &kaos_vmm::tiny::tiny_elf_with_code(&code));
    let out = vmm_run(&kernel, &["--guest-init"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr: {stderr}");
    assert_eq!(out.stdout, b"070701");
}
