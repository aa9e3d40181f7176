//! Boots hand-made guests on this machine's own `/dev/kvm`: serial output, exit reasons, SMP,
//! the exit port and in-memory initrd parts.
//! Skipped, with the reason printed, where `/dev/kvm` cannot be opened.

use std::path::PathBuf;

use kaos_vmm::{ExitReason, InitrdPart, Vm, VmConfig, VmError, tiny};

use kaos_vmm::tiny::kvm_usable;

fn guest_file(name: &str, bytes: &[u8]) -> PathBuf {
    kaos_vmm::tiny::write_guest(name, bytes).expect("write the guest file")
}

fn config(path: &std::path::Path, vcpus: u32) -> VmConfig {
    VmConfig {
        kernel: path.to_string_lossy().into_owned(),
        initrd: Vec::new(),
        vcpus,
        memory: 128 << 20,
        cmdline: "console=ttyS0".into(),
    }
}

fn boot(name: &str, bytes: &[u8]) -> Result<(ExitReason, Vec<u8>), VmError> {
    boot_with(name, bytes, 1, Vec::new())
}

fn boot_with(
    name: &str,
    bytes: &[u8],
    vcpus: u32,
    initrd: Vec<InitrdPart>,
) -> Result<(ExitReason, Vec<u8>), VmError> {
    let path = guest_file(name, bytes);
    let result = Vm::new(
        &VmConfig {
            initrd,
            ..config(&path, vcpus)
        },
        Vec::new(),
    );
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

#[test]
fn the_exit_port_powers_off() -> Result<(), VmError> {
    if !kvm_usable("the_exit_port_powers_off") {
        return Ok(());
    }
    let code = tiny::exit_port_code(b"bye");
    let (reason, console) = boot("exitport", &tiny::tiny_elf_with_code(&code))?;
    assert_eq!(reason, ExitReason::PowerOff);
    assert_eq!(console, b"bye");
    Ok(())
}

#[test]
fn the_vm_ends_when_the_bsp_resets_while_the_ap_waits_for_sipi() -> Result<(), VmError> {
    if !kvm_usable("the_vm_ends_when_the_bsp_resets_while_the_ap_waits_for_sipi") {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let (reason, console) = boot_with("smp-reset", &tiny::tiny_elf(b"K"), 2, Vec::new())?;
    assert_eq!(reason, ExitReason::Reset);
    assert_eq!(console, b"K");
    assert!(
        started.elapsed().as_secs() < 5,
        "the waiting AP was not stopped promptly"
    );
    Ok(())
}

#[test]
fn the_bsp_starts_an_ap_which_powers_off_while_the_bsp_halts() -> Result<(), VmError> {
    if !kvm_usable("the_bsp_starts_an_ap_which_powers_off_while_the_bsp_halts") {
        return Ok(());
    }
    let elf = tiny::tiny_elf_with_code(&tiny::smp_code());
    let (reason, console) = boot_with("smp-sipi", &elf, 2, Vec::new())?;
    assert_eq!(console, b"A", "only the AP prints");
    assert_eq!(reason, ExitReason::PowerOff);
    Ok(())
}

#[test]
fn initrd_parts_reach_the_guest_concatenated() -> Result<(), VmError> {
    if !kvm_usable("initrd_parts_reach_the_guest_concatenated") {
        return Ok(());
    }
    let file = guest_file("initrd-tail", b"more");
    let parts = vec![
        InitrdPart::Bytes(b"cpio".to_vec()),
        InitrdPart::File(file.to_string_lossy().into_owned()),
    ];
    let elf = tiny::tiny_elf_with_code(&tiny::initrd_echo_code(8));
    let result = boot_with("initrd-echo", &elf, 1, parts);
    std::fs::remove_file(&file).ok();
    let (reason, console) = result?;
    assert_eq!(reason, ExitReason::Reset);
    assert_eq!(console, b"cpiomore");
    Ok(())
}

#[test]
fn more_vcpus_than_the_maximum_are_refused() {
    let result = boot_with(
        "toomany",
        &tiny::tiny_elf(b"x"),
        kaos_vmm::MAX_VCPUS + 1,
        Vec::new(),
    );
    assert!(matches!(result, Err(VmError::Vcpus(9))), "{result:?}");
}
