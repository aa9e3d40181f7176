//! `kattach vmm run` as a user runs it: a tiny hand-made guest prints on stdout and resets, the
//! process exits 0; a file that is not a kernel is refused with a message and a non-zero status.
//! Guest boots are skipped, with the reason printed, where `/dev/kvm` cannot be opened.

use std::path::PathBuf;
use std::process::{Command, Output};

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
fn tiny_guest_prints_on_stdout_and_exits_zero_on_reset() {
    if !kvm_usable("tiny_guest_prints_on_stdout_and_exits_zero_on_reset") {
        return;
    }
    let kernel = guest_file("tiny.elf", &kaos_vmm::tiny::tiny_elf(b"K\n"));
    let out = vmm_run(&kernel, &["--cmdline", "console=ttyS0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
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
