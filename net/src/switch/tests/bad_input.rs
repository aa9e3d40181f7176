//! Bad input: truncated and inconsistent headers, oversize frames, other EtherTypes, unknown
//! ports, and a deterministic storm of random frames on every port.

use core::net::Ipv4Addr;

use smoltcp::time::Instant;

use smoltcp::wire::{ArpOperation, DhcpMessageType};

use super::super::fixture::{
    A, B, BROADCAST, C, R10, R20, arp, dhcp, ethernet, fragment, ipv4, tagged, tcp, udp, udp_frame,
};
use super::super::{Decision, DropReason, MAX_FRAME_LEN, PortId, PortKind};
use super::{XorShift, at, default_lab, send};

#[test]
fn truncated_and_inconsistent_headers_are_malformed() {
    let mut lab = default_lab();
    let good = udp_frame(A, B, (1, 2), b"payload");
    let mut cases: Vec<Vec<u8>> = vec![
        good[..13].to_vec(),
        // An IPv4 header cut short, and one whose total length runs past the frame.
        good[..14 + 19].to_vec(),
        good[..good.len() - 1].to_vec(),
        // A UDP header cut short.
        ipv4((A.mac, B.mac), (A.ip, B.ip), 17, &[0, 1, 0, 2]),
        // A TCP header whose data offset points past the segment.
        ipv4((A.mac, B.mac), (A.ip, B.ip), 6, &{
            let mut t = tcp(1, 2, 0x02);
            t[12] = 0xf0;
            t
        }),
        // ARP cut short, and ARP for another hardware type (IEEE 802).
        ethernet(BROADCAST, A.mac, 0x0806, &[0, 1, 8, 0, 6, 4, 0, 1, 0, 0]),
        ethernet(
            BROADCAST,
            A.mac,
            0x0806,
            &[&[0u8, 6, 8, 0, 6, 4, 0, 1][..], &[0; 20]].concat(),
        ),
    ];
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x44;
    cases.push(bad_ihl);
    let mut not_v4 = good.clone();
    not_v4[14] = 0x65;
    cases.push(not_v4);
    for frame in cases {
        let fate = send(&mut lab.switch, lab.a, &frame, at(1));
        assert_eq!(fate.dropped(), DropReason::Malformed, "{frame:02x?}");
    }
    // A tag announced, with nothing after it.
    let mut short_tag = vec![0xff; 12];
    short_tag.extend_from_slice(&[0x81, 0x00, 0x00]);
    let fate = send(&mut lab.switch, lab.trunk, &short_tag, at(1));
    assert_eq!(fate.dropped(), DropReason::Malformed);
}

#[test]
fn fragments_that_could_hide_a_tcp_header_are_malformed() {
    let mut lab = default_lab();
    // A first fragment with 8 bytes of TCP header (RFC 1858's tiny fragment).
    let mut tiny = ipv4((A.mac, B.mac), (A.ip, B.ip), 6, &tcp(1, 2, 0x02)[..8]);
    fragment(&mut tiny, 5, 0, true);
    assert_eq!(
        send(&mut lab.switch, lab.a, &tiny, at(1)).dropped(),
        DropReason::Malformed
    );
    // A TCP fragment at offset 8 overwrites the flags of the first.
    let mut overlap = ipv4((A.mac, B.mac), (A.ip, B.ip), 6, &[0; 16]);
    fragment(&mut overlap, 5, 8, false);
    assert_eq!(
        send(&mut lab.switch, lab.a, &overlap, at(1)).dropped(),
        DropReason::Malformed
    );
}

#[test]
fn the_largest_frame_passes_and_a_larger_one_is_oversize() {
    let mut lab = default_lab();
    // A 64 KiB TSO frame from a guest: 65535 bytes of IPv4.
    let biggest = udp_frame(A, B, (1, 2), &vec![0; 65535 - 28]);
    assert_eq!(biggest.len(), 14 + 65535);
    assert_eq!(
        send(&mut lab.switch, lab.a, &biggest, at(1)).ports(),
        [lab.b]
    );
    // Tagged on the trunk it is MAX_FRAME_LEN.
    let published = udp_frame(R10, B, (1, 53), &vec![0; 65535 - 28]);
    let on_trunk = tagged(&published, 10);
    assert_eq!(on_trunk.len(), MAX_FRAME_LEN);
    assert_eq!(
        send(&mut lab.switch, lab.trunk, &on_trunk, at(1)).ports(),
        [lab.b]
    );
    let mut over = on_trunk.clone();
    over.push(0);
    assert_eq!(
        send(&mut lab.switch, lab.trunk, &over, at(1)).dropped(),
        DropReason::Oversize
    );
}

#[test]
fn only_ipv4_and_arp_are_forwarded() {
    let mut lab = default_lab();
    for ethertype in [0x86dd, 0x88cc, 0x0026, 0x8847] {
        let frame = ethernet(BROADCAST, A.mac, ethertype, &[0; 46]);
        let fate = send(&mut lab.switch, lab.a, &frame, at(1));
        assert_eq!(fate.dropped(), DropReason::UnsupportedEtherType);
    }
}

#[test]
fn an_unknown_port_is_counted_nowhere() {
    let mut lab = default_lab();
    let frame = udp_frame(A, B, (1, 2), b"x");
    assert_eq!(
        send(&mut lab.switch, PortId::new(999), &frame, at(1)).dropped(),
        DropReason::UnknownPort
    );
    let kind = lab.switch.remove_port(lab.c).expect("C exists");
    assert!(matches!(kind, PortKind::Guest(_)));
    assert_eq!(
        send(&mut lab.switch, lab.c, &frame, at(1)).dropped(),
        DropReason::UnknownPort
    );
    let total: u64 = lab.switch.ports().map(|(_, _, c)| c.rx_frames).sum();
    assert_eq!(total, 0);
}

#[test]
// Bits of a random number, truncated on purpose.
#[allow(clippy::cast_possible_truncation)]
fn a_storm_of_mutated_frames_breaks_no_rule() {
    let mut lab = default_lab();
    let ports = [lab.a, lab.b, lab.c, lab.trunk];
    // Each seed with the port it is valid on; mutated, and sometimes sent on another port.
    let no_address = (Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST);
    let discover = udp(68, 67, &dhcp(DhcpMessageType::Discover, B.mac));
    let seeds = [
        (lab.a, udp_frame(A, B, (1, 2), b"x")),
        (lab.trunk, tagged(&udp_frame(R10, B, (1, 53), b"x"), 10)),
        (lab.a, udp_frame(A, R10, (1, 53), b"x")),
        (lab.trunk, tagged(&udp_frame(R10, A, (53, 1), b"x"), 10)),
        (lab.b, ipv4((B.mac, BROADCAST), no_address, 17, &discover)),
        (
            lab.trunk,
            tagged(
                &arp(
                    (R20.mac, BROADCAST),
                    ArpOperation::Request,
                    (R20.mac, R20.ip),
                    C.ip,
                ),
                20,
            ),
        ),
    ];
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let mut forwarded = 0;
    for i in 0..20_000i64 {
        let r = rng.next();
        let (mut from, mut frame) = seeds[(r % 6) as usize].clone();
        for _ in 0..(r >> 8) % 4 {
            let at = (rng.next() as usize) % frame.len();
            frame[at] = rng.next() as u8;
        }
        if (r >> 16).is_multiple_of(4) {
            frame.truncate(frame.len() - (((r >> 18) % 3) as usize).min(frame.len()));
        }
        if (r >> 24).is_multiple_of(4) {
            from = ports[((r >> 32) % 4) as usize];
        }
        let now = Instant::from_millis(i * 50);
        if let Decision::Forward(f) = lab.switch.ingress(from, &frame, now) {
            let (vlan, to) = (f.vlan, f.to.to_vec());
            forwarded += 1;
            assert!(!to.is_empty());
            assert!(to.iter().all(|e| e.port != from), "back to its port");
            for e in to {
                let kind = lab.switch.port(e.port).expect("a live port");
                assert!(kind.carries(vlan), "out of its VLAN");
            }
        }
    }
    assert!(
        forwarded > 5000,
        "the storm should not be all drops: {forwarded}"
    );
    for port in ports {
        let c = lab.switch.port_counters(port).cloned().unwrap_or_default();
        assert!(c.drops.total() <= c.rx_frames);
    }
}
