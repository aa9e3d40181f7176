//! The virtual switch's decision core (`kaos_net::switch`) fed any frames on any port, with time
//! moving forward: it never panics, and what it forwards obeys the switch's rules, checked here
//! from the raw bytes rather than through the switch's own parser.
//!
//! The switch: the unit tests' lab (guests A and B on VLAN 10, C on VLAN 20, a trunk carrying
//! both) plus an access uplink on VLAN 20, a few rules, and small tables (8 MACs per VLAN, 16
//! flows, 6 per port, 8 fragments) so that eviction and full tables are reached.
//!
//! Input: records of `port` (one byte: its low seven bits A, B, C, trunk, access, or a port that
//! does not exist; its top bit makes the record a variant of the frame before, see `variant`),
//! `time step` (one byte `s`: `now` advances `s³/16` ms, up to 17 minutes, so MACs and flows
//! age), `fixups` (one byte, below), `length` (two bytes, little-endian) and that many frame
//! bytes. The fixups turn random bytes into frames that get past the early checks, so the
//! fuzzer reaches the firewall and connection tracking: bit 0 puts a tag in (VID from bits 5-6:
//! 10, 20, 30 or 0), bit 1 sets the source MAC (the port's own, or for an uplink a remote or a
//! guest's, by bits 5-7), bit 2 the destination MAC (by bits 5-7), bit 3 repairs an IPv4 header
//! (version, IHL, total length, the port's own source address, a destination by bits 5-7),
//! bit 4 pads the frame to the largest size accepted, and with bit 5 one byte more.
//!
//! Seeds (`seeds/switch_ingress/`, one scenario each: ARP, guest to guest, a TCP connection
//! out and its replies, published ports, DHCP discovery, ICMP, fragments, the access uplink,
//! spoofs, a MAC flood, ageing, malformed frames, fixups) are records of frames built by
//! `kaos_net::switch::fixture`; `src/seeds.rs` does not write them yet.
//!
//! Every frame also goes through a second switch, built the same way but without the flow
//! cache: the two must decide alike, and end with the same counters and tables. Records in a
//! row on one port with no time step go through the cached switch as one `Batch`, as a guest's
//! TX queue does, so runs of one flow are counted at their end there and frame by frame in
//! the plain one.
//!
//! Checked for every frame: a forward goes to ports that exist, each once, never the ingress
//! port, never an uplink when it came from one, all carrying the frame's VLAN (the guest's or
//! access port's own, or the trunk tag's VID), each with the tag its port needs; a frame from a
//! guest is forwarded only if it is untagged, IPv4 or ARP, from the guest's MAC, and its IPv4
//! source or ARP sender is the guest's own (DHCP discovery from 0.0.0.0 aside). At the end:
//! every frame was counted once, forwarded or dropped, and every table stayed in its bounds.
#![no_main]

use std::net::Ipv4Addr;

use kaos_fuzz::input::Input;
use kaos_net::switch::fixture::{self, A, B, C, Lab, R10, R20};
use kaos_net::switch::{
    Action, Cidr, ConntrackConfig, Decision, Direction, DropReason, Egress, Instant, MAX_FRAME_LEN,
    PortId, PortKind, PortRange, Protocol, Rule, Switch, SwitchConfig, Tag, UplinkMode, Vlan,
    write_egress,
};
use libfuzzer_sys::fuzz_target;

const MAX_MACS: usize = 8;
const MAX_FLOWS: usize = 16;

struct Rig {
    lab: Lab,
    /// The same switch without the flow cache.
    plain: Lab,
    access: PortId,
    /// Frames received per port index, and how many of them were forwarded.
    received: [u64; 5],
    forwarded: [u64; 5],
}

fn rig() -> Rig {
    let (lab, access) = lab_with(FLOW_CACHE);
    let (plain, same) = lab_with(0);
    assert_eq!(access, same);
    Rig {
        lab,
        plain,
        access,
        received: [0; 5],
        forwarded: [0; 5],
    }
}

/// A small flow cache, so that flows displace each other.
const FLOW_CACHE: usize = 8;

fn lab_with(flow_cache: usize) -> (Lab, PortId) {
    let conntrack = ConntrackConfig {
        max_flows: MAX_FLOWS,
        max_flows_per_port: 6,
        max_fragments: 8,
        ..ConntrackConfig::default()
    };
    let config = SwitchConfig {
        max_macs_per_vlan: MAX_MACS,
        conntrack,
        flow_cache,
        ..SwitchConfig::default()
    };
    let mut lab = fixture::lab(config);
    let access = lab
        .switch
        .add_port(PortKind::Uplink(UplinkMode::Access {
            vlan: fixture::vlan(20),
        }))
        .expect("valid uplink");
    let rule = |direction, protocol, ports, remote, action| Rule {
        direction,
        protocol,
        ports,
        remote,
        action,
    };
    let r10 = Cidr::new(R10.ip, 32).expect("valid prefix");
    let vlan20 = Cidr::new(Ipv4Addr::new(10, 0, 20, 0), 24).expect("valid prefix");
    let smtp = rule(
        Direction::Out,
        Protocol::Tcp,
        PortRange::one(25),
        Cidr::ANY,
        Action::Deny,
    );
    let no_udp = rule(
        Direction::In,
        Protocol::Udp,
        PortRange::ALL,
        vlan20,
        Action::Deny,
    );
    let ssh = rule(
        Direction::In,
        Protocol::Tcp,
        PortRange::one(22),
        r10,
        Action::Allow,
    );
    let ping = rule(
        Direction::In,
        Protocol::Icmp,
        PortRange::ALL,
        Cidr::ANY,
        Action::Allow,
    );
    let s = &mut lab.switch;
    s.set_port_rules(lab.a, vec![smtp]).expect("valid rules");
    s.set_vlan_rules(fixture::vlan(10), vec![ssh, no_udp])
        .expect("valid rules");
    s.set_vlan_rules(fixture::vlan(20), vec![ping])
        .expect("valid rules");
    (lab, access)
}

/// One record of the input, fixed up.
struct Record {
    which: usize,
    now_ms: i64,
    frame: Vec<u8>,
}

/// A decision, owned (a `Decision` borrows its switch).
fn owned(d: &Decision<'_>) -> Result<(Vlan, bool, Vec<Egress>), DropReason> {
    match d {
        Decision::Forward(f) => Ok((f.vlan, f.ingress_tagged, f.to.to_vec())),
        Decision::Drop(reason) => Err(*reason),
    }
}

fn ports(rig: &Rig) -> [PortId; 5] {
    let l = &rig.lab;
    [l.a, l.b, l.c, l.trunk, rig.access]
}

const MACS: [[u8; 6]; 8] = [
    fixture::BROADCAST,
    A.mac,
    B.mac,
    C.mac,
    R10.mac,
    R20.mac,
    [0x01, 0x00, 0x5e, 0, 0, 0xfb],
    [0x52, 0x54, 0, 0xee, 0, 1],
];
const IPS: [Ipv4Addr; 8] = [
    Ipv4Addr::BROADCAST,
    A.ip,
    B.ip,
    C.ip,
    R10.ip,
    R20.ip,
    Ipv4Addr::new(224, 0, 0, 251),
    Ipv4Addr::UNSPECIFIED,
];

/// The port's own MAC and address, if it is a guest.
fn own(kind: Option<&PortKind>) -> Option<([u8; 6], Ipv4Addr)> {
    match kind {
        Some(PortKind::Guest(g)) => Some((g.mac, g.ipv4)),
        _ => None,
    }
}

fn fix(frame: &mut Vec<u8>, fixups: u8, kind: Option<&PortKind>) {
    let pick = usize::from(fixups >> 5);
    if fixups & 1 != 0 && frame.len() >= 12 {
        let vid = [10u16, 20, 30, 0][pick & 3];
        let [hi, lo] = vid.to_be_bytes();
        frame.splice(12..12, [0x81, 0x00, hi, lo]);
    }
    if fixups & 2 != 0 && frame.len() >= 12 {
        let mac = own(kind).map_or(MACS[pick], |(mac, _)| mac);
        frame[6..12].copy_from_slice(&mac);
    }
    if fixups & 4 != 0 && frame.len() >= 6 {
        frame[..6].copy_from_slice(&MACS[pick]);
    }
    let l3 = if frame.get(12..14) == Some(&[0x81, 0x00]) {
        18
    } else {
        14
    };
    if fixups & 8 != 0 && frame.len() >= l3 + 20 {
        frame[l3 - 2..l3].copy_from_slice(&[0x08, 0x00]);
        frame[l3] = 0x45;
        let total = u16::try_from(frame.len() - l3).unwrap_or(u16::MAX);
        frame[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
        frame[l3 + 6..l3 + 8].copy_from_slice(&[0, 0]);
        if let Some((_, ip)) = own(kind) {
            frame[l3 + 12..l3 + 16].copy_from_slice(&ip.octets());
        }
        frame[l3 + 16..l3 + 20].copy_from_slice(&IPS[pick].octets());
    }
    if fixups & 16 != 0 {
        let len = MAX_FRAME_LEN + usize::from(fixups & 32 != 0);
        frame.resize(len, 0);
    }
}

fn be16(frame: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([frame[at], frame[at + 1]])
}

fn ip_at(frame: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(frame[at], frame[at + 1], frame[at + 2], frame[at + 3])
}

/// What a guest may send, read from the raw bytes (the switch accepted it, so the headers it
/// read are there).
fn check_guest_frame(frame: &[u8], mac: [u8; 6], ip: Ipv4Addr) {
    assert_eq!(frame[6..12], mac, "forwarded a spoofed source MAC");
    match be16(frame, 12) {
        0x0800 => {
            let src = ip_at(frame, 26);
            if src != ip {
                let ihl = usize::from(frame[14] & 0x0f) * 4;
                let l4 = 14 + ihl;
                assert_eq!(
                    src,
                    Ipv4Addr::UNSPECIFIED,
                    "forwarded a spoofed IPv4 source"
                );
                assert_eq!(
                    ip_at(frame, 30),
                    Ipv4Addr::BROADCAST,
                    "0.0.0.0 not to broadcast"
                );
                assert_eq!(frame[23], 17, "0.0.0.0 not UDP");
                assert_eq!(
                    (be16(frame, l4), be16(frame, l4 + 2)),
                    (68, 67),
                    "0.0.0.0 not DHCP"
                );
            }
        }
        0x0806 => {
            assert_eq!(frame[22..28], mac, "forwarded a spoofed ARP sender MAC");
            let sender = ip_at(frame, 28);
            assert!(
                sender == ip || sender.is_unspecified(),
                "forwarded a spoofed ARP sender"
            );
        }
        other => panic!("forwarded EtherType {other:#06x} from a guest"),
    }
}

/// The VLAN a frame from `kind` belongs to, read from the raw bytes.
fn vlan_of(frame: &[u8], kind: &PortKind) -> u16 {
    match kind {
        PortKind::Guest(g) => g.vlan.get(),
        PortKind::Uplink(UplinkMode::Access { vlan }) => vlan.get(),
        PortKind::Uplink(UplinkMode::Trunk { .. }) => be16(frame, 14) & 0x0fff,
    }
}

/// Frames from port `which` at `now`, through one `Batch` of the cached switch and one by one
/// through the plain one.
fn step(rig: &mut Rig, which: usize, now: Instant, frames: &[Record], out: &mut [u8]) {
    let ports = ports(rig);
    let port = ports.get(which).copied().unwrap_or(PortId::new(999));
    let kind = rig.lab.switch.port(port).cloned();
    let Rig {
        lab,
        plain,
        received,
        forwarded,
        ..
    } = rig;
    let mut batch = lab.switch.batch(port, now);
    for r in frames {
        let decision = owned(&batch.ingress(&r.frame));
        assert_eq!(
            decision,
            owned(&plain.switch.ingress(port, &r.frame, now)),
            "the flow cache decided otherwise than the core"
        );
        let Some(kind) = &kind else {
            assert_eq!(decision, Err(DropReason::UnknownPort));
            continue;
        };
        received[which] += 1;
        let Ok(f) = decision else {
            continue;
        };
        forwarded[which] += 1;
        check(&plain.switch, port, kind, &r.frame, f, out);
    }
}

/// What a forward of `frame` from `port` must be, read from the raw bytes; `switch` is
/// configured as the one that decided it.
fn check(
    switch: &Switch,
    port: PortId,
    kind: &PortKind,
    frame: &[u8],
    (vlan, ingress_tagged, to): (Vlan, bool, Vec<Egress>),
    out: &mut [u8],
) {
    assert!(frame.len() <= MAX_FRAME_LEN);
    assert!(!to.is_empty(), "a forward to nowhere");
    assert_eq!(
        vlan.get(),
        vlan_of(frame, kind),
        "classified into another VLAN"
    );
    assert_eq!(ingress_tagged, be16(frame, 12) == 0x8100);
    let from_uplink = matches!(kind, PortKind::Uplink(_));
    for (i, e) in to.iter().enumerate() {
        assert_ne!(e.port, port, "sent back to its ingress port");
        assert!(
            to[..i].iter().all(|o| o.port != e.port),
            "two copies to {}",
            e.port
        );
        let target = switch
            .port(e.port)
            .expect("forwarded to a port that does not exist");
        assert!(
            target.carries(vlan),
            "crossed from VLAN {vlan} into {target:?}"
        );
        assert_eq!(e.tag, target.egress_tag(vlan));
        assert!(
            !(from_uplink && matches!(target, PortKind::Uplink(_))),
            "uplink to uplink"
        );
        let n = write_egress(frame, ingress_tagged, e.tag, out).expect("room for any frame");
        let tagged_out = be16(out, 12) == 0x8100;
        assert_eq!(tagged_out, matches!(e.tag, Tag::Tagged(_)));
        assert_eq!(
            n + if ingress_tagged { 4 } else { 0 },
            frame.len() + if tagged_out { 4 } else { 0 }
        );
    }
    if let Some((mac, ip)) = own(Some(kind)) {
        check_guest_frame(frame, mac, ip);
    }
}

thread_local! {
    /// Where egress frames are written: 64 KiB, allocated once rather than per input.
    static OUT: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; MAX_FRAME_LEN + 4]);
}

fuzz_target!(|data: &[u8]| OUT.with_borrow_mut(|out| run(data, out)));

/// The frame before with a few bytes changed: `edits` are pairs of an offset (modulo the
/// frame's length) and a value; an odd last byte makes the frame one byte shorter, a zero
/// one one byte longer. Frames of one flow differing in a field or two are what a batch's
/// memo of a run (`flowcache::Memo`) must tell apart.
fn variant(before: &[u8], edits: &[u8]) -> Vec<u8> {
    let mut frame = before.to_vec();
    let pairs = edits.chunks_exact(2);
    match pairs.remainder() {
        [0] => frame.push(0),
        [_] => {
            frame.pop();
        }
        _ => {}
    }
    for pair in pairs {
        let n = frame.len();
        if let (&[at, v], Some(last)) = (pair, n.checked_sub(1)) {
            // Within the frame: modulo its length.
            frame[usize::from(at) % (last + 1)] = v;
        }
    }
    frame
}

fn run(data: &[u8], out: &mut [u8]) {
    let mut rig = rig();
    let mut input = Input::new(data);
    let mut now_ms = 0i64;
    let mut records = Vec::new();
    while !input.is_empty() {
        let port = input.byte().unwrap_or(0);
        let which = usize::from((port & 0x7f) % 6);
        let s = i64::from(input.byte().unwrap_or(0));
        now_ms = now_ms.saturating_add(s * s * s / 16);
        let fixups = input.byte().unwrap_or(0);
        let len = u16::from_le_bytes([input.byte().unwrap_or(0), input.byte().unwrap_or(0)]);
        let bytes = input.take(usize::from(len));
        let frame = match records.last() {
            Some(Record { frame: before, .. }) if port & 0x80 != 0 => variant(before, bytes),
            _ => {
                let mut frame = bytes.to_vec();
                let kind = ports(&rig)
                    .get(which)
                    .and_then(|p| rig.lab.switch.port(*p))
                    .cloned();
                fix(&mut frame, fixups, kind.as_ref());
                frame
            }
        };
        records.push(Record {
            which,
            now_ms,
            frame,
        });
    }
    // Frames in a row from one port at one instant are one batch, as a TX queue's are.
    let mut rest = &records[..];
    while let Some(first) = rest.first() {
        let n = rest
            .iter()
            .take_while(|r| (r.which, r.now_ms) == (first.which, first.now_ms))
            .count();
        let (batch, next) = rest.split_at(n);
        rest = next;
        let now = Instant::from_millis(first.now_ms);
        step(&mut rig, first.which, now, batch, out);
    }
    for (i, port) in ports(&rig).into_iter().enumerate() {
        let c = rig
            .lab
            .switch
            .port_counters(port)
            .expect("the rig's ports stay");
        assert_eq!(c.rx_frames, rig.received[i]);
        assert_eq!(
            c.rx_frames,
            rig.forwarded[i] + c.drops.total(),
            "a frame counted twice or never"
        );
    }
    for vlan in rig.lab.switch.vlans() {
        assert!(rig.lab.switch.learned_len(vlan) <= MAX_MACS);
    }
    assert!(rig.lab.switch.flows_len() <= MAX_FLOWS);
    let (cached, plain) = (&rig.lab.switch, &rig.plain.switch);
    for (port, kind, counters) in cached.ports() {
        assert_eq!(plain.port(port), Some(kind));
        assert_eq!(plain.port_counters(port), Some(counters), "port {port}");
    }
    for vlan in cached.vlans() {
        assert_eq!(cached.vlan_counters(vlan), plain.vlan_counters(vlan));
        assert_eq!(cached.learned_len(vlan), plain.learned_len(vlan));
    }
    assert_eq!(cached.flows_len(), plain.flows_len());
    assert!(rig.lab.switch.fragments_len() <= 8);
}
