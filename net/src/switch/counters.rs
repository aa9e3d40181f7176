//! Counters per port and per VLAN, and the reasons a frame is dropped.
//!
//! Always on and cheap: plain integers the switch bumps as it decides, read by the control
//! plane for `kaosctl net stats`. A frame that goes nowhere is counted once, on the port it came
//! from (and its VLAN, once known), under the first reason it meets on its way through the
//! steps [`Switch::ingress`](super::Switch::ingress) lists.

use core::fmt;

/// Why a frame was dropped. Each has a counter per port and per VLAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DropReason {
    /// The port does not exist (or no longer does). Counted nowhere: there is no port to count
    /// it on; only a datapath bug or a race with port removal gets here.
    UnknownPort,
    /// Longer than [`MAX_FRAME_LEN`](super::MAX_FRAME_LEN) (a 64 KiB IPv4 packet with its
    /// Ethernet header and one tag).
    Oversize,
    /// A header is truncated or inconsistent: shorter than an Ethernet header or the tag it
    /// announces, an ARP packet that is not Ethernet/IPv4 request or reply, an IPv4 header
    /// with a bad version or IHL or a total length beyond the frame, a TCP/UDP/ICMP header
    /// cut short, a first fragment without its whole transport header, a TCP fragment at
    /// offset 8 (RFC 1858).
    Malformed,
    /// A tag where none belongs or none where one must be: any tag from a guest; a tag other
    /// than a priority tag (VID 0) on an access uplink; an untagged, priority-tagged or VID
    /// 4095 frame on a trunk; stacked tags (QinQ, 802.1ad) anywhere.
    BadVlanTag,
    /// A trunk frame tagged with a VLAN the trunk does not carry.
    UnknownVlan,
    /// A multicast, broadcast or all-zero source MAC.
    InvalidSourceMac,
    /// From a guest: a source MAC other than the one assigned, or, on a VLAN whose DHCP the
    /// switch serves, a DHCP client message for another client hardware address (`chaddr`).
    /// From an uplink: the source MAC of one of this switch's guests on that VLAN (a spoof, or
    /// a loop).
    SpoofedMac,
    /// Neither IPv4 nor ARP: IPv6, LLDP, 802.3/LLC (STP), … The firewall and anti-spoofing
    /// understand IPv4 only, so nothing else is let through either way.
    UnsupportedEtherType,
    /// From a guest: an IPv4 source other than the one assigned, except a DHCP DISCOVER,
    /// REQUEST or DECLINE from 0.0.0.0:68 to 255.255.255.255:67 for the guest's own MAC. From
    /// an uplink: the address of one of this switch's guests on that VLAN.
    SpoofedIpv4,
    /// From a guest: an ARP sender MAC other than its own, or a sender address other than its
    /// own or 0.0.0.0 (an RFC 5227 probe). From an uplink: a sender address that is one of
    /// this switch's guests' on that VLAN (cache poisoning).
    SpoofedArp,
    /// Nowhere to send it: a unicast for the port it came from or for another host behind the
    /// same uplink, a unicast from an uplink that no guest owns, a flood with no other port.
    NoDestination,
    /// Every destination's firewall (or the sender's) refused it; or, on a VLAN whose DHCP the
    /// switch serves, a guest sent a DHCP server message (UDP 67 to 68).
    Firewall,
    /// The firewall allowed a new flow but the connection table (or the originating port's
    /// share of it) is full, so its replies could not be let back: dropped instead.
    ConntrackFull,
}

impl DropReason {
    /// Number of reasons.
    pub const COUNT: usize = 13;

    /// Every reason, in counter order.
    pub const ALL: [DropReason; Self::COUNT] = [
        Self::UnknownPort,
        Self::Oversize,
        Self::Malformed,
        Self::BadVlanTag,
        Self::UnknownVlan,
        Self::InvalidSourceMac,
        Self::SpoofedMac,
        Self::UnsupportedEtherType,
        Self::SpoofedIpv4,
        Self::SpoofedArp,
        Self::NoDestination,
        Self::Firewall,
        Self::ConntrackFull,
    ];

    /// A short stable name, for statistics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::UnknownPort => "unknown-port",
            Self::Oversize => "oversize",
            Self::Malformed => "malformed",
            Self::BadVlanTag => "bad-vlan-tag",
            Self::UnknownVlan => "unknown-vlan",
            Self::InvalidSourceMac => "invalid-source-mac",
            Self::SpoofedMac => "spoofed-mac",
            Self::UnsupportedEtherType => "unsupported-ethertype",
            Self::SpoofedIpv4 => "spoofed-ipv4",
            Self::SpoofedArp => "spoofed-arp",
            Self::NoDestination => "no-destination",
            Self::Firewall => "firewall",
            Self::ConntrackFull => "conntrack-full",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Dropped frames by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drops([u64; DropReason::COUNT]);

impl Drops {
    /// Frames dropped for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.index()]
    }

    /// Frames dropped for any reason.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The non-zero counters.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .into_iter()
            .map(|r| (r, self.get(r)))
            .filter(|(_, n)| *n != 0)
    }

    pub(crate) fn bump(&mut self, reason: DropReason) {
        let slot = &mut self.0[reason.index()];
        *slot = slot.wrapping_add(1);
    }
}

/// One port's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// Frames received from the port, whatever became of them.
    pub rx_frames: u64,
    /// Bytes of those frames.
    pub rx_bytes: u64,
    /// Frames the switch sent to the port.
    pub tx_frames: u64,
    /// Bytes of those frames, as received (before a tag is added or removed).
    pub tx_bytes: u64,
    /// Copies of frames for this port that the firewall withheld (its own rules or the
    /// sender's), including copies of floods that other ports received.
    pub tx_denied: u64,
    /// Frames from this port that went nowhere, by reason.
    pub drops: Drops,
    /// DHCP requests from this guest the switch answered itself (see
    /// [`dhcp`](super::dhcp)); the requests count as received, not as drops.
    pub dhcp_answers: u64,
}

impl PortCounters {
    pub(crate) fn received(&mut self, len: usize) {
        self.received_many(1, len as u64);
    }

    pub(crate) fn received_many(&mut self, frames: u64, bytes: u64) {
        self.rx_frames = self.rx_frames.wrapping_add(frames);
        self.rx_bytes = self.rx_bytes.wrapping_add(bytes);
    }

    pub(crate) fn answered(&mut self) {
        self.dhcp_answers = self.dhcp_answers.wrapping_add(1);
    }

    pub(crate) fn sent(&mut self, len: usize) {
        self.sent_many(1, len as u64);
    }

    pub(crate) fn sent_many(&mut self, frames: u64, bytes: u64) {
        self.tx_frames = self.tx_frames.wrapping_add(frames);
        self.tx_bytes = self.tx_bytes.wrapping_add(bytes);
    }
}

/// One VLAN's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VlanCounters {
    /// Frames forwarded within the VLAN (to one port or more).
    pub frames: u64,
    /// Bytes of those frames.
    pub bytes: u64,
    /// Of those, frames flooded: broadcast, multicast, or unicast to an unlearned MAC.
    pub floods: u64,
    /// Frames classified into this VLAN that went nowhere, by reason.
    pub drops: Drops,
}

impl VlanCounters {
    pub(crate) fn forwarded(&mut self, len: usize, flooded: bool) {
        self.forwarded_many(1, len as u64, flooded);
    }

    pub(crate) fn forwarded_many(&mut self, frames: u64, bytes: u64, flooded: bool) {
        self.frames = self.frames.wrapping_add(frames);
        self.bytes = self.bytes.wrapping_add(bytes);
        if flooded {
            self.floods = self.floods.wrapping_add(frames);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_numbered_in_order_and_named_uniquely() {
        for (i, r) in DropReason::ALL.into_iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let names: std::collections::HashSet<_> =
            DropReason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), DropReason::COUNT);
    }

    #[test]
    fn drops_count_by_reason() {
        let mut d = Drops::default();
        d.bump(DropReason::Firewall);
        d.bump(DropReason::Firewall);
        d.bump(DropReason::Malformed);
        assert_eq!(d.get(DropReason::Firewall), 2);
        assert_eq!(d.total(), 3);
        assert_eq!(d.iter().count(), 2);
    }
}
