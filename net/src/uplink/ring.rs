//! Walking one retired `TPACKET_V3` block, as a byte slice: no offset the kernel wrote (or a
//! corruption of it) can make us read outside the block. Safe code only; the mapping is in
//! [`super::sys`].
//!
//! A block (`struct tpacket_block_desc`) holds `num_pkts` frames starting at
//! `offset_to_first_pkt`, chained by `tp_next_offset`. Each frame is a `tpacket3_hdr`, a
//! `sockaddr_ll`, some padding, then `tp_snaplen` bytes of frame at `tp_mac`.

use linux_raw_sys::if_packet::{
    PACKET_OUTGOING, TP_STATUS_CSUMNOTREADY, TP_STATUS_VLAN_TPID_VALID, TP_STATUS_VLAN_VALID,
};

use super::UplinkStats;

/// Field offsets in the kernel's structures.
mod field {
    /// `tpacket_block_desc.hdr.bh1.num_pkts`.
    pub(super) const NUM_PKTS: usize = 12;
    /// `tpacket_block_desc.hdr.bh1.offset_to_first_pkt`.
    pub(super) const FIRST_PKT: usize = 16;
    /// Size of `tpacket_block_desc` (the first frame cannot start before).
    pub(super) const BLOCK_DESC: usize = 48;

    /// `tpacket3_hdr` fields.
    pub(super) const NEXT_OFFSET: usize = 0;
    pub(super) const SNAPLEN: usize = 12;
    pub(super) const LEN: usize = 16;
    pub(super) const STATUS: usize = 20;
    pub(super) const MAC: usize = 24;
    pub(super) const VLAN_TCI: usize = 32;
    pub(super) const VLAN_TPID: usize = 36;
    /// `TPACKET_ALIGN(sizeof(struct tpacket3_hdr))`: where the `sockaddr_ll` starts.
    pub(super) const HDR: usize = 48;
    /// `sockaddr_ll.sll_pkttype`, from the frame header's start.
    pub(super) const PKTTYPE: usize = HDR + 10;
    /// End of the `sockaddr_ll`: frame data never starts before.
    pub(super) const HDR_END: usize = HDR + 20;
}

/// 802.1Q tag length.
const TAG: usize = 4;
/// `ETH_P_8021Q`.
const TPID_8021Q: u16 = 0x8100;
/// Two MAC addresses: where a tag goes.
const MACS: usize = 12;
/// Ethernet header.
const ETH_HDR: usize = 14;

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

/// Where the walk of a block stands.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cursor {
    /// Offset of the next frame header.
    off: usize,
    /// Frames the block says remain.
    left: u32,
}

impl Cursor {
    /// The start of a retired block; a block whose header is nonsense is empty (and counted).
    pub(super) fn start(block: &[u8], stats: &mut UplinkStats) -> Self {
        let empty = Self { off: 0, left: 0 };
        let (Some(left), Some(first)) = (
            u32_at(block, field::NUM_PKTS),
            u32_at(block, field::FIRST_PKT),
        ) else {
            stats.rx_malformed += 1;
            return empty;
        };
        let off = usize::try_from(first).unwrap_or(usize::MAX);
        if left > 0 && (off < field::BLOCK_DESC || off >= block.len()) {
            stats.rx_malformed += 1;
            return empty;
        }
        Self { off, left }
    }

    /// Whether the block has no frame left.
    pub(super) fn done(&self) -> bool {
        self.left == 0
    }
}

/// What the next frame of a block turned out to be.
#[derive(Debug)]
pub(super) enum Step<'b> {
    /// A frame to deliver, as on the wire.
    Frame(&'b [u8]),
    /// A frame not to deliver (ours, truncated, oversize, malformed: counted).
    Skip,
    /// Nothing left in the block.
    End,
}

/// Takes the next frame of `block` at `cursor`, putting a tag the kernel stripped back in: in
/// place when the padding before the frame has room (it always has with the kernel's layout),
/// else in `scratch`. Frames longer than `max_len` on the wire are skipped.
pub(super) fn next_frame<'b>(
    block: &'b mut [u8],
    cursor: &mut Cursor,
    scratch: &'b mut Vec<u8>,
    max_len: usize,
    stats: &mut UplinkStats,
) -> Step<'b> {
    if cursor.left == 0 {
        return Step::End;
    }
    let off = cursor.off;
    cursor.left -= 1;
    let Some(hdr) = block.get(off..).and_then(|b| b.get(..field::HDR_END)) else {
        stats.rx_malformed += 1;
        cursor.left = 0;
        return Step::End;
    };
    // `hdr` is HDR_END bytes long: every word below is inside it.
    let word = |at| u32_at(hdr, at).unwrap_or(0);
    let size = |at| usize::try_from(word(at)).unwrap_or(usize::MAX);
    let next = size(field::NEXT_OFFSET);
    let snaplen = size(field::SNAPLEN);
    let len = size(field::LEN);
    let status = word(field::STATUS);
    let vlan_tci = word(field::VLAN_TCI);
    let mac_rel = usize::from(u16_at(hdr, field::MAC).unwrap_or(0));
    let tpid = u16_at(hdr, field::VLAN_TPID).unwrap_or(0);
    let pkttype = hdr[field::PKTTYPE];

    // The chain: the last frame has no next; any other next must move forward within the block.
    if cursor.left > 0 {
        match off.checked_add(next) {
            Some(n) if next >= field::HDR_END && n < block.len() => cursor.off = n,
            _ => {
                stats.rx_malformed += 1;
                cursor.left = 0;
            }
        }
    }

    let mac = off + mac_rel;
    if mac_rel < field::HDR_END || mac.checked_add(snaplen).is_none_or(|end| end > block.len()) {
        stats.rx_malformed += 1;
        return Step::Skip;
    }
    if u32::from(pkttype) == PACKET_OUTGOING {
        return Step::Skip;
    }
    if snaplen < len {
        stats.rx_truncated += 1;
        return Step::Skip;
    }
    if snaplen < ETH_HDR {
        stats.rx_malformed += 1;
        return Step::Skip;
    }
    let tagged = status & TP_STATUS_VLAN_VALID != 0;
    let wire_len = snaplen + if tagged { TAG } else { 0 };
    if wire_len > max_len {
        stats.rx_oversize += 1;
        return Step::Skip;
    }
    if status & TP_STATUS_CSUMNOTREADY != 0 {
        stats.rx_csum_partial += 1;
    }
    stats.rx_frames += 1;
    stats.rx_bytes += wire_len as u64;
    if !tagged {
        return Step::Frame(&block[mac..mac + snaplen]);
    }
    let tpid = if status & TP_STATUS_VLAN_TPID_VALID != 0 {
        tpid
    } else {
        TPID_8021Q
    };
    // The TCI is 16 bits in a 32-bit field.
    #[allow(clippy::cast_possible_truncation)]
    let tag = tag_bytes(tpid, vlan_tci as u16);
    if mac_rel >= field::HDR_END + TAG {
        let start = mac - TAG;
        block.copy_within(mac..mac + MACS, start);
        block[start + MACS..start + MACS + TAG].copy_from_slice(&tag);
        return Step::Frame(&block[start..mac + snaplen]);
    }
    let frame = &block[mac..mac + snaplen];
    scratch.clear();
    scratch.extend_from_slice(&frame[..MACS]);
    scratch.extend_from_slice(&tag);
    scratch.extend_from_slice(&frame[MACS..]);
    Step::Frame(scratch)
}

fn tag_bytes(tpid: u16, tci: u16) -> [u8; TAG] {
    let [a, b] = tpid.to_be_bytes();
    let [c, d] = tci.to_be_bytes();
    [a, b, c, d]
}

/// Builds blocks in the kernel's layout, for tests, benchmarks and fuzzing.
pub(super) mod build {
    use super::field;

    /// One frame for [`block`]: its bytes as the kernel stored them (tag stripped), the tag the
    /// kernel reported (TPID, TCI), and `sll_pkttype`.
    #[derive(Debug, Clone)]
    pub(crate) struct Entry<'a> {
        pub(crate) data: &'a [u8],
        pub(crate) tag: Option<(u16, u16)>,
        pub(crate) pkttype: u8,
        pub(crate) len: Option<u32>,
    }

    /// Where the kernel puts frame data for an Ethernet device and no `PACKET_RESERVE`:
    /// `TPACKET_ALIGN(68 + 16) - 14`.
    pub(crate) const MAC_OFFSET: usize = MAC_OFFSET_U16 as usize;
    const MAC_OFFSET_U16: u16 = 82;

    /// A retired block of `size` bytes holding `entries` as `tpacket_rcv` lays them out.
    pub(crate) fn block(size: usize, entries: &[Entry<'_>]) -> Vec<u8> {
        let n32 = |v: usize| u32::try_from(v).expect("built blocks are far below 4 GiB");
        let mut b = vec![0u8; size];
        let put32 =
            |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        let first = field::BLOCK_DESC;
        put32(&mut b, 8, 1); // TP_STATUS_USER
        put32(&mut b, field::NUM_PKTS, n32(entries.len()));
        put32(&mut b, field::FIRST_PKT, n32(first));
        let mut off = first;
        for (i, e) in entries.iter().enumerate() {
            let end = off + MAC_OFFSET + e.data.len();
            let next = (end + 15) & !15;
            let last = i + 1 == entries.len();
            put32(
                &mut b,
                off + field::NEXT_OFFSET,
                if last { 0 } else { n32(next - off) },
            );
            put32(&mut b, off + field::SNAPLEN, n32(e.data.len()));
            put32(&mut b, off + field::LEN, e.len.unwrap_or(n32(e.data.len())));
            let mut status = 1; // TP_STATUS_USER
            if let Some((tpid, tci)) = e.tag {
                status |= 16 | 64; // VLAN_VALID | VLAN_TPID_VALID
                put32(&mut b, off + field::VLAN_TCI, u32::from(tci));
                b[off + field::VLAN_TPID..off + field::VLAN_TPID + 2]
                    .copy_from_slice(&tpid.to_ne_bytes());
            }
            put32(&mut b, off + field::STATUS, status);
            b[off + field::MAC..off + field::MAC + 2]
                .copy_from_slice(&(MAC_OFFSET_U16).to_ne_bytes());
            b[off + field::PKTTYPE] = e.pkttype;
            b[off + MAC_OFFSET..end].copy_from_slice(e.data);
            off = next;
        }
        b
    }
}

#[cfg(test)]
mod tests;
