//! Tier 3: the `generic-x86_64` image (real-hardware drivers) on emulated server hardware.
//!
//! The qemu-x86_64 image only has virtio drivers; these tests boot `$KAOS_IMAGE_GENERIC` with
//! the NICs and disk controllers of real servers instead (Intel e1000e / e1000 NICs, NVMe and
//! AHCI disks) and check, through the management port, that the host got its address on that NIC
//! and sees the disk under the name its driver gives it. QEMU 7.2 has no igb model, so the
//! second test uses the older e1000 (82540EM) instead.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use kaos_protocol::{DiskState, Request, Response};
use kaos_qemu_tests::disk::DiskImage;
use kaos_qemu_tests::qemu::{DiskBus, QemuConfig, QemuHost};
use kaos_qemu_tests::skip;

/// TCG boots in a few seconds; CI machines are slower and busier.
const BOOT: Duration = Duration::from_secs(120);

/// The generic image: `$KAOS_IMAGE_GENERIC`, set by `cargo xtask test`.
fn image() -> Result<PathBuf, String> {
    let path = std::env::var_os("KAOS_IMAGE_GENERIC").ok_or(
        "KAOS_IMAGE_GENERIC is not set: build it with `cargo xtask image --profile \
         generic-x86_64` or run the tests through `cargo xtask test`",
    )?;
    let path = PathBuf::from(path);
    if !path.is_file() {
        return Err(format!(
            "KAOS_IMAGE_GENERIC={} is not a file",
            path.display()
        ));
    }
    if Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_err()
    {
        return Err("qemu-system-x86_64 is not installed (Debian package qemu-system-x86)".into());
    }
    Ok(path)
}

/// Boots the generic image with `nic_model` (bound by the kernel driver `driver`) as the
/// management NIC and one blank 64 MiB disk on `disk_bus`, checks the management link and that
/// the store sees the disk as `disk_name`.
fn boots_on(test: &str, nic_model: &str, driver: &str, disk_bus: DiskBus, disk_name: &str) {
    let image = match image() {
        Ok(image) => image,
        Err(reason) => return skip(test, &reason),
    };
    let disk = DiskImage::blank("generic", 64).expect("disk");
    let mut config = QemuConfig::new(&image).expect("config");
    config.append = format!("kaos.hostname={test}");
    config.nic_model = nic_model.into();
    config.disk_bus = disk_bus;
    config.disks = vec![disk.path().to_owned()];
    // The point of these tests is the real-hardware NIC driver: the guest must get the NIC
    // model asked for, not the harness's default virtio-net.
    let device = format!("{nic_model},netdev=mgmt");
    assert!(
        config.command().get_args().any(|a| a == device.as_str()),
        "QemuConfig::command does not attach the management NIC as `-device {device}`: \
         {:?}",
        config.command()
    );
    let host = QemuHost::launch(&config).expect("launch QEMU");

    let mut client = host.wait_ready(BOOT).expect("ready");
    let Response::Status(s) = client.request(Request::Status).expect("status") else {
        panic!("no status")
    };
    assert_eq!(s.hostname.as_str(), test);
    // QEMU user networking's DHCP server: 10.0.2.15/24 via 10.0.2.2.
    assert!(s.mgmt.dhcp, "{:?}", s.mgmt);
    assert_eq!(
        s.mgmt.address.map(|a| a.to_string()).as_deref(),
        Some("10.0.2.15/24"),
        "{:?}\n{}",
        s.mgmt,
        host.tail()
    );
    assert_eq!(s.mgmt.gateway, Some([10, 0, 2, 2]));
    // `-nodefaults` gives the guest exactly one NIC, of `nic_model` (checked above): a DHCP
    // lease on eth0 means its driver bound and works.
    assert_eq!(s.mgmt.interface.as_str(), "eth0", "{:?}", s.mgmt);
    // And the driver says so when it binds, at probe time (`e1000e 0000:00:02.0 eth0: ...`,
    // long before the link is up); the serial console may trail the network, so wait for it.
    let bound = format!("{driver} 0000:");
    assert!(
        host.wait_console(Duration::from_secs(15), |c| c.contains(&bound)),
        "no `{bound}` line: {driver} did not bind the management NIC\n{}",
        host.tail()
    );

    let report = host.store_report(BOOT).expect("store report");
    assert_eq!(report.disks.len(), 1, "{report:?}");
    let found = &report.disks[0];
    assert_eq!(found.name.as_str(), disk_name, "{report:?}");
    assert_eq!(found.state, DiskState::Blank, "{report:?}");
    assert_eq!(found.size_bytes, 64 * 1024 * 1024, "{report:?}");
}

#[test]
fn e1000e_nic_and_nvme_disk() {
    boots_on(
        "generic-e1000e-nvme",
        "e1000e",
        "e1000e",
        DiskBus::Nvme,
        "nvme0n1",
    );
}

#[test]
fn e1000_nic_and_ahci_sata_disk() {
    boots_on("generic-e1000-ahci", "e1000", "e1000", DiskBus::Ahci, "sda");
}
