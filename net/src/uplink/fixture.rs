//! Benchmark and fuzzing hooks: the receive path's walk of a ring block, without a socket.
//! `walk` accepts any bytes, so a fuzz target can hand it a corrupted block; `bench_block`
//! builds a well-formed one for `cargo xtask bench`.

use super::UplinkStats;
use super::ring::{self, build};

/// A retired block of `block_size` bytes in the kernel's layout, holding as many frames of
/// `len` bytes (an Ethernet header, then a counter) as fit, at most `frames`; when `vlan`,
/// every other frame arrives with its tag stripped, as from a trunk.
pub fn bench_block(block_size: usize, frames: usize, len: usize, vlan: bool) -> Vec<u8> {
    let len = len.max(14);
    let per_frame = (build::MAC_OFFSET + len + 15) & !15;
    let room = block_size.saturating_sub(48) / per_frame;
    let data: Vec<Vec<u8>> = (0..frames.min(room))
        .map(|i| {
            let mut f = vec![0u8; len];
            f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
            f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
            f[12..14].copy_from_slice(&[0x08, 0x00]);
            for (dst, src) in f[14..].iter_mut().zip(i.to_be_bytes().iter().cycle()) {
                *dst = *src;
            }
            f
        })
        .collect();
    let entries: Vec<build::Entry<'_>> = data
        .iter()
        .enumerate()
        .map(|(i, d)| build::Entry {
            data: d,
            tag: (vlan && i % 2 == 1).then_some((0x8100, 10)),
            pkttype: 0,
            len: None,
        })
        .collect();
    build::block(block_size, &entries)
}

/// Walks `block` as [`super::Uplink::recv_batch`] walks a block of its ring (restoring tags in
/// place, so the block changes), calling `f` with each frame no longer than `max_len`; returns
/// the frames delivered and the counters the walk kept.
pub fn walk(block: &mut [u8], max_len: usize, mut f: impl FnMut(&[u8])) -> (usize, UplinkStats) {
    let mut stats = UplinkStats::default();
    let mut scratch = Vec::new();
    let mut cursor = ring::Cursor::start(block, &mut stats);
    let mut delivered = 0;
    loop {
        match ring::next_frame(block, &mut cursor, &mut scratch, max_len, &mut stats) {
            ring::Step::Frame(frame) => {
                f(frame);
                delivered += 1;
            }
            ring::Step::Skip => {}
            ring::Step::End => return (delivered, stats),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_bench_block_walks_back_to_its_frames() {
        let mut block = super::bench_block(1 << 18, 64, 1514, true);
        let mut tagged = 0;
        let (n, stats) = super::walk(&mut block, 1522, |f| {
            if f[12..14] == [0x81, 0x00] {
                assert_eq!(f.len(), 1518);
                assert_eq!(f[14..16], [0, 10]);
                tagged += 1;
            } else {
                assert_eq!(f.len(), 1514);
            }
        });
        assert_eq!((n, tagged), (64, 32));
        assert_eq!(stats.rx_frames, 64);
        // A block too small for the request holds what fits.
        let mut small = super::bench_block(4096, 64, 1514, false);
        assert_eq!(super::walk(&mut small, 1522, |_| {}).0, 2);
    }
}
