//! A hand-made guest on this machine's own `/dev/kvm` reads the first virtio-mmio window
//! through real MMIO exits and prints what it finds on COM1.
//! Skipped, with the reason printed, where `/dev/kvm` cannot be opened.

mod common;

use common::code::{map_window, print_read, write32};
use common::{TEST_DEVICE_TYPE, TestDevice};
use kaos_vmm::virtio::{VirtioDevice, WINDOW};
use kaos_vmm::{ExitReason, Vm, VmConfig, VmError, tiny};

fn run(
    name: &str,
    code: &[u8],
    devices: Vec<Box<dyn VirtioDevice>>,
) -> Result<(ExitReason, String), VmError> {
    let path =
        tiny::write_guest(name, &tiny::tiny_elf_with_code(code)).expect("write the guest file");
    let config = VmConfig {
        kernel: path.to_string_lossy().into_owned(),
        initrd: Vec::new(),
        vcpus: 1,
        memory: 64 << 20,
        cmdline: "console=ttyS0".into(),
    };
    let vm = Vm::with_devices(&config, Vec::new(), devices);
    std::fs::remove_file(&path).ok();
    let mut vm = vm?;
    let reason = vm.run();
    let ring = vm.console_ring();
    let console = ring.lock().map(|r| r.contents()).unwrap_or_default();
    Ok((reason, String::from_utf8_lossy(&console).into_owned()))
}

/// Magic, version, device ID; then `Status` written and read back; then the next window, which
/// has no device and so reads all ones as before; then a reset.
fn guest_code() -> Vec<u8> {
    let window = u32::try_from(WINDOW).expect("4 KiB");
    let mut code = map_window();
    for offset in [0x000, 0x004, 0x008] {
        code.extend(print_read(offset));
    }
    code.extend(write32(0x070, 1));
    code.extend(print_read(0x070));
    code.extend(print_read(window));
    code.extend(tiny::tiny_code(b"\n"));
    code
}

#[test]
fn a_guest_reads_the_virtio_registers_through_mmio_exits() -> Result<(), VmError> {
    if !tiny::kvm_usable("a_guest_reads_the_virtio_registers_through_mmio_exits") {
        return Ok(());
    }
    let (device, _) = TestDevice::new();
    let (reason, console) = run("virtio-read", &guest_code(), vec![Box::new(device)])?;
    assert_eq!(reason, ExitReason::Reset, "console: {console:?}");
    let id = format!("{TEST_DEVICE_TYPE:08X}");
    assert_eq!(
        console,
        format!("74726976 00000002 {id} 00000001 FFFFFFFF \n")
    );
    Ok(())
}

#[test]
fn without_devices_the_window_reads_all_ones() -> Result<(), VmError> {
    if !tiny::kvm_usable("without_devices_the_window_reads_all_ones") {
        return Ok(());
    }
    let (reason, console) = run("virtio-none", &guest_code(), Vec::new())?;
    assert_eq!(reason, ExitReason::Reset, "console: {console:?}");
    assert_eq!(console, format!("{} \n", ["FFFFFFFF"; 5].join(" ")));
    Ok(())
}

#[test]
fn too_many_devices_are_refused_before_kvm() {
    let devices: Vec<Box<dyn VirtioDevice>> = (0..=kaos_vmm::virtio::GSIS.len())
        .map(|_| Box::new(TestDevice::new().0) as Box<dyn VirtioDevice>)
        .collect();
    let result = run("virtio-many", &guest_code(), devices);
    assert!(
        matches!(result, Err(VmError::Virtio(_))),
        "{:?}",
        result.map(|r| r.1)
    );
}
