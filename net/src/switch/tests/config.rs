//! Configuration checked at the boundary: nothing changes when it is refused.

use core::net::Ipv4Addr;

use super::super::fixture::{A, B, C, Host, guest};
use super::super::{
    Action, Cidr, ConfigError, Direction, MAX_PORTS, PortRange, Protocol, Rule, Switch,
    SwitchConfig, UplinkMode, VlanSet,
};
use super::super::{PortKind, Published, Transport};
use super::{default_lab, v};

#[test]
fn guests_need_usable_distinct_addresses() {
    let mut lab = default_lab();
    let cases = [
        (
            Host {
                mac: [3, 0, 0, 0, 0, 1],
                ..A
            },
            ConfigError::BadMac([3, 0, 0, 0, 0, 1]),
        ),
        (Host { mac: [0; 6], ..A }, ConfigError::BadMac([0; 6])),
        (
            Host {
                ip: Ipv4Addr::UNSPECIFIED,
                mac: [2, 1, 1, 1, 1, 1],
                ..A
            },
            ConfigError::BadIpv4(Ipv4Addr::UNSPECIFIED),
        ),
        (
            Host {
                ip: Ipv4Addr::new(224, 0, 0, 1),
                mac: [2, 1, 1, 1, 1, 1],
                ..A
            },
            ConfigError::BadIpv4(Ipv4Addr::new(224, 0, 0, 1)),
        ),
        (
            Host {
                ip: Ipv4Addr::new(10, 0, 10, 99),
                ..A
            },
            ConfigError::DuplicateMac {
                vlan: v(10),
                mac: A.mac,
            },
        ),
        (
            Host {
                mac: [2, 1, 1, 1, 1, 1],
                ..B
            },
            ConfigError::DuplicateIpv4 {
                vlan: v(10),
                ip: B.ip,
            },
        ),
    ];
    for (host, error) in cases {
        assert_eq!(lab.switch.add_port(guest(host, Vec::new())), Err(error));
    }
    assert_eq!(lab.switch.ports().count(), 4);
    // The same MAC and address on another VLAN are another L2 domain's business.
    let twin = Host { vlan: 30, ..A };
    assert!(lab.switch.add_port(guest(twin, Vec::new())).is_ok());
    let published = vec![
        Published {
            transport: Transport::Tcp,
            port: 1
        };
        65
    ];
    assert_eq!(
        lab.switch
            .add_port(guest(Host { vlan: 40, ..C }, published)),
        Err(ConfigError::TooManyPublished)
    );
}

#[test]
fn trunks_carry_something_and_rules_make_sense() {
    let mut switch = Switch::new(SwitchConfig::default(), 1);
    let empty = PortKind::Uplink(UplinkMode::Trunk {
        allowed: VlanSet::new(),
    });
    assert_eq!(switch.add_port(empty), Err(ConfigError::EmptyTrunk));
    let a = switch.add_port(guest(A, Vec::new())).expect("valid guest");
    let trunk = switch
        .add_port(PortKind::Uplink(UplinkMode::Access { vlan: v(10) }))
        .expect("valid uplink");
    let icmp_port = Rule {
        direction: Direction::In,
        protocol: Protocol::Icmp,
        ports: PortRange::one(7),
        remote: Cidr::ANY,
        action: Action::Allow,
    };
    assert_eq!(
        switch.set_port_rules(a, vec![icmp_port]),
        Err(ConfigError::PortsWithoutProtocol(0))
    );
    assert_eq!(
        switch.set_vlan_rules(v(10), vec![icmp_port]),
        Err(ConfigError::PortsWithoutProtocol(0))
    );
    assert_eq!(
        switch.set_port_rules(trunk, Vec::new()),
        Err(ConfigError::NotAGuest(trunk))
    );
    let ok = Rule {
        ports: PortRange::ALL,
        ..icmp_port
    };
    assert_eq!(switch.set_vlan_rules(v(99), vec![ok]), Ok(()));
    assert_eq!(switch.vlan_rules(v(99)), [ok]);
    assert_eq!(
        switch.vlans().map(|v| v.get()).collect::<Vec<_>>(),
        [10, 99]
    );
    assert_eq!(switch.set_vlan_rules(v(99), Vec::new()), Ok(()));
    assert_eq!(switch.vlans().map(|v| v.get()).collect::<Vec<_>>(), [10]);
    switch.remove_port(trunk).expect("exists");
    switch.remove_port(a).expect("exists");
    assert_eq!(switch.vlans().count(), 0, "domains go with their last port");
    assert_eq!(switch.remove_port(a), Err(ConfigError::UnknownPort(a)));
}

#[test]
fn a_switch_has_a_bounded_number_of_ports() {
    let mut switch = Switch::new(SwitchConfig::default(), 1);
    let access = || PortKind::Uplink(UplinkMode::Access { vlan: v(10) });
    let first = switch.add_port(access()).expect("room");
    for _ in 1..MAX_PORTS {
        switch.add_port(access()).expect("room");
    }
    assert_eq!(switch.add_port(access()), Err(ConfigError::TooManyPorts));
    switch.remove_port(first).expect("exists");
    assert_eq!(switch.add_port(access()), Ok(first), "a freed id is reused");
}

#[test]
fn a_trunk_takes_new_vlans_while_running() {
    use super::super::fixture::{BROADCAST, arp};
    use super::{at, send};
    use smoltcp::wire::ArpOperation;

    let mut lab = default_lab();
    let who_has = |from: Host| {
        arp(
            (from.mac, BROADCAST),
            ArpOperation::Request,
            (from.mac, from.ip),
            Ipv4Addr::new(10, 0, 20, 1),
        )
    };
    // The lab's trunk carries 10 and 20; take 20 off, then put it back with 30.
    let only_10: VlanSet = [v(10)].into_iter().collect();
    lab.switch
        .set_trunk_vlans(lab.trunk, only_10)
        .expect("a trunk");
    let c_arp = send(&mut lab.switch, lab.c, &who_has(C), at(1));
    assert_eq!(
        c_arp.dropped(),
        super::super::DropReason::NoDestination,
        "C is alone on VLAN 20 without the trunk"
    );
    let more: VlanSet = [v(10), v(20), v(30)].into_iter().collect();
    lab.switch
        .set_trunk_vlans(lab.trunk, more)
        .expect("a trunk");
    let c_arp = send(&mut lab.switch, lab.c, &who_has(C), at(2));
    assert_eq!(
        c_arp.tag_to(lab.trunk),
        super::super::Tag::Tagged(v(20)),
        "VLAN 20 is back on the trunk"
    );
    assert!(lab.switch.vlans().any(|x| x == v(30)), "a new VLAN domain");
    assert_eq!(
        lab.switch.set_trunk_vlans(lab.trunk, VlanSet::new()),
        Err(ConfigError::EmptyTrunk)
    );
    assert_eq!(
        lab.switch
            .set_trunk_vlans(lab.a, [v(10)].into_iter().collect()),
        Err(ConfigError::NotATrunk(lab.a))
    );
    let back: VlanSet = [v(10), v(20)].into_iter().collect();
    lab.switch
        .set_trunk_vlans(lab.trunk, back)
        .expect("a trunk");
    assert!(
        !lab.switch.vlans().any(|x| x == v(30)),
        "an unused VLAN's domain goes"
    );
}
