//! The switch as the VMM meets it: a `Controller` talking to a `Server` over a real
//! `SOCK_SEQPACKET` pair, guest ports added through it, and for each one a real vhost-user
//! frontend (`vhost::vhost_user::Frontend`) on the connection `add_guest` returned, with
//! memfd guest memory and kick/call eventfds. Frames go in by kicking, come out by calls.

use std::os::fd::AsRawFd;
use std::time::Duration;

use kaos_net::switch::SwitchConfig;
use kaos_net::switch::fixture::{self, A, B, BROADCAST, C, Host};
use kaos_vswitch::control::server::Server;
use kaos_vswitch::control::{self, Controller, GuestPortSpec};
use kaos_vswitch::driver::Guest;
use kaos_vswitch::fabric::Fabric;
use kaos_vswitch::vnet::{self, NetHdr};
use smoltcp::wire::ArpOperation;
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{GuestAddress, GuestMemory, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

const QUEUE: u16 = 256;

/// A guest connected through vhost-user.
struct Vm {
    guest: Guest,
    _frontend: Frontend,
    kicks: [EventFd; 2],
    calls: [EventFd; 2],
}

impl Vm {
    fn connect(ctl: &mut Controller, port: u32, host: Host) -> Vm {
        let spec = GuestPortSpec {
            port,
            name: format!("vm-{port}/0"),
            vlan: host.vlan,
            mac: host.mac,
            ipv4: host.ip,
            published: Vec::new(),
            rules: Vec::new(),
        };
        let stream = ctl.add_guest(&spec).expect("the switch takes the port");
        let guest = Guest::new(QUEUE, 2048, 2048).expect("guest memory");
        let mut fe = Frontend::from_stream(stream, 2);
        fe.set_owner().expect("SET_OWNER");
        let features = fe.get_features().expect("GET_FEATURES");
        assert_eq!(features, vnet::FEATURES);
        // The driver emulation does not maintain used_event, so EVENT_IDX stays off here.
        fe.set_features(features & !(1 << 29))
            .expect("SET_FEATURES");
        let proto = fe.get_protocol_features().expect("GET_PROTOCOL_FEATURES");
        fe.set_protocol_features(proto & VhostUserProtocolFeatures::REPLY_ACK)
            .expect("SET_PROTOCOL_FEATURES");
        let region = guest.mem.find_region(GuestAddress(0)).expect("region 0");
        let uaddr = guest.mem.get_host_address(GuestAddress(0)).expect("mapped") as u64;
        fe.set_mem_table(&[VhostUserMemoryRegionInfo {
            guest_phys_addr: 0,
            memory_size: region.len(),
            userspace_addr: uaddr,
            mmap_offset: 0,
            mmap_handle: guest.memfd.as_raw_fd(),
        }])
        .expect("SET_MEM_TABLE");
        let kicks = [
            EventFd::new(EFD_NONBLOCK).expect("eventfd"),
            EventFd::new(EFD_NONBLOCK).expect("eventfd"),
        ];
        let calls = [
            EventFd::new(EFD_NONBLOCK).expect("eventfd"),
            EventFd::new(EFD_NONBLOCK).expect("eventfd"),
        ];
        for (i, q) in [&guest.rx, &guest.tx].into_iter().enumerate() {
            fe.set_vring_num(i, QUEUE).expect("SET_VRING_NUM");
            let config = VringConfigData {
                queue_max_size: QUEUE,
                queue_size: QUEUE,
                flags: 0,
                desc_table_addr: uaddr + q.desc.0,
                used_ring_addr: uaddr + q.used.0,
                avail_ring_addr: uaddr + q.avail.0,
                log_addr: None,
            };
            fe.set_vring_addr(i, &config).expect("SET_VRING_ADDR");
            fe.set_vring_base(i, 0).expect("SET_VRING_BASE");
            fe.set_vring_call(i, &calls[i]).expect("SET_VRING_CALL");
            fe.set_vring_kick(i, &kicks[i]).expect("SET_VRING_KICK");
            fe.set_vring_enable(i, true).expect("SET_VRING_ENABLE");
        }
        let mut vm = Vm {
            guest,
            _frontend: fe,
            kicks,
            calls,
        };
        vm.guest.post_rx(64);
        vm.kicks[0].write(1).expect("kick RX");
        vm
    }

    fn send(&mut self, frame: &[u8]) {
        self.guest
            .send(NetHdr::default(), frame)
            .expect("a TX descriptor");
        self.kicks[1].write(1).expect("kick TX");
    }

    /// Waits up to `wait` for an RX interrupt, then takes what arrived.
    fn receive(&mut self, wait: Duration) -> Vec<Vec<u8>> {
        // SAFETY: the eventfd outlives this borrow of its descriptor.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.calls[0].as_raw_fd()) };
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        let t = rustix::event::Timespec::try_from(wait).expect("a short wait");
        let _ = rustix::event::poll(&mut fds, Some(&t));
        let _ = self.calls[0].read();
        std::iter::from_fn(|| self.guest.recv())
            .map(|m| m.2)
            .collect()
    }
}

fn switch() -> (Controller, std::thread::JoinHandle<std::io::Result<()>>) {
    let (host_end, switch_end) = control::socketpair().expect("socketpair");
    let fabric = Fabric::new(SwitchConfig::default(), 7);
    let server = std::thread::spawn(move || Server::new(switch_end, fabric).serve());
    (Controller::from_fd(host_end).expect("hello"), server)
}

#[test]
fn guests_connected_through_vhost_user_talk_within_their_vlan() {
    let (mut ctl, server) = switch();
    let mut a = Vm::connect(&mut ctl, 1, A);
    let mut b = Vm::connect(&mut ctl, 2, B);
    let mut c = Vm::connect(&mut ctl, 3, C);

    let ask = fixture::arp(
        (A.mac, BROADCAST),
        ArpOperation::Request,
        (A.mac, A.ip),
        B.ip,
    );
    a.send(&ask);
    assert_eq!(b.receive(Duration::from_secs(5)), std::slice::from_ref(&ask));
    let udp = fixture::udp_frame(B, A, (53, 4000), b"answer");
    b.send(&udp);
    assert_eq!(a.receive(Duration::from_secs(5)), [udp]);
    assert!(
        c.receive(Duration::from_millis(200)).is_empty(),
        "VLAN 20 saw VLAN 10"
    );

    let forged = fixture::udp_frame(Host { ip: C.ip, ..A }, B, (1, 2), b"x");
    a.send(&forged);
    a.send(&ask);
    assert_eq!(b.receive(Duration::from_secs(5)), [ask]);
    let stats = ctl.stats().expect("stats");
    let port_a = stats
        .ports
        .iter()
        .find(|p| p.port == Some(1))
        .expect("port 1");
    assert_eq!(port_a.name, "vm-1/0");
    assert_eq!(port_a.rx_frames, 3);
    assert!(
        port_a.drops.contains(&("spoofed-ipv4".to_owned(), 1)),
        "{port_a:?}"
    );
    let vlan10 = stats.vlans.iter().find(|v| v.vlan == 10).expect("VLAN 10");
    assert_eq!(vlan10.frames, 3);

    ctl.remove_port(2).expect("remove");
    assert!(ctl.remove_port(2).is_err(), "removed twice");
    drop(ctl);
    server
        .join()
        .expect("server thread")
        .expect("served until the host hung up");
}

#[test]
fn bad_requests_are_refused_and_the_switch_goes_on() {
    let (mut ctl, server) = switch();
    let bad_vlan = GuestPortSpec {
        port: 1,
        name: "x".into(),
        vlan: 4095,
        mac: A.mac,
        ipv4: A.ip,
        published: Vec::new(),
        rules: Vec::new(),
    };
    let e = ctl.add_guest(&bad_vlan).expect_err("VLAN 4095");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    let long_name = GuestPortSpec {
        name: "n".repeat(65),
        vlan: 10,
        ..bad_vlan.clone()
    };
    assert!(ctl.add_guest(&long_name).is_err());
    let bad_mac = GuestPortSpec {
        mac: BROADCAST,
        vlan: 10,
        ..bad_vlan
    };
    assert!(ctl.add_guest(&bad_mac).is_err());
    assert!(ctl.set_port_rules(9, &[]).is_err());
    ctl.set_vlan_rules(10, &[]).expect("empty rules");
    assert!(ctl.stats().expect("stats").ports.is_empty());
    drop(ctl);
    server.join().expect("server thread").expect("served");
}
