use super::*;
use kaos_protocol::{Ipv4Cidr, PublishSpec, truncated};

const KEY: [u8; 32] = [7; 32];

fn vlan(id: u16, pool: Option<(u8, u8)>) -> VlanSpec {
    let mut dns = heapless::Vec::new();
    dns.push(Ipv4Addr::new(9, 9, 9, 9)).expect("room");
    VlanSpec {
        id,
        subnet: Ipv4Cidr {
            addr: [10, 0, 10, 0],
            prefix: 24,
        },
        gateway: Some(Ipv4Addr::new(10, 0, 10, 1)),
        pool: pool.map(|(a, b)| (Ipv4Addr::new(10, 0, 10, a), Ipv4Addr::new(10, 0, 10, b))),
        dns,
    }
}

fn nic(vlan: u16, ip: Option<u8>) -> NicSpec {
    NicSpec {
        vlan,
        ipv4: ip.map(|d| Ipv4Addr::new(10, 0, 10, d)),
        publish: heapless::Vec::new(),
    }
}

fn lease(vm: &str, r: &NicRecord) -> Lease {
    Lease {
        vlan: r.vlan,
        ipv4: r.ipv4,
        vm: vm.to_owned(),
        nic: 0,
        mac: r.mac,
    }
}

/// Assigns one VM's NICs and records its leases, as a create would.
fn create(
    vm: &str,
    nics: &[NicSpec],
    vlans: &[VlanSpec],
    leases: &mut Vec<Lease>,
) -> Result<Vec<NicRecord>, Refusal> {
    let got = assign(&KEY, vm, nics, vlans, leases)?;
    leases.extend(got.iter().map(|r| lease(vm, r)));
    Ok(got)
}

#[test]
fn the_pool_hands_out_its_lowest_free_address_skipping_the_gateway() {
    let vlans = [vlan(10, None)];
    let mut leases = Vec::new();
    let a = create("a", &[nic(10, None)], &vlans, &mut leases).expect("a");
    let b = create("b", &[nic(10, None)], &vlans, &mut leases).expect("b");
    assert_eq!(
        a[0].ipv4,
        Ipv4Addr::new(10, 0, 10, 2),
        "10.0.10.1 is the gateway"
    );
    assert_eq!(b[0].ipv4, Ipv4Addr::new(10, 0, 10, 3));
    // Two NICs of one VM on one VLAN get two addresses.
    let c = create("c", &[nic(10, None), nic(10, None)], &vlans, &mut leases).expect("c");
    assert_eq!(c[0].ipv4, Ipv4Addr::new(10, 0, 10, 4));
    assert_eq!(c[1].ipv4, Ipv4Addr::new(10, 0, 10, 5));
    // Releasing a's lease (destroy) makes its address the lowest free one again.
    leases.retain(|l| l.vm != "a");
    let d = create("d", &[nic(10, None)], &vlans, &mut leases).expect("d");
    assert_eq!(d[0].ipv4, Ipv4Addr::new(10, 0, 10, 2));
}

#[test]
fn an_exhausted_pool_is_refused_by_name() {
    let vlans = [vlan(10, Some((100, 101)))];
    let mut leases = Vec::new();
    create("a", &[nic(10, None)], &vlans, &mut leases).expect("a");
    create("b", &[nic(10, None)], &vlans, &mut leases).expect("b");
    let err = create("c", &[nic(10, None)], &vlans, &mut leases).expect_err("full");
    assert_eq!(err.code, ErrorCode::Conflict);
    assert!(err.message.contains("exhausted"), "{}", err.message);
    // A fixed address outside the pool (but inside the subnet) still works.
    let d = create("d", &[nic(10, Some(200))], &vlans, &mut leases).expect("fixed");
    assert_eq!(d[0].ipv4, Ipv4Addr::new(10, 0, 10, 200));
}

#[test]
fn fixed_addresses_are_checked() {
    let vlans = [vlan(10, None)];
    let mut leases = Vec::new();
    create("a", &[nic(10, Some(50))], &vlans, &mut leases).expect("a");
    for (ip, code, why) in [
        (Some(50), ErrorCode::Conflict, "held by VM a"),
        (Some(1), ErrorCode::InvalidArgument, "gateway"),
        (Some(0), ErrorCode::InvalidArgument, "network or broadcast"),
        (
            Some(255),
            ErrorCode::InvalidArgument,
            "network or broadcast",
        ),
    ] {
        let err = create("b", &[nic(10, ip)], &vlans, &mut leases).expect_err(why);
        assert_eq!(
            (err.code, err.message.contains(why)),
            (code, true),
            "{}",
            err.message
        );
    }
    let outside = NicSpec {
        ipv4: Some(Ipv4Addr::new(10, 0, 11, 5)),
        ..nic(10, None)
    };
    let err = create("b", &[outside], &vlans, &mut leases).expect_err("outside");
    assert!(
        err.message.contains("outside the VLAN's subnet"),
        "{}",
        err.message
    );
    let err = create(
        "b",
        &[nic(10, Some(60)), nic(10, Some(60))],
        &vlans,
        &mut leases,
    )
    .expect_err("twice");
    assert!(
        err.message.contains("another NIC of this VM"),
        "{}",
        err.message
    );
    let err = create("b", &[nic(11, None)], &vlans, &mut leases).expect_err("no VLAN");
    assert_eq!(err.code, ErrorCode::NotFound);
    assert!(
        err.message.contains("VLAN 11 does not exist"),
        "{}",
        err.message
    );
    assert_eq!(leases.len(), 1, "refusals hold nothing");
}

#[test]
fn macs_are_stable_local_unicast_and_unique() {
    let mac = derive_mac(&KEY, "web-1", 0, 0);
    assert_eq!(mac, derive_mac(&KEY, "web-1", 0, 0), "stable");
    assert_eq!(mac[0], 0x02, "locally administered unicast");
    assert_ne!(mac, derive_mac(&KEY, "web-1", 1, 0), "per NIC");
    assert_ne!(mac, derive_mac(&KEY, "web-2", 0, 0), "per VM");
    assert_ne!(mac, derive_mac(&[8; 32], "web-1", 0, 0), "per host");
    // A MAC someone holds (here: planted) moves the new NIC to the next attempt.
    let vlans = [vlan(10, None)];
    let planted = Lease {
        vlan: 10,
        ipv4: Ipv4Addr::new(10, 0, 10, 99),
        vm: "other".into(),
        nic: 0,
        mac,
    };
    let got = assign(&KEY, "web-1", &[nic(10, None)], &vlans, &[planted]).expect("assigns");
    assert_eq!(got[0].mac, derive_mac(&KEY, "web-1", 0, 1));
    // Many VMs: every MAC distinct.
    let mut leases = Vec::new();
    for i in 0..200 {
        create(&format!("vm-{i}"), &[nic(10, None)], &vlans, &mut leases).expect("fits");
    }
    let macs: BTreeSet<[u8; 6]> = leases.iter().map(|l| l.mac).collect();
    assert_eq!(macs.len(), 200);
}

#[test]
fn port_zero_cannot_be_published() {
    let mut n = nic(10, None);
    n.publish
        .push(PublishSpec {
            protocol: Transport::Tcp,
            port: 0,
        })
        .expect("room");
    let err = assign(&KEY, "a", &[n], &[vlan(10, None)], &[]).expect_err("port 0");
    assert_eq!(err.code, ErrorCode::InvalidArgument);
}

#[test]
fn the_guest_is_told_its_address_in_the_kernels_ip_syntax() {
    let v = vlan(10, None);
    let info = NicInfo {
        vlan: 10,
        mac: [2, 0, 0, 0, 0, 1],
        ipv4: Ipv4Addr::new(10, 0, 10, 2),
        prefix: 24,
        gateway: v.gateway,
    };
    assert_eq!(
        guest_cmdline("web-1", &info, &v),
        "ip=10.0.10.2::10.0.10.1:255.255.255.0:web-1:eth0:off:9.9.9.9"
    );
    let bare = VlanSpec {
        gateway: None,
        dns: heapless::Vec::new(),
        ..v
    };
    let info = NicInfo {
        gateway: None,
        ..info
    };
    assert_eq!(
        guest_cmdline("db", &info, &bare),
        "ip=10.0.10.2:::255.255.255.0:db:eth0:off"
    );
}

#[test]
fn stored_rules_become_switch_rules_in_id_order() {
    let rule = |scope, protocol, ports, action| RuleSpec {
        scope,
        direction: RuleDirection::In,
        protocol,
        ports,
        peer: Some(Ipv4Cidr {
            addr: [192, 168, 1, 7],
            prefix: 24,
        }),
        action,
    };
    let web = || RuleScope::Vm(truncated("web"));
    let rules = vec![
        (9, rule(web(), RuleProtocol::Any, None, RuleAction::Deny)),
        (
            3,
            rule(web(), RuleProtocol::Tcp, Some((80, 81)), RuleAction::Allow),
        ),
        (
            4,
            rule(
                RuleScope::Vlan(10),
                RuleProtocol::Icmp,
                None,
                RuleAction::Allow,
            ),
        ),
    ];
    let own = vm_rules(&rules, "web");
    assert_eq!(own.len(), 2);
    assert_eq!(
        own[0].ports,
        switch::PortRange {
            first: 80,
            last: 81
        }
    );
    assert_eq!(own[0].action, switch::Action::Allow, "id 3 before id 9");
    assert_eq!(own[1].ports, switch::PortRange::ALL);
    assert_eq!(
        own[0].remote,
        switch::Cidr::new(Ipv4Addr::new(192, 168, 1, 0), 24).expect("valid")
    );
    let vlan10 = switch_rules(&rules, 10);
    assert_eq!(vlan10.len(), 1);
    assert_eq!(vlan10[0].protocol, switch::Protocol::Icmp);
    assert!(switch_rules(&rules, 11).is_empty());
}
