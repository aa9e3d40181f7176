//! The block walk on blocks built in the kernel's layout, well-formed and corrupted.

use super::build::{self, Entry, MAC_OFFSET};
use super::{Cursor, Step, field, next_frame};
use crate::uplink::UplinkStats;

const BLOCK: usize = 4096;
const MAX: usize = 1500 + 22;

fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 9]);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn entry(data: &[u8]) -> Entry<'_> {
    Entry {
        data,
        tag: None,
        pkttype: 0,
        len: None,
    }
}

/// Walks the whole block; returns the frames delivered and the counters.
fn walk(block: &mut [u8]) -> (Vec<Vec<u8>>, UplinkStats) {
    let mut stats = UplinkStats::default();
    let mut scratch = Vec::new();
    let mut cursor = Cursor::start(block, &mut stats);
    let mut out = Vec::new();
    // Each step consumes a frame the block claims; a corrupt count cannot make this loop long
    // because the chain must move forward inside the block.
    for _ in 0..BLOCK {
        match next_frame(block, &mut cursor, &mut scratch, MAX, &mut stats) {
            Step::Frame(f) => out.push(f.to_vec()),
            Step::Skip => {}
            Step::End => return (out, stats),
        }
    }
    panic!("the walk did not end");
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

#[test]
fn frames_come_out_in_order_and_whole() {
    let frames = [
        eth(0x0800, &[1; 50]),
        eth(0x0806, &[2; 28]),
        eth(0x0800, &[3; 1486]),
    ];
    let entries: Vec<_> = frames.iter().map(|f| entry(f)).collect();
    let mut block = build::block(BLOCK, &entries);
    let (out, stats) = walk(&mut block);
    assert_eq!(out, frames);
    assert_eq!(stats.rx_frames, 3);
    assert_eq!(stats.rx_bytes, (64 + 42 + 1500) as u64);
    assert_eq!(stats.rx_malformed, 0);
}

#[test]
fn stripped_tags_are_put_back_with_their_tpid() {
    let inner = eth(0x0800, &[7; 46]);
    let mut e = [entry(&inner), entry(&inner), entry(&inner)];
    e[0].tag = Some((0x8100, 0x200a)); // priority 1, VID 10
    e[1].tag = Some((0x88a8, 0x0064)); // 802.1ad, VID 100
    let mut block = build::block(BLOCK, &e);
    // The third: VLAN_VALID without TPID_VALID (older kernels): 802.1Q.
    let third = field::BLOCK_DESC + 2 * ((MAC_OFFSET + inner.len() + 15) & !15);
    put32(&mut block, third + field::STATUS, 1 | 16);
    put32(&mut block, third + field::VLAN_TCI, 5);
    let (out, stats) = walk(&mut block);
    let tagged = |tag: [u8; 4]| [&inner[..12], &tag, &inner[12..]].concat();
    assert_eq!(out[0], tagged([0x81, 0x00, 0x20, 0x0a]));
    assert_eq!(out[1], tagged([0x88, 0xa8, 0x00, 0x64]));
    assert_eq!(out[2], tagged([0x81, 0x00, 0x00, 0x05]));
    assert_eq!(stats.rx_bytes, 3 * 64);
}

#[test]
fn a_tag_without_room_in_front_goes_through_the_scratch_buffer() {
    let inner = eth(0x0800, &[7; 46]);
    let mut e = entry(&inner);
    e.tag = Some((0x8100, 10));
    let mut block = build::block(BLOCK, &[e]);
    // Move the frame to the earliest place a frame may start: no 4 spare bytes before it.
    let off = field::BLOCK_DESC;
    let data = off + MAC_OFFSET;
    block.copy_within(data..data + inner.len(), off + field::HDR_END);
    let mac = u16::try_from(field::HDR_END).expect("small");
    block[off + field::MAC..off + field::MAC + 2].copy_from_slice(&mac.to_ne_bytes());
    let (out, _) = walk(&mut block);
    assert_eq!(out[0][12..16], [0x81, 0x00, 0x00, 0x0a]);
    assert_eq!(out[0][16..], inner[12..]);
}

#[test]
fn our_own_truncated_oversize_and_runt_frames_are_not_delivered() {
    let ok = eth(0x0800, &[1; 46]);
    let big = eth(0x0800, &[2; 1509]); // 1523 > 1500 + 22
    let runt = [0u8; 13];
    let mut e = vec![
        entry(&ok),
        entry(&ok),
        entry(&big),
        entry(&runt),
        entry(&ok),
    ];
    e[0].pkttype = 4; // PACKET_OUTGOING
    e[1].len = Some(2000); // snaplen < len
    let mut block = build::block(BLOCK, &e);
    let (out, stats) = walk(&mut block);
    assert_eq!(out, vec![ok]);
    assert_eq!(
        (stats.rx_truncated, stats.rx_oversize, stats.rx_malformed),
        (1, 1, 1)
    );
}

#[test]
fn a_corrupt_chain_or_header_stays_inside_the_block() {
    let f = eth(0x0800, &[1; 46]);
    let base = || build::block(BLOCK, &[entry(&f), entry(&f), entry(&f)]);
    let first = field::BLOCK_DESC;

    // More frames claimed than chained: the walk stops at the last link, and says so.
    let mut b = base();
    put32(&mut b, field::NUM_PKTS, u32::MAX);
    let (out, stats) = walk(&mut b);
    assert_eq!(out.len(), 3);
    assert_eq!(stats.rx_malformed, 1);

    // A next offset beyond the block, or one that does not move forward: this frame, no more.
    for next in [u32::MAX, 4096, 0x7fff_ffff, 8, 67] {
        let mut b = base();
        put32(&mut b, first + field::NEXT_OFFSET, next);
        let (out, stats) = walk(&mut b);
        assert_eq!(out.len(), 1, "next {next}");
        assert_eq!(stats.rx_malformed, 1);
    }

    // Frame data beyond the block, or over the header: skipped, the chain goes on.
    for (at, v) in [
        (field::SNAPLEN, u32::MAX),
        (field::SNAPLEN, 4000),
        (field::LEN, 0),
    ] {
        let mut b = base();
        put32(&mut b, first + at, v);
        let (out, _) = walk(&mut b);
        assert_eq!(out.len(), if at == field::LEN { 3 } else { 2 });
    }
    for mac in [0u16, 20, 67, u16::MAX] {
        let mut b = base();
        b[first + field::MAC..first + field::MAC + 2].copy_from_slice(&mac.to_ne_bytes());
        let (out, stats) = walk(&mut b);
        assert_eq!(out.len(), 2, "tp_mac {mac}");
        assert_eq!(stats.rx_malformed, 1);
    }

    // A first frame outside the block: the block is empty.
    for first in [0, 47, 4096, u32::MAX] {
        let mut b = base();
        put32(&mut b, field::FIRST_PKT, first);
        assert_eq!(walk(&mut b).0.len(), 0, "first {first}");
    }
    // A frame header that would straddle the end of the block.
    let mut b = base();
    put32(
        &mut b,
        field::FIRST_PKT,
        u32::try_from(BLOCK - 40).expect("small"),
    );
    assert_eq!(walk(&mut b).0.len(), 0);
}

#[test]
fn a_storm_of_mutated_blocks_never_reads_outside() {
    let frames: Vec<Vec<u8>> = (0..8u8)
        .map(|i| eth(0x0800, &vec![i; 40 + 60 * usize::from(i)]))
        .collect();
    let mut entries: Vec<_> = frames.iter().map(|f| entry(f)).collect();
    entries[3].tag = Some((0x8100, 3));
    let clean = build::block(BLOCK, &entries);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..4000 {
        let mut b = clean.clone();
        for _ in 0..1 + rand() % 8 {
            // Mostly the headers, where the offsets live.
            let limit = if rand() % 4 == 0 { BLOCK } else { 1024 };
            let at = usize::try_from(rand()).expect("64-bit") % limit;
            b[at] = rand().to_le_bytes()[0];
        }
        let (out, _) = walk(&mut b);
        assert!(out.iter().all(|f| f.len() >= 14 && f.len() <= MAX));
    }
}
