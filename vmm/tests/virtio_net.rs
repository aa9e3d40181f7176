//! A guest NIC whose backend is the real switch: `kaos_vswitch`'s control server in this
//! process hands out a vhost-user connection, the VMM's `VhostUserNet` negotiates on it (owner,
//! features, protocol features), and a hand-made guest on this machine's `/dev/kvm` reads the
//! device through MMIO exits: its type, the features it offers, and the MAC and link status in
//! its configuration space. Building the VM also registers the queues' kicks as ioeventfds.
//! Skipped, with the reason printed, where `/dev/kvm` cannot be opened.

mod common;

use common::code::{map_window, print_read, write32};
use kaos_net::switch::SwitchConfig;
use kaos_vmm::virtio::net::VhostUserNet;
use kaos_vmm::virtio::{F_VERSION_1, VirtioDevice};
use kaos_vmm::{ExitReason, Vm, VmConfig, tiny};
use kaos_vswitch::control::server::Server;
use kaos_vswitch::control::{self, Controller, GuestPortSpec};
use kaos_vswitch::fabric::Fabric;
use virtio_bindings::virtio_net as vnet;

const MAC: [u8; 6] = [0x02, 0x4b, 0x61, 0x4f, 0x53, 0x01];

fn port(ctl: &mut Controller) -> std::os::unix::net::UnixStream {
    ctl.add_guest(&GuestPortSpec {
        port: 1,
        name: "nic-test/0".into(),
        vlan: 10,
        mac: MAC,
        ipv4: std::net::Ipv4Addr::new(10, 0, 10, 2),
        published: Vec::new(),
        rules: Vec::new(),
    })
    .expect("a port")
}

#[test]
fn a_guest_sees_the_switch_backed_nic() {
    if !tiny::kvm_usable("a_guest_sees_the_switch_backed_nic") {
        return;
    }
    let (host_end, switch_end) = control::socketpair().expect("socketpair");
    let fabric = Fabric::new(SwitchConfig::default(), 3);
    let server = std::thread::spawn(move || Server::new(switch_end, fabric).serve());
    let mut ctl = Controller::from_fd(host_end).expect("hello");
    let nic = VhostUserNet::connect(port(&mut ctl), MAC).expect("vhost-user negotiation");
    let offered = nic.features();
    assert_ne!(offered & F_VERSION_1, 0);
    for bit in [
        vnet::VIRTIO_NET_F_MAC,
        vnet::VIRTIO_NET_F_STATUS,
        vnet::VIRTIO_NET_F_MRG_RXBUF,
        vnet::VIRTIO_NET_F_CSUM,
        vnet::VIRTIO_NET_F_GUEST_CSUM,
    ] {
        assert_ne!(offered & (1 << bit), 0, "feature bit {bit} offered");
    }
    assert_eq!(
        offered & (1 << 30),
        0,
        "the vhost-user protocol bit stays between VMM and switch"
    );

    let mut code = map_window();
    code.extend(print_read(0x008)); // DeviceID
    code.extend(write32(0x014, 0)); // DeviceFeaturesSel = 0
    code.extend(print_read(0x010));
    code.extend(write32(0x014, 1));
    code.extend(print_read(0x010));
    code.extend(print_read(0x100)); // MAC bytes 0-3
    code.extend(print_read(0x104)); // MAC bytes 4-5, status
    code.extend(tiny::tiny_code(b"\n"));
    let path =
        tiny::write_guest("virtio-net", &tiny::tiny_elf_with_code(&code)).expect("write the guest");
    let config = VmConfig {
        kernel: path.to_string_lossy().into_owned(),
        initrd: Vec::new(),
        vcpus: 1,
        memory: 64 << 20,
        cmdline: "console=ttyS0".into(),
    };
    let devices: Vec<Box<dyn VirtioDevice>> = vec![Box::new(nic)];
    let vm = Vm::with_devices(&config, Vec::new(), devices);
    std::fs::remove_file(&path).ok();
    let mut vm = vm.expect("the VM builds, ioeventfds and all");
    assert!(
        !vm.socket_fds().is_empty(),
        "the vhost-user socket is listed for seccomp"
    );
    let reason = vm.run();
    let console = vm
        .console_ring()
        .lock()
        .map(|r| String::from_utf8_lossy(&r.contents()).into_owned())
        .unwrap_or_default();
    assert_eq!(reason, ExitReason::Reset, "console: {console:?}");
    let words: Vec<u32> = console
        .split_whitespace()
        .map(|w| u32::from_str_radix(w, 16).expect("hex"))
        .collect();
    let low = u64::from(words[1]);
    let high = u64::from(words[2]) << 32;
    assert_eq!(
        (words[0], low | high),
        (1, offered),
        "a network card offering what the VMM negotiated: {console}"
    );
    let mac_lo = u32::from_le_bytes([MAC[0], MAC[1], MAC[2], MAC[3]]);
    let mac_hi = u32::from_le_bytes([MAC[4], MAC[5], 1, 0]);
    assert_eq!((words[3], words[4]), (mac_lo, mac_hi), "MAC, link up");
    drop(vm);
    drop(ctl);
    server.join().expect("server thread").expect("served");
}
