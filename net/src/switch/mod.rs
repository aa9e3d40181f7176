//! The virtual switch's decision core (issue 6, first slice): given a frame and the port it
//! came from, where it goes, or why it goes nowhere. No I/O and no clock: the datapath (vhost-user
//! queues, the `AF_PACKET` uplink, later slices) hands frames and `now` to
//! [`Switch::ingress`] and carries out the [`Decision`]; the tests and the `switch_ingress`
//! fuzz target drive it with synthetic frames.
//!
//! **Design.**
//! - One L2 domain per VLAN (1–4094): its member ports, its guests' static MACs, a learned MAC
//!   table with ageing, its firewall rules and counters. A frame never leaves its VLAN: every
//!   destination is looked up in the domain of the VLAN the frame was classified into.
//! - **Ports** are guest NICs (one VLAN, untagged; assigned MAC and IPv4 address; published
//!   ports; rules) and uplinks (an 802.1Q trunk carrying a set of VLANs, or an access port of
//!   one). See [`PortKind`].
//! - **Learning from uplinks only.** A guest's MAC is its assignment, so guests' frames teach
//!   nothing and no guest can claim another's MAC. That also means an unknown unicast can only
//!   live behind an uplink: it is flooded to the VLAN's uplinks, never to guests, so no guest
//!   sees another's unicast. Broadcast and multicast go to every other port of the VLAN.
//! - **The host is no transit bridge.** A frame from an uplink goes to guests only, never back
//!   out through another uplink: two uplinks on the same VLAN cannot make a loop, and a guest's
//!   own broadcast that comes back through the second one is dropped as a spoof of its MAC.
//! - **A guest's addresses live on its port.** From an uplink, a frame with a guest's MAC as
//!   its source, or an IPv4 source or ARP sender address that is a guest's on that VLAN, is
//!   dropped as a spoof: an outside host can neither poison guests' ARP caches about their
//!   peers nor slip a forged packet into a flow between two guests.
//! - **Anti-spoofing and the firewall** apply to IPv4 and ARP, the only EtherTypes forwarded;
//!   see [`firewall`] for the rules, the defaults and connection tracking.
//! - **Bounded.** Ports ([`MAX_PORTS`]), rules per list, published ports, learned MACs per
//!   VLAN, tracked flows (in all and per port), remembered fragments: all have limits, and a
//!   full table displaces old entries (MACs) or refuses new ones (flows) in constant amortised
//!   time. A frame allocates nothing: destinations go into a buffer the switch reuses; only a
//!   table that grows to a new size allocates. Nothing a frame holds can panic the parser.
//! - **Pure functions of their inputs**: time is the caller's `now` (smoltcp's `Instant`, as
//!   for the endpoint), hashing is keyed by the caller's seed. The code uses only what `core`
//!   and `alloc` provide, apart from std's `HashMap` (see `table`).

mod conntrack;
mod counters;
pub mod dhcp;
mod fdb;
pub mod firewall;
#[doc(hidden)]
pub mod fixture;
mod flowcache;
mod frame;
mod ingress;
mod port;
mod table;
mod vlan;

#[cfg(test)]
mod tests;

use core::net::Ipv4Addr;

pub use smoltcp::time::{Duration, Instant};

pub use conntrack::ConntrackConfig;
pub use counters::{DropReason, Drops, PortCounters, VlanCounters};
pub use dhcp::DhcpConfig;
pub use firewall::{Action, Cidr, Direction, PortRange, Protocol, Published, Rule, Transport};
pub use ingress::{Batch, Decision, Egress, Forward};
pub use port::{GuestPort, PortId, PortKind, UplinkMode};
pub use vlan::{Tag, Vlan, VlanSet, write_egress};

use conntrack::Conntrack;
use fdb::{Fdb, mac_key};
use flowcache::FlowCache;
use table::{Map, Seeded, Stamp, after, stamp};

/// Most ports on one switch.
pub const MAX_PORTS: usize = 4096;
/// Longest frame accepted: a 65535-byte IPv4 packet (a TSO super-frame), its Ethernet header
/// and one VLAN tag.
pub const MAX_FRAME_LEN: usize = 14 + vlan::TAG_LEN + 65535;
/// How often (in `now` time) ingress sweeps aged MACs and expired flows.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Limits and timers of a switch.
#[derive(Debug, Clone, Copy)]
pub struct SwitchConfig {
    /// A learned MAC is forgotten this long after its last frame.
    pub mac_ageing: Duration,
    /// Most learned MACs per VLAN.
    pub max_macs_per_vlan: usize,
    /// Connection tracking.
    pub conntrack: ConntrackConfig,
    /// Slots of the flow cache (rounded up to a power of two; 0 turns it off). See
    /// [`Switch::ingress`].
    pub flow_cache: usize,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        Self {
            mac_ageing: Duration::from_secs(300),
            max_macs_per_vlan: 4096,
            conntrack: ConntrackConfig::default(),
            flow_cache: 2048,
        }
    }
}

/// A configuration the switch refused; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The switch has its most ports already.
    #[error("a switch has at most {MAX_PORTS} ports")]
    TooManyPorts,
    /// No such port.
    #[error("{0} does not exist")]
    UnknownPort(PortId),
    /// The port is an uplink, and the operation is for guests.
    #[error("{0} is not a guest port")]
    NotAGuest(PortId),
    /// A guest MAC must be unicast and not all zeros.
    #[error("{0:02x?} is not a unicast MAC address")]
    BadMac([u8; 6]),
    /// A guest address must be unicast and specified.
    #[error("{0} is not a usable guest address")]
    BadIpv4(Ipv4Addr),
    /// Another guest on the VLAN has this MAC.
    #[error("MAC {mac:02x?} is already a guest's on VLAN {vlan}")]
    DuplicateMac { vlan: Vlan, mac: [u8; 6] },
    /// Another guest on the VLAN has this address: anti-spoofing needs them distinct.
    #[error("{ip} is already a guest's on VLAN {vlan}")]
    DuplicateIpv4 { vlan: Vlan, ip: Ipv4Addr },
    /// The port is not a trunk uplink.
    #[error("{0} is not a trunk uplink")]
    NotATrunk(PortId),
    /// A trunk must carry at least one VLAN.
    #[error("a trunk must carry at least one VLAN")]
    EmptyTrunk,
    /// Too many rules in one list.
    #[error("a rule list holds at most {} rules", firewall::MAX_RULES)]
    TooManyRules,
    /// Too many published ports.
    #[error("a guest publishes at most {} ports", firewall::MAX_PUBLISHED)]
    TooManyPublished,
    /// Rule `n` has a port range but no protocol with ports.
    #[error("rule {0}: a port range needs protocol tcp or udp")]
    PortsWithoutProtocol(usize),
    /// Rule `n`'s range ends before it starts.
    #[error("rule {0}: the port range ends before it starts")]
    BadPortRange(usize),
    /// DHCP settings the switch cannot serve (the reason is named).
    #[error("DHCP settings: {0}")]
    BadDhcp(&'static str),
}

/// One VLAN's L2 domain.
#[derive(Debug)]
struct Domain {
    /// Guests' static MACs.
    guests: Map<u64, PortId>,
    /// Guests' addresses.
    guest_ips: Map<u32, PortId>,
    /// Every port carrying the VLAN, in the order they were added.
    members: Vec<PortId>,
    /// The uplinks among them.
    uplinks: Vec<PortId>,
    fdb: Fdb,
    rules: Vec<firewall::Rule>,
    counters: VlanCounters,
}

#[derive(Debug)]
struct Port {
    kind: PortKind,
    counters: PortCounters,
}

/// The switch: ports, per-VLAN domains, connection tracking. See the module documentation.
#[derive(Debug)]
pub struct Switch {
    config: SwitchConfig,
    seeded: Seeded,
    ports: Vec<Option<Port>>,
    /// Indexed by VLAN id; `None` for a VLAN no port carries and no rule names.
    vlans: Vec<Option<Box<Domain>>>,
    /// The ids of the VLANs that have a domain, in order (sweeps and statistics walk these,
    /// not 4094 slots).
    active: Vec<Vlan>,
    conntrack: Conntrack,
    /// The destinations of the frame being decided (reused: no allocation per frame).
    out: Vec<Egress>,
    /// Ports whose copy the firewall withheld, for their counters (reused).
    denied: Vec<PortId>,
    scratch: Vec<Stamp>,
    next_sweep: Stamp,
    /// DHCP settings per VLAN and answers waiting for the datapath (see [`dhcp`]).
    dhcp: dhcp::Responder,
    /// Recent decisions (see `flowcache`), valid in `epoch` only.
    cache: FlowCache,
    /// Moves on with every change that can alter a decision other than by time.
    epoch: u64,
    /// Frames decided from the cache.
    cache_hits: u64,
    /// The hit the last frame was, while nothing has moved since (see `LastHit`).
    last_hit: Option<ingress::LastHit>,
}

impl Switch {
    /// An empty switch. `seed` keys its hash tables; give it random bits (a fixed one is fine
    /// for tests).
    pub fn new(config: SwitchConfig, seed: u64) -> Self {
        let seeded = Seeded::new(seed);
        Self {
            config,
            seeded,
            ports: Vec::new(),
            vlans: (0..=Vlan::MAX).map(|_| None).collect(),
            active: Vec::new(),
            conntrack: Conntrack::new(config.conntrack, &seeded),
            out: Vec::new(),
            denied: Vec::new(),
            scratch: Vec::new(),
            next_sweep: Stamp::MIN,
            dhcp: dhcp::Responder::default(),
            cache: FlowCache::new(config.flow_cache, &seeded),
            epoch: 0,
            cache_hits: 0,
            last_hit: None,
        }
    }

    /// Invalidates every cached decision: called by everything that changes the switch's
    /// configuration or forgets what it learned.
    fn changed(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        self.last_hit = None;
    }

    /// Adds a port.
    pub fn add_port(&mut self, kind: PortKind) -> Result<PortId, ConfigError> {
        kind.validate()?;
        if let PortKind::Guest(g) = &kind {
            self.check_unique(g)?;
        }
        let index = match self.ports.iter().position(Option::is_none) {
            Some(free) => free,
            None if self.ports.len() < MAX_PORTS => self.ports.len(),
            None => return Err(ConfigError::TooManyPorts),
        };
        let id = PortId::from_index(index).ok_or(ConfigError::TooManyPorts)?;
        for vlan in kind.vlans() {
            let domain = self.domain_mut(vlan);
            domain.members.push(id);
            match &kind {
                PortKind::Guest(g) => {
                    domain.guests.insert(mac_key(g.mac), id);
                    domain.guest_ips.insert(g.ipv4.to_bits(), id);
                    domain.fdb.forget_mac(g.mac);
                }
                PortKind::Uplink(_) => domain.uplinks.push(id),
            }
        }
        let port = Port {
            kind,
            counters: PortCounters::default(),
        };
        if index == self.ports.len() {
            self.ports.push(Some(port));
        } else {
            self.ports[index] = Some(port);
        }
        self.changed();
        Ok(id)
    }

    fn check_unique(&self, g: &GuestPort) -> Result<(), ConfigError> {
        let Some(domain) = self.domain(g.vlan) else {
            return Ok(());
        };
        if domain.guests.contains_key(&mac_key(g.mac)) {
            return Err(ConfigError::DuplicateMac {
                vlan: g.vlan,
                mac: g.mac,
            });
        }
        if domain.guest_ips.contains_key(&g.ipv4.to_bits()) {
            return Err(ConfigError::DuplicateIpv4 {
                vlan: g.vlan,
                ip: g.ipv4,
            });
        }
        Ok(())
    }

    /// Removes a port: its learned MACs and the flows it opened or its address took part in
    /// go with it. Returns what it was.
    pub fn remove_port(&mut self, id: PortId) -> Result<PortKind, ConfigError> {
        let port = self
            .ports
            .get_mut(id.index())
            .and_then(Option::take)
            .ok_or(ConfigError::UnknownPort(id))?;
        for vlan in port.kind.vlans() {
            if let Some(domain) = self.vlans[vlan.index()].as_mut() {
                domain.members.retain(|p| *p != id);
                domain.uplinks.retain(|p| *p != id);
                domain.guests.retain(|_, p| *p != id);
                domain.guest_ips.retain(|_, p| *p != id);
                domain.fdb.forget_port(id);
            }
            self.drop_domain_if_unused(vlan);
        }
        let (vlan, ip) = match &port.kind {
            PortKind::Guest(g) => (Some(g.vlan), Some(g.ipv4)),
            PortKind::Uplink(_) => (None, None),
        };
        self.conntrack.forget(id, vlan, ip);
        self.dhcp.forget(id);
        self.changed();
        Ok(port.kind)
    }

    /// Replaces the VLANs a trunk uplink carries (a VLAN defined while the switch runs joins
    /// the trunk so). The port leaves the domains of VLANs it no longer carries, with what it
    /// taught them; flows it opened on them expire by themselves.
    ///
    /// # Errors
    /// [`ConfigError::UnknownPort`], [`ConfigError::NotATrunk`] or [`ConfigError::EmptyTrunk`];
    /// nothing changes then.
    pub fn set_trunk_vlans(&mut self, id: PortId, allowed: VlanSet) -> Result<(), ConfigError> {
        if allowed.is_empty() {
            return Err(ConfigError::EmptyTrunk);
        }
        let old = match self.ports.get(id.index()).and_then(Option::as_ref) {
            None => return Err(ConfigError::UnknownPort(id)),
            Some(Port {
                kind: PortKind::Uplink(UplinkMode::Trunk { allowed }),
                ..
            }) => allowed.clone(),
            Some(_) => return Err(ConfigError::NotATrunk(id)),
        };
        for vlan in old.iter().filter(|v| !allowed.contains(*v)) {
            if let Some(domain) = self.vlans[vlan.index()].as_mut() {
                domain.members.retain(|p| *p != id);
                domain.uplinks.retain(|p| *p != id);
                domain.fdb.forget_port(id);
            }
            self.drop_domain_if_unused(vlan);
        }
        for vlan in allowed.iter().filter(|v| !old.contains(*v)) {
            let domain = self.domain_mut(vlan);
            domain.members.push(id);
            domain.uplinks.push(id);
        }
        if let Some(port) = self.ports.get_mut(id.index()).and_then(Option::as_mut) {
            port.kind = PortKind::Uplink(UplinkMode::Trunk { allowed });
        }
        self.changed();
        Ok(())
    }

    /// Replaces a guest's own rules. Flows already tracked keep passing.
    pub fn set_port_rules(&mut self, id: PortId, rules: Vec<Rule>) -> Result<(), ConfigError> {
        firewall::validate(&rules)?;
        self.guest_mut(id)?.rules = rules;
        self.changed();
        Ok(())
    }

    /// Replaces a guest's published ports.
    pub fn set_published(
        &mut self,
        id: PortId,
        published: Vec<Published>,
    ) -> Result<(), ConfigError> {
        if published.len() > firewall::MAX_PUBLISHED {
            return Err(ConfigError::TooManyPublished);
        }
        self.guest_mut(id)?.published = published;
        self.changed();
        Ok(())
    }

    /// Replaces a VLAN's rules (evaluated after each guest's own). Flows already tracked keep
    /// passing.
    pub fn set_vlan_rules(&mut self, vlan: Vlan, rules: Vec<Rule>) -> Result<(), ConfigError> {
        firewall::validate(&rules)?;
        self.domain_mut(vlan).rules = rules;
        self.drop_domain_if_unused(vlan);
        self.changed();
        Ok(())
    }

    /// Sets (or with `None` clears) the DHCP settings of `vlan`: with them, the switch answers
    /// its guests' DHCP itself and keeps their requests in (see [`dhcp`]). They outlive the
    /// VLAN's ports, so they may be set before the first guest joins.
    ///
    /// # Errors
    /// [`ConfigError::BadDhcp`]; nothing changes then.
    pub fn set_vlan_dhcp(
        &mut self,
        vlan: Vlan,
        config: Option<DhcpConfig>,
    ) -> Result<(), ConfigError> {
        if let Some(c) = &config {
            c.validate()?;
        }
        self.dhcp.set(vlan, config);
        self.changed();
        Ok(())
    }

    /// The VLAN's DHCP settings, if the switch serves DHCP there.
    pub fn vlan_dhcp(&self, vlan: Vlan) -> Option<&DhcpConfig> {
        self.dhcp.get(vlan)
    }

    /// The DHCP answers made since the last call, oldest first, each with the guest port it
    /// is for (the port that asked). The datapath delivers them into that guest's RX queue
    /// like any frame; at most [`dhcp::MAX_ANSWERS`] wait.
    pub fn take_answers(&mut self) -> impl Iterator<Item = (PortId, Vec<u8>)> + '_ {
        self.dhcp.drain()
    }

    /// The VLAN's domain, made if it has none.
    fn domain_mut(&mut self, vlan: Vlan) -> &mut Domain {
        if self.vlans[vlan.index()].is_none()
            && let Err(at) = self.active.binary_search(&vlan)
        {
            self.active.insert(at, vlan);
        }
        let seeded = self.seeded;
        self.vlans[vlan.index()].get_or_insert_with(|| new_domain(&seeded))
    }

    /// Drops the VLAN's domain once no port carries it and no rule names it.
    fn drop_domain_if_unused(&mut self, vlan: Vlan) {
        let slot = &mut self.vlans[vlan.index()];
        if slot
            .as_ref()
            .is_some_and(|d| d.members.is_empty() && d.rules.is_empty())
        {
            *slot = None;
            self.active.retain(|v| *v != vlan);
        }
    }

    fn guest_mut(&mut self, id: PortId) -> Result<&mut GuestPort, ConfigError> {
        match self.ports.get_mut(id.index()).and_then(Option::as_mut) {
            Some(Port {
                kind: PortKind::Guest(g),
                ..
            }) => Ok(g),
            Some(_) => Err(ConfigError::NotAGuest(id)),
            None => Err(ConfigError::UnknownPort(id)),
        }
    }

    /// Forgets every tracked flow (after a rule change that must apply to open connections).
    pub fn flush_flows(&mut self) {
        self.conntrack.flush();
        self.changed();
    }

    /// Sweeps aged MACs and expired flows now. [`ingress`](Self::ingress) does this by itself
    /// every few seconds of `now`; an idle switch may call it from a timer.
    pub fn expire(&mut self, now: Instant) {
        self.sweep(stamp(now));
    }

    fn sweep(&mut self, now: Stamp) {
        self.last_hit = None;
        let ageing = self.config.mac_ageing;
        for vlan in &self.active {
            if let Some(domain) = self.vlans[vlan.index()].as_mut() {
                domain.fdb.sweep(now, ageing);
            }
        }
        self.conntrack.sweep(now);
        self.next_sweep = after(now, SWEEP_EVERY);
    }

    /// The port's configuration.
    pub fn port(&self, id: PortId) -> Option<&PortKind> {
        self.ports.get(id.index())?.as_ref().map(|p| &p.kind)
    }

    /// The port's counters.
    pub fn port_counters(&self, id: PortId) -> Option<&PortCounters> {
        self.ports.get(id.index())?.as_ref().map(|p| &p.counters)
    }

    /// Every port, with its configuration and counters.
    pub fn ports(&self) -> impl Iterator<Item = (PortId, &PortKind, &PortCounters)> {
        self.ports.iter().enumerate().filter_map(|(i, p)| {
            let p = p.as_ref()?;
            Some((PortId::from_index(i)?, &p.kind, &p.counters))
        })
    }

    /// The VLANs that have a domain (a port carries them or a rule names them).
    pub fn vlans(&self) -> impl Iterator<Item = Vlan> + '_ {
        self.active.iter().copied()
    }

    /// The VLAN's counters.
    pub fn vlan_counters(&self, vlan: Vlan) -> Option<&VlanCounters> {
        self.domain(vlan).map(|d| &d.counters)
    }

    /// The VLAN's rules.
    pub fn vlan_rules(&self, vlan: Vlan) -> &[Rule] {
        self.domain(vlan).map_or(&[], |d| &d.rules)
    }

    /// The uplink `mac` was learned on in `vlan`, if it has not aged out at `now`.
    pub fn learned(&self, vlan: Vlan, mac: [u8; 6], now: Instant) -> Option<PortId> {
        let domain = self.domain(vlan)?;
        domain.fdb.lookup(mac, stamp(now), self.config.mac_ageing)
    }

    /// How many MACs the VLAN's table holds (aged ones included until the next sweep).
    pub fn learned_len(&self, vlan: Vlan) -> usize {
        self.domain(vlan).map_or(0, |d| d.fdb.len())
    }

    /// How many flows are tracked (expired ones included until the next sweep).
    pub fn flows_len(&self) -> usize {
        self.conntrack.len()
    }

    /// How many first fragments are remembered.
    pub fn fragments_len(&self) -> usize {
        self.conntrack.fragments_len()
    }

    /// How many frames were decided from the flow cache.
    pub fn flow_cache_hits(&self) -> u64 {
        self.cache_hits
    }

    /// The switch's limits.
    pub fn config(&self) -> &SwitchConfig {
        &self.config
    }

    fn domain(&self, vlan: Vlan) -> Option<&Domain> {
        self.vlans.get(vlan.index())?.as_deref()
    }
}

fn new_domain(seeded: &Seeded) -> Box<Domain> {
    Box::new(Domain {
        guests: seeded.map(),
        guest_ips: seeded.map(),
        members: Vec::new(),
        uplinks: Vec::new(),
        fdb: Fdb::new(seeded),
        rules: Vec::new(),
        counters: VlanCounters::default(),
    })
}
