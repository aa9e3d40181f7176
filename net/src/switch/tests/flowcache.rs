//! The flow cache against the decision core alone: two switches built the same way, one with
//! the cache and one without, get the same frames, time and configuration changes, and must
//! decide every frame alike and end with the same counters and tables. A test also checks
//! that the cache was used, so a cache that never hits cannot pass for a correct one.

use core::net::Ipv4Addr;

use smoltcp::time::Instant;

use super::super::fixture::{
    self, A, ACK, B, BROADCAST, C, FIN, Host, Lab, R10, R20, RST, SYN, lab,
};
use super::super::{
    Action, Cidr, ConntrackConfig, Direction, DropReason, Duration, PortId, PortKind, PortRange,
    Protocol, Rule, SwitchConfig, UplinkMode, VlanSet,
};
use super::{Fate, XorShift, fate, v};

/// The same lab twice: with the flow cache and without.
struct Twin {
    cached: Lab,
    plain: Lab,
}

/// The lab's ports by number: A, B, C, the trunk.
#[derive(Debug, Clone, Copy)]
enum P {
    A,
    B,
    C,
    Trunk,
}

impl Twin {
    fn new() -> Self {
        Self::with(SwitchConfig::default())
    }

    fn with(config: SwitchConfig) -> Self {
        assert!(config.flow_cache > 0);
        Self {
            cached: lab(config),
            plain: lab(SwitchConfig {
                flow_cache: 0,
                ..config
            }),
        }
    }

    fn port(lab: &Lab, p: P) -> PortId {
        match p {
            P::A => lab.a,
            P::B => lab.b,
            P::C => lab.c,
            P::Trunk => lab.trunk,
        }
    }

    /// Sends `frame` into both; they must agree. Returns the fate.
    fn send(&mut self, p: P, frame: &[u8], now: Instant) -> Fate {
        let cached = fate(
            self.cached
                .switch
                .ingress(Self::port(&self.cached, p), frame, now),
        );
        let plain = fate(
            self.plain
                .switch
                .ingress(Self::port(&self.plain, p), frame, now),
        );
        assert_eq!(cached, plain, "{p:?} at {now}: {frame:02x?}");
        cached
    }

    /// Sends `frames` from `p` at `now`: into the cached switch as one [`Batch`], into the
    /// plain one frame by frame; each must be decided alike. Returns the fates.
    ///
    /// [`Batch`]: super::super::Batch
    fn batch(&mut self, p: P, frames: &[&[u8]], now: Instant) -> Vec<Fate> {
        let plain_port = Self::port(&self.plain, p);
        let mut batch = self.cached.switch.batch(Self::port(&self.cached, p), now);
        frames
            .iter()
            .map(|frame| {
                let cached = fate(batch.ingress(frame));
                let plain = fate(self.plain.switch.ingress(plain_port, frame, now));
                assert_eq!(cached, plain, "{p:?} at {now}: {frame:02x?}");
                cached
            })
            .collect()
    }

    /// Applies `change` to both.
    fn change(&mut self, change: impl Fn(&mut Lab)) {
        change(&mut self.cached);
        change(&mut self.plain);
    }

    /// Every counter and table size agrees.
    fn same_state(&self) {
        let (c, p) = (&self.cached.switch, &self.plain.switch);
        let ports = |s: &super::super::Switch| {
            s.ports()
                .map(|(id, kind, counters)| (id, kind.clone(), counters.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(ports(c), ports(p));
        for vlan in c.vlans() {
            assert_eq!(c.vlan_counters(vlan), p.vlan_counters(vlan), "VLAN {vlan}");
            assert_eq!(c.learned_len(vlan), p.learned_len(vlan), "VLAN {vlan}");
        }
        assert_eq!(c.vlans().collect::<Vec<_>>(), p.vlans().collect::<Vec<_>>());
        assert_eq!(c.flows_len(), p.flows_len());
        assert_eq!(p.flow_cache_hits(), 0, "the plain switch has no cache");
    }

    fn hits(&self) -> u64 {
        self.cached.switch.flow_cache_hits()
    }
}

fn ms(t: i64) -> Instant {
    Instant::from_millis(t)
}

fn tcp(from: Host, to: Host, ports: (u16, u16), flags: u8) -> Vec<u8> {
    fixture::tcp_frame(from, to, ports, flags)
}

fn trunk(frame: &[u8], vid: u16) -> Vec<u8> {
    fixture::tagged(frame, vid)
}

#[test]
fn a_connection_through_the_uplink_is_decided_alike_and_hits() {
    // Established flows live 10 s unrefreshed here, so that hits alone must keep one alive.
    let conntrack = ConntrackConfig {
        tcp_established: Duration::from_secs(10),
        ..ConntrackConfig::default()
    };
    let mut t = Twin::with(SwitchConfig {
        conntrack,
        ..SwitchConfig::default()
    });
    // A opens a connection to R10 out of the trunk; R10 answers; both sides go on.
    t.send(P::Trunk, &trunk(&tcp(R10, A, (443, 40000), ACK), 10), ms(0))
        .dropped();
    t.send(P::A, &tcp(A, R10, (40000, 443), SYN), ms(1));
    let reply = trunk(&tcp(R10, A, (443, 40000), SYN | ACK), 10);
    assert_eq!(t.send(P::Trunk, &reply, ms(2)).ports(), [t.cached.a]);
    for i in 0..100 {
        let out = t.send(P::A, &tcp(A, R10, (40000, 443), ACK), ms(10 + i));
        assert_eq!(out.ports(), [t.cached.trunk]);
        let back = trunk(&tcp(R10, A, (443, 40000), ACK), 10);
        assert_eq!(t.send(P::Trunk, &back, ms(10 + i)).ports(), [t.cached.a]);
    }
    t.same_state();
    assert!(t.hits() >= 190, "{} hits", t.hits());
    // For 60 s only A's frames, every 2 s and all from the cache, keep the flow alive, which
    // lives 10 s unrefreshed: hits must refresh it, or R10's frame at the end is refused.
    let before = t.hits();
    for i in 1..=30 {
        t.send(P::A, &tcp(A, R10, (40000, 443), ACK), ms(200 + i * 2000));
    }
    assert_eq!(t.hits() - before, 30, "A's frames came from the cache");
    let back = trunk(&tcp(R10, A, (443, 40000), ACK), 10);
    assert_eq!(t.send(P::Trunk, &back, ms(61_000)).ports(), [t.cached.a]);
    // R10 resets the connection; once the closing flow times out (60 s), R10's frames, which
    // the cache still holds, are refused again.
    t.send(
        P::Trunk,
        &trunk(&tcp(R10, A, (443, 40000), RST), 10),
        ms(62_000),
    );
    assert_eq!(t.send(P::Trunk, &back, ms(62_500)).ports(), [t.cached.a]);
    assert_eq!(
        t.send(P::Trunk, &back, ms(123_000)).dropped(),
        super::DropReason::Firewall
    );
    t.same_state();
}

#[test]
fn configuration_changes_reach_cached_flows_as_they_reach_the_core() {
    let mut t = Twin::new();
    let ab = fixture::udp_frame(A, B, (4000, 5000), &[1, 2, 3]);
    let ba = fixture::udp_frame(B, A, (5000, 4000), &[]);
    for i in 0..10 {
        t.send(P::A, &ab, ms(i));
        t.send(P::B, &ba, ms(i));
    }
    let hits = t.hits();
    assert!(hits > 0);
    // B denies UDP in; the flow is tracked, so it keeps passing (as documented) ...
    let deny_udp = Rule {
        direction: Direction::In,
        protocol: Protocol::Udp,
        ports: PortRange::ALL,
        remote: Cidr::ANY,
        action: Action::Deny,
    };
    t.change(|l| {
        l.switch
            .set_port_rules(l.b, vec![deny_udp])
            .expect("valid rules");
    });
    assert_eq!(t.send(P::A, &ab, ms(20)).ports(), [t.cached.b]);
    // ... until the flows are flushed: then it is refused, at once.
    t.change(|l| l.switch.flush_flows());
    assert_eq!(
        t.send(P::A, &ab, ms(21)).dropped(),
        super::DropReason::Firewall
    );
    t.change(|l| l.switch.set_port_rules(l.b, Vec::new()).expect("no rules"));
    assert_eq!(t.send(P::A, &ab, ms(22)).ports(), [t.cached.b]);
    // B goes; its address is another guest's now: A's cached frames find nobody there
    // (unknown unicast from a guest floods the VLAN's uplinks).
    t.change(|l| {
        l.switch.remove_port(l.b).expect("B exists");
    });
    assert_eq!(t.send(P::A, &ab, ms(23)).ports(), [t.cached.trunk]);
    // The trunk stops carrying VLAN 10: nowhere to go.
    t.change(|l| {
        let only20: VlanSet = [v(20)].into_iter().collect();
        l.switch.set_trunk_vlans(l.trunk, only20).expect("a trunk");
    });
    assert_eq!(
        t.send(P::A, &ab, ms(24)).dropped(),
        super::DropReason::NoDestination
    );
    t.same_state();
}

#[test]
fn learning_moves_and_ageing_reach_cached_flows() {
    let config = SwitchConfig {
        mac_ageing: smoltcp::time::Duration::from_secs(2),
        ..SwitchConfig::default()
    };
    let mut t = Twin::with(config);
    let second = PortKind::Uplink(UplinkMode::Access { vlan: v(10) });
    let access = t
        .cached
        .switch
        .add_port(second.clone())
        .expect("valid uplink");
    let same = t.plain.switch.add_port(second).expect("valid uplink");
    assert_eq!(access, same);
    let out = tcp(A, R10, (40000, 443), ACK);
    // Unknown: flooded to both uplinks, from the cache too.
    for i in 0..5 {
        assert_eq!(t.send(P::A, &out, ms(i)).ports().len(), 2);
    }
    // R10 speaks on the trunk: learned there, A's frames go there alone.
    // (The firewall refuses it, A publishing nothing, but R10 is learned first.)
    let hello = trunk(&fixture::udp_frame(R10, A, (53, 53), &[]), 10);
    t.send(P::Trunk, &hello, ms(10));
    for i in 0..5 {
        assert_eq!(t.send(P::A, &out, ms(11 + i)).ports(), [t.cached.trunk]);
    }
    // Ageing (2 s) with only cached frames to it: flooded again.
    assert_eq!(t.send(P::A, &out, ms(2_500)).ports().len(), 2);
    // R10 speaks again on the trunk before the sweep: its aged entry is revived, and the
    // cached flood must give way.
    t.send(P::Trunk, &hello, ms(2_550));
    assert_eq!(t.send(P::A, &out, ms(2_560)).ports(), [t.cached.trunk]);
    // R10 answers A, and from then on only R10's cached frames keep it learned, for longer
    // than it would stay unrefreshed: hits must re-learn it, or A's frames would flood.
    let reply = trunk(&tcp(R10, A, (443, 40000), ACK), 10);
    assert_eq!(t.send(P::Trunk, &reply, ms(2_600)).ports(), [t.cached.a]);
    let before = t.hits();
    for i in 1..=6 {
        t.send(P::Trunk, &reply, ms(2_600 + i * 1000));
    }
    assert_eq!(t.hits() - before, 6, "R10's frames came from the cache");
    assert_eq!(t.send(P::A, &out, ms(8_700)).ports(), [t.cached.trunk]);
    // R10 moves to the access port.
    let moved = fixture::udp_frame(R10, A, (53, 53), &[]);
    let a = fate(t.cached.switch.ingress(access, &moved, ms(8_800)));
    assert_eq!(a, fate(t.plain.switch.ingress(access, &moved, ms(8_800))));
    for i in 0..5 {
        assert_eq!(t.send(P::A, &out, ms(8_900 + i)).ports(), [access]);
    }
    t.same_state();
}

/// A frame of the mixed workload: TCP (any flags) and UDP among the lab's hosts, some spoofed,
/// some to broadcast, some DHCP, some fragments, on their own ports or the wrong ones.
fn random_frame(r: &mut XorShift) -> (P, Vec<u8>) {
    const HOSTS: [Host; 5] = [A, B, C, R10, R20];
    const FLAGS: [u8; 6] = [SYN, SYN | ACK, ACK, FIN | ACK, RST, 0x18];
    let from = HOSTS[r.below(5)];
    let to = HOSTS[r.below(5)];
    let ports = (
        [40000, 53, 67, 80][r.below(4)],
        [80, 443, 67, 53][r.below(4)],
    );
    let mut frame = match r.below(3) {
        0 => fixture::udp_frame(from, to, ports, &[0; 4]),
        _ => tcp(from, to, ports, FLAGS[r.below(6)]),
    };
    match r.below(20) {
        0 => frame[0..6].copy_from_slice(&BROADCAST),
        1 => frame[26..30].copy_from_slice(&Ipv4Addr::new(10, 0, 10, 99).octets()),
        2 => fixture::fragment(&mut frame, 7, 0, true),
        3 => frame[16..18].copy_from_slice(&[0xff, 0xff]), // total length beyond the frame
        4 => frame[14] = 0x46,                             // options announced, not there
        5 => frame.truncate(40),
        _ => {}
    }
    let port = match (from.vlan, r.below(8)) {
        (_, 0) => [P::A, P::B, P::C, P::Trunk][r.below(4)],
        _ if from == A => P::A,
        _ if from == B => P::B,
        _ if from == C => P::C,
        _ => P::Trunk,
    };
    if matches!(port, P::Trunk) {
        let vid = if r.below(10) == 0 { 30 } else { from.vlan };
        frame = trunk(&frame, vid);
    }
    (port, frame)
}

#[test]
fn a_mixed_workload_is_decided_alike() {
    let mut t = Twin::new();
    let mut r = XorShift(0x5eed_f10c);
    let mut now = 0i64;
    let mut pool: Vec<(P, Vec<u8>)> = (0..48).map(|_| random_frame(&mut r)).collect();
    for step in 0..20_000 {
        // Mostly microseconds apart; now and then past MAC ageing and flow timeouts.
        now += match r.below(1000) {
            0 => 400_000,
            1..=10 => 10_000,
            _ => 1,
        };
        if r.below(2000) == 0 {
            t.change(|l| l.switch.flush_flows());
        }
        if r.below(3000) == 0 {
            let rules = vec![Rule {
                direction: Direction::Out,
                protocol: Protocol::Tcp,
                ports: PortRange::one(443),
                remote: Cidr::ANY,
                action: Action::Deny,
            }];
            let on = step % 2 == 0;
            t.change(|l| {
                l.switch
                    .set_port_rules(l.a, if on { rules.clone() } else { Vec::new() })
                    .expect("valid rules");
            });
        }
        // A pool of flows, each sent many times (what a cache is for), now and then one
        // replaced by a new one.
        let slot = r.below(pool.len());
        if r.below(10) == 0 {
            pool[slot] = random_frame(&mut r);
        }
        let (port, frame) = &pool[slot];
        t.send(*port, frame, ms(now));
    }
    t.same_state();
    assert!(t.hits() > 2000, "only {} hits", t.hits());
}

/// Frames of one flow in a row at one `now`, as a bulk sender's batch is: the second and later
/// reuse the first's hit (`LastHit`), which must leave what a full lookup would, through a
/// TCP connection's states, a learning uplink, and changes and sweeps between two frames.
#[test]
fn runs_of_one_flow_at_one_instant_are_decided_alike() {
    let mut t = Twin::new();
    let out = |flags| tcp(A, R10, (40000, 443), flags);
    let back = |flags| trunk(&tcp(R10, A, (443, 40000), flags), 10);
    run(&mut t, P::A, &out(SYN), 1);
    run(&mut t, P::Trunk, &back(SYN | ACK), 2);
    for i in 0..5 {
        run(&mut t, P::A, &out(ACK), 10 + 2 * i);
        run(&mut t, P::Trunk, &back(ACK), 11 + 2 * i);
    }
    // A change between two frames of a run, then the run goes on.
    t.send(P::A, &out(ACK), ms(30));
    t.change(|l| l.switch.flush_flows());
    run(&mut t, P::A, &out(ACK), 30);
    run(&mut t, P::Trunk, &back(ACK), 30);
    run(&mut t, P::A, &out(FIN | ACK), 40);
    run(&mut t, P::Trunk, &back(FIN | ACK), 41);
    run(&mut t, P::Trunk, &back(ACK), 42);
    // Guest to guest, and a sweep between two frames of a run.
    let ab = fixture::udp_frame(A, B, (4000, 5000), &[]);
    run(&mut t, P::A, &ab, 50);
    t.send(P::A, &ab, ms(60));
    t.change(|l| l.switch.expire(ms(60)));
    run(&mut t, P::A, &ab, 60);
    t.same_state();
    assert!(t.hits() > 60, "only {} hits", t.hits());
}

/// A hit that leaves its flow expiring at the very `now` it was refreshed (a zero timeout):
/// the next frame of the run finds the flow gone, as the core does, rather than reusing the
/// hit.
#[test]
fn a_run_does_not_outlive_a_flow_that_expires_at_once() {
    let conntrack = ConntrackConfig {
        udp_replied: Duration::ZERO,
        ..ConntrackConfig::default()
    };
    let mut t = Twin::with(SwitchConfig {
        conntrack,
        ..SwitchConfig::default()
    });
    let out = fixture::udp_frame(A, R10, (4000, 53), &[]);
    let back = trunk(&fixture::udp_frame(R10, A, (53, 4000), &[]), 10);
    // The reply is cached while its flow is replied (and expires at once); A opens the flow
    // again, so the reply's next hit moves a new flow to replied at `now`.
    run(&mut t, P::A, &out, 0);
    assert_eq!(t.send(P::Trunk, &back, ms(1)).ports(), [t.cached.a]);
    run(&mut t, P::A, &out, 2);
    assert_eq!(t.send(P::Trunk, &back, ms(3)).ports(), [t.cached.a]);
    assert_eq!(
        t.send(P::Trunk, &back, ms(3)).dropped(),
        super::DropReason::Firewall
    );
    t.same_state();
}

/// Sends `frame` five times at `at` (a run of one flow); each time decided alike, and as the
/// first.
fn run(t: &mut Twin, p: P, frame: &[u8], at: i64) {
    let first = t.send(p, frame, ms(at));
    for _ in 0..4 {
        assert_eq!(t.send(p, frame, ms(at)), first);
    }
}

/// A guest's TX queue sends its frames as a batch, in which a run of one flow is counted once,
/// when it ends: at the next other frame or at the batch's end. The counters must come out as
/// frame by frame. A one-entry cache makes every flow displace the one before it, so a run
/// counted after the next frame's decision, rather than before, would be counted on that
/// frame's ports.
#[test]
fn batches_count_their_runs_as_frames_one_by_one() {
    let mut t = Twin::with(SwitchConfig {
        flow_cache: 1,
        ..SwitchConfig::default()
    });
    let ab = fixture::udp_frame(A, B, (4000, 5000), &[1, 2, 3]);
    let out = fixture::udp_frame(A, R10, (4000, 53), &[]);
    let spoof = fixture::udp_frame(C, B, (4000, 5000), &[]);
    let who_has = fixture::arp(
        (A.mac, BROADCAST),
        smoltcp::wire::ArpOperation::Request,
        (A.mac, A.ip),
        B.ip,
    );
    // Misses, runs, a drop and a flood inside one batch; then a batch of hits only.
    let first = [
        &ab[..],
        &ab,
        &ab,
        &out,
        &out,
        &out,
        &ab,
        &ab,
        &spoof,
        &ab,
        &who_has,
        &ab,
        &ab,
    ];
    let fates = t.batch(P::A, &first, ms(1));
    assert_eq!(fates[0].ports(), [t.cached.b]);
    assert_eq!(fates[3].ports(), [t.cached.trunk]);
    t.same_state();
    let fates = t.batch(P::A, &[&ab[..]; 20], ms(2));
    assert!(fates.iter().all(|f| f.ports() == [t.cached.b]));
    t.same_state();
    // Two flows taking turns: no run longer than one frame.
    t.batch(P::A, &[&ab[..], &out, &ab, &out, &ab, &out], ms(3));
    // A reply's run from the trunk, which learns its sender's MAC.
    let back = trunk(&fixture::udp_frame(R10, A, (53, 4000), &[]), 10);
    let fates = t.batch(P::Trunk, &[&back[..]; 8], ms(4));
    assert!(fates.iter().all(|f| f.ports() == [t.cached.a]));
    t.same_state();
    assert!(t.hits() >= 30, "only {} hits", t.hits());
}

/// A batch remembers the frame that began a run and does not parse the run's next frames
/// again while they match it under its mask: frames of one flow that differ only in what the
/// decision does not read (TOS, identification, DF, TTL, checksums, payload) are the run's;
/// a frame that differs in what it does read (total length, fragment bits, the ports) or in
/// length is parsed, whether it then repeats the hit, misses, or is no cacheable frame at all.
/// Everything must come out as frame by frame through a switch without the cache.
#[test]
fn a_run_is_remembered_only_for_frames_that_parse_alike() {
    let mut t = Twin::new();
    let u0 = fixture::udp_frame(A, B, (4000, 5000), &[7; 30]);
    assert!(u0.len() >= 48, "long enough to be remembered");
    let with = |edits: &[(usize, u8)]| {
        let mut f = u0.clone();
        for &(at, v) in edits {
            f[at] = v;
        }
        f
    };
    // Outside the mask: the IPv4 TOS, identification, DF, TTL and checksum; UDP's checksum;
    // the payload.
    let same = with(&[
        (15, 0x10),
        (18, 0x12),
        (19, 0x34),
        (20, 0x40),
        (22, 9),
        (24, 1),
        (40, 2),
        (60, 9),
    ]);
    // Under the mask, still the same key: the IPv4 and UDP lengths two bytes short of the
    // frame (the rest is padding).
    let shorter = {
        let mut f = u0.clone();
        let ip = u16::from_be_bytes([f[16], f[17]]) - 2;
        let udp = u16::from_be_bytes([f[38], f[39]]) - 2;
        f[16..18].copy_from_slice(&ip.to_be_bytes());
        f[38..40].copy_from_slice(&udp.to_be_bytes());
        f
    };
    // Under the mask, not cacheable: a total length beyond the frame (either byte), a later
    // fragment.
    let beyond = with(&[(17, 0xff)]);
    let far_beyond = with(&[(16, 0x01)]);
    let fragment = with(&[(21, 0x10)]);
    // The same bytes as TCP: a header whose data offset (from the payload) is too short.
    let as_tcp = with(&[(23, 6)]);
    // IPv4 options (the core reads the ports four bytes further).
    let options = with(&[(14, 0x46)]);
    // A UDP length beyond the datagram.
    let udp_beyond = with(&[(38, 0x01)]);
    // Another flow, one byte away; and the same flow's frame one byte longer.
    let other = with(&[(37, 0x89)]);
    let mut longer = u0.clone();
    longer.push(0);
    // One byte short: its IPv4 length runs past its end.
    let truncated = &u0[..u0.len() - 1];
    let frames = [
        &u0[..],
        &u0,
        &same,
        &same,
        &u0,
        &shorter,
        &shorter,
        &u0,
        &beyond,
        &u0,
        &fragment,
        &u0,
        &other,
        &u0,
        &same,
        &longer,
        &u0,
        &same,
        &far_beyond,
        &u0,
        truncated,
        &u0,
        &as_tcp,
        &u0,
        &udp_beyond,
        &u0,
        &options,
        &u0,
    ];
    let fates = t.batch(P::A, &frames, ms(1));
    assert_eq!(
        fates[3].ports(),
        [t.cached.b],
        "a frame differing only outside the mask"
    );
    assert_eq!(
        fates[6].ports(),
        [t.cached.b],
        "the same flow with shorter lengths"
    );
    assert_eq!(
        fates[15].ports(),
        [t.cached.b],
        "the same flow, one byte longer"
    );
    t.same_state();
    // TCP, out through the trunk: the flags the key keeps are under the mask, PSH is not; the
    // data offset is. An RST closes the flow, so a minute later the peer's reply is refused.
    let t0 = tcp(A, R10, (4001, 80), SYN);
    let ack = tcp(A, R10, (4001, 80), ACK);
    let tweak = |f: &[u8], at: usize, v: u8| {
        let mut f = f.to_vec();
        f[at] = v;
        f
    };
    let psh = tweak(&ack, 47, ACK | 0x08);
    let rst = tweak(&ack, 47, ACK | RST);
    let long_header = tweak(&ack, 46, 0x60);
    let frames = [
        &t0[..],
        &ack,
        &ack,
        &psh,
        &psh,
        &ack,
        &rst,
        &ack,
        &long_header,
        &ack,
        &psh,
    ];
    let fates = t.batch(P::A, &frames, ms(2));
    assert_eq!(fates[4].ports(), [t.cached.trunk], "PSH is no other flow");
    t.same_state();
    let reply = trunk(&tcp(R10, A, (80, 4001), ACK), 10);
    let fates = t.batch(P::Trunk, &[&reply[..]], ms(2 + 61_000));
    assert_eq!(
        fates[0].dropped(),
        DropReason::Firewall,
        "the reset flow is closed"
    );
    t.same_state();
    assert!(t.hits() >= 12, "only {} hits", t.hits());
}
