//! 802.1Q: VLAN ids, sets of them, the 4-byte tag and the rewrite a frame needs on its way out.
//!
//! smoltcp 0.14 has no VLAN type (`EthernetProtocol::Unknown(0x8100)` is all it says), so the
//! tag is read here, with the same discipline: lengths checked once, then fixed offsets.

use core::fmt;

/// The tag protocol identifier of an 802.1Q customer tag.
pub const TPID_8021Q: u16 = 0x8100;
/// 802.1ad service tag (QinQ outer tag).
pub const TPID_8021AD: u16 = 0x88a8;
/// The pre-standard QinQ outer tag some switches still send.
pub const TPID_QINQ_LEGACY: u16 = 0x9100;
/// Bytes of one tag.
pub const TAG_LEN: usize = 4;
/// Destination and source MAC: the bytes before a tag or the EtherType.
pub const ADDRS_LEN: usize = 12;

/// An 802.1Q VLAN id in 1..=4094. VID 0 means "priority tag, no VLAN" and 4095 is reserved, so
/// neither names an L2 domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vlan(u16);

impl Vlan {
    /// The lowest VLAN id.
    pub const MIN: u16 = 1;
    /// The highest VLAN id.
    pub const MAX: u16 = 4094;

    /// `id` as a VLAN, if it is one (1..=4094).
    pub const fn new(id: u16) -> Option<Vlan> {
        if id >= Self::MIN && id <= Self::MAX {
            Some(Vlan(id))
        } else {
            None
        }
    }

    /// The id.
    pub const fn get(self) -> u16 {
        self.0
    }

    pub(crate) const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for Vlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A set of VLANs (what a trunk carries): one bit per id, constant-time membership. The
/// 512 bytes of bits live on the heap, so a port's configuration stays small.
#[derive(Clone, PartialEq, Eq)]
pub struct VlanSet {
    bits: Box<[u64; 64]>,
}

impl VlanSet {
    /// No VLAN.
    pub fn new() -> Self {
        Self {
            bits: Box::new([0; 64]),
        }
    }

    /// Adds `vlan`.
    pub fn insert(&mut self, vlan: Vlan) {
        self.bits[vlan.index() / 64] |= 1 << (vlan.index() % 64);
    }

    /// Removes `vlan`.
    pub fn remove(&mut self, vlan: Vlan) {
        self.bits[vlan.index() / 64] &= !(1 << (vlan.index() % 64));
    }

    /// Whether `vlan` is in the set.
    pub fn contains(&self, vlan: Vlan) -> bool {
        self.bits[vlan.index() / 64] & (1 << (vlan.index() % 64)) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|w| *w == 0)
    }

    /// The VLANs, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = Vlan> + '_ {
        self.bits.iter().enumerate().flat_map(|(i, word)| {
            let mut rest = *word;
            core::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = rest.trailing_zeros() as usize;
                rest &= rest - 1;
                Some(i * 64 + bit)
            })
            .filter_map(|id| Vlan::new(u16::try_from(id).ok()?))
        })
    }
}

impl Default for VlanSet {
    fn default() -> Self {
        Self::new()
    }
}

impl FromIterator<Vlan> for VlanSet {
    fn from_iter<I: IntoIterator<Item = Vlan>>(iter: I) -> Self {
        let mut set = Self::new();
        for vlan in iter {
            set.insert(vlan);
        }
        set
    }
}

impl fmt::Debug for VlanSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(Vlan::get)).finish()
    }
}

/// How a frame leaves through a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// Without a tag (guest ports, access uplinks).
    Untagged,
    /// With an 802.1Q tag for this VLAN, priority 0 (trunk uplinks).
    Tagged(Vlan),
}

/// What the outer tag of a frame says, before any port's rules are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outer {
    /// No tag: the EtherType follows the addresses.
    Untagged,
    /// An 802.1Q tag with this VID (0 and 4095 included: the port decides what they mean),
    /// and an inner EtherType that is not another tag.
    Dot1q(u16),
    /// A service tag, a legacy QinQ tag, or an 802.1Q tag with another tag inside it.
    Stacked,
}

/// The outer tag of `frame` and the offset of its EtherType, or `None` if the frame is too
/// short to hold the tag it announces. `frame` holds at least the 14-byte Ethernet header.
pub(crate) fn outer(frame: &[u8]) -> Option<(Outer, usize)> {
    let ethertype = be16(frame, ADDRS_LEN)?;
    match ethertype {
        TPID_8021Q => {
            let tci = be16(frame, ADDRS_LEN + 2)?;
            let inner = be16(frame, ADDRS_LEN + TAG_LEN)?;
            let outer = if is_tpid(inner) {
                Outer::Stacked
            } else {
                Outer::Dot1q(tci & 0x0fff)
            };
            Some((outer, ADDRS_LEN + TAG_LEN))
        }
        TPID_8021AD | TPID_QINQ_LEGACY => Some((Outer::Stacked, ADDRS_LEN)),
        _ => Some((Outer::Untagged, ADDRS_LEN)),
    }
}

fn is_tpid(ethertype: u16) -> bool {
    matches!(ethertype, TPID_8021Q | TPID_8021AD | TPID_QINQ_LEGACY)
}

pub(crate) fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// Writes `frame` as it leaves through a port: with `tag`'s 802.1Q tag or without one.
/// `ingress_tagged` says whether `frame` arrived with a (single) tag, as
/// [`Forward::ingress_tagged`](super::Forward) reports. Returns the length written, or `None`
/// if `out` is too small or `frame` too short for what it claims.
pub fn write_egress(frame: &[u8], ingress_tagged: bool, tag: Tag, out: &mut [u8]) -> Option<usize> {
    let rest_at = if ingress_tagged {
        ADDRS_LEN + TAG_LEN
    } else {
        ADDRS_LEN
    };
    let addrs = frame.get(..ADDRS_LEN)?;
    let rest = frame.get(rest_at..)?;
    let tag_len = match tag {
        Tag::Untagged => 0,
        Tag::Tagged(_) => TAG_LEN,
    };
    let len = ADDRS_LEN + tag_len + rest.len();
    let out = out.get_mut(..len)?;
    out[..ADDRS_LEN].copy_from_slice(addrs);
    if let Tag::Tagged(vlan) = tag {
        out[ADDRS_LEN..ADDRS_LEN + 2].copy_from_slice(&TPID_8021Q.to_be_bytes());
        out[ADDRS_LEN + 2..ADDRS_LEN + TAG_LEN].copy_from_slice(&vlan.get().to_be_bytes());
    }
    out[ADDRS_LEN + tag_len..].copy_from_slice(rest);
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(id: u16) -> Vlan {
        Vlan::new(id).expect("valid VLAN id in a test")
    }

    #[test]
    fn vlan_ids_exclude_0_and_4095() {
        assert_eq!(Vlan::new(0), None);
        assert_eq!(Vlan::new(4095), None);
        assert_eq!(Vlan::new(1).map(Vlan::get), Some(1));
        assert_eq!(Vlan::new(4094).map(Vlan::get), Some(4094));
    }

    #[test]
    fn sets_hold_what_was_inserted() {
        let mut set: VlanSet = [v(10), v(20), v(4094)].into_iter().collect();
        assert!(set.contains(v(10)) && set.contains(v(4094)) && !set.contains(v(11)));
        set.remove(v(10));
        assert_eq!(set.iter().map(Vlan::get).collect::<Vec<_>>(), [20, 4094]);
        assert!(!set.is_empty() && VlanSet::new().is_empty());
    }

    #[test]
    fn outer_tags_are_classified() {
        let mut f = [0u8; 18];
        assert_eq!(outer(&f[..14]), Some((Outer::Untagged, 12)));
        f[12..16].copy_from_slice(&[0x81, 0x00, 0xe0, 0x0a]); // PCP 7, VID 10
        f[16..18].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(outer(&f), Some((Outer::Dot1q(10), 16)));
        assert_eq!(outer(&f[..17]), None, "a tag without its inner EtherType");
        f[16..18].copy_from_slice(&[0x81, 0x00]);
        assert_eq!(outer(&f), Some((Outer::Stacked, 16)));
        f[12..14].copy_from_slice(&[0x88, 0xa8]);
        assert_eq!(outer(&f), Some((Outer::Stacked, 12)));
    }

    #[test]
    fn egress_adds_strips_or_keeps_the_tag() {
        let untagged = [1u8, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0x08, 0x00, 0xaa];
        let mut out = [0u8; 32];
        let n = write_egress(&untagged, false, Tag::Tagged(v(20)), &mut out).expect("fits");
        assert_eq!(&out[12..19], &[0x81, 0x00, 0x00, 20, 0x08, 0x00, 0xaa]);
        let tagged = out[..n].to_vec();
        let n = write_egress(&tagged, true, Tag::Untagged, &mut out).expect("fits");
        assert_eq!(&out[..n], &untagged);
        let n = write_egress(&untagged, false, Tag::Untagged, &mut out).expect("fits");
        assert_eq!(&out[..n], &untagged);
        assert_eq!(
            write_egress(&untagged, false, Tag::Untagged, &mut out[..14]),
            None
        );
        assert_eq!(
            write_egress(&untagged[..13], true, Tag::Untagged, &mut out),
            None
        );
    }
}
