//! [`Switch::ingress`]: one frame through the pipeline, and the [`Decision`] it returns.

use core::net::Ipv4Addr;

use smoltcp::time::Instant;

use super::conntrack::{Conntrack, trackable};
use super::counters::DropReason;
use super::dhcp::Taken;
use super::fdb::mac_key;
use super::firewall::{self, End};
use super::flowcache::{self, Insert, Key, Memo, Parsed};
use super::frame::{self, Arp, ETHERTYPE_ARP, ETHERTYPE_IPV4, Ipv4, L4};
use super::port::{GuestPort, PortId, PortKind, UplinkMode};
use super::table::{Stamp, stamp};
use super::vlan::{Outer, Tag, Vlan};
use super::{Domain, MAX_FRAME_LEN, Port, Switch};

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'a> {
    /// To one port or more; to none when the switch took the frame itself (a DHCP request
    /// it answers, see [`dhcp`](super::dhcp)).
    Forward(Forward<'a>),
    /// Nowhere; counted under this reason.
    Drop(DropReason),
}

/// The destinations of a forwarded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward<'a> {
    /// The VLAN the frame travels in.
    pub vlan: Vlan,
    /// Whether the frame arrived with one 802.1Q tag (a trunk's, or an access port's priority
    /// tag), which an untagged egress removes: see [`write_egress`](super::write_egress).
    pub ingress_tagged: bool,
    /// The ports, each once, never the ingress port, all carrying `vlan`. Empty for a frame
    /// the switch took itself.
    pub to: &'a [Egress],
}

/// One copy of a forwarded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Egress {
    /// The port it leaves through.
    pub port: PortId,
    /// With or without a tag.
    pub tag: Tag,
}

/// What a frame was accepted as, for the counters.
#[derive(Debug, Clone, Copy)]
struct Accepted {
    vlan: Vlan,
    tagged: bool,
    flooded: bool,
    /// Its one destination was found by learning.
    learned: bool,
    /// The switch answered it (DHCP): it goes to no port, and is no drop.
    answered: bool,
}

type Refused = (Option<Vlan>, DropReason);

/// A cache hit, kept for the frame after it. A frame with the same [`Key`] (the same port and
/// every header field the decision reads, TCP flags included) decided at the same `now` in the
/// same epoch, with no other frame in between, would repeat the hit's checks on a state they
/// left as they found it: the flow's refresh with the same flags and `now` is a no-op while
/// it stays alive at `now`; a sender's MAC learned again at the same `now`, and the lookup of
/// a learned destination, change and answer nothing new; no sweep runs twice at one `now`.
/// So the run of frames of one flow that a bulk sender's batch is costs one lookup; each frame
/// is still counted. Any frame that is not such a hit, any configuration change and any
/// sweep forget it.
#[derive(Debug, Clone, Copy)]
pub(super) struct LastHit {
    key: Key,
    now: Stamp,
    epoch: u64,
    slot: usize,
    accepted: Accepted,
}

/// Frames from one port, all decided at one instant: each through [`Batch::ingress`], which
/// decides it exactly as [`Switch::ingress`] would. A run of frames that repeat the last hit
/// (see [`LastHit`]) is counted once, when it ends: at the next other frame, or when the batch
/// is dropped. The batch borrows the switch, so no counter is read before then.
#[derive(Debug)]
pub struct Batch<'s> {
    switch: &'s mut Switch,
    port: PortId,
    now: Stamp,
    run: Run,
    /// The frame that began the current run, so that the run's next frames are not parsed
    /// (see [`Memo`]).
    memo: Memo,
}

/// Frames that repeated the last hit, not yet counted.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    frames: u64,
    bytes: u64,
}

impl Batch<'_> {
    /// Decides where `frame` goes: see [`Switch::ingress`].
    pub fn ingress(&mut self, frame: &[u8]) -> Decision<'_> {
        let memoed = self.memo.matches(frame);
        let parsed = if memoed {
            Some(self.memo.parsed)
        } else {
            cacheable(self.port, frame)
        };
        if let Some(p) = &parsed
            && let Some((accepted, slot)) = self.switch.repeat(p, self.now)
        {
            // A run has begun: its next frames need not be parsed. (Only then: where no
            // frame repeats the one before, a memo would cost every frame and serve none.)
            if !memoed {
                self.memo = Memo::new(frame, *p);
            }
            self.run.frames = self.run.frames.wrapping_add(1);
            self.run.bytes = self.run.bytes.wrapping_add(frame.len() as u64);
            return self.switch.repeated(accepted, slot);
        }
        self.count_run();
        self.switch
            .ingress_parsed(self.port, frame, self.now, parsed)
    }

    #[inline]
    fn count_run(&mut self) {
        if self.run.frames != 0 {
            let run = core::mem::take(&mut self.run);
            self.switch.count_run(self.port, run);
        }
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.count_run();
    }
}

/// The flow cache's key of `frame` from `port`, if the cache may hold its decision.
#[inline]
fn cacheable(port: PortId, frame: &[u8]) -> Option<Parsed> {
    if frame.len() <= MAX_FRAME_LEN {
        flowcache::parse(port, frame)
    } else {
        None
    }
}

enum L3<'a> {
    Arp(Arp),
    Ipv4(Ipv4<'a>),
}

impl Switch {
    /// Decides where `frame`, received on `port` at `now`, goes, and counts it.
    ///
    /// The steps, each of which may drop the frame under the [`DropReason`] named:
    /// 1. the port exists (`UnknownPort`), the frame is at most [`MAX_FRAME_LEN`] bytes
    ///    (`Oversize`) and holds an Ethernet header and the tag it announces (`Malformed`);
    /// 2. its VLAN, from the port and the tag (`BadVlanTag`, `UnknownVlan`);
    /// 3. its source MAC (`InvalidSourceMac`, `SpoofedMac`) and EtherType
    ///    (`UnsupportedEtherType`), then its ARP or IPv4 headers (`Malformed`);
    /// 4. from a guest: its IPv4 source and ARP sender (`SpoofedIpv4`, `SpoofedArp`); from an
    ///    uplink: its source MAC is learned; from a guest on a VLAN whose DHCP the switch
    ///    serves, a DHCP request is taken and answered here (`Malformed`, `SpoofedMac`, and
    ///    `Firewall` for a guest's server message; see [`dhcp`](super::dhcp));
    /// 5. destinations in the VLAN (`NoDestination`);
    /// 6. for IPv4, the firewall on each copy, after connection tracking (`Firewall`,
    ///    `ConntrackFull` when no copy is left).
    ///
    /// The decisions of unicast TCP and UDP frames are cached (see `flowcache`): the next
    /// frame of the flow gets the same decision without these steps, exactly as it would
    /// through them.
    ///
    /// Frames from one port decided at one instant (a batch of a guest's TX queue) are
    /// cheaper through a [`Batch`].
    pub fn ingress(&mut self, port: PortId, frame: &[u8], now: Instant) -> Decision<'_> {
        let now = stamp(now);
        self.sweep_due(now);
        let parsed = cacheable(port, frame);
        if let Some(p) = &parsed
            && let Some((accepted, slot)) = self.repeat(p, now)
        {
            let one = Run {
                frames: 1,
                bytes: frame.len() as u64,
            };
            self.count_run(port, one);
            return self.repeated(accepted, slot);
        }
        self.ingress_parsed(port, frame, now, parsed)
    }

    /// Starts a [`Batch`] of frames from `port`, all decided at `now`.
    pub fn batch(&mut self, port: PortId, now: Instant) -> Batch<'_> {
        let now = stamp(now);
        self.sweep_due(now);
        Batch {
            switch: self,
            port,
            now,
            run: Run::default(),
            memo: Memo::default(),
        }
    }

    fn sweep_due(&mut self, now: Stamp) {
        if now >= self.next_sweep {
            self.sweep(now);
        }
    }

    /// [`ingress`](Self::ingress) of a frame [`cacheable`] has parsed, at a `now` the sweep has
    /// seen, that is no repeat of the last hit (the caller checked).
    fn ingress_parsed(
        &mut self,
        port: PortId,
        frame: &[u8],
        now: Stamp,
        parsed: Option<Parsed>,
    ) -> Decision<'_> {
        self.out.clear();
        self.denied.clear();
        let Some(Some(ingress)) = self.ports.get_mut(port.index()) else {
            return Decision::Drop(DropReason::UnknownPort);
        };
        ingress.counters.received(frame.len());
        // A hit's egress ports stay in its cache slot; the core's go to `out`.
        let decided = match parsed.as_ref().and_then(|p| self.hit(port, p, now)) {
            Some((accepted, slot)) => Ok((accepted, Some(slot))),
            None => {
                self.last_hit = None;
                let decided = self.decide(port, frame, now);
                if let (Some(p), Ok(a)) = (&parsed, &decided)
                    && self.denied.is_empty()
                    && !a.answered
                    && let Some(flow) = self.conntrack.find(a.vlan, &p.flow())
                {
                    let decision = Insert {
                        vlan: a.vlan,
                        tagged: a.tagged,
                        flooded: a.flooded,
                        learned: a.learned,
                        flow,
                        to: &self.out,
                    };
                    self.cache.insert(p.key, self.epoch, &decision);
                }
                decided.map(|a| (a, None))
            }
        };
        for denied in &self.denied {
            if let Some(Some(p)) = self.ports.get_mut(denied.index()) {
                p.counters.tx_denied = p.counters.tx_denied.wrapping_add(1);
            }
        }
        match decided {
            Ok((accepted, slot)) => {
                if accepted.answered
                    && let Some(Some(p)) = self.ports.get_mut(port.index())
                {
                    p.counters.answered();
                }
                let to = match slot {
                    Some(slot) => self.cache.egress_at(slot),
                    None => &self.out,
                };
                for egress in to {
                    if let Some(Some(p)) = self.ports.get_mut(egress.port.index()) {
                        p.counters.sent(frame.len());
                    }
                }
                if let Some(domain) = self.vlans[accepted.vlan.index()].as_mut() {
                    domain.counters.forwarded(frame.len(), accepted.flooded);
                }
                Decision::Forward(Forward {
                    vlan: accepted.vlan,
                    ingress_tagged: accepted.tagged,
                    to,
                })
            }
            Err((vlan, reason)) => {
                if let Some(Some(p)) = self.ports.get_mut(port.index()) {
                    p.counters.drops.bump(reason);
                }
                if let Some(domain) = vlan.and_then(|v| self.vlans[v.index()].as_mut()) {
                    domain.counters.drops.bump(reason);
                }
                Decision::Drop(reason)
            }
        }
    }

    /// The cached decision for `p`, if there is one and what it relied on still holds: the
    /// flow is refreshed in connection tracking, the sender's MAC re-learned, as the steps of
    /// [`ingress`](Self::ingress) would. `None` sends the frame through them.
    fn hit(&mut self, port: PortId, p: &Parsed, now: Stamp) -> Option<(Accepted, usize)> {
        let Switch {
            config,
            ports,
            vlans,
            conntrack,
            scratch,
            cache,
            epoch,
            cache_hits,
            ..
        } = self;
        let (slot, entry) = cache.get(&p.key, *epoch)?;
        let domain = vlans[entry.vlan.index()].as_deref_mut()?;
        let still = (!entry.learned
            || entry.egress().first().map(|e| e.port)
                == domain.fdb.lookup(p.dst(), now, config.mac_ageing))
        .then(|| conntrack.refresh(&entry.flow, p.protocol(), p.flags(), now))
        .flatten();
        let Some(expires) = still else {
            cache.remove(&p.key);
            return None;
        };
        let accepted = Accepted {
            vlan: entry.vlan,
            tagged: entry.tagged,
            flooded: entry.flooded,
            learned: entry.learned,
            answered: false,
        };
        let from_uplink = matches!(
            ports.get(port.index()),
            Some(Some(Port {
                kind: PortKind::Uplink(_),
                ..
            }))
        );
        if from_uplink {
            let limits = (config.mac_ageing, config.max_macs_per_vlan);
            if domain.fdb.learn(p.src(), port, now, limits, scratch) {
                *epoch = epoch.wrapping_add(1);
            }
        }
        *cache_hits += 1;
        // A flow that expires at `now` (a zero timeout) would be gone for the next frame.
        self.last_hit = (expires > now).then_some(LastHit {
            key: p.key,
            now,
            epoch: self.epoch,
            slot,
            accepted,
        });
        Some((accepted, slot))
    }

    /// The last hit again, if `p` repeats it (see [`LastHit`]): counted as a cache hit.
    #[inline]
    fn repeat(&mut self, p: &Parsed, now: Stamp) -> Option<(Accepted, usize)> {
        let last = self.last_hit.as_ref()?;
        if last.key != p.key || last.now != now || last.epoch != self.epoch {
            return None;
        }
        self.cache_hits += 1;
        Some((last.accepted, last.slot))
    }

    /// The decision of a repeat of the last hit, `accepted` with the egress ports in `slot`.
    #[inline]
    fn repeated(&self, accepted: Accepted, slot: usize) -> Decision<'_> {
        Decision::Forward(Forward {
            vlan: accepted.vlan,
            ingress_tagged: accepted.tagged,
            to: self.cache.egress_at(slot),
        })
    }

    /// Counts `run`'s frames, each a repeat of the last hit, as [`ingress`](Self::ingress)
    /// counts a forwarded frame: received on `port`, sent on each of the hit's egress ports,
    /// forwarded in its VLAN.
    #[inline(never)] // once per run, out of the way of the frames that are no repeat
    fn count_run(&mut self, port: PortId, run: Run) {
        let Some(last) = &self.last_hit else {
            return;
        };
        if let Some(Some(p)) = self.ports.get_mut(port.index()) {
            p.counters.received_many(run.frames, run.bytes);
        }
        for egress in self.cache.egress_at(last.slot) {
            if let Some(Some(p)) = self.ports.get_mut(egress.port.index()) {
                p.counters.sent_many(run.frames, run.bytes);
            }
        }
        let (vlan, flooded) = (last.accepted.vlan, last.accepted.flooded);
        if let Some(domain) = self.vlans[vlan.index()].as_mut() {
            domain
                .counters
                .forwarded_many(run.frames, run.bytes, flooded);
        }
    }

    fn decide(&mut self, port: PortId, frame: &[u8], now: Stamp) -> Result<Accepted, Refused> {
        let Switch {
            config,
            ports,
            vlans,
            conntrack,
            out,
            denied,
            scratch,
            dhcp,
            epoch,
            ..
        } = self;
        let ports = &*ports;
        let Some(Some(Port { kind, .. })) = ports.get(port.index()) else {
            return Err((None, DropReason::UnknownPort));
        };
        if frame.len() > MAX_FRAME_LEN {
            return Err((None, DropReason::Oversize));
        }
        let l2 = frame::l2(frame).ok_or((None, DropReason::Malformed))?;
        let (vlan, tagged) = classify(kind, l2.outer)?;
        let refuse = |reason| (Some(vlan), reason);
        let domain = vlans[vlan.index()]
            .as_deref_mut()
            .ok_or(refuse(DropReason::NoDestination))?;

        if frame::is_group(l2.src) || l2.src == [0; 6] {
            return Err(refuse(DropReason::InvalidSourceMac));
        }
        let guest = match kind {
            PortKind::Guest(g) => Some(g),
            PortKind::Uplink(_) => None,
        };
        let spoofed_mac = match guest {
            Some(g) => l2.src != g.mac,
            None => domain.guests.contains_key(&mac_key(l2.src)),
        };
        if spoofed_mac {
            return Err(refuse(DropReason::SpoofedMac));
        }
        let l3 = match l2.ethertype {
            ETHERTYPE_IPV4 => frame::ipv4(l2.payload).map(L3::Ipv4),
            ETHERTYPE_ARP => frame::arp(l2.payload).map(L3::Arp),
            _ => return Err(refuse(DropReason::UnsupportedEtherType)),
        }
        .ok_or(refuse(DropReason::Malformed))?;
        match guest {
            Some(g) => {
                antispoof(g, &l3).map_err(refuse)?;
                // The switch's own DHCP server, on VLANs it serves: taken, never forwarded.
                if let L3::Ipv4(ip) = &l3
                    && let Some(taken) = dhcp.take(port, g, ip)
                {
                    return Ok(Accepted {
                        vlan,
                        tagged,
                        flooded: false,
                        learned: false,
                        answered: taken.map_err(refuse)? == Taken::Answered,
                    });
                }
            }
            None => {
                uplink_antispoof(domain, &l3).map_err(refuse)?;
                let limits = (config.mac_ageing, config.max_macs_per_vlan);
                if domain.fdb.learn(l2.src, port, now, limits, scratch) {
                    *epoch = epoch.wrapping_add(1);
                }
            }
        }

        let Found { flooded, learned } = destinations(
            ports,
            domain,
            port,
            guest.is_none(),
            l2.dst,
            vlan,
            now,
            config.mac_ageing,
            out,
        );
        if out.is_empty() {
            return Err(refuse(DropReason::NoDestination));
        }
        if let L3::Ipv4(ip) = &l3 {
            let unicast =
                !frame::is_group(l2.dst) && !ip.dst.is_broadcast() && !ip.dst.is_multicast();
            let policy = Policy {
                ports,
                domain,
                from: (port, end(kind)),
                vlan,
                unicast,
                now,
            };
            policy.apply(ip, conntrack, out, denied).map_err(refuse)?;
        }
        Ok(Accepted {
            vlan,
            tagged,
            flooded,
            learned,
            answered: false,
        })
    }
}

/// The VLAN of a frame from a port of `kind` with this outer tag, and whether it was tagged.
fn classify(kind: &PortKind, outer: Outer) -> Result<(Vlan, bool), Refused> {
    let bad = |vlan| Err((vlan, DropReason::BadVlanTag));
    match (kind, outer) {
        (PortKind::Guest(g), Outer::Untagged) => Ok((g.vlan, false)),
        (PortKind::Guest(g), _) => bad(Some(g.vlan)),
        (PortKind::Uplink(UplinkMode::Access { vlan }), Outer::Untagged) => Ok((*vlan, false)),
        (PortKind::Uplink(UplinkMode::Access { vlan }), Outer::Dot1q(0)) => Ok((*vlan, true)),
        (PortKind::Uplink(UplinkMode::Access { vlan }), _) => bad(Some(*vlan)),
        (PortKind::Uplink(UplinkMode::Trunk { allowed }), Outer::Dot1q(vid)) => {
            match Vlan::new(vid) {
                Some(vlan) if allowed.contains(vlan) => Ok((vlan, true)),
                Some(_) => Err((None, DropReason::UnknownVlan)),
                None => bad(None),
            }
        }
        (PortKind::Uplink(UplinkMode::Trunk { .. }), _) => bad(None),
    }
}

/// A guest's ARP sender and IPv4 source must be its own.
fn antispoof(g: &GuestPort, l3: &L3<'_>) -> Result<(), DropReason> {
    match l3 {
        L3::Arp(arp) => {
            let ip_ok = arp.sender_ip == g.ipv4 || arp.sender_ip == Ipv4Addr::UNSPECIFIED;
            if arp.sender_mac == g.mac && ip_ok {
                Ok(())
            } else {
                Err(DropReason::SpoofedArp)
            }
        }
        L3::Ipv4(ip) => {
            let dhcp = ip.src == Ipv4Addr::UNSPECIFIED && frame::is_dhcp_without_address(ip, g.mac);
            if ip.src == g.ipv4 || dhcp {
                Ok(())
            } else {
                Err(DropReason::SpoofedIpv4)
            }
        }
    }
}

/// An uplink may not speak for a guest's address on the VLAN.
fn uplink_antispoof(domain: &Domain, l3: &L3<'_>) -> Result<(), DropReason> {
    match l3 {
        L3::Arp(arp) if domain.guest_ips.contains_key(&arp.sender_ip.to_bits()) => {
            Err(DropReason::SpoofedArp)
        }
        L3::Ipv4(ip) if domain.guest_ips.contains_key(&ip.src.to_bits()) => {
            Err(DropReason::SpoofedIpv4)
        }
        _ => Ok(()),
    }
}

/// How [`destinations`] found the ports.
struct Found {
    /// A flood (a group address, or an unknown unicast to the uplinks).
    flooded: bool,
    /// The one port is where the MAC was learned.
    learned: bool,
}

/// Fills `out` with the ports a frame for `dst` goes to.
#[allow(clippy::too_many_arguments)] // the disjoint parts of `Switch` a decision reads
fn destinations(
    ports: &[Option<Port>],
    domain: &Domain,
    from: PortId,
    from_uplink: bool,
    dst: [u8; 6],
    vlan: Vlan,
    now: Stamp,
    ageing: smoltcp::time::Duration,
    out: &mut Vec<Egress>,
) -> Found {
    let mut push = |to: PortId| {
        if to != from
            && let Some(Some(p)) = ports.get(to.index())
        {
            out.push(Egress {
                port: to,
                tag: p.kind.egress_tag(vlan),
            });
        }
    };
    if frame::is_group(dst) {
        let uplinks = &domain.uplinks;
        // From an uplink, a flood reaches guests only: the host is no transit bridge.
        domain
            .members
            .iter()
            .filter(|p| !from_uplink || !uplinks.contains(p))
            .for_each(|p| push(*p));
        return Found {
            flooded: true,
            learned: false,
        };
    }
    let mut found = Found {
        flooded: false,
        learned: false,
    };
    if let Some(guest) = domain.guests.get(&mac_key(dst)) {
        push(*guest);
        return found;
    }
    if from_uplink {
        return found;
    }
    match domain.fdb.lookup(dst, now, ageing) {
        Some(uplink) => {
            push(uplink);
            found.learned = true;
        }
        None => {
            domain.uplinks.iter().for_each(|p| push(*p));
            found.flooded = true;
        }
    }
    found
}

fn end(kind: &PortKind) -> End<'_> {
    match kind {
        PortKind::Guest(g) => End::Guest {
            rules: &g.rules,
            ipv4: g.ipv4,
            published: &g.published,
        },
        PortKind::Uplink(_) => End::Uplink,
    }
}

/// The firewall's view of one IPv4 frame.
struct Policy<'a> {
    ports: &'a [Option<Port>],
    domain: &'a Domain,
    from: (PortId, End<'a>),
    vlan: Vlan,
    unicast: bool,
    now: Stamp,
}

impl Policy<'_> {
    /// Keeps in `out` the copies the firewall lets through, moving the others to `denied`.
    fn apply(
        &self,
        ip: &Ipv4<'_>,
        conntrack: &mut Conntrack,
        out: &mut Vec<Egress>,
        denied: &mut Vec<PortId>,
    ) -> Result<(), DropReason> {
        let (vlan, now) = (self.vlan, self.now);
        let addrs = (ip.src, ip.dst);
        let flow = ip.flow().filter(|_| self.unicast && trackable(&ip.l4));
        // State lets through unicast only: a flood's copies each meet their own rules.
        let tracked = self.unicast
            && if ip.later_fragment {
                conntrack.later_fragment(vlan, ip.protocol, addrs, ip.ident, now)
            } else if let L4::Error { inner } = &ip.l4 {
                conntrack.related(vlan, inner, now)
            } else {
                flow.is_some_and(|f| conntrack.hit(vlan, &f, &ip.l4, now))
            };
        if !tracked {
            out.retain(|e| {
                let to = match self.ports.get(e.port.index()) {
                    Some(Some(p)) => end(&p.kind),
                    _ => return false,
                };
                let allowed = firewall::allows(self.from.1, to, &self.domain.rules, ip);
                if !allowed {
                    denied.push(e.port);
                }
                allowed
            });
            if out.is_empty() {
                return Err(DropReason::Firewall);
            }
            if let Some(f) = flow
                && !conntrack.open(vlan, &f, self.from.0, &ip.l4, now)
            {
                denied.extend(out.drain(..).map(|e| e.port));
                return Err(DropReason::ConntrackFull);
            }
        }
        if ip.first_fragment && self.unicast {
            conntrack.first_fragment(vlan, ip.protocol, addrs, ip.ident, now);
        }
        Ok(())
    }
}
