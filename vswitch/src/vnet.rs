//! The virtio-net side of a port: the feature bits the backend offers, the 12-byte
//! `virtio_net_hdr_v1` every frame carries, and the software checksum for receivers that did
//! not negotiate `VIRTIO_NET_F_GUEST_CSUM`.

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MRG_RXBUF,
};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

use crate::chain::{self, Cursor, Seg, View};

/// Bytes of the header (`virtio_net_hdr_v1`: with `VIRTIO_F_VERSION_1` it always has
/// `num_buffers`).
pub const HDR_LEN: usize = 12;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`.
pub const NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_ECN`.
pub const GSO_ECN: u8 = 0x80;

/// `VHOST_USER_F_PROTOCOL_FEATURES`.
pub const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;

const fn bit(b: u32) -> u64 {
    1 << b
}

/// The virtio features a port offers. The frontend masks them with its own; what was acked
/// is per port ([`Offloads`]).
pub const FEATURES: u64 = bit(VIRTIO_F_VERSION_1)
    | bit(VIRTIO_RING_F_EVENT_IDX)
    | bit(VIRTIO_RING_F_INDIRECT_DESC)
    | bit(VIRTIO_NET_F_MRG_RXBUF)
    | bit(VIRTIO_NET_F_CSUM)
    | bit(VIRTIO_NET_F_GUEST_CSUM)
    | bit(VIRTIO_NET_F_HOST_TSO4)
    | bit(VIRTIO_NET_F_HOST_TSO6)
    | bit(VIRTIO_NET_F_GUEST_TSO4)
    | bit(VIRTIO_NET_F_GUEST_TSO6)
    | VHOST_USER_F_PROTOCOL_FEATURES;

/// What a port's driver acked, as the datapath needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offloads {
    /// `MRG_RXBUF`: a frame may span several RX chains.
    pub mrg_rxbuf: bool,
    /// `GUEST_CSUM`: the receiver accepts `NEEDS_CSUM` frames.
    pub guest_csum: bool,
    /// `GUEST_TSO4`.
    pub guest_tso4: bool,
    /// `GUEST_TSO6`.
    pub guest_tso6: bool,
}

impl Offloads {
    /// From the acked feature bits.
    pub fn from_features(features: u64) -> Self {
        let has = |b| features & bit(b) != 0;
        Self {
            mrg_rxbuf: has(VIRTIO_NET_F_MRG_RXBUF),
            guest_csum: has(VIRTIO_NET_F_GUEST_CSUM),
            guest_tso4: has(VIRTIO_NET_F_GUEST_TSO4),
            guest_tso6: has(VIRTIO_NET_F_GUEST_TSO6),
        }
    }

    /// Everything on (what a modern Linux guest acks).
    pub const ALL: Offloads = Offloads {
        mrg_rxbuf: true,
        guest_csum: true,
        guest_tso4: true,
        guest_tso6: true,
    };
}

/// `virtio_net_hdr_v1`, as read from a TX chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

/// What the receiving port must do with a frame, or why it cannot take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Pass this header through (flags and GSO fields the receiver negotiated).
    Pass(NetHdr),
    /// Pass the frame with a plain header after computing its checksum here.
    SoftCsum { start: usize, offset: usize },
}

impl NetHdr {
    /// Parses the 12 bytes (the `num_buffers` a driver sends is ignored).
    pub fn parse(b: &[u8; HDR_LEN]) -> Self {
        let le = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Self {
            flags: b[0],
            gso_type: b[1],
            hdr_len: le(2),
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
        }
    }

    /// The 12 bytes for a receiver, with `num_buffers`.
    pub fn emit(&self, num_buffers: u16) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b[10..12].copy_from_slice(&num_buffers.to_le_bytes());
        b
    }

    /// Whether the sender asks for a checksum.
    pub fn needs_csum(&self) -> bool {
        self.flags & NEEDS_CSUM != 0
    }

    /// Whether this is a GSO super-frame.
    pub fn is_gso(&self) -> bool {
        self.gso_type != GSO_NONE
    }

    /// Checks the header against the frame it came with: a checksum request must point into
    /// the frame, a GSO frame must say its segment size and ask for a checksum. `None` for a
    /// header no receiver could honour.
    pub fn checked(self, frame_len: usize) -> Option<Self> {
        if frame_len < self.min_frame_len() {
            return None;
        }
        if self.is_gso() && (self.gso_size == 0 || !self.needs_csum()) {
            return None;
        }
        // Only NEEDS_CSUM travels; DATA_VALID and RSC_INFO are receive-side flags.
        Some(Self {
            flags: self.flags & NEEDS_CSUM,
            ..self
        })
    }

    /// The shortest frame this header can come with: a checksum request's field must lie
    /// within the frame.
    #[inline]
    pub fn min_frame_len(&self) -> usize {
        if self.needs_csum() {
            usize::from(self.csum_start) + usize::from(self.csum_offset) + 2
        } else {
            0
        }
    }

    /// Whether a receiver with offloads `to` gets this header as it is
    /// ([`Delivery::Pass`]).
    #[inline]
    pub fn passes(&self, to: Offloads) -> bool {
        matches!(self.deliver(to), Some(Delivery::Pass(_)))
    }

    /// How a receiver with `to`'s offloads takes this (checked) header; `None` for a GSO
    /// frame it did not negotiate.
    #[inline]
    pub fn deliver(&self, to: Offloads) -> Option<Delivery> {
        if self.is_gso() {
            let kind = self.gso_type & !GSO_ECN;
            let ecn = self.gso_type & GSO_ECN != 0;
            let ok = !ecn
                && to.guest_csum
                && match kind {
                    GSO_TCPV4 => to.guest_tso4,
                    GSO_TCPV6 => to.guest_tso6,
                    _ => false,
                };
            return ok.then_some(Delivery::Pass(*self));
        }
        if self.needs_csum() && !to.guest_csum {
            return Some(Delivery::SoftCsum {
                start: usize::from(self.csum_start),
                offset: usize::from(self.csum_offset),
            });
        }
        Some(Delivery::Pass(*self))
    }
}

/// Completes a partial checksum in a frame written to `segs` of `mem` (from byte `HDR_LEN` on,
/// `frame_len` bytes): the Internet checksum of bytes `start..` (whose checksum field holds the
/// pseudo-header sum, as `NEEDS_CSUM` senders leave it) is written at `start + offset`.
pub fn complete_csum(
    mem: &View<'_>,
    segs: &[Seg],
    frame_len: usize,
    start: usize,
    offset: usize,
) -> Option<()> {
    let mut sum = 0u64;
    let mut buf = [0u8; 512];
    let mut at = start;
    let end = frame_len;
    // Accumulate 16-bit big-endian words; `at - start` stays even between chunks.
    while at < end {
        let n = (end - at).min(buf.len());
        read_frame(mem, segs, HDR_LEN + at, &mut buf[..n])?;
        sum += ones_sum(&buf[..n]);
        at += n;
    }
    let csum = !fold(sum);
    write_frame(mem, segs, HDR_LEN + start + offset, &csum.to_be_bytes())
}

/// The ones'-complement sum of `b` as big-endian 16-bit words (unfolded).
pub fn ones_sum(b: &[u8]) -> u64 {
    let mut sum = 0u64;
    let mut words = b.chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// Folds a sum to 16 bits.
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop leaves at most 16 bits.
    u16::try_from(sum).unwrap_or(0xffff)
}

/// Reads `out.len()` bytes at byte `at` of the concatenated segments.
pub(crate) fn read_frame(mem: &View<'_>, segs: &[Seg], at: usize, out: &mut [u8]) -> Option<()> {
    chain::copy_out(mem, Cursor::new(segs, at), out)
}

/// Writes `data` at byte `at` of the concatenated segments.
pub(crate) fn write_frame(mem: &View<'_>, segs: &[Seg], at: usize, data: &[u8]) -> Option<()> {
    chain::copy_in(mem, Cursor::new(segs, at), data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let h = NetHdr {
            flags: 1,
            gso_type: 1,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let b = h.emit(3);
        assert_eq!(NetHdr::parse(&b), h);
        assert_eq!(&b[10..], &3u16.to_le_bytes());
    }

    #[test]
    fn gso_needs_the_receivers_offload() {
        let h = NetHdr {
            flags: 1,
            gso_type: GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        }
        .checked(9000)
        .expect("valid");
        assert!(h.deliver(Offloads::ALL).is_some());
        assert!(h.deliver(Offloads::default()).is_none());
        let ecn = NetHdr {
            gso_type: h.gso_type | GSO_ECN,
            ..h
        };
        assert!(ecn.deliver(Offloads::ALL).is_none());
        let no_size = NetHdr { gso_size: 0, ..h };
        assert!(no_size.checked(9000).is_none());
    }

    #[test]
    fn checksum_requests_must_point_into_the_frame() {
        let h = NetHdr {
            flags: 1,
            csum_start: 34,
            csum_offset: 16,
            ..NetHdr::default()
        };
        assert!(h.checked(52).is_some());
        assert!(h.checked(51).is_none());
        let plain = h.checked(60).expect("valid").deliver(Offloads::default());
        assert_eq!(
            plain,
            Some(Delivery::SoftCsum {
                start: 34,
                offset: 16
            })
        );
    }

    #[test]
    fn the_ones_complement_sum_matches_rfc1071() {
        // RFC 1071's example: 0001 f203 f4f5 f6f7 → sum ddf2 (folded), checksum 220d.
        let b = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(ones_sum(&b)), 0xddf2);
        assert_eq!(fold(ones_sum(&[0xff])), 0xff00);
    }
}
