//! The body of the `switch_queue` fuzz target (and of a deterministic storm in the tests): a
//! guest whose whole memory and TX queue layout come from the input, sending through a real
//! fabric to a well-behaved guest. Not an API.
//!
//! Input: byte 0 picks the TX queue size (1 to 256, a power of two) and the memory layout
//! (bit 7: two adjacent regions of 32 KiB instead of one of 64 KiB, so chains cross a region
//! boundary); bytes 1–6 the descriptor table, available and used ring addresses (little-endian
//! `u16`s, aligned down as the spec requires); byte 7 how many batches to run (1–8); the rest is
//! the guest's memory, from address 0 (the remainder zero). The receiver takes
//! `MRG_RXBUF` frames into 64 buffers of 512 bytes.
//!
//! Checked: nothing panics, every call ends (at most one batch of chains each, every chain
//! walked within its bounds), a batch takes at most `tx::BATCH` chains, every frame delivered
//! is a whole frame of at most `MAX_FRAME_LEN` bytes with a header whose `num_buffers` matches
//! the chains it took.

use std::sync::Arc;

use kaos_net::switch::fixture::{self, A, B};
use kaos_net::switch::{MAX_FRAME_LEN, SwitchConfig};
use vhost_user_backend::{VringRwLock, VringT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryAtomic, GuestMemoryMmap};

use crate::driver::Guest;
use crate::fabric::{Attached, Fabric};
use crate::port::{GuestNic, Mem};
use crate::tx;
use crate::vnet::Offloads;

const MEM: usize = 64 * 1024;

/// Runs one input; returns how many frames the receiver got.
pub fn tx_queue(data: &[u8]) -> usize {
    let Some((head, rest)) = data.split_first_chunk::<8>() else {
        return 0;
    };
    let size = 1u16 << (head[0] & 0x0f).min(8);
    let regions: Vec<(GuestAddress, usize)> = if head[0] & 0x80 != 0 {
        vec![
            (GuestAddress(0), MEM / 2),
            (GuestAddress(MEM as u64 / 2), MEM / 2),
        ]
    } else {
        vec![(GuestAddress(0), MEM)]
    };
    let Ok(mem) = GuestMemoryMmap::from_ranges(&regions) else {
        return 0;
    };
    let n = rest.len().min(MEM);
    for (i, chunk) in rest[..n].chunks(MEM / 2).enumerate() {
        let _ = mem.write_slice(chunk, GuestAddress((i * MEM / 2) as u64));
    }
    let addr =
        |i: usize, align: u16| u64::from(u16::from_le_bytes([head[i], head[i + 1]]) & !(align - 1));
    let (desc, avail, used) = (addr(1, 16), addr(3, 2), addr(5, 4));

    let fabric = Fabric::new(SwitchConfig::default(), 3);
    let Ok(a_id) = fabric.add_port(fixture::guest(A, Vec::new())) else {
        return 0;
    };
    let Ok(b_id) = fabric.add_port(fixture::guest(B, Vec::new())) else {
        return 0;
    };
    let a_mem: Mem = GuestMemoryAtomic::new(mem);
    let a = Arc::new(GuestNic::new(a_id, a_mem.clone()));
    let vring = |ready: bool| -> Option<VringRwLock<Mem>> {
        let v = <VringRwLock<Mem> as VringT<Mem>>::new(a_mem.clone(), 256).ok()?;
        v.set_queue_size(size);
        v.set_queue_info(desc, avail, used).ok()?;
        v.set_queue_ready(ready);
        v.set_enabled(ready);
        Some(v)
    };
    let (Some(rx), Some(txq)) = (vring(false), vring(true)) else {
        return 0;
    };
    if a.set_vrings([rx, txq]).is_err() {
        return 0;
    }
    a.set_offloads(Offloads::ALL);
    fabric.attach(a_id, Attached::Guest(a.clone()));
    let Ok(mut b) = Guest::new(64, 512, 64) else {
        return 0;
    };
    let Ok(b_nic) = b.nic(b_id, false) else {
        return 0;
    };
    let b_nic = Arc::new(b_nic);
    b_nic.set_offloads(Offloads::ALL);
    fabric.attach(b_id, Attached::Guest(b_nic));
    b.post_rx(64);

    let mut got = 0;
    for _ in 0..(head[7] & 7) + 1 {
        let p = tx::tx_batch(&fabric, &a);
        assert!(p.frames <= tx::BATCH);
        while let Some((_, num, frame)) = b.recv() {
            assert!(
                num >= 1 && frame.len() <= MAX_FRAME_LEN,
                "{num} {}",
                frame.len()
            );
            assert!(frame.len() + 12 <= usize::from(num) * 512);
            got += 1;
        }
        b.post_rx(64);
    }
    got
}

/// Inputs for the fuzzer to start from: a good chain carrying an ARP request from A to B, the
/// same across the region boundary, a chain split over several descriptors, an indirect
/// table, a loop.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let arp = fixture::arp(
        (A.mac, fixture::BROADCAST),
        smoltcp_arp_request(),
        (A.mac, A.ip),
        B.ip,
    );
    let mut frame = vec![0u8; 12];
    frame.extend_from_slice(&arp);
    let base = |layout: u8| {
        let mut v = vec![layout, 0x00, 0x10, 0x00, 0x20, 0x00, 0x30, 0];
        v.resize(8 + 0x8000 + 0x1000, 0);
        v
    };
    let put = |v: &mut Vec<u8>, at: usize, bytes: &[u8]| {
        v[8 + at..8 + at + bytes.len()].copy_from_slice(bytes)
    };
    let desc = |addr: u64, len: u32, flags: u16, next: u16| {
        let mut d = addr.to_le_bytes().to_vec();
        d.extend_from_slice(&len.to_le_bytes());
        d.extend_from_slice(&flags.to_le_bytes());
        d.extend_from_slice(&next.to_le_bytes());
        d
    };
    let publish = |v: &mut Vec<u8>, heads: &[u16]| {
        let idx = u16::try_from(heads.len()).unwrap_or(0);
        put(v, 0x2002, &idx.to_le_bytes());
        for (i, h) in heads.iter().enumerate() {
            put(v, 0x2004 + 2 * i, &h.to_le_bytes());
        }
    };
    let frame_len = u32::try_from(frame.len()).unwrap_or(0);
    let mut out = Vec::new();

    let mut one = base(8);
    put(&mut one, 0x4000, &frame);
    put(&mut one, 0x1000, &desc(0x4000, frame_len, 0, 0));
    publish(&mut one, &[0]);
    out.push(("arp", one));

    let mut across = base(0x88);
    put(&mut across, 0x8000 - 20, &frame);
    put(&mut across, 0x1000, &desc(0x8000 - 20, frame_len, 0, 0));
    publish(&mut across, &[0]);
    out.push(("across-regions", across));

    let mut split = base(8);
    put(&mut split, 0x4000, &frame[..12]);
    put(&mut split, 0x5000, &frame[12..30]);
    put(&mut split, 0x6000, &frame[30..]);
    put(&mut split, 0x1000, &desc(0x4000, 12, 1, 1));
    put(&mut split, 0x1010, &desc(0x5000, 18, 1, 2));
    put(&mut split, 0x1020, &desc(0x6000, frame_len - 30, 0, 0));
    publish(&mut split, &[0]);
    out.push(("split", split));

    let mut indirect = base(8);
    put(&mut indirect, 0x4000, &frame);
    put(&mut indirect, 0x1000, &desc(0x7000, 32, 4, 0));
    put(&mut indirect, 0x7000, &desc(0x4000, 12, 1, 1));
    put(&mut indirect, 0x7010, &desc(0x400c, frame_len - 12, 0, 0));
    publish(&mut indirect, &[0]);
    out.push(("indirect", indirect));

    let mut looped = base(8);
    put(&mut looped, 0x1000, &desc(0x4000, 64, 1, 1));
    put(&mut looped, 0x1010, &desc(0x4000, 64, 1, 0));
    publish(&mut looped, &[0, 0, 1]);
    out.push(("loop", looped));
    for (_, v) in &mut out {
        let end = v.iter().rposition(|b| *b != 0).map_or(0, |e| e + 1);
        v.truncate(end.max(8));
    }
    out
}

fn smoltcp_arp_request() -> smoltcp::wire::ArpOperation {
    smoltcp::wire::ArpOperation::Request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_run_and_the_good_ones_deliver() {
        for (name, input) in seeds() {
            let want = usize::from(name != "loop");
            assert_eq!(tx_queue(&input), want, "{name}");
            if let Some(dir) = std::env::var_os("KAOS_WRITE_SEEDS") {
                let path = std::path::Path::new(&dir).join(name);
                std::fs::write(&path, &input).expect("write a seed");
            }
        }
    }

    #[test]
    fn a_storm_of_mutated_inputs_never_panics() {
        let seeds = seeds();
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..300 {
            let mut input = seeds[round % seeds.len()].1.clone();
            for _ in 0..(next() % 16) {
                let at = usize::try_from(next() % 0x8000)
                    .unwrap_or(0)
                    .min(input.len() - 1);
                input[at] = next().to_le_bytes()[0];
            }
            // Mutate the descriptors and rings more often than the rest.
            for _ in 0..(next() % 8) {
                let at = 8 + 0x1000 + usize::try_from(next() % 0x2100).unwrap_or(0);
                if let Some(b) = input.get_mut(at) {
                    *b = next().to_le_bytes()[1];
                }
            }
            let _ = tx_queue(&input);
        }
    }
}
