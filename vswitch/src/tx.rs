//! The transmit path of a guest port: one batch of at most [`BATCH`] frames per call.
//!
//! 1. With the port's TX vring locked (only its own vhost-user thread contends), pop chains,
//!    check each into segments, copy its virtio-net header and its head (see `head`) out of
//!    the guest.
//! 2. With the fabric's mutex, once for the batch: each frame through `Switch::ingress`; the
//!    copies it asks for are noted, and the receivers' datapath halves looked up.
//! 3. Without the mutex, receiver by receiver: lock its RX vring once, deliver every copy for
//!    it (head from the decided copy, the rest guest buffer to guest buffer), signal it once.
//!    A receiver lock is never held while another is taken, and the TX lock is never taken by
//!    anyone holding an RX lock, so no two ports can deadlock.
//! 4. Every chain goes back to the sender as used, and the sender is signalled once.

use kaos_net::switch::{Decision, MAX_FRAME_LEN, PortId, Tag};
use vhost_user_backend::VringT;
use virtio_queue::QueueT;
use vm_memory::{GuestAddress, GuestAddressSpace, GuestMemoryMmap};

use crate::chain::{self, Cursor, Seg, View};
use crate::copy;
use crate::fabric::{Attached, Fabric};
use crate::head::{self, HEAD_LEN, WHOLE_MAX};
use crate::port::{Counters, DatapathDrop, GuestNic, TX};
use crate::ring::Ring;
use crate::rx::{self, Frame, GuestRx, RxScratch, Tail};
use crate::vnet::{HDR_LEN, NetHdr};

/// Most frames taken from a TX queue per call: the bound on one port's work per wakeup.
pub const BATCH: usize = 64;

/// Bytes of `TxScratch::heads` per frame: the virtio-net header, then the head, read out of
/// the guest with one copy.
const SLOT: usize = HDR_LEN + WHOLE_MAX;

/// Frame `i`'s head (`len` bytes) in `heads`.
fn head_range(i: usize, len: usize) -> std::ops::Range<usize> {
    i * SLOT + HDR_LEN..i * SLOT + HDR_LEN + len
}

#[derive(Debug, Clone, Copy)]
struct TxFrame {
    /// Where its tail is.
    at: At,
    /// Bytes, without the virtio-net header (at most `MAX_FRAME_LEN`).
    len: u32,
    /// Bytes of it in its slot (at most `WHOLE_MAX`).
    head_len: u16,
    hdr: NetHdr,
    tagged: bool,
}

/// Where a frame's bytes are in the sender's memory.
#[derive(Debug, Clone, Copy)]
enum At {
    /// In the batch's segments `start..end`.
    Segs(u32, u32),
    /// In one resolved region, from this guest address: a chain of one descriptor.
    Whole(u64),
}

impl TxFrame {
    fn len(&self) -> usize {
        self.len as usize
    }

    fn head_len(&self) -> usize {
        usize::from(self.head_len)
    }
}

/// Frames `from..to` of the batch, each to be copied to `port` with `tag`: consecutive
/// frames with the same destination share one (most of a batch, from a bulk sender).
#[derive(Debug, Clone, Copy)]
struct Copy {
    port: PortId,
    tag: Tag,
    from: usize,
    to: usize,
}

impl Copy {
    fn frames(&self) -> std::ops::Range<usize> {
        self.from..self.to
    }
}

/// A port's scratch space for its batches (allocated once, reused).
#[derive(Debug, Default)]
pub struct TxScratch {
    segs: Vec<Seg>,
    frames: Vec<Option<TxFrame>>,
    descs: Vec<u16>,
    heads: Vec<u8>,
    copies: Vec<Copy>,
    targets: Vec<(PortId, Option<Attached>)>,
    rx: RxScratch,
    /// The switch's own answers to this batch (DHCP), for the sender.
    answers: Vec<Vec<u8>>,
}

/// What one call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Chains taken from the TX queue.
    pub frames: usize,
    /// The batch was full and more chains are waiting.
    pub more: bool,
}

/// Runs one batch of `nic`'s TX queue through `fabric`.
pub fn tx_batch(fabric: &Fabric, nic: &GuestNic) -> Progress {
    let Some(vring) = nic.vring(TX) else {
        return Progress::default();
    };
    let mut state = vring.get_mut();
    if !state.is_enabled() || !state.get_queue().ready() {
        return Progress::default();
    }
    let mem = nic.mem.memory();
    let mem: &GuestMemoryMmap = &mem;
    let mut guard = nic.scratch.lock().unwrap_or_else(|p| p.into_inner());
    let s = &mut *guard;
    let queue = state.get_queue_mut();
    let Some(mut ring) = Ring::new(mem, queue) else {
        return Progress::default();
    };
    take(&mut ring, nic, s);
    let frames = s.descs.len();
    decide(fabric, nic.id, s);
    forward(ring.view(), s);
    answer(nic, s);
    for &desc in &s.descs {
        ring.push_used(desc, 0);
    }
    let wants = ring.publish();
    // A full batch that emptied the queue says so: the caller goes on to re-enable
    // notifications rather than run an empty batch.
    let more = frames == BATCH && ring.pending().is_some_and(|n| n > 0);
    ring.save(queue);
    if wants {
        let _ = state.signal_used_queue();
    }
    Progress { frames, more }
}

/// Step 1: pops and checks up to `BATCH` chains.
fn take(ring: &mut Ring<'_>, nic: &GuestNic, s: &mut TxScratch) {
    s.segs.clear();
    s.frames.clear();
    s.descs.clear();
    s.heads.resize(BATCH * SLOT, 0);
    // An index claiming more than the ring holds: the queue is not served.
    let n = ring.pending().unwrap_or(0);
    let mut bytes = 0u64;
    let mut last = None;
    for _ in 0..usize::from(n).min(BATCH) {
        let Some(desc) = ring.pop() else {
            break;
        };
        let i = s.descs.len();
        s.descs.push(desc);
        let start = s.segs.len();
        let slot = &mut s.heads[i * SLOT..(i + 1) * SLOT];
        let frame = match one(ring, desc) {
            // One descriptor: its header and head are copied into the slot straight from
            // the resolved region, and its tail is found again at delivery; no segments.
            Some((addr, bytes)) => {
                let total = bytes.len();
                let copied = total.min(HDR_LEN + WHOLE_MAX);
                let copied = if copied < total {
                    HDR_LEN + HEAD_LEN
                } else {
                    copied
                };
                copy::from_guest(&bytes, &mut slot[..copied])
                    .ok_or(DatapathDrop::BadChain)
                    .and_then(|()| accept(slot, total, &mut last))
                    .map(|f| TxFrame {
                        at: At::Whole(addr),
                        ..f
                    })
            }
            None => ring
                .chain(desc, false, &mut s.segs)
                .map_err(|_| DatapathDrop::BadChain)
                .and_then(|total| {
                    let segs = &s.segs[start..];
                    check(ring.view(), segs, total as usize, slot, &mut last)
                }),
        };
        match frame {
            Ok(mut f) => {
                bytes += u64::from(f.len);
                if let At::Segs(from, to) = &mut f.at {
                    // At most `BATCH * MAX_SEGS * 4` segments.
                    *from = u32::try_from(start).unwrap_or(u32::MAX);
                    *to = u32::try_from(s.segs.len()).unwrap_or(u32::MAX);
                }
                s.frames.push(Some(f));
            }
            Err(why) => {
                s.segs.truncate(start);
                nic.counters.drop(why);
                s.frames.push(None);
            }
        }
    }
    // Once per batch: each is a locked add on a line the statistics reader shares.
    Counters::add(&nic.counters.rx_frames, s.descs.len() as u64);
    Counters::add(&nic.counters.rx_bytes, bytes);
}

/// Chain `desc` as one slice of guest memory (and its guest address), if it is a single
/// descriptor in one resolved region holding a header and a frame of acceptable length
/// (anything else, including what is refused, takes the general path of [`check`]).
#[inline]
fn one<'m>(ring: &Ring<'m>, desc: u16) -> Option<(u64, vm_memory::VolatileSlice<'m, ()>)> {
    let (addr, len) = ring.single(desc, false)?;
    let len = len as usize;
    if !(HDR_LEN + 14..=HDR_LEN + MAX_FRAME_LEN).contains(&len) {
        return None;
    }
    Some((addr.0, ring.view().contiguous(addr, len)?))
}

/// Reads a chain's header and head into `slot` (a [`SLOT`]: the header, then the head).
#[inline(never)] // the general path, out of the way of the one-descriptor loop
fn check(
    mem: &View<'_>,
    segs: &[Seg],
    total: usize,
    slot: &mut [u8],
    last: &mut Option<LastHdr>,
) -> Result<TxFrame, DatapathDrop> {
    if total < HDR_LEN + 14 {
        return Err(DatapathDrop::Truncated);
    }
    let len = total - HDR_LEN;
    if len > MAX_FRAME_LEN {
        return Err(DatapathDrop::Oversize);
    }
    let head_len = if len <= WHOLE_MAX { len } else { HEAD_LEN };
    let copied = slot
        .get_mut(..HDR_LEN + head_len)
        .ok_or(DatapathDrop::BadChain)?;
    chain::copy_out(mem, Cursor::new(segs, 0), copied).ok_or(DatapathDrop::BadChain)?;
    accept(slot, total, last)
}

/// The last virtio-net header [`accept`] took, and what it made of it: a sender's frames
/// mostly carry the same one (all zeros, or the same offload request), so the next frame with
/// these bytes skips parsing and checking it.
#[derive(Debug, Clone, Copy)]
struct LastHdr {
    /// Its bytes before `num_buffers` (which a driver's header may hold anything in), as
    /// two words.
    raw: (u64, u16),
    hdr: NetHdr,
    /// The header a receiver gets when its offloads pass it unchanged, into one buffer.
    staged: [u8; HDR_LEN],
    /// The shortest frame it is valid for (`NetHdr::min_frame_len`, kept: every frame that
    /// repeats the header is compared with it).
    min_len: usize,
}

/// Checks the header of a chain of `total` bytes (at least a header and an Ethernet header,
/// at most a header and [`MAX_FRAME_LEN`]) whose header and head are in `slot`.
#[inline]
fn accept(
    slot: &mut [u8],
    total: usize,
    last: &mut Option<LastHdr>,
) -> Result<TxFrame, DatapathDrop> {
    let len = total - HDR_LEN;
    if len > MAX_FRAME_LEN {
        return Err(DatapathDrop::Oversize);
    }
    let head_len = if len <= WHOLE_MAX { len } else { HEAD_LEN };
    let (room, _) = slot
        .split_first_chunk_mut::<HDR_LEN>()
        .ok_or(DatapathDrop::BadChain)?;
    let (lo, rest) = room
        .split_first_chunk::<8>()
        .ok_or(DatapathDrop::BadChain)?;
    let (hi, _) = rest
        .split_first_chunk::<2>()
        .ok_or(DatapathDrop::BadChain)?;
    let raw = (u64::from_ne_bytes(*lo), u16::from_ne_bytes(*hi));
    // The sender's header is parsed: its place now holds the header a receiver gets when
    // its offloads pass it unchanged, into one buffer (see `Frame::staged`).
    let hdr = match last {
        Some(l) if l.raw == raw && len >= l.min_len => {
            *room = l.staged;
            l.hdr
        }
        _ => {
            let hdr = NetHdr::parse(room)
                .checked(len)
                .ok_or(DatapathDrop::BadHeader)?;
            let staged = hdr.emit(1);
            *room = staged;
            *last = Some(LastHdr {
                raw,
                hdr,
                staged,
                min_len: hdr.min_frame_len(),
            });
            hdr
        }
    };
    Ok(TxFrame {
        at: At::Segs(0, 0),
        // At most MAX_FRAME_LEN (checked above) and WHOLE_MAX: no truncation.
        #[allow(clippy::cast_possible_truncation)]
        len: len as u32,
        #[allow(clippy::cast_possible_truncation)]
        head_len: head_len as u16,
        hdr,
        tagged: false,
    })
}

/// Step 2: decides every frame under the fabric's mutex.
fn decide(fabric: &Fabric, from: PortId, s: &mut TxScratch) {
    s.copies.clear();
    s.targets.clear();
    s.answers.clear();
    if s.frames.iter().all(Option::is_none) {
        return;
    }
    let mut core = fabric.lock();
    let now = fabric.now();
    let core = &mut *core;
    let mut batch = core.switch.batch(from, now);
    for (i, slot) in s.frames.iter_mut().enumerate() {
        let Some(f) = slot else { continue };
        let head = &mut s.heads[head_range(i, f.head_len())];
        // A frame decided on whole needs no clamping (see `head`).
        let patch = (f.head_len() < f.len()).then(|| head::clamp(head, f.len()));
        if let Decision::Forward(fwd) = batch.ingress(head) {
            f.tagged = fwd.ingress_tagged;
            let vlan = fwd.vlan;
            for e in fwd.to {
                match s.copies.last_mut() {
                    // The frame before this one went there too (a unicast run).
                    Some(c) if c.to == i && c.port == e.port && c.tag == e.tag => c.to = i + 1,
                    _ => s.copies.push(Copy {
                        port: e.port,
                        tag: e.tag,
                        from: i,
                        to: i + 1,
                    }),
                }
            }
            core.vlan_bytes.count(vlan, f.len());
        }
        if let Some(patch) = patch {
            head::restore(head, patch);
        }
    }
    drop(batch);
    let answers = core.switch.take_answers();
    s.answers
        .extend(answers.filter(|(p, _)| *p == from).map(|(_, f)| f));
    let mut last = None;
    for c in &s.copies {
        // Copies come in frame order: most follow one to the same port.
        if last != Some(c.port) && !s.targets.iter().any(|(p, _)| *p == c.port) {
            s.targets.push((c.port, core.attached(c.port).cloned()));
        }
        last = Some(c.port);
    }
}

/// Step 3b: the switch's own answers (DHCP) into the sender's RX queue.
fn answer(nic: &GuestNic, s: &mut TxScratch) {
    if s.answers.is_empty() {
        return;
    }
    let mem = nic.mem.memory();
    let Some(mut to) = GuestRx::open(nic, &mem) else {
        for _ in &s.answers {
            nic.counters.drop(DatapathDrop::NoRxBuffers);
        }
        return;
    };
    for a in &s.answers {
        let f = Frame {
            hdr: NetHdr::default(),
            head: a,
            tail: None,
            tagged: false,
            staged: None,
        };
        if let Err(why) = to.deliver(&f, &mut s.rx) {
            nic.counters.drop(why);
        }
    }
    to.close();
}

/// Step 3: delivers the copies, receiver by receiver.
fn forward(mem: &View<'_>, s: &mut TxScratch) {
    // Pushed in frame order, so often already sorted (one receiver).
    if !s.copies.is_sorted_by_key(|c| (c.port, c.from)) {
        s.copies.sort_unstable_by_key(|c| (c.port, c.from));
    }
    let TxScratch {
        segs,
        frames,
        heads,
        copies,
        targets,
        rx,
        ..
    } = s;
    let mut rest = &copies[..];
    while let Some(first) = rest.first() {
        let n = rest.iter().take_while(|c| c.port == first.port).count();
        let (group, next) = rest.split_at(n);
        rest = next;
        let target = targets.iter().find(|(p, _)| *p == first.port);
        let Some((_, Some(target))) = target else {
            continue;
        };
        match target {
            Attached::Guest(nic) => {
                let to_mem = nic.mem.memory();
                let Some(mut to) = GuestRx::open(nic, &to_mem) else {
                    for _ in group.iter().flat_map(Copy::frames) {
                        nic.counters.drop(DatapathDrop::NoRxBuffers);
                    }
                    continue;
                };
                for i in group.iter().flat_map(Copy::frames) {
                    let Some((f, staged, tail)) = parts(frames, heads, mem, segs, i) else {
                        continue;
                    };
                    // Most frames take the fast lane; the rest go the whole way.
                    let lane = (!f.tagged)
                        .then(|| to.deliver_staged(&f.hdr, staged, tail.as_ref()))
                        .flatten();
                    let done = match lane {
                        Some(done) => done,
                        None => to.deliver_rest(&frame(f, staged, tail), rx),
                    };
                    if let Err(why) = done {
                        nic.counters.drop(why);
                    }
                }
                to.close();
            }
            Attached::Uplink(up) => {
                let mut io = up.io.lock().unwrap_or_else(|p| p.into_inner());
                for c in group {
                    for i in c.frames() {
                        if let Some(f) = parts(frames, heads, mem, segs, i)
                            .map(|(f, staged, tail)| frame(f, staged, tail))
                            && let Err(why) = rx::deliver_uplink(up, io.as_mut(), &f, c.tag, rx)
                        {
                            up.counters.drop(why);
                        }
                    }
                }
                io.flush();
            }
        }
    }
}

/// The frame a copy delivers: `f`'s header, its `staged` header and head, its tail.
fn frame<'a>(f: &TxFrame, staged: &'a [u8], tail: Option<Tail<'a>>) -> Frame<'a> {
    Frame {
        hdr: f.hdr,
        head: staged.get(HDR_LEN..).unwrap_or_default(),
        tail,
        tagged: f.tagged,
        staged: Some(staged),
    }
}

/// Frame `i` of the batch: its state, its staged header and head, its tail (inlined into the
/// delivery loop, which was cheaper than a call returning all of it).
#[inline(always)]
fn parts<'a>(
    frames: &'a [Option<TxFrame>],
    heads: &'a [u8],
    mem: &'a View<'a>,
    segs: &'a [Seg],
    i: usize,
) -> Option<(&'a TxFrame, &'a [u8], Option<Tail<'a>>)> {
    let f = frames.get(i)?.as_ref()?;
    let at = i * SLOT;
    let staged = heads.get(at..at + HDR_LEN + f.head_len())?;
    Some((f, staged, tail(f, mem, segs)?))
}

/// Where the rest of `f` after its head is in the sender's memory: `Some(None)` if nothing is
/// left, `None` if it cannot be found (never, for a frame `take` accepted).
#[inline]
fn tail<'a>(f: &TxFrame, mem: &'a View<'a>, segs: &'a [Seg]) -> Option<Option<Tail<'a>>> {
    let tail_len = f.len() - f.head_len();
    if tail_len == 0 {
        return Some(None);
    }
    let skip = HDR_LEN + f.head_len();
    Some(Some(match f.at {
        At::Whole(addr) => {
            let at = GuestAddress(addr.checked_add(skip as u64)?);
            Tail::Slice(mem.contiguous(at, tail_len)?)
        }
        At::Segs(from, to) => {
            let fsegs = segs.get(from as usize..to as usize)?;
            Tail::Segs(mem, Cursor::new(fsegs, skip), tail_len)
        }
    }))
}
