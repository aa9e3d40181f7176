//! The firewall: defaults, published ports, rules per guest and per VLAN, connection tracking
//! (replies, timeouts, ICMP errors, fragments, bounds).

use core::net::Ipv4Addr;

use super::super::fixture::{
    self, A, ACK, B, BROADCAST, FIN, Host, R10, SYN, echo, fragment, icmp_error, ipv4, tagged,
    tcp_frame, udp, udp_frame,
};
use super::super::{
    Action, Cidr, ConntrackConfig, Direction, DropReason, PortRange, Protocol, Rule, SwitchConfig,
};
use super::{at, default_lab, send, v};

/// `frame` as it arrives on the trunk, on VLAN 10.
fn from_trunk(frame: &[u8]) -> Vec<u8> {
    tagged(frame, 10)
}

fn rule(direction: Direction, protocol: Protocol, ports: PortRange, action: Action) -> Rule {
    Rule {
        direction,
        protocol,
        ports,
        remote: Cidr::ANY,
        action,
    }
}

#[test]
fn guests_on_a_vlan_reach_each_other_by_default() {
    let mut lab = default_lab();
    let syn = tcp_frame(A, B, (40000, 22), SYN);
    assert_eq!(send(&mut lab.switch, lab.a, &syn, at(1)).ports(), [lab.b]);
    let back = tcp_frame(B, A, (40001, 5432), SYN);
    assert_eq!(send(&mut lab.switch, lab.b, &back, at(1)).ports(), [lab.a]);
}

#[test]
fn the_uplink_reaches_published_ports_only() {
    let mut lab = default_lab();
    let allowed = [
        tcp_frame(R10, B, (50000, 80), SYN),
        udp_frame(R10, B, (50000, 53), b"q"),
    ];
    for frame in allowed {
        assert_eq!(
            send(&mut lab.switch, lab.trunk, &from_trunk(&frame), at(1)).ports(),
            [lab.b]
        );
    }
    let denied = [
        tcp_frame(R10, B, (50000, 81), SYN),
        tcp_frame(R10, B, (50000, 53), SYN),
        udp_frame(R10, B, (50000, 80), b"q"),
        tcp_frame(R10, A, (50000, 80), SYN),
        // B's MAC, but not B's address.
        tcp_frame(
            R10,
            Host {
                ip: Ipv4Addr::new(10, 0, 10, 99),
                ..B
            },
            (50000, 80),
            SYN,
        ),
        ipv4((R10.mac, B.mac), (R10.ip, B.ip), 1, &echo(true, 7)),
    ];
    for frame in &denied {
        let fate = send(&mut lab.switch, lab.trunk, &from_trunk(frame), at(1));
        assert_eq!(fate.dropped(), DropReason::Firewall);
    }
    let trunk = lab
        .switch
        .port_counters(lab.trunk)
        .cloned()
        .unwrap_or_default();
    assert_eq!(trunk.drops.get(DropReason::Firewall), denied.len() as u64);
    let b_denied = lab.switch.port_counters(lab.b).map(|c| c.tx_denied);
    assert_eq!(b_denied, Some(denied.len() as u64 - 1));
}

#[test]
fn guests_reach_out_and_replies_come_back() {
    let mut lab = default_lab();
    let out = [
        (
            tcp_frame(A, R10, (40000, 443), SYN),
            tcp_frame(R10, A, (443, 40000), SYN | ACK),
        ),
        (
            udp_frame(A, R10, (40000, 53), b"q"),
            udp_frame(R10, A, (53, 40000), b"r"),
        ),
        (
            ipv4(
                (A.mac, R10.mac),
                (A.ip, Ipv4Addr::new(8, 8, 8, 8)),
                1,
                &echo(true, 9),
            ),
            ipv4(
                (R10.mac, A.mac),
                (Ipv4Addr::new(8, 8, 8, 8), A.ip),
                1,
                &echo(false, 9),
            ),
        ),
    ];
    for (request, reply) in &out {
        let fate = send(&mut lab.switch, lab.trunk, &from_trunk(reply), at(1));
        assert_eq!(
            fate.dropped(),
            DropReason::Firewall,
            "no reply before the request"
        );
        assert_eq!(
            send(&mut lab.switch, lab.a, request, at(2)).ports(),
            [lab.trunk]
        );
        assert_eq!(
            send(&mut lab.switch, lab.trunk, &from_trunk(reply), at(3)).ports(),
            [lab.a]
        );
    }
    assert_eq!(lab.switch.flows_len(), 3);
    // Another port of the same hosts is another flow.
    let other = tcp_frame(R10, A, (443, 40001), SYN | ACK);
    assert_eq!(
        send(&mut lab.switch, lab.trunk, &from_trunk(&other), at(4)).dropped(),
        DropReason::Firewall
    );
}

#[test]
fn flows_expire() {
    let mut lab = default_lab();
    let (request, reply) = (
        udp_frame(A, R10, (1, 53), b"q"),
        udp_frame(R10, A, (53, 1), b"r"),
    );
    send(&mut lab.switch, lab.a, &request, at(0));
    // Unanswered UDP lives 30 s.
    let late = send(&mut lab.switch, lab.trunk, &from_trunk(&reply), at(30));
    assert_eq!(late.dropped(), DropReason::Firewall);
    send(&mut lab.switch, lab.a, &request, at(100));
    assert_eq!(
        send(&mut lab.switch, lab.trunk, &from_trunk(&reply), at(129)).ports(),
        [lab.a]
    );
    // Answered, it lives 180 s from the last packet.
    assert_eq!(
        send(&mut lab.switch, lab.trunk, &from_trunk(&reply), at(308)).ports(),
        [lab.a]
    );
    let fate = send(&mut lab.switch, lab.trunk, &from_trunk(&reply), at(489));
    assert_eq!(fate.dropped(), DropReason::Firewall);
    // A closing TCP flow goes after 60 s.
    let (syn, synack) = (
        tcp_frame(A, R10, (2, 80), SYN),
        tcp_frame(R10, A, (80, 2), SYN | ACK),
    );
    send(&mut lab.switch, lab.a, &syn, at(1000));
    send(&mut lab.switch, lab.trunk, &from_trunk(&synack), at(1001));
    send(
        &mut lab.switch,
        lab.a,
        &tcp_frame(A, R10, (2, 80), FIN | ACK),
        at(1002),
    );
    let ack = from_trunk(&tcp_frame(R10, A, (80, 2), ACK));
    assert_eq!(
        send(&mut lab.switch, lab.trunk, &ack, at(1061)).ports(),
        [lab.a]
    );
    assert_eq!(
        send(&mut lab.switch, lab.trunk, &ack, at(1122)).dropped(),
        DropReason::Firewall
    );
}

#[test]
fn a_guests_rules_come_before_its_vlans_and_the_defaults() {
    let mut lab = default_lab();
    let ssh = PortRange::one(22);
    // The VLAN opens SSH from the uplink to everyone; A closes everything inbound.
    let vlan_rules = vec![rule(Direction::In, Protocol::Tcp, ssh, Action::Allow)];
    lab.switch
        .set_vlan_rules(v(10), vlan_rules)
        .expect("valid rules");
    let a_rules = vec![rule(
        Direction::In,
        Protocol::Any,
        PortRange::ALL,
        Action::Deny,
    )];
    lab.switch
        .set_port_rules(lab.a, a_rules)
        .expect("valid rules");
    let to_b = from_trunk(&tcp_frame(R10, B, (50000, 22), SYN));
    assert_eq!(
        send(&mut lab.switch, lab.trunk, &to_b, at(1)).ports(),
        [lab.b]
    );
    let to_a = from_trunk(&tcp_frame(R10, A, (50000, 22), SYN));
    assert_eq!(
        send(&mut lab.switch, lab.trunk, &to_a, at(1)).dropped(),
        DropReason::Firewall
    );
    let from_b = tcp_frame(B, A, (50000, 80), SYN);
    assert_eq!(
        send(&mut lab.switch, lab.b, &from_b, at(1)).dropped(),
        DropReason::Firewall
    );
    // A still reaches B, and B's replies come back through the connection table.
    assert_eq!(
        send(
            &mut lab.switch,
            lab.a,
            &tcp_frame(A, B, (3000, 80), SYN),
            at(2)
        )
        .ports(),
        [lab.b]
    );
    let reply = tcp_frame(B, A, (80, 3000), SYN | ACK);
    assert_eq!(send(&mut lab.switch, lab.b, &reply, at(2)).ports(), [lab.a]);
}

#[test]
fn outbound_rules_and_remote_prefixes() {
    let mut lab = default_lab();
    let mut deny_smtp = rule(
        Direction::Out,
        Protocol::Tcp,
        PortRange::one(25),
        Action::Deny,
    );
    deny_smtp.remote = Cidr::new(Ipv4Addr::new(10, 0, 0, 0), 8).expect("valid prefix");
    lab.switch
        .set_port_rules(lab.a, vec![deny_smtp])
        .expect("valid rules");
    let inside = tcp_frame(A, R10, (1, 25), SYN);
    assert_eq!(
        send(&mut lab.switch, lab.a, &inside, at(1)).dropped(),
        DropReason::Firewall
    );
    let outside = ipv4(
        (A.mac, R10.mac),
        (A.ip, Ipv4Addr::new(192, 0, 2, 25)),
        6,
        &fixture::tcp(1, 25, SYN),
    );
    assert_eq!(
        send(&mut lab.switch, lab.a, &outside, at(1)).ports(),
        [lab.trunk]
    );
    assert_eq!(
        send(
            &mut lab.switch,
            lab.a,
            &tcp_frame(A, R10, (1, 26), SYN),
            at(1)
        )
        .ports(),
        [lab.trunk]
    );
    assert_eq!(
        lab.switch.port_counters(lab.trunk).map(|c| c.tx_denied),
        Some(1)
    );
}

#[test]
fn a_flood_is_filtered_copy_by_copy() {
    let mut lab = default_lab();
    let deny_udp = rule(Direction::In, Protocol::Udp, PortRange::ALL, Action::Deny);
    lab.switch
        .set_port_rules(lab.b, vec![deny_udp])
        .expect("valid rules");
    let broadcast = ipv4(
        (A.mac, BROADCAST),
        (A.ip, Ipv4Addr::BROADCAST),
        17,
        &udp(9, 9, b""),
    );
    assert_eq!(
        send(&mut lab.switch, lab.a, &broadcast, at(1)).ports(),
        [lab.trunk]
    );
    assert_eq!(
        lab.switch.port_counters(lab.b).map(|c| c.tx_denied),
        Some(1)
    );
    // From the uplink, broadcasts meet the closed default.
    let inbound = ipv4(
        (R10.mac, BROADCAST),
        (R10.ip, Ipv4Addr::BROADCAST),
        17,
        &udp(9, 9, b""),
    );
    let fate = send(&mut lab.switch, lab.trunk, &from_trunk(&inbound), at(1));
    assert_eq!(fate.dropped(), DropReason::Firewall);
    assert_eq!(lab.switch.flows_len(), 0, "broadcasts open no flow");
}

#[test]
fn icmp_errors_pass_for_tracked_flows_only() {
    let mut lab = default_lab();
    let request = udp_frame(A, R10, (4000, 53), b"q");
    send(&mut lab.switch, lab.a, &request, at(1));
    let unreachable = |quoted: &[u8]| {
        let message = icmp_error(3, &quoted[14..]);
        from_trunk(&ipv4((R10.mac, A.mac), (R10.ip, A.ip), 1, &message))
    };
    assert_eq!(
        send(&mut lab.switch, lab.trunk, &unreachable(&request), at(2)).ports(),
        [lab.a]
    );
    let unrelated = udp_frame(A, R10, (4001, 53), b"q");
    let fate = send(&mut lab.switch, lab.trunk, &unreachable(&unrelated), at(2));
    assert_eq!(fate.dropped(), DropReason::Firewall);
}

#[test]
fn later_fragments_follow_an_allowed_first_fragment() {
    let mut lab = default_lab();
    let mut first = udp_frame(R10, B, (50000, 53), &[7; 64]);
    fragment(&mut first, 77, 0, true);
    assert_eq!(
        send(&mut lab.switch, lab.trunk, &from_trunk(&first), at(1)).ports(),
        [lab.b]
    );
    let mut later = ipv4((R10.mac, B.mac), (R10.ip, B.ip), 17, &[8; 32]);
    fragment(&mut later, 77, 72, false);
    assert_eq!(
        send(&mut lab.switch, lab.trunk, &from_trunk(&later), at(1)).ports(),
        [lab.b]
    );
    // Another datagram's, or after the window: the rules, which have no port to match.
    fragment(&mut later, 78, 72, false);
    assert_eq!(
        send(&mut lab.switch, lab.trunk, &from_trunk(&later), at(1)).dropped(),
        DropReason::Firewall
    );
    fragment(&mut later, 77, 72, false);
    assert_eq!(
        send(&mut lab.switch, lab.trunk, &from_trunk(&later), at(12)).dropped(),
        DropReason::Firewall
    );
    // A first fragment to a closed port is refused like the whole datagram.
    let mut closed = udp_frame(R10, B, (50000, 54), &[7; 64]);
    fragment(&mut closed, 79, 0, true);
    assert_eq!(
        send(&mut lab.switch, lab.trunk, &from_trunk(&closed), at(1)).dropped(),
        DropReason::Firewall
    );
}

#[test]
fn the_flow_table_is_shared_fairly_and_bounded() {
    let conntrack = ConntrackConfig {
        max_flows: 6,
        max_flows_per_port: 4,
        ..ConntrackConfig::default()
    };
    let mut lab = fixture::lab(SwitchConfig {
        conntrack,
        ..SwitchConfig::default()
    });
    for sport in 0..4 {
        let frame = udp_frame(A, R10, (sport, 53), b"q");
        assert_eq!(
            send(&mut lab.switch, lab.a, &frame, at(1)).ports(),
            [lab.trunk]
        );
    }
    let fifth = udp_frame(A, R10, (4, 53), b"q");
    assert_eq!(
        send(&mut lab.switch, lab.a, &fifth, at(1)).dropped(),
        DropReason::ConntrackFull
    );
    // A's existing flows still pass; B has its own share, until the table is full.
    assert_eq!(
        send(
            &mut lab.switch,
            lab.a,
            &udp_frame(A, R10, (0, 53), b"q"),
            at(2)
        )
        .ports(),
        [lab.trunk]
    );
    for sport in 0..2 {
        let frame = udp_frame(B, R10, (sport, 53), b"q");
        assert_eq!(
            send(&mut lab.switch, lab.b, &frame, at(2)).ports(),
            [lab.trunk]
        );
    }
    let full = udp_frame(B, R10, (9, 53), b"q");
    assert_eq!(
        send(&mut lab.switch, lab.b, &full, at(2)).dropped(),
        DropReason::ConntrackFull
    );
    assert_eq!(lab.switch.flows_len(), 6);
    // Expiry makes room again.
    assert_eq!(
        send(&mut lab.switch, lab.b, &full, at(40)).ports(),
        [lab.trunk]
    );
}

#[test]
fn a_removed_guest_takes_its_flows_along() {
    let mut lab = default_lab();
    send(
        &mut lab.switch,
        lab.a,
        &udp_frame(A, R10, (1, 53), b"q"),
        at(1),
    );
    assert_eq!(lab.switch.flows_len(), 1);
    lab.switch.remove_port(lab.a).expect("A exists");
    assert_eq!(lab.switch.flows_len(), 0);
    // A new guest with A's address and another MAC gets none of A's replies.
    let heir = Host {
        mac: [2, 0, 0, 0, 0x10, 0xee],
        ..A
    };
    let port = lab
        .switch
        .add_port(fixture::guest(heir, Vec::new()))
        .expect("valid guest");
    let reply = from_trunk(&udp_frame(R10, heir, (53, 1), b"r"));
    assert_eq!(
        send(&mut lab.switch, lab.trunk, &reply, at(2)).dropped(),
        DropReason::Firewall
    );
    assert_eq!(lab.switch.port_counters(port).map(|c| c.tx_denied), Some(1));
}

#[test]
fn flushing_makes_new_rules_apply_to_open_flows() {
    let mut lab = default_lab();
    let syn = tcp_frame(A, B, (1, 80), SYN);
    send(&mut lab.switch, lab.a, &syn, at(1));
    let deny = rule(
        Direction::In,
        Protocol::Tcp,
        PortRange::one(80),
        Action::Deny,
    );
    lab.switch
        .set_port_rules(lab.b, vec![deny])
        .expect("valid rules");
    let ack = tcp_frame(A, B, (1, 80), ACK);
    assert_eq!(
        send(&mut lab.switch, lab.a, &ack, at(2)).ports(),
        [lab.b],
        "tracked: still open"
    );
    lab.switch.flush_flows();
    assert_eq!(
        send(&mut lab.switch, lab.a, &ack, at(3)).dropped(),
        DropReason::Firewall
    );
}
