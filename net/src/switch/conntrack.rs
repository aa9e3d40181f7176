//! Connection tracking: the flows the firewall allowed, so their packets in both directions
//! pass without the rules, and the fragments that follow an allowed first fragment.
//!
//! A flow is keyed by VLAN, protocol and its two (address, port) ends in a canonical order, so
//! a packet and its reply find the same entry; ICMP echo uses its identifier as both ports.
//! The tracking is loose, like Linux's for mid-stream TCP: any allowed packet opens a flow, and
//! TCP flags only shorten timeouts (SYN-only flows and closing flows expire sooner than
//! established ones). Sequence numbers are not checked.
//!
//! **Storage.** Entries live in a slab, the map giving each key its slot, so that the flow
//! cache can refresh a flow through a [`FlowRef`] (its slot and key, checked on use) without
//! hashing its key again.
//!
//! **Bounded.** At most `max_flows` entries, and at most `max_flows_per_port` opened from any
//! one port (a guest, or an uplink for flows to published ports), so one port that opens flows
//! as fast as it can runs out of its own share and leaves the rest to the others. A new flow
//! beyond either bound is refused ([`ConntrackFull`](super::DropReason::ConntrackFull)) rather
//! than evicting someone's established connection. Expired entries are swept every few
//! seconds, and at once (at most once a second) when the table is full.

use core::net::Ipv4Addr;

use smoltcp::time::Duration;

use super::PortId;
use super::frame::{Flow, L4, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, proto};
use super::table::{Map, Seeded, Stamp, after};
use super::vlan::Vlan;

/// Limits and timeouts of connection tracking.
#[derive(Debug, Clone, Copy)]
pub struct ConntrackConfig {
    /// Most flows tracked.
    pub max_flows: usize,
    /// Most flows opened from one port.
    pub max_flows_per_port: usize,
    /// TCP flow seen in one direction only (a SYN waiting for its SYN-ACK).
    pub tcp_new: Duration,
    /// TCP flow seen both ways. A little over TCP keepalive's default 2 hours.
    pub tcp_established: Duration,
    /// TCP flow after a FIN or RST.
    pub tcp_closing: Duration,
    /// UDP flow seen in one direction only.
    pub udp_new: Duration,
    /// UDP flow seen both ways.
    pub udp_replied: Duration,
    /// ICMP echo.
    pub icmp: Duration,
    /// Most first fragments remembered.
    pub max_fragments: usize,
    /// How long the later fragments of an allowed first fragment pass.
    pub fragment: Duration,
}

impl Default for ConntrackConfig {
    fn default() -> Self {
        Self {
            max_flows: 65536,
            max_flows_per_port: 16384,
            tcp_new: Duration::from_secs(120),
            tcp_established: Duration::from_secs(7440),
            tcp_closing: Duration::from_secs(60),
            udp_new: Duration::from_secs(30),
            udp_replied: Duration::from_secs(180),
            icmp: Duration::from_secs(30),
            max_fragments: 4096,
            fragment: Duration::from_secs(10),
        }
    }
}

/// Microseconds between two sweeps forced by a full table.
const FULL_SWEEP_EVERY: Stamp = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    New,
    Replied,
    Closing,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    owner: PortId,
    /// The originator is the lower end of the key.
    originator_low: bool,
    state: State,
    expires: Stamp,
}

/// A flow's place in the table, for [`Conntrack::refresh`]: valid while its slot still holds
/// its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FlowRef {
    slot: u32,
    key: u128,
    src_low: bool,
}

/// The tracked flows of a switch.
#[derive(Debug)]
pub(crate) struct Conntrack {
    config: ConntrackConfig,
    /// Each tracked key's slot in `slots`.
    flows: Map<u128, u32>,
    /// The entries, with their keys; `None` for a free slot (listed in `free`).
    slots: Vec<Option<(u128, Entry)>>,
    free: Vec<u32>,
    per_port: Vec<u32>,
    fragments: Map<u128, Stamp>,
    last_full_sweep: Stamp,
}

/// The canonical key of `flow` on `vlan`, and whether `flow.src` is its lower end.
fn key(vlan: Vlan, flow: &Flow) -> (u128, bool) {
    let a = (u128::from(flow.src.to_bits()) << 16) | u128::from(flow.sport);
    let b = (u128::from(flow.dst.to_bits()) << 16) | u128::from(flow.dport);
    let (low, high, src_low) = if a <= b { (a, b, true) } else { (b, a, false) };
    let head = (u128::from(vlan.get()) << 8) | u128::from(flow.protocol);
    ((head << 96) | (low << 48) | high, src_low)
}

fn fragment_key(vlan: Vlan, protocol: u8, src: Ipv4Addr, dst: Ipv4Addr, ident: u16) -> u128 {
    (u128::from(vlan.get()) << 88)
        | (u128::from(protocol) << 80)
        | (u128::from(src.to_bits()) << 48)
        | (u128::from(dst.to_bits()) << 16)
        | u128::from(ident)
}

/// Whether the firewall tracks packets with these transport fields.
pub(crate) fn trackable(l4: &L4) -> bool {
    matches!(l4, L4::Ports { .. } | L4::Echo { .. })
}

impl Conntrack {
    pub fn new(config: ConntrackConfig, seeded: &Seeded) -> Self {
        Self {
            config,
            flows: seeded.map(),
            slots: Vec::new(),
            free: Vec::new(),
            per_port: Vec::new(),
            fragments: seeded.map(),
            last_full_sweep: Stamp::MIN,
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn fragments_len(&self) -> usize {
        self.fragments.len()
    }

    /// If `flow` is tracked and alive, refreshes it with this packet and returns `true`.
    pub fn hit(&mut self, vlan: Vlan, flow: &Flow, l4: &L4, now: Stamp) -> bool {
        self.find(vlan, flow).is_some_and(|at| {
            let flags = match l4 {
                L4::Ports { flags, .. } => *flags,
                _ => 0,
            };
            self.refresh(&at, flow.protocol, flags, now).is_some()
        })
    }

    /// Where `flow` is tracked, alive or not.
    pub fn find(&self, vlan: Vlan, flow: &Flow) -> Option<FlowRef> {
        let (key, src_low) = key(vlan, flow);
        let slot = *self.flows.get(&key)?;
        Some(FlowRef { slot, key, src_low })
    }

    /// [`hit`](Self::hit) for a packet of the flow at `at` (of `protocol`, with TCP `flags`): if the
    /// slot still holds the flow and it is alive, refreshes it and returns when it now
    /// expires; an expired flow is removed.
    ///
    /// Refreshing again with the same packet fields and `now` changes nothing (the state
    /// moves on to where the same flags leave it, the expiry is the same), as long as the
    /// flow is still alive at `now`: the switch relies on that for a run of frames of one
    /// flow (`LastHit`).
    pub fn refresh(&mut self, at: &FlowRef, protocol: u8, flags: u8, now: Stamp) -> Option<Stamp> {
        let Some(Some((key, entry))) = self.slots.get_mut(at.slot as usize) else {
            return None;
        };
        if *key != at.key {
            return None;
        }
        if entry.expires <= now {
            let owner = entry.owner;
            self.remove_slot(at.slot);
            self.release(owner);
            return None;
        }
        let from_originator = at.src_low == entry.originator_low;
        entry.state = match entry.state {
            _ if flags & (TCP_FIN | TCP_RST) != 0 => State::Closing,
            State::Closing if from_originator && flags & (TCP_SYN | TCP_ACK) == TCP_SYN => {
                State::New
            }
            State::New if !from_originator => State::Replied,
            state => state,
        };
        entry.expires = after(now, timeout(&self.config, protocol, entry.state));
        Some(entry.expires)
    }

    /// Frees the slot of a flow and its key.
    fn remove_slot(&mut self, slot: u32) {
        if let Some(taken) = self.slots.get_mut(slot as usize).and_then(Option::take) {
            self.flows.remove(&taken.0);
            self.free.push(slot);
        }
    }

    fn entry(&self, key: u128) -> Option<&Entry> {
        let slot = *self.flows.get(&key)?;
        self.slots.get(slot as usize)?.as_ref().map(|(_, e)| e)
    }

    /// Whether the flow a quoted packet (in an ICMP error) belongs to is tracked.
    pub fn related(&self, vlan: Vlan, quoted: &Flow, now: Stamp) -> bool {
        let (key, _) = key(vlan, quoted);
        self.entry(key).is_some_and(|e| e.expires > now)
    }

    /// Starts tracking `flow`, opened by a packet from `owner`. `false` if there is no room.
    pub fn open(&mut self, vlan: Vlan, flow: &Flow, owner: PortId, l4: &L4, now: Stamp) -> bool {
        let slot = owner.index();
        if self.per_port.len() <= slot {
            self.per_port.resize(slot + 1, 0);
        }
        let full = self.flows.len() >= self.config.max_flows;
        if full && now.saturating_sub(self.last_full_sweep) >= FULL_SWEEP_EVERY {
            self.last_full_sweep = now;
            self.sweep(now);
        }
        let per_port = usize::try_from(self.per_port[slot]).unwrap_or(usize::MAX);
        if self.flows.len() >= self.config.max_flows || per_port >= self.config.max_flows_per_port {
            return false;
        }
        let (key, src_low) = key(vlan, flow);
        let state = match l4 {
            L4::Ports { flags, .. } if flags & (TCP_FIN | TCP_RST) != 0 => State::Closing,
            _ => State::New,
        };
        let entry = Entry {
            owner,
            originator_low: src_low,
            state,
            expires: after(now, timeout(&self.config, flow.protocol, state)),
        };
        if let Some(&slot) = self.flows.get(&key)
            && let Some(Some((_, old))) = self.slots.get_mut(slot as usize)
        {
            // Only after `hit` missed an expired entry it did not remove; keep counts exact.
            let owner = old.owner;
            *old = entry;
            self.release(owner);
        } else {
            let slot = match self.free.pop() {
                Some(free) => free,
                None => {
                    self.slots.push(None);
                    // At most `max_flows` slots are in use, and a u32 counts them.
                    u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
                }
            };
            if let Some(s) = self.slots.get_mut(slot as usize) {
                *s = Some((key, entry));
                self.flows.insert(key, slot);
            }
        }
        self.per_port[slot] = self.per_port[slot].saturating_add(1);
        true
    }

    /// Remembers that the first fragment of datagram `ident` was allowed.
    pub fn first_fragment(
        &mut self,
        vlan: Vlan,
        protocol: u8,
        (src, dst): (Ipv4Addr, Ipv4Addr),
        ident: u16,
        now: Stamp,
    ) {
        if self.fragments.len() >= self.config.max_fragments {
            self.fragments.retain(|_, expires| *expires > now);
            if self.fragments.len() >= self.config.max_fragments {
                // Still full of live datagrams: this one's later fragments meet the rules
                // without ports instead. Nothing else is forgotten early.
                return;
            }
        }
        let key = fragment_key(vlan, protocol, src, dst, ident);
        self.fragments.insert(key, after(now, self.config.fragment));
    }

    /// Whether a later fragment belongs to a datagram whose first fragment was allowed.
    pub fn later_fragment(
        &self,
        vlan: Vlan,
        protocol: u8,
        (src, dst): (Ipv4Addr, Ipv4Addr),
        ident: u16,
        now: Stamp,
    ) -> bool {
        let key = fragment_key(vlan, protocol, src, dst, ident);
        self.fragments.get(&key).is_some_and(|e| *e > now)
    }

    /// Drops expired flows and fragments.
    pub fn sweep(&mut self, now: Stamp) {
        self.remove_where(|_, e| e.expires <= now);
        self.fragments.retain(|_, expires| *expires > now);
    }

    /// Removes the flows `gone` picks, releasing their owners' shares.
    fn remove_where(&mut self, gone: impl Fn(u128, &Entry) -> bool) {
        let Self {
            flows,
            slots,
            free,
            per_port,
            ..
        } = self;
        flows.retain(|key, slot| {
            let Some(Some((_, e))) = slots.get(*slot as usize) else {
                return false;
            };
            if !gone(*key, e) {
                return true;
            }
            if let Some(n) = per_port.get_mut(e.owner.index()) {
                *n = n.saturating_sub(1);
            }
            slots[*slot as usize] = None;
            free.push(*slot);
            false
        });
    }

    /// Forgets the flows `owner` opened and those with `ip` at either end on `vlan`: the port
    /// is gone, and its address may be given to another guest.
    pub fn forget(&mut self, owner: PortId, vlan: Option<Vlan>, ip: Option<Ipv4Addr>) {
        let ends = |key: u128| {
            let vlan_of = u16::try_from(key >> 104).unwrap_or(0);
            #[allow(clippy::cast_possible_truncation)] // 32-bit fields of the key
            let (low, high) = ((key >> 64) as u32, (key >> 16) as u32);
            (vlan_of, Ipv4Addr::from_bits(low), Ipv4Addr::from_bits(high))
        };
        self.remove_where(|key, e| {
            let (vlan_of, low, high) = ends(key);
            let on_ip = vlan.is_some_and(|v| v.get() == vlan_of)
                && ip.is_some_and(|ip| ip == low || ip == high);
            e.owner == owner || on_ip
        });
        if let Some(n) = self.per_port.get_mut(owner.index()) {
            *n = 0;
        }
    }

    /// Forgets every flow.
    pub fn flush(&mut self) {
        self.flows.clear();
        self.slots.clear();
        self.free.clear();
        self.per_port.iter_mut().for_each(|n| *n = 0);
        self.fragments.clear();
    }

    fn release(&mut self, owner: PortId) {
        if let Some(n) = self.per_port.get_mut(owner.index()) {
            *n = n.saturating_sub(1);
        }
    }
}

fn timeout(config: &ConntrackConfig, protocol: u8, state: State) -> Duration {
    match (protocol, state) {
        (proto::TCP, State::New) => config.tcp_new,
        (proto::TCP, State::Replied) => config.tcp_established,
        (proto::TCP, State::Closing) => config.tcp_closing,
        (proto::UDP, State::Replied) => config.udp_replied,
        (proto::UDP, _) => config.udp_new,
        _ => config.icmp,
    }
}
