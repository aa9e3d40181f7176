//! Encoding and validation tests of protocol 1.2 (networking). The golden bytes pin the wire
//! format: if one fails, the change broke compatibility; append a variant or field instead.

use core::net::Ipv4Addr;

use super::*;
extern crate std;
use std::vec;
use std::vec::Vec as StdVec;

fn bytes<T: serde::Serialize>(msg: &T) -> StdVec<u8> {
    let mut buf = [0u8; MAX_MESSAGE];
    let n = encode_message(msg, &mut buf).expect("encodes");
    buf[..n].to_vec()
}

fn frame(request: Request) -> StdVec<u8> {
    bytes(&ClientFrame { id: 1, request })
}

fn vlan10() -> VlanSpec {
    let mut dns = heapless::Vec::new();
    dns.push(Ipv4Addr::new(1, 1, 1, 1)).expect("room");
    VlanSpec {
        id: 10,
        subnet: Ipv4Cidr {
            addr: [10, 0, 10, 0],
            prefix: 24,
        },
        gateway: Some(Ipv4Addr::new(10, 0, 10, 1)),
        pool: None,
        dns,
    }
}

#[test]
fn golden_vlan_requests() {
    // id | VlanCreate=22 | id 10 | 10.0.10.0 /24 | Some 10.0.10.1 | no pool | [1.1.1.1]
    assert_eq!(
        frame(Request::VlanCreate(vlan10())),
        [
            1, 22, 10, 10, 0, 10, 0, 24, 1, 10, 0, 10, 1, 0, 1, 1, 1, 1, 1
        ]
    );
    assert_eq!(frame(Request::VlanList), [1, 23]);
    assert_eq!(frame(Request::VlanDelete(4094)), [1, 24, 0xfe, 0x1f]);
}

#[test]
fn golden_rule_requests() {
    let rule = RuleSpec {
        scope: RuleScope::Vm(truncated("web")),
        direction: RuleDirection::In,
        protocol: RuleProtocol::Tcp,
        ports: Some((80, 443)),
        peer: Some(Ipv4Cidr {
            addr: [10, 0, 0, 0],
            prefix: 8,
        }),
        action: RuleAction::Allow,
    };
    // RuleAdd=25 | Vm=1 "web" | In=0 | Tcp=1 | Some (80, 443) | Some 10.0.0.0/8 | Allow=0
    assert_eq!(
        frame(Request::RuleAdd(rule)),
        [
            1, 25, 1, 3, b'w', b'e', b'b', 0, 1, 1, 80, 0xbb, 0x03, 1, 10, 0, 0, 0, 8, 0
        ]
    );
    let vlan_rule = RuleSpec {
        scope: RuleScope::Vlan(10),
        direction: RuleDirection::Out,
        protocol: RuleProtocol::Icmp,
        ports: None,
        peer: None,
        action: RuleAction::Deny,
    };
    assert_eq!(
        frame(Request::RuleAdd(vlan_rule)),
        [1, 25, 0, 10, 1, 3, 0, 0, 1]
    );
    assert_eq!(frame(Request::RuleList), [1, 26]);
    assert_eq!(frame(Request::RuleDelete(300)), [1, 27, 0xac, 0x02]);
    assert_eq!(
        frame(Request::NetStats(NetStatsQuery {
            ports_from: 16,
            vlans_from: 0
        })),
        [1, 28, 16, 0]
    );
}

#[test]
fn golden_vm_create_with_a_nic() {
    let mut publish = heapless::Vec::new();
    publish
        .push(PublishSpec {
            protocol: Transport::Tcp,
            port: 80,
        })
        .expect("room");
    let mut nics = heapless::Vec::new();
    nics.push(NicSpec {
        vlan: 10,
        ipv4: Some(Ipv4Addr::new(10, 0, 10, 5)),
        publish,
    })
    .expect("room");
    let spec = VmSpec {
        name: truncated("a"),
        vcpus: 1,
        memory_mib: 64,
        cmdline: truncated(""),
        platform: truncated("p"),
        restart: RestartPolicy::Never,
        nics,
    };
    // The 1.1 layout, then the NICs appended: [vlan 10, Some 10.0.10.5, [tcp 80]].
    assert_eq!(
        frame(Request::VmCreate(VmCreate { spec, start: false })),
        [
            1, 17, 1, b'a', 1, 64, 0, 1, b'p', 0, 1, 10, 1, 10, 0, 10, 5, 1, 0, 80, 0
        ]
    );
}

#[test]
fn golden_net_responses() {
    let reply = |response| {
        bytes(&ServerFrame {
            id: 1,
            last: true,
            response,
        })
    };
    let info = VlanInfo {
        spec: vlan10(),
        leases_used: 2,
        pool_size: 253,
    };
    let mut want = vec![1u8, 1, 14];
    want.extend_from_slice(&[10, 10, 0, 10, 0, 24, 1, 10, 0, 10, 1, 0, 1, 1, 1, 1, 1]);
    want.extend_from_slice(&[2, 0xfd, 0x01]);
    assert_eq!(reply(Response::Vlan(info)), want);
    let empty = Response::Vlans(VlanList {
        entries: heapless::Vec::new(),
    });
    assert_eq!(reply(empty), [1, 1, 15, 0]);
    let rules = Response::Rules(RuleList {
        entries: heapless::Vec::new(),
    });
    assert_eq!(reply(rules), [1, 1, 17, 0]);
    let mut drops = heapless::Vec::new();
    drops
        .push(DropCount {
            reason: 11,
            count: 3,
        })
        .expect("room");
    let mut vlans = heapless::Vec::new();
    vlans
        .push(VlanStats {
            vlan: 10,
            frames: 5,
            bytes: 300,
            floods: 1,
            drops,
        })
        .expect("room");
    let stats = Response::NetStats(NetStats {
        ports: heapless::Vec::new(),
        vlans,
        ports_total: 0,
        vlans_total: 1,
    });
    assert_eq!(
        reply(stats),
        [1, 1, 18, 0, 1, 10, 5, 0xac, 0x02, 1, 1, 11, 3, 0, 1]
    );
    assert_eq!(bytes(&EventKind::NetChanged), [10]);
    assert_eq!(drop_reason_name(11), Some("firewall"));
    assert_eq!(
        drop_reason_name(13),
        Some("bad-chain"),
        "the datapath's follow"
    );
    assert_eq!(drop_reason_name(22), None);
}

#[test]
fn net_requests_need_the_right_role() {
    assert_eq!(Request::VlanList.required_role(), Role::Reader);
    assert_eq!(Request::RuleList.required_role(), Role::Reader);
    assert_eq!(
        Request::NetStats(NetStatsQuery::default()).required_role(),
        Role::Reader
    );
    assert_eq!(
        Request::VlanCreate(vlan10()).required_role(),
        Role::Operator
    );
    assert_eq!(Request::VlanDelete(1).required_role(), Role::Operator);
    assert_eq!(Request::RuleDelete(1).required_role(), Role::Operator);
}

#[test]
fn full_net_messages_fit_a_frame() {
    let mut buf = [0u8; MAX_MESSAGE];
    let mut dns = heapless::Vec::new();
    while dns.push(Ipv4Addr::BROADCAST).is_ok() {}
    let info = VlanInfo {
        spec: VlanSpec {
            id: u16::MAX,
            subnet: Ipv4Cidr {
                addr: [0xff; 4],
                prefix: u8::MAX,
            },
            gateway: Some(Ipv4Addr::BROADCAST),
            pool: Some((Ipv4Addr::BROADCAST, Ipv4Addr::BROADCAST)),
            dns,
        },
        leases_used: u32::MAX,
        pool_size: u32::MAX,
    };
    let mut entries = heapless::Vec::new();
    while entries.push(info.clone()).is_ok() {}
    let vlans = ServerFrame {
        id: u32::MAX,
        last: true,
        response: Response::Vlans(VlanList { entries }),
    };
    assert!(encode_message(&vlans, &mut buf).is_ok(), "a full VLAN list");
    let rule = RuleInfo {
        id: u32::MAX,
        spec: RuleSpec {
            scope: RuleScope::Vm(truncated(&"v".repeat(32))),
            direction: RuleDirection::Out,
            protocol: RuleProtocol::Udp,
            ports: Some((u16::MAX, u16::MAX)),
            peer: Some(Ipv4Cidr {
                addr: [0xff; 4],
                prefix: u8::MAX,
            }),
            action: RuleAction::Deny,
        },
    };
    let mut entries = heapless::Vec::new();
    while entries.push(rule.clone()).is_ok() {}
    let rules = ServerFrame {
        id: u32::MAX,
        last: true,
        response: Response::Rules(RuleList { entries }),
    };
    assert!(encode_message(&rules, &mut buf).is_ok(), "a full rule list");
    let mut nics = heapless::Vec::new();
    while nics
        .push(NicInfo {
            vlan: u16::MAX,
            mac: [0xff; 6],
            ipv4: Ipv4Addr::BROADCAST,
            prefix: u8::MAX,
            gateway: Some(Ipv4Addr::BROADCAST),
        })
        .is_ok()
    {}
    let mut spec = crate::tests::sample_spec();
    let mut publish = heapless::Vec::new();
    while publish
        .push(PublishSpec {
            protocol: Transport::Udp,
            port: u16::MAX,
        })
        .is_ok()
    {}
    while spec
        .nics
        .push(NicSpec {
            vlan: u16::MAX,
            ipv4: Some(Ipv4Addr::BROADCAST),
            publish: publish.clone(),
        })
        .is_ok()
    {}
    let vm = ServerFrame {
        id: u32::MAX,
        last: true,
        response: Response::Vm(VmInfo {
            spec,
            state: VmState::Running,
            desired_running: true,
            pid: Some(u32::MAX),
            restarts: u32::MAX,
            since_ms: u64::MAX,
            guest_up: true,
            last_exit: None,
            platform_sha256: Some([0xff; 32]),
            nics,
            image: Some(truncated(&"i".repeat(32))),
            apps: crate::tests_apps::fullest_apps(),
        }),
    };
    assert!(encode_message(&vm, &mut buf).is_ok(), "a VM with 4 NICs");
    let mut drops = heapless::Vec::new();
    while drops
        .push(DropCount {
            reason: u8::MAX,
            count: u64::MAX,
        })
        .is_ok()
    {}
    let port = PortStats {
        name: truncated(&"p".repeat(40)),
        vlans: (4079..=4094).collect(),
        rx_frames: u64::MAX,
        rx_bytes: u64::MAX,
        tx_frames: u64::MAX,
        tx_bytes: u64::MAX,
        tx_denied: u64::MAX,
        drops: drops.clone(),
    };
    let vlan = VlanStats {
        vlan: u16::MAX,
        frames: u64::MAX,
        bytes: u64::MAX,
        floods: u64::MAX,
        drops,
    };
    let page = ServerFrame {
        id: u32::MAX,
        last: true,
        response: Response::NetStats(NetStats {
            ports: core::iter::repeat_n(port, MAX_STAT_PORTS).collect(),
            vlans: core::iter::repeat_n(vlan, MAX_STAT_VLANS).collect(),
            ports_total: u32::MAX,
            vlans_total: u32::MAX,
        }),
    };
    assert!(encode_message(&page, &mut buf).is_ok(), "a full stats page");
}

/// Without an allocator a response lives on the stack whole: 1.2 must not make it much larger
/// than the largest request (a module upload piece), or a thread's stack overflows.
#[test]
fn responses_stay_stack_sized() {
    assert!(
        core::mem::size_of::<Response>() <= core::mem::size_of::<Request>() + 1024,
        "Response is {} bytes, Request {}",
        core::mem::size_of::<Response>(),
        core::mem::size_of::<Request>()
    );
}

#[test]
fn cidr_arithmetic() {
    let net = Ipv4Cidr::parse("10.0.10.0/24").expect("parses");
    assert_eq!(net.netmask(), Ipv4Addr::new(255, 255, 255, 0));
    assert_eq!(net.broadcast(), Ipv4Addr::new(10, 0, 10, 255));
    assert!(net.contains(Ipv4Addr::new(10, 0, 10, 77)));
    assert!(!net.contains(Ipv4Addr::new(10, 0, 11, 1)));
    let all = Ipv4Cidr::parse("0.0.0.0/0").expect("parses");
    assert!(all.contains(Ipv4Addr::BROADCAST));
    assert_eq!(all.netmask(), Ipv4Addr::UNSPECIFIED);
    for bad in ["10.0.0.0", "10.0.0.0/33", "10.0.0/8", "x/8", "10.0.0.0/-1"] {
        assert_eq!(Ipv4Cidr::parse(bad), None, "{bad}");
    }
}

#[test]
fn vlan_specs_are_checked() {
    let good = vlan10();
    assert_eq!(good.validate(), Ok(()));
    assert_eq!(good.pool_size(), 253, "254 hosts minus the gateway");
    assert_eq!(
        good.pool_range(),
        (Ipv4Addr::new(10, 0, 10, 1), Ipv4Addr::new(10, 0, 10, 254))
    );
    let with = |f: fn(&mut VlanSpec)| {
        let mut spec = vlan10();
        f(&mut spec);
        spec.validate().err().unwrap_or("accepted")
    };
    assert!(with(|s| s.id = 0).contains("1 to 4094"));
    assert!(with(|s| s.id = 4095).contains("1 to 4094"));
    assert!(with(|s| s.subnet.prefix = 31).contains("/8 to /30"));
    assert!(with(|s| s.subnet.addr = [10, 0, 10, 5]).contains("host bits"));
    assert!(with(|s| s.gateway = Some(Ipv4Addr::new(10, 0, 11, 1))).contains("gateway"));
    assert!(with(|s| s.gateway = Some(Ipv4Addr::new(10, 0, 10, 255))).contains("gateway"));
    let pool = |a: u8, b: u8| Some((Ipv4Addr::new(10, 0, 10, a), Ipv4Addr::new(10, 0, 10, b)));
    let mut spec = vlan10();
    spec.pool = pool(100, 109);
    assert_eq!(spec.validate(), Ok(()));
    assert_eq!(spec.pool_size(), 10, "the gateway is outside this pool");
    spec.pool = pool(109, 100);
    assert!(spec.validate().is_err_and(|e| e.contains("ends before")));
    spec.pool = pool(0, 9);
    assert!(
        spec.validate()
            .is_err_and(|e| e.contains("inside the subnet"))
    );
    spec.pool = pool(1, 1);
    assert!(spec.validate().is_err_and(|e| e.contains("no address")));
    assert!(with(|s| s.dns[0] = Ipv4Addr::BROADCAST).contains("DNS"));
    assert!(
        good.assignable(Ipv4Addr::new(10, 0, 10, 1))
            .is_err_and(|e| e.contains("gateway"))
    );
    assert!(
        good.assignable(Ipv4Addr::new(10, 0, 10, 0))
            .is_err_and(|e| e.contains("network"))
    );
    assert!(
        good.assignable(Ipv4Addr::new(10, 0, 9, 3))
            .is_err_and(|e| e.contains("outside"))
    );
    assert_eq!(good.assignable(Ipv4Addr::new(10, 0, 10, 200)), Ok(()));
}

#[test]
fn rule_specs_are_checked() {
    let rule = RuleSpec {
        scope: RuleScope::Vlan(10),
        direction: RuleDirection::In,
        protocol: RuleProtocol::Tcp,
        ports: Some((22, 22)),
        peer: None,
        action: RuleAction::Deny,
    };
    assert_eq!(rule.validate(), Ok(()));
    let any = RuleSpec {
        protocol: RuleProtocol::Any,
        ..rule.clone()
    };
    assert!(any.validate().is_err_and(|e| e.contains("tcp or udp")));
    let backwards = RuleSpec {
        ports: Some((23, 22)),
        ..rule.clone()
    };
    assert!(
        backwards
            .validate()
            .is_err_and(|e| e.contains("ends before"))
    );
    let vlan0 = RuleSpec {
        scope: RuleScope::Vlan(0),
        ..rule
    };
    assert!(vlan0.validate().is_err());
}
