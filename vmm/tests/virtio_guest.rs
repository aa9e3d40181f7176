//! A hand-made guest on this machine's own `/dev/kvm` reads the first virtio-mmio window
//! through real MMIO exits and prints what it finds on COM1.
//! Skipped, with the reason printed, where `/dev/kvm` cannot be opened.

mod common;

use common::{TEST_DEVICE_TYPE, TestDevice};
use kaos_vmm::virtio::{MMIO_BASE, VirtioDevice, WINDOW};
use kaos_vmm::{ExitReason, Vm, VmConfig, VmError, tiny};

/// A page directory for the fourth GiB, which the boot page tables leave unmapped.
const PD_4TH_GIB: u32 = 0xc000;
/// The boot page-directory-pointer table (`kaos_vmm::boot::PDPTE_ADDR`).
const PDPTE: u32 = 0xa000;

/// Maps the 2 MiB page at `MMIO_BASE` (uncached), puts `MMIO_BASE` in `rbx` and COM1 in `dx`.
fn map_window() -> Vec<u8> {
    let base = u32::try_from(MMIO_BASE).expect("the windows are below 4 GiB");
    let index = (base >> 21) & 511;
    let mut code = vec![0xb8]; // mov eax, PD | present | writable
    code.extend_from_slice(&(PD_4TH_GIB | 3).to_le_bytes());
    code.extend_from_slice(&[0x89, 0x04, 0x25]); // mov [PDPTE + 3 * 8], eax
    code.extend_from_slice(&(PDPTE + 3 * 8).to_le_bytes());
    code.push(0xb8); // mov eax, base | PS | PCD | PWT | writable | present
    code.extend_from_slice(&(base | 0x9b).to_le_bytes());
    code.extend_from_slice(&[0x89, 0x04, 0x25]); // mov [PD + index * 8], eax
    code.extend_from_slice(&(PD_4TH_GIB + index * 8).to_le_bytes());
    code.extend_from_slice(&[0x0f, 0x20, 0xd8, 0x0f, 0x22, 0xd8]); // mov rax,cr3; mov cr3,rax
    code.push(0xbb); // mov ebx, base
    code.extend_from_slice(&base.to_le_bytes());
    code.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03]); // mov dx, 0x3f8
    code
}

/// `mov esi, [rbx + offset]`, then prints esi as eight upper-case hex digits and a space.
fn print_read(offset: u32) -> Vec<u8> {
    let mut code = vec![0x8b, 0xb3]; // mov esi, [rbx + disp32]
    code.extend_from_slice(&offset.to_le_bytes());
    code.extend_from_slice(&[0xb9, 8, 0, 0, 0]); // mov ecx, 8
    code.extend_from_slice(&[
        0xc1, 0xc6, 0x04, // rol esi, 4
        0x89, 0xf0, // mov eax, esi
        0x24, 0x0f, // and al, 0xf
        0x04, 0x30, // add al, '0'
        0x3c, 0x39, // cmp al, '9'
        0x76, 0x02, // jbe +2
        0x04, 0x07, // add al, 'A' - '9' - 1
        0xee, // out dx, al
        0xff, 0xc9, // dec ecx
        0x75, 0xec, // jnz back to rol (-20)
        0xb0, b' ', 0xee, // mov al, ' '; out dx, al
    ]);
    code
}

/// `mov dword [rbx + offset], value`.
fn write32(offset: u32, value: u32) -> Vec<u8> {
    let mut code = vec![0xc7, 0x83];
    code.extend_from_slice(&offset.to_le_bytes());
    code.extend_from_slice(&value.to_le_bytes());
    code
}

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
