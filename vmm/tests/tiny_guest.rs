//! Boots hand-made guests on this machine's own `/dev/kvm`: serial output and exit reasons.
//! Skipped, with the reason printed, where `/dev/kvm` cannot be opened.

use std::path::PathBuf;

use kaos_vmm::{ExitReason, Vm, VmConfig, VmError, tiny};

use kaos_vmm::tiny::kvm_usable;

fn guest_file(name: &str, bytes: &[u8]) -> PathBuf {
    kaos_vmm::tiny::write_guest(name, bytes).expect("write the guest file")
}

fn config(path: &std::path::Path) -> VmConfig {
    VmConfig {
        kernel: path.to_string_lossy().into_owned(),
        initrd: None,
        vcpus: 1,
        memory: 128 << 20,
        cmdline: "console=ttyS0".into(),
    }
}

fn boot(name: &str, bytes: &[u8]) -> Result<(ExitReason, Vec<u8>), VmError> {
    let path = guest_file(name, bytes);
    let result = Vm::new(&config(&path), Vec::new());
    std::fs::remove_file(&path).ok();
    let mut vm = result?;
    let reason = vm.run();
    let ring = vm.console_ring();
    let kept = ring.lock().map(|r| r.contents()).unwrap_or_default();
    Ok((reason, kept))
}

#[test]
fn tiny_guest_prints_and_resets() -> Result<(), VmError> {
    if !kvm_usable("tiny_guest_prints_and_resets") {
        return Ok(());
    }
    let (reason, console) = boot("hello", &tiny::tiny_elf(b"K\n"))?;
    assert_eq!(reason, ExitReason::Reset);
    assert_eq!(console, b"K\n");
    Ok(())
}

#[test]
fn triple_fault_is_reported() -> Result<(), VmError> {
    if !kvm_usable("triple_fault_is_reported") {
        return Ok(());
    }
    // `ud2` with an empty IDT: #UD, then #DF, then a triple fault.
    let (reason, console) = boot("ud2", &tiny::tiny_elf_with_code(&[0x0f, 0x0b]))?;
    assert_eq!(reason, ExitReason::TripleFault);
    assert!(console.is_empty());
    Ok(())
}

#[test]
fn unhandled_ports_and_mmio_are_ignored() -> Result<(), VmError> {
    if !kvm_usable("unhandled_ports_and_mmio_are_ignored") {
        return Ok(());
    }
    // out 0x80,al; in al,0x71; mov [0x30000000],eax (mapped, not RAM: an MMIO exit), then print and reset.
    let mut code = vec![0xe6, 0x80, 0xe4, 0x71];
    code.extend_from_slice(&[0xa3, 0, 0, 0, 0x30, 0, 0, 0, 0]);
    code.extend_from_slice(&tiny::tiny_code(b"ok"));
    let (reason, console) = boot("ports", &tiny::tiny_elf_with_code(&code))?;
    assert_eq!(reason, ExitReason::Reset);
    assert_eq!(console, b"ok");
    Ok(())
}

#[test]
fn a_non_kernel_is_refused_before_kvm() {
    let result = boot("notelf", b"#!/bin/sh\necho not a kernel\n");
    assert!(
        matches!(
            result,
            Err(VmError::Boot(kaos_vmm::boot::BootError::NotAKernel(_)))
        ),
        "{result:?}"
    );
}
