//! The transmit side's logic: checking a frame and its virtio-net header before the kernel sees
//! them, and the queue `flush` sends in batches. No I/O here.

/// Ethernet header.
const ETH_HDR: usize = 14;
/// 802.1Q tag.
const TAG: usize = 4;
/// Largest frame with a GSO header: a 64 KiB IPv4 packet, its Ethernet header and one tag
/// (the switch's own `Oversize` bound).
pub(super) const MAX_GSO_FRAME: usize = ETH_HDR + TAG + 65535;
/// The header the kernel reads before each frame with `PACKET_VNET_HDR`: the legacy 10-byte
/// `virtio_net_hdr` (a v1 header without `num_buffers`), little-endian on every host we run.
pub(super) const KERNEL_VNET_HDR: usize = 10;

/// `virtio_net_hdr` flags and GSO types (virtio 1.x §5.1.6).
const F_NEEDS_CSUM: u8 = 1;
const F_DATA_VALID: u8 = 2;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_UDP: u8 = 3;
const GSO_TCPV6: u8 = 4;
const GSO_UDP_L4: u8 = 5;
const GSO_ECN: u8 = 0x80;

/// Why [`super::Uplink::send`] refused a frame (counted in `tx_errors`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The frame is shorter than an Ethernet header.
    #[error("frame of {0} bytes is shorter than an Ethernet header")]
    Runt(usize),
    /// The frame is larger than the link carries: more than the MTU (plus Ethernet header and
    /// one tag) without a GSO header, or more than a 64 KiB packet with one.
    #[error("frame of {len} bytes exceeds the uplink's limit of {max}")]
    Oversize {
        /// The frame's length.
        len: usize,
        /// The limit that applied.
        max: usize,
    },
    /// The virtio-net header is not one a driver may send.
    #[error("invalid virtio-net header: {0}")]
    BadVnetHeader(&'static str),
}

impl From<SendError> for std::io::Error {
    fn from(e: SendError) -> Self {
        let kind = match e {
            SendError::Oversize { .. } => std::io::ErrorKind::FileTooLarge,
            _ => std::io::ErrorKind::InvalidInput,
        };
        std::io::Error::new(kind, e)
    }
}

/// Whether `frame` carries an 802.1Q or 802.1ad tag (the kernel allows such frames 4 bytes
/// beyond the MTU).
fn tagged(frame: &[u8]) -> bool {
    matches!(frame.get(12..14), Some([0x81, 0x00] | [0x88, 0xa8]))
}

/// Checks `frame` and its optional v1 virtio-net header against an MTU of `mtu`; returns the
/// header the kernel gets.
pub(super) fn check(
    vnet: Option<&[u8; 12]>,
    frame: &[u8],
    mtu: usize,
) -> Result<[u8; KERNEL_VNET_HDR], SendError> {
    if frame.len() < ETH_HDR {
        return Err(SendError::Runt(frame.len()));
    }
    let plain_max = mtu + ETH_HDR + if tagged(frame) { TAG } else { 0 };
    let Some(vnet) = vnet else {
        if frame.len() > plain_max {
            return Err(SendError::Oversize {
                len: frame.len(),
                max: plain_max,
            });
        }
        return Ok([0; KERNEL_VNET_HDR]);
    };
    let mut hdr = [0u8; KERNEL_VNET_HDR];
    hdr.copy_from_slice(&vnet[..KERNEL_VNET_HDR]);
    let le16 = |at: usize| usize::from(u16::from_le_bytes([vnet[at], vnet[at + 1]]));
    let flags = vnet[0] & !F_DATA_VALID; // Meaningless on transmit; drivers may leave it.
    if flags & !F_NEEDS_CSUM != 0 {
        return Err(SendError::BadVnetHeader("unknown flags"));
    }
    hdr[0] = flags;
    if flags & F_NEEDS_CSUM != 0 {
        let (start, offset) = (le16(6), le16(8));
        if start < ETH_HDR || start + offset + 2 > frame.len() {
            return Err(SendError::BadVnetHeader("checksum outside the frame"));
        }
    }
    let gso = vnet[1];
    match gso & !GSO_ECN {
        GSO_NONE if gso == GSO_NONE => {
            if frame.len() > plain_max {
                return Err(SendError::Oversize {
                    len: frame.len(),
                    max: plain_max,
                });
            }
        }
        GSO_TCPV4 | GSO_TCPV6 => {}
        GSO_UDP | GSO_UDP_L4 if gso & GSO_ECN == 0 => {}
        _ => return Err(SendError::BadVnetHeader("unknown GSO type")),
    }
    if gso != GSO_NONE {
        if le16(4) == 0 {
            return Err(SendError::BadVnetHeader("GSO without a segment size"));
        }
        if frame.len() > MAX_GSO_FRAME {
            return Err(SendError::Oversize {
                len: frame.len(),
                max: MAX_GSO_FRAME,
            });
        }
    }
    Ok(hdr)
}

/// `vnet_hdr` for the same frame after `delta` bytes were inserted (+4: a tag added) or removed
/// (-4: a tag stripped) in front of the network header: `csum_start` and `hdr_len` move with
/// it. `None` if they would leave the 16-bit range or start inside the Ethernet header.
pub fn shift_vnet_hdr(vnet_hdr: &[u8; 12], delta: i32) -> Option<[u8; 12]> {
    let mut out = *vnet_hdr;
    for at in [2, 6] {
        let v = i32::from(u16::from_le_bytes([vnet_hdr[at], vnet_hdr[at + 1]]));
        if v == 0 {
            continue; // Not set: stays unset.
        }
        let moved = u16::try_from(v + delta).ok().filter(|&m| m >= 14)?;
        out[at..at + 2].copy_from_slice(&moved.to_le_bytes());
    }
    Some(out)
}

/// Frames waiting for `flush`, each with its kernel header, back to back in one buffer.
#[derive(Debug, Default)]
pub(super) struct TxQueue {
    buf: Vec<u8>,
    /// End of each message in `buf`.
    ends: Vec<usize>,
}

impl TxQueue {
    pub(super) fn push(&mut self, hdr: &[u8; KERNEL_VNET_HDR], frame: &[u8]) {
        self.buf.extend_from_slice(hdr);
        self.buf.extend_from_slice(frame);
        self.ends.push(self.buf.len());
    }

    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    pub(super) fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// Messages `from..` (header and frame), in order.
    pub(super) fn messages(&self, from: usize) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .skip(from)
            .map(|(s, e)| &self.buf[s..e])
    }

    /// The frame length (without header) of message `i`.
    pub(super) fn frame_len(&self, i: usize) -> usize {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.ends[i] - start - KERNEL_VNET_HDR
    }

    pub(super) fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize, ethertype: [u8; 2]) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[12..14].copy_from_slice(&ethertype);
        f
    }

    fn vnet(flags: u8, gso: u8, gso_size: u16, csum: (u16, u16)) -> [u8; 12] {
        let mut h = [0u8; 12];
        h[0] = flags;
        h[1] = gso;
        h[4..6].copy_from_slice(&gso_size.to_le_bytes());
        h[6..8].copy_from_slice(&csum.0.to_le_bytes());
        h[8..10].copy_from_slice(&csum.1.to_le_bytes());
        h[10..12].copy_from_slice(&7u16.to_le_bytes()); // num_buffers: not passed on
        h
    }

    #[test]
    fn plain_frames_fit_the_mtu_plus_one_tag() {
        let ip = [0x08, 0x00];
        assert_eq!(check(None, &frame(1514, ip), 1500), Ok([0; 10]));
        assert_eq!(
            check(None, &frame(1515, ip), 1500),
            Err(SendError::Oversize {
                len: 1515,
                max: 1514
            })
        );
        assert!(check(None, &frame(1518, [0x81, 0x00]), 1500).is_ok());
        assert!(check(None, &frame(1518, [0x88, 0xa8]), 1500).is_ok());
        assert!(check(None, &frame(1519, [0x81, 0x00]), 1500).is_err());
        assert_eq!(check(None, &[0; 13], 1500), Err(SendError::Runt(13)));
        // A header without GSO does not lift the limit.
        assert!(check(Some(&vnet(0, 0, 0, (0, 0))), &frame(1515, ip), 1500).is_err());
    }

    #[test]
    fn gso_headers_are_checked_and_trimmed_to_ten_bytes() {
        let f = frame(3000, [0x08, 0x00]);
        let h = vnet(F_NEEDS_CSUM | F_DATA_VALID, GSO_TCPV4, 1448, (34, 16));
        let k = check(Some(&h), &f, 1500).expect("valid TSO header");
        assert_eq!(k[0], F_NEEDS_CSUM);
        assert_eq!(k[1..], h[1..10]);
        let ecn = vnet(F_NEEDS_CSUM, GSO_TCPV6 | GSO_ECN, 1428, (54, 16));
        assert!(check(Some(&ecn), &f, 1500).is_ok());
        let bad = [
            vnet(4, GSO_TCPV4, 1448, (34, 16)),
            vnet(F_NEEDS_CSUM, 2, 1448, (34, 16)),
            vnet(F_NEEDS_CSUM, GSO_UDP_L4 | GSO_ECN, 1448, (34, 6)),
            vnet(F_NEEDS_CSUM, GSO_TCPV4, 0, (34, 16)),
            vnet(F_NEEDS_CSUM, GSO_TCPV4, 1448, (2990, 16)),
            vnet(F_NEEDS_CSUM, GSO_NONE, 0, (4, 0)),
        ];
        for h in bad {
            assert!(
                matches!(check(Some(&h), &f, 1500), Err(SendError::BadVnetHeader(_))),
                "{h:?}"
            );
        }
        let huge = frame(MAX_GSO_FRAME + 1, [0x08, 0x00]);
        assert!(matches!(
            check(
                Some(&vnet(F_NEEDS_CSUM, GSO_TCPV4, 1448, (34, 16))),
                &huge,
                1500
            ),
            Err(SendError::Oversize { .. })
        ));
    }

    #[test]
    fn a_tag_moves_the_offsets_of_a_header() {
        let h = vnet(F_NEEDS_CSUM, GSO_TCPV4, 1448, (34, 16));
        let mut h = h;
        h[2..4].copy_from_slice(&54u16.to_le_bytes());
        let tagged = shift_vnet_hdr(&h, 4).expect("fits");
        assert_eq!(tagged[2..4], 58u16.to_le_bytes());
        assert_eq!(tagged[6..8], 38u16.to_le_bytes());
        assert_eq!(
            tagged[8..10],
            h[8..10],
            "csum_offset is relative to csum_start"
        );
        assert_eq!(shift_vnet_hdr(&tagged, -4), Some(h));
        // Unset fields stay unset; offsets cannot leave the range or enter the Ethernet header.
        let plain = vnet(0, GSO_NONE, 0, (0, 0));
        assert_eq!(shift_vnet_hdr(&plain, 4), Some(plain));
        assert_eq!(shift_vnet_hdr(&h, -30), None);
        let mut far = h;
        far[6..8].copy_from_slice(&65534u16.to_le_bytes());
        assert_eq!(shift_vnet_hdr(&far, 4), None);
    }

    #[test]
    fn queue_keeps_messages_apart() {
        let mut q = TxQueue::default();
        q.push(&[1; 10], &[2; 20]);
        q.push(&[3; 10], &[4; 30]);
        assert_eq!(q.len(), 2);
        assert_eq!(q.bytes(), 70);
        let m: Vec<&[u8]> = q.messages(0).collect();
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].len(), 40);
        assert_eq!(m[1][0], 3);
        assert_eq!(q.messages(1).count(), 1);
        assert_eq!(q.frame_len(1), 30);
        q.clear();
        assert_eq!(q.messages(0).count(), 0);
    }
}
