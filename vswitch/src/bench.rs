//! The datapath bench (`cargo xtask bench switch` runs it in a release build): guest A sends
//! to guest B on the same VLAN, both guests' queues in memfd memory of this one process, the
//! driver sides emulated in the same loop (no thread is woken per frame). The drivers poll
//! and ask for no interrupts, except in the case that sets them against drivers that want one
//! per batch (the call eventfds are real, and then written once per batch). Each figure is printed beside its anchor:
//! a plain copy of the same frames (header and bytes) from A's TX buffers to B's RX buffers,
//! measured in the same run. [`measure_flow_cache`] sets the switch with its flow cache against
//! the same switch deciding every frame in its core. Not an API.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use kaos_net::switch::SwitchConfig;
use kaos_net::switch::fixture::{self, A, ACK, B};
use vm_memory::{Bytes, GuestMemory, GuestMemoryMmap};

use crate::driver::{DriverQueue, F_WRITE, Guest};
use crate::fabric::{Attached, Fabric};
use crate::port::{Counters, GuestNic};
use crate::ring::AVAIL_F_NO_INTERRUPT;
use crate::tx;
use crate::vnet::{GSO_TCPV4, HDR_LEN, NEEDS_CSUM, NetHdr, Offloads};

/// One case: frames of `len` bytes, `rx_buf`-byte RX buffers.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// Row name.
    pub name: &'static str,
    /// Frame bytes (without the virtio-net header).
    pub len: usize,
    /// RX buffer bytes (with MRG_RXBUF).
    pub rx_buf: u32,
    /// Queue entries.
    pub queue: u16,
    /// Frames per measured run.
    pub frames: u64,
    /// UDP flows the frames belong to, frame `i` to flow `i % flows`: with one, every frame
    /// after the first of a batch repeats the one before it (a bulk sender); with more, no
    /// two frames in a row are of one flow, and each is looked up in the flow cache.
    pub flows: u16,
    /// The drivers want an interrupt for every batch the switch completes (a guest waiting
    /// for its next frame): two `eventfd` writes per batch. Otherwise they poll and ask for
    /// none, as DPDK's virtio driver does and Linux's does under load (NAPI), and as the
    /// published OVS-DPDK and Snabb figures are measured.
    pub woken: bool,
}

/// The three cases of issue 6; 64-byte frames of many flows, and to drivers woken per batch.
pub const CASES: [Case; 5] = [
    Case {
        name: "64 B frames",
        len: 64,
        rx_buf: 2048,
        queue: 256,
        frames: 2_000_000,
        flows: 1,
        woken: false,
    },
    Case {
        name: "256 flows of 64 B frames",
        len: 64,
        rx_buf: 2048,
        queue: 256,
        frames: 2_000_000,
        flows: 256,
        woken: false,
    },
    Case {
        name: "woken drivers, 64 B frames",
        len: 64,
        rx_buf: 2048,
        queue: 256,
        frames: 2_000_000,
        flows: 1,
        woken: true,
    },
    Case {
        name: "1514 B frames",
        len: 1514,
        rx_buf: 2048,
        queue: 256,
        frames: 1_000_000,
        flows: 1,
        woken: false,
    },
    Case {
        name: "64 KiB TSO frames",
        len: 65_514,
        rx_buf: 4096,
        queue: 1024,
        frames: 20_000,
        flows: 1,
        woken: false,
    },
];

/// One run's result.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// Frames per second through the switch.
    pub switch_fps: f64,
    /// Frames per second copied by the anchor.
    pub memcpy_fps: f64,
}

struct Pair {
    fabric: Arc<Fabric>,
    a: Guest,
    b: Guest,
    nic_a: Arc<GuestNic>,
    nic_b: Arc<GuestNic>,
    a_avail: u16,
    b_avail: u16,
}

/// Frame `flow` of a case: UDP from source port 4000 + `flow` (a TSO frame is always one
/// TCP flow).
fn frame(len: usize, flow: u16) -> (NetHdr, Vec<u8>) {
    if len <= 1514 {
        let mut f = fixture::udp_frame(A, B, (4000 + flow, 5000), &[]);
        let pad = len.saturating_sub(f.len());
        let udp_len = u16::try_from(8 + pad).unwrap_or(u16::MAX);
        f.extend(std::iter::repeat_n(0x5a, pad));
        let ip_len = u16::try_from(len - 14).unwrap_or(u16::MAX);
        f[16..18].copy_from_slice(&ip_len.to_be_bytes());
        f[38..40].copy_from_slice(&udp_len.to_be_bytes());
        return (NetHdr::default(), f);
    }
    let mut l4 = fixture::tcp(40000, 80, ACK);
    l4.resize(len - 34, 0x5a);
    let f = fixture::ipv4((A.mac, B.mac), (A.ip, B.ip), 6, &l4);
    let hdr = NetHdr {
        flags: NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    };
    (hdr, f)
}

fn pair(case: Case, config: SwitchConfig) -> std::io::Result<Pair> {
    let fabric = Fabric::new(config, 1);
    let tx_buf = u32::try_from(HDR_LEN + case.len).unwrap_or(u32::MAX);
    let a = Guest::new(case.queue, 2048, tx_buf)?;
    let b = Guest::new(case.queue, case.rx_buf, 64)?;
    let add = |host, g: &Guest| -> std::io::Result<Arc<GuestNic>> {
        let id = fabric
            .add_port(fixture::guest(host, Vec::new()))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let nic = Arc::new(g.nic(id, false)?);
        nic.set_offloads(Offloads::ALL);
        fabric.attach(id, Attached::Guest(nic.clone()));
        Ok(nic)
    };
    let nic_a = add(A, &a)?;
    let nic_b = add(B, &b)?;
    // Every TX descriptor holds the frame, every RX descriptor is a writable buffer: from
    // here the drivers only republish them.
    for i in 0..case.queue {
        let (hdr, f) = frame(case.len, i % case.flows.max(1));
        let mut bytes = hdr.emit(0).to_vec();
        bytes.extend_from_slice(&f);
        let _ = a.mem.write_slice(&bytes, a.tx.buf(i));
        a.tx.raw(&a.mem, i, a.tx.buf(i).0, tx_buf, 0, 0);
        b.rx.raw(&b.mem, i, b.rx.buf(i).0, case.rx_buf, F_WRITE, 0);
    }
    let mut p = Pair {
        fabric,
        a,
        b,
        nic_a,
        nic_b,
        a_avail: 0,
        b_avail: 0,
    };
    if !case.woken {
        // Both drivers poll: `VRING_AVAIL_F_NO_INTERRUPT` on the queues the switch serves.
        let _ = p.a.mem.write_obj(AVAIL_F_NO_INTERRUPT, p.a.tx.avail);
        let _ = p.b.mem.write_obj(AVAIL_F_NO_INTERRUPT, p.b.rx.avail);
    }
    republish(&p.b.mem, &p.b.rx, &mut p.b_avail, case.queue);
    Ok(p)
}

/// Every slot's own number, as a ring of up to 1024 entries holds them (little-endian u16s).
const SLOTS: [u8; 2048] = {
    let mut t = [0u8; 2048];
    let mut i = 0;
    while i < 1024 {
        #[allow(clippy::cast_possible_truncation)] // i < 1024
        let [lo, hi] = (i as u16).to_le_bytes();
        t[2 * i] = lo;
        t[2 * i + 1] = hi;
        i += 1;
    }
    t
};

/// Makes `n` more descriptors available, in ring order (descriptor = ring slot). The entries
/// are written as at most two runs of the ring, each one copy (the ring wraps at most once in
/// a round), as a driver writes its own memory: the driver's cost should not count against the
/// switch, which runs on the same thread here.
fn republish(mem: &GuestMemoryMmap, q: &DriverQueue, idx: &mut u16, n: u16) {
    let size = usize::from(q.size);
    let Ok(ring) = mem.get_slice(q.avail, 4 + 2 * size) else {
        return;
    };
    // Ring sizes are powers of two: a slot is its index masked, as Linux's driver finds it.
    let first = usize::from(*idx & (q.size - 1));
    let n = usize::from(n).min(size);
    let put = |from: usize, count: usize| {
        if let (Some(src), Ok(dst)) = (
            SLOTS.get(2 * from..2 * (from + count)),
            ring.subslice(4 + 2 * from, 2 * count),
        ) {
            dst.copy_from(src);
        }
    };
    let to_end = (size - first).min(n);
    put(first, to_end);
    put(0, n - to_end);
    // `n` <= the ring's size, a u16.
    *idx = idx.wrapping_add(u16::try_from(n).unwrap_or(0));
    let _ = ring.store(*idx, 2, Ordering::Release);
}

fn used(mem: &GuestMemoryMmap, q: &DriverQueue) -> u16 {
    mem.get_slice(q.used, 4)
        .ok()
        .and_then(|s| s.load(2, Ordering::Acquire).ok())
        .unwrap_or(0)
}

/// Runs `case` once through the switch: frames per second.
fn switch_run(p: &mut Pair, case: Case) -> f64 {
    let chains_per_frame = (HDR_LEN + case.len).div_ceil(case.rx_buf as usize);
    let per_round =
        u16::try_from((usize::from(case.queue) / chains_per_frame).min(256)).unwrap_or(1);
    let before = Counters::get(&p.nic_b.counters().tx_frames);
    let mut b_used = used(&p.b.mem, &p.b.rx);
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < case.frames {
        republish(&p.a.mem, &p.a.tx, &mut p.a_avail, per_round);
        while tx::tx_batch(&p.fabric, &p.nic_a).more {}
        // The drivers take back what the device used and post it again.
        let nb = used(&p.b.mem, &p.b.rx);
        republish(&p.b.mem, &p.b.rx, &mut p.b_avail, nb.wrapping_sub(b_used));
        b_used = nb;
        sent += u64::from(per_round);
    }
    let secs = start.elapsed().as_secs_f64();
    let got = Counters::get(&p.nic_b.counters().tx_frames) - before;
    got as f64 / secs
}

/// The anchor: the same frames copied buffer to buffer, header included. A frame longer than
/// an RX buffer fills consecutive buffers in ring order, as the switch fills them.
fn memcpy_run(p: &Pair, case: Case) -> f64 {
    let len = HDR_LEN + case.len;
    let chunk = case.rx_buf as usize;
    let start = Instant::now();
    let mut i = 0u64;
    let mut buffers = 0u64;
    while i < case.frames {
        let d = u16::try_from(i % u64::from(case.queue)).unwrap_or(0);
        let src = p.a.mem.get_slice(p.a.tx.buf(d), len);
        let mut off = 0;
        while off < len {
            let n = chunk.min(len - off);
            let slot = u16::try_from(buffers % u64::from(case.queue)).unwrap_or(0);
            buffers += 1;
            if let (Ok(s), Ok(dst)) = (&src, p.b.mem.get_slice(p.b.rx.buf(slot), n))
                && let Ok(s) = s.subslice(off, n)
            {
                s.copy_to_volatile_slice(dst);
            }
            off += n;
        }
        i += 1;
    }
    case.frames as f64 / start.elapsed().as_secs_f64()
}

/// Runs `case` `runs` times (after a warm-up run), switch and anchor alternating.
///
/// # Errors
/// Guest memory could not be made.
pub fn measure(case: Case, runs: usize) -> std::io::Result<Vec<Run>> {
    let mut p = pair(case, SwitchConfig::default())?;
    let warm = Case {
        frames: case.frames / 10,
        ..case
    };
    switch_run(&mut p, warm);
    memcpy_run(&p, warm);
    Ok((0..runs)
        .map(|_| Run {
            switch_fps: switch_run(&mut p, case),
            memcpy_fps: memcpy_run(&p, case),
        })
        .collect())
}

/// Runs `case` `runs` times with the flow cache and without it, alternating (after a warm-up
/// run of each): frames per second, with and without.
///
/// # Errors
/// Guest memory could not be made.
pub fn measure_flow_cache(case: Case, runs: usize) -> std::io::Result<Vec<(f64, f64)>> {
    let mut with = pair(case, SwitchConfig::default())?;
    let without_cache = SwitchConfig {
        flow_cache: 0,
        ..SwitchConfig::default()
    };
    let mut without = pair(case, without_cache)?;
    let warm = Case {
        frames: case.frames / 10,
        ..case
    };
    switch_run(&mut with, warm);
    switch_run(&mut without, warm);
    Ok((0..runs)
        .map(|_| (switch_run(&mut with, case), switch_run(&mut without, case)))
        .collect())
}

/// The median of `v`.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}
