//! The flow cache: the decisions of recent unicast TCP and UDP frames, so that the next frame
//! of an established flow skips parsing, classification, anti-spoofing, the destination lookup
//! and the firewall. Like Open vSwitch's exact-match cache, it is a direct-mapped table keyed
//! by the ingress port and every header field the decision core reads of such a frame.
//!
//! **Which frames.** [`parse`] reads an untagged or single-tagged Ethernet frame carrying an
//! IPv4 packet without options or fragmentation, TCP or UDP, to a unicast MAC and a unicast
//! address, not DHCP (port 67 at either end). It checks exactly what `smoltcp::wire`'s checked
//! views check of such a frame (total length within the frame, TCP data offset within the
//! packet, UDP length within the packet), so a frame it accepts parses in the core too, and
//! the core's decision depends on nothing but the fields in the [`Key`] and the switch's state.
//! Every other frame goes through the core alone.
//!
//! **What is kept.** A frame the core forwards to at most [`MAX_EGRESS`] ports with no copy
//! withheld by the firewall: its VLAN, whether it came tagged, whether it was flooded, and its
//! egress ports with their tags.
//!
//! **Staying exact.** An entry is the core's decision for the switch's state when it was made,
//! and is used only while that state holds:
//! - the switch's *epoch* moves on every configuration change (ports, trunks, rules,
//!   published ports, DHCP settings, flushed flows) and whenever learning adds, moves, revives
//!   or evicts a MAC; an entry of an older epoch is a miss;
//! - what expires by time is checked again on every hit, as the core would: the flow is
//!   refreshed through connection tracking as the core would (`Conntrack::refresh`, which also
//!   moves its TCP state on; the entry keeps the flow's slot, so no second hash), and a miss
//!   there sends the frame through the core; a frame from an uplink refreshes
//!   its source MAC; a destination found by learning must still be learned on the same uplink.
//!
//! Sweeps need not move the epoch: what they remove (aged MACs, expired flows) already fails
//! those checks.
//!
//! So a frame gets the same decision, and leaves the same tables and counters, as without the
//! cache; the unit tests and the `switch_ingress` fuzz target check that against a switch
//! without one.
//!
//! **Bounded.** The table has a fixed number of entries, allocated with the switch; a new
//! entry replaces whatever its slot held. A peer that aims many flows at one slot (it would
//! need the switch's seed) only makes its own frames miss.

use core::net::Ipv4Addr;

use super::PortId;
use super::conntrack::FlowRef;
use super::dhcp::SERVER_PORT;
use super::frame::proto::{TCP, UDP};
use super::frame::{ETHERTYPE_IPV4, Flow};
use super::ingress::Egress;
use super::table::Seeded;
use super::vlan::{TPID_8021Q, Vlan, be16};

/// Most egress ports of a cached decision (a unicast goes to one; an unknown unicast is flooded
/// to the VLAN's uplinks).
pub(crate) const MAX_EGRESS: usize = 4;

/// TCP's FIN, SYN, RST and ACK bits: the flags connection tracking reads.
const TCP_FLAGS: u8 = 0x17;

/// Every header field the core's decision on a frame [`parse`] accepts depends on, with the
/// ingress port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Key([u64; 4]);

/// A frame [`parse`] accepted: its key, from which the fields a hit needs are read back
/// (32 bytes to move around rather than the fields and the key).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Parsed {
    pub key: Key,
}

impl Parsed {
    fn mac(word: u64) -> [u8; 6] {
        let b = (word >> 16).to_be_bytes();
        [b[2], b[3], b[4], b[5], b[6], b[7]]
    }

    /// The destination MAC.
    pub fn dst(&self) -> [u8; 6] {
        Self::mac(self.key.0[0])
    }

    /// The source MAC.
    pub fn src(&self) -> [u8; 6] {
        Self::mac(self.key.0[1])
    }

    /// TCP's FIN, SYN, RST and ACK bits (0 for UDP).
    #[allow(clippy::cast_possible_truncation)] // the key's fields, on purpose
    pub fn flags(&self) -> u8 {
        (self.key.0[3] >> 17) as u8 & TCP_FLAGS
    }

    /// The IP protocol (TCP or UDP).
    #[allow(clippy::cast_possible_truncation)] // the key's fields, on purpose
    pub fn protocol(&self) -> u8 {
        (self.key.0[3] >> 24) as u8
    }

    /// The flow, as the core's parser reports it.
    #[allow(clippy::cast_possible_truncation)] // the key's fields, on purpose
    pub fn flow(&self) -> Flow {
        let [_, _, ips, ports] = self.key.0;
        Flow {
            protocol: self.protocol(),
            src: Ipv4Addr::from_bits((ips >> 32) as u32),
            dst: Ipv4Addr::from_bits(ips as u32),
            sport: (ports >> 48) as u16,
            dport: (ports >> 32) as u16,
        }
    }
}

/// `N` bytes at `at` of a fixed-size array (`at + N` within it: a constant in every call, so
/// the check is made at compile time).
#[inline]
fn word<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut w = [0u8; N];
    if let Some(src) = b.get(at..at + N) {
        w.copy_from_slice(src);
    }
    w
}

/// The big-endian `u16` at `at` (see [`word`]).
#[inline]
fn be(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(word(b, at))
}

/// The key of `frame` from `port`, if the cache may hold its decision (see the module
/// documentation). Reads only in-bounds bytes; never panics.
#[inline]
pub(crate) fn parse(port: PortId, frame: &[u8]) -> Option<Parsed> {
    // Fixed-size views, each length checked once: every field below is read at a constant
    // offset of an array, and the key's words are loaded as they lie in the frame.
    let eth: &[u8; 14] = frame.first_chunk()?;
    // The destination MAC in the top 48 bits of one big-endian word; the source MAC in those
    // of the next, its low 16 bits the EtherType (or TPID).
    let dst = u64::from_be_bytes(word(eth, 0));
    let src = u64::from_be_bytes(word(eth, 6));
    if dst >> 56 & 1 != 0 {
        return None;
    }
    #[allow(clippy::cast_possible_truncation)] // the word's low 16 bits, on purpose
    let (tag, l3) = match src as u16 {
        TPID_8021Q => ((u64::from(be16(frame, 14)?) << 1) | 1, 18),
        _ => (0, 14),
    };
    if be16(frame, l3 - 2)? != ETHERTYPE_IPV4 {
        return None;
    }
    let packet = frame.get(l3..)?;
    let ip: &[u8; 20] = packet.first_chunk()?;
    // Version 4, no options; not a fragment (offset 0, no more fragments; DF is allowed).
    if ip[0] != 0x45 || be(ip, 6) & 0x3fff != 0 {
        return None;
    }
    let total = usize::from(be(ip, 2));
    let protocol = ip[9];
    // The source address in the top half, the destination in the bottom one.
    let ips = u64::from_be_bytes(word(ip, 12));
    #[allow(clippy::cast_possible_truncation)] // the bottom half, on purpose
    let dst_ip = Ipv4Addr::from_bits(ips as u32);
    if total < 20 || total > packet.len() || dst_ip.is_broadcast() || dst_ip.is_multicast() {
        return None;
    }
    let l4 = packet.get(20..total)?;
    // The source port in the top half, the destination port in the bottom one.
    let (ports, flags) = match protocol {
        TCP => {
            let tcp: &[u8; 20] = l4.first_chunk()?;
            let offset = usize::from(tcp[12] >> 4) * 4;
            if offset < 20 || offset > l4.len() {
                return None;
            }
            (u32::from_be_bytes(word(tcp, 0)), tcp[13] & TCP_FLAGS)
        }
        UDP => {
            let udp: &[u8; 8] = l4.first_chunk()?;
            let len = usize::from(be(udp, 4));
            let (sport, dport) = (be(udp, 0), be(udp, 2));
            if len < 8 || len > l4.len() || sport == SERVER_PORT || dport == SERVER_PORT {
                return None;
            }
            (u32::from_be_bytes(word(udp, 0)), 0)
        }
        _ => return None,
    };
    // The MACs without the 16 bits after them.
    let macs = !0xffff;
    let key = Key([
        dst & macs | u64::from(port.get()),
        src & macs,
        ips,
        u64::from(ports) << 32 | u64::from(protocol) << 24 | u64::from(flags) << 17 | tag,
    ]);
    Some(Parsed { key })
}

/// The bits of an untagged IPv4 frame's first [`MEMO_LEN`] bytes that [`parse`] reads, for TCP
/// and for UDP: the Ethernet header, the IPv4 version and header length, total length,
/// fragment bits, protocol and addresses, the ports, and TCP's data offset and the flags it
/// keeps or UDP's length. Not the TOS, identification, TTL, checksums, sequence numbers or
/// payload, which change from frame to frame of one flow.
static MEMO_TCP: [u128; 3] = memo_mask(TCP);
static MEMO_UDP: [u128; 3] = memo_mask(UDP);

/// Bytes a [`Memo`] compares.
const MEMO_LEN: usize = 48;

const fn memo_mask(protocol: u8) -> [u128; 3] {
    let mut m = [0u8; MEMO_LEN];
    let mut i = 0;
    while i < 15 {
        m[i] = 0xff; // addresses, EtherType, version and header length
        i += 1;
    }
    m[16] = 0xff; // total length
    m[17] = 0xff;
    m[20] = 0x3f; // more fragments and the fragment offset
    m[21] = 0xff;
    m[23] = 0xff; // protocol
    let mut i = 26;
    while i < 38 {
        m[i] = 0xff; // addresses, ports
        i += 1;
    }
    if protocol == TCP {
        m[46] = 0xf0; // data offset
        m[47] = TCP_FLAGS;
    } else {
        m[38] = 0xff; // length
        m[39] = 0xff;
    }
    let mut w = [[0u8; 16]; 3];
    let mut i = 0;
    while i < MEMO_LEN {
        w[i / 16][i % 16] = m[i];
        i += 1;
    }
    [
        u128::from_ne_bytes(w[0]),
        u128::from_ne_bytes(w[1]),
        u128::from_ne_bytes(w[2]),
    ]
}

/// A frame [`parse`] accepted (an untagged TCP or UDP frame of at least [`MEMO_LEN`] bytes),
/// for the frames after it from the same port: a frame of the same length whose bits under
/// the mask are the same has the same key, and passes or fails every check of `parse` alike
/// (each reads only those bits and the length), so it need not be parsed. The frames of a bulk
/// flow differ only outside the mask. The default memo matches no frame.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Memo {
    /// The frame's length; 0 for none.
    len: usize,
    /// The frame's first bytes under the mask, as three words.
    bits: [u128; 3],
    mask: &'static [u128; 3],
    pub parsed: Parsed,
}

impl Default for Memo {
    fn default() -> Self {
        Self {
            len: 0,
            bits: [0; 3],
            mask: &MEMO_UDP,
            parsed: Parsed {
                key: Key::default(),
            },
        }
    }
}

impl Memo {
    /// The memo of `frame`, which `parse` accepted as `parsed`; the default (none) for a frame
    /// it does not cover (tagged, or shorter than [`MEMO_LEN`]).
    #[inline]
    pub fn new(frame: &[u8], parsed: Parsed) -> Self {
        let Some(head) = frame.first_chunk::<MEMO_LEN>() else {
            return Self::default();
        };
        if parsed.key.0[3] & 1 != 0 {
            return Self::default(); // tagged: its headers lie four bytes further
        }
        let mask = if parsed.protocol() == TCP {
            &MEMO_TCP
        } else {
            &MEMO_UDP
        };
        let w = words(head);
        Self {
            len: frame.len(),
            bits: [w[0] & mask[0], w[1] & mask[1], w[2] & mask[2]],
            mask,
            parsed,
        }
    }

    /// Whether `frame` parses as the memo's frame did (see [`Memo`]).
    #[inline]
    pub fn matches(&self, frame: &[u8]) -> bool {
        if frame.len() != self.len {
            return false;
        }
        let Some(head) = frame.first_chunk::<MEMO_LEN>() else {
            return false;
        };
        let w = words(head);
        (w[0] & self.mask[0]) ^ self.bits[0]
            | (w[1] & self.mask[1]) ^ self.bits[1]
            | (w[2] & self.mask[2]) ^ self.bits[2]
            == 0
    }
}

/// [`MEMO_LEN`] bytes as three words.
#[inline]
fn words(b: &[u8; MEMO_LEN]) -> [u128; 3] {
    [
        u128::from_ne_bytes(word(b, 0)),
        u128::from_ne_bytes(word(b, 16)),
        u128::from_ne_bytes(word(b, 32)),
    ]
}

/// A cached decision.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    key: Key,
    epoch: u64,
    pub vlan: Vlan,
    pub tagged: bool,
    pub flooded: bool,
    /// The one destination was found by learning (recheck it on a hit).
    pub learned: bool,
    /// The frame's flow in connection tracking.
    pub flow: FlowRef,
    len: u8,
    /// The first `len` are the decision's; the rest repeat the first.
    egress: [Egress; MAX_EGRESS],
}

impl Entry {
    /// The egress ports, in the core's order.
    #[inline]
    pub fn egress(&self) -> &[Egress] {
        self.egress.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

/// The decision to remember for a frame.
pub(crate) struct Insert<'a> {
    pub vlan: Vlan,
    pub tagged: bool,
    pub flooded: bool,
    pub learned: bool,
    pub flow: FlowRef,
    pub to: &'a [Egress],
}

/// The table (see the module documentation).
#[derive(Debug)]
pub(crate) struct FlowCache {
    entries: Box<[Option<Entry>]>,
    seeded: Seeded,
}

impl FlowCache {
    /// A cache of `entries` slots (rounded up to a power of two; 0 disables it).
    pub fn new(entries: usize, seeded: &Seeded) -> Self {
        let n = if entries == 0 {
            0
        } else {
            entries.next_power_of_two()
        };
        Self {
            entries: vec![None; n].into_boxed_slice(),
            seeded: *seeded,
        }
    }

    fn slot(&self, key: &Key) -> Option<usize> {
        let mask = self.entries.len().checked_sub(1)?;
        // `mask` < the table's length, a usize: the truncation keeps the low bits on purpose.
        #[allow(clippy::cast_possible_truncation)]
        Some(self.seeded.hash_words(&key.0) as usize & mask)
    }

    /// The entry for `key` made in `epoch`, if there is one.
    #[inline]
    pub fn get(&self, key: &Key, epoch: u64) -> Option<(usize, &Entry)> {
        let slot = self.slot(key)?;
        let entry = self.entries.get(slot)?.as_ref()?;
        (entry.key == *key && entry.epoch == epoch).then_some((slot, entry))
    }

    /// The egress ports of the entry in `slot` (from [`get`](Self::get)); empty if there is
    /// none.
    #[inline]
    pub fn egress_at(&self, slot: usize) -> &[Egress] {
        match self.entries.get(slot) {
            Some(Some(entry)) => entry.egress(),
            _ => &[],
        }
    }

    /// Remembers `decision` for `key` in `epoch`, if it fits.
    pub fn insert(&mut self, key: Key, epoch: u64, decision: &Insert<'_>) {
        let Some(&first) = decision.to.first() else {
            return;
        };
        if decision.to.len() > MAX_EGRESS {
            return;
        }
        let Some(slot) = self.slot(&key) else {
            return;
        };
        let mut egress = [first; MAX_EGRESS];
        for (e, to) in egress.iter_mut().zip(decision.to) {
            *e = *to;
        }
        if let Some(s) = self.entries.get_mut(slot) {
            *s = Some(Entry {
                key,
                epoch,
                vlan: decision.vlan,
                tagged: decision.tagged,
                flooded: decision.flooded,
                learned: decision.learned,
                flow: decision.flow,
                // At most MAX_EGRESS (4), checked above.
                len: u8::try_from(decision.to.len()).unwrap_or(0),
                egress,
            });
        }
    }

    /// Removes the entry for `key` (a hit that no longer holds).
    pub fn remove(&mut self, key: &Key) {
        if let Some(slot) = self.slot(key)
            && let Some(s) = self.entries.get_mut(slot)
            && s.as_ref().is_some_and(|e| e.key == *key)
        {
            *s = None;
        }
    }
}
