//! The switch as the VMM meets it: a `Controller` talking to a `Server` over a real
//! `SOCK_SEQPACKET` pair, guest ports added through it, and for each one a real vhost-user
//! frontend (`vhost::vhost_user::Frontend`) on the connection `add_guest` returned, with
//! memfd guest memory and kick/call eventfds. Frames go in by kicking, come out by calls.

mod common;

use std::time::Duration;

use common::vm::Vm;
use kaos_net::switch::SwitchConfig;
use kaos_net::switch::fixture::{self, A, B, BROADCAST, C, Host};
use kaos_vswitch::control::server::Server;
use kaos_vswitch::control::{self, Controller, GuestPortSpec};
use kaos_vswitch::fabric::Fabric;
use smoltcp::wire::ArpOperation;

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
    // The switch sets each port's queues up on its own threads: until B's receive queue is
    // ready a frame for B is dropped, as for a guest whose driver is still starting. Ask again
    // until one gets through.
    let mut got = Vec::new();
    for _ in 0..20 {
        a.send(&ask);
        got = b.receive(Duration::from_millis(250));
        if !got.is_empty() {
            break;
        }
    }
    assert!(!got.is_empty() && got.iter().all(|f| *f == ask), "{got:?}");
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
    let e = ctl
        .set_trunk_vlans("eth9", &[10])
        .expect_err("no such uplink");
    assert!(e.to_string().contains("no uplink eth9"), "{e}");
    ctl.set_vlan_rules(10, &[]).expect("empty rules");
    assert!(ctl.stats().expect("stats").ports.is_empty());
    drop(ctl);
    server.join().expect("server thread").expect("served");
}
