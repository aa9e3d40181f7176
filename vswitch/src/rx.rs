//! Delivery: one frame into a receiving port. For a guest, its RX chains are filled straight
//! from the sender's buffers (the head from the decided copy), several chains with
//! `MRG_RXBUF`; a receiver without buffers loses the frame and nobody waits. For an uplink,
//! the frame is gathered with its egress tag and queued on the socket.

use std::sync::RwLockWriteGuard;

use kaos_net::switch::{Tag, write_egress};
use vhost_user_backend::{VringState, VringT};
use vm_memory::{GuestMemoryMmap, VolatileSlice};

use crate::chain::{self, Cursor, MAX_SEGS, Seg, View};
use crate::copy;
use crate::port::{Counters, DatapathDrop, GuestNic, Mem, RX, UplinkPort};
use crate::ring::Ring;
use crate::vnet::{self, Delivery, HDR_LEN, NetHdr, Offloads};

/// Most RX chains one frame may fill: a 64 KiB TSO frame in Linux's smallest mergeable
/// buffers (1536 bytes, where a new driver starts) takes 43. At 32, such frames were dropped
/// as `rx-buffer-too-small` until the driver's buffers grew, and guest-to-guest TCP crawled.
pub const MAX_CHAINS: usize = 64;

/// A frame on its way out: the decided head, then the rest still in the sender's memory.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// The sender's checked virtio-net header (a plain one from an uplink).
    pub hdr: NetHdr,
    /// The first bytes, as decided on.
    pub head: &'a [u8],
    /// The rest, still in the sender's memory.
    pub tail: Option<Tail<'a>>,
    /// Whether `head` carries an 802.1Q tag (frames from uplinks).
    pub tagged: bool,
    /// `hdr` as delivered unchanged into one buffer (`num_buffers` 1), then `head`: written
    /// to a receiver in one copy when its offloads pass `hdr` as it is. `None` for frames
    /// without such a copy at hand.
    pub staged: Option<&'a [u8]>,
}

impl Frame<'_> {
    /// Bytes of the frame, without the virtio-net header.
    pub fn len(&self) -> usize {
        self.head.len() + self.tail.map_or(0, |t| t.len())
    }

    /// Whether the frame is empty (never, for a decided frame).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The rest of a frame after its decided head, still in the sender's memory.
#[derive(Debug, Clone, Copy)]
pub enum Tail<'a> {
    /// In the segments of the sender's chain: its memory, where the tail starts there, how
    /// long it is.
    Segs(&'a View<'a>, Cursor<'a>, usize),
    /// In one slice of the sender's memory (a chain of one descriptor).
    Slice(VolatileSlice<'a, ()>),
}

impl Tail<'_> {
    /// Its length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Self::Segs(_, _, len) => *len,
            Self::Slice(s) => s.len(),
        }
    }

    /// Whether it is empty (a frame without a tail has `None` instead).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies it into `dst`, a slice of the receiver's memory of at least its length.
    fn copy_to_slice(&self, dst: VolatileSlice<'_, ()>) -> Option<()> {
        match *self {
            Self::Segs(mem, src, len) => chain::copy_to_slice(mem, src, dst, len),
            Self::Slice(s) => copy::guest_to_guest(&s, &dst),
        }
    }

    /// Copies it into the receiver's segments at `dst`.
    fn copy_to_segs(&self, dst_mem: &View<'_>, dst: Cursor<'_>) -> Option<()> {
        match *self {
            Self::Segs(mem, src, len) => chain::copy_guest(mem, src, dst_mem, dst, len),
            Self::Slice(s) => chain::copy_slice_in(dst_mem, dst, s),
        }
    }

    /// Copies it into host bytes (`out` as long as it).
    fn copy_out(&self, out: &mut [u8]) -> Option<()> {
        match *self {
            Self::Segs(mem, src, _) => chain::copy_out(mem, src, out),
            Self::Slice(s) => copy::from_guest(&s, out),
        }
    }
}

/// Scratch space reused from frame to frame.
#[derive(Debug, Default)]
pub struct RxScratch {
    segs: Vec<Seg>,
    chains: Vec<(u16, u32)>,
    gather: Vec<u8>,
    untag: Vec<u8>,
    /// The virtio-net header and the head, written to the guest with one copy.
    stage: Vec<u8>,
}

/// A receiving guest port, its RX vring locked for a batch of deliveries.
pub struct GuestRx<'a> {
    nic: &'a GuestNic,
    state: RwLockWriteGuard<'a, VringState<Mem>>,
    ring: Ring<'a>,
    offloads: Offloads,
    delivered: bool,
    /// Frames and bytes delivered in this batch, added to the counters at its end.
    sent: (u64, u64),
}

impl std::fmt::Debug for GuestRx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestRx")
            .field("port", &self.nic.id)
            .finish()
    }
}

impl<'a> GuestRx<'a> {
    /// Locks `nic`'s RX vring; `mem` is its memory, loaded by the caller for the batch. `None`
    /// if it has no vring or it is not running (the caller drops the frames as
    /// `NoRxBuffers`).
    pub fn open(nic: &'a GuestNic, mem: &'a GuestMemoryMmap) -> Option<Self> {
        let state = nic.vring(RX)?.get_mut();
        if !state.is_enabled() {
            return None;
        }
        let ring = Ring::new(mem, state.get_queue())?;
        Some(Self {
            nic,
            state,
            ring,
            offloads: nic.offloads(),
            delivered: false,
            sent: (0, 0),
        })
    }

    /// Delivers one frame, or says why not (the caller counts it on this port).
    pub fn deliver(&mut self, f: &Frame<'_>, s: &mut RxScratch) -> Result<(), DatapathDrop> {
        self.deliver_from(f, s, true)
    }

    /// The fast lane for a sender's untagged frame: `staged` (its header as a receiver gets it
    /// unchanged, then its head) and its tail into the next RX chain, if this receiver's
    /// offloads pass `hdr` unchanged and that chain is one descriptor with room for it all.
    /// `None`: nothing was taken; the caller goes on with [`deliver_rest`](Self::deliver_rest).
    #[inline]
    pub fn deliver_staged(
        &mut self,
        hdr: &NetHdr,
        staged: &[u8],
        tail: Option<&Tail<'_>>,
    ) -> Option<Result<(), DatapathDrop>> {
        if !hdr.passes(self.offloads) {
            return None;
        }
        match tail {
            None => self.fill_whole(staged),
            Some(_) => self.fill_one(None, staged, tail),
        }
    }

    /// [`deliver`](Self::deliver) for a frame [`deliver_staged`](Self::deliver_staged) did not
    /// take (so its staged copy is not tried again).
    pub fn deliver_rest(&mut self, f: &Frame<'_>, s: &mut RxScratch) -> Result<(), DatapathDrop> {
        self.deliver_from(f, s, false)
    }

    fn deliver_from(
        &mut self,
        f: &Frame<'_>,
        s: &mut RxScratch,
        staged_untried: bool,
    ) -> Result<(), DatapathDrop> {
        // `one`: the frame may still go into one RX chain (not yet tried with the staged
        // copy; no checksum to complete, which the general path does).
        let (hdr, soft, one) = match f.hdr.deliver(self.offloads) {
            None => return Err(DatapathDrop::GsoUnsupported),
            Some(Delivery::Pass(h)) => match f.staged {
                Some(staged) if !f.tagged => {
                    if staged_untried
                        && let Some(done) = self.fill_one(None, staged, f.tail.as_ref())
                    {
                        return done;
                    }
                    (h, None, false)
                }
                _ => (h, None, true),
            },
            Some(Delivery::SoftCsum { start, offset }) => {
                (NetHdr::default(), Some((start, offset)), false)
            }
        };
        let head = if f.tagged {
            // Guests get untagged frames: strip the tag from the head.
            s.untag.resize(f.head.len(), 0);
            let n = write_egress(f.head, true, Tag::Untagged, &mut s.untag)
                .ok_or(DatapathDrop::BadHeader)?;
            s.untag.truncate(n);
            std::mem::take(&mut s.untag)
        } else {
            Vec::new()
        };
        let head_bytes: &[u8] = if f.tagged { &head } else { f.head };
        let tail_len = f.tail.map_or(0, |t| t.len());
        let frame_len = head_bytes.len() + tail_len;
        let once = one
            .then(|| self.fill_one(Some(&hdr.emit(1)), head_bytes, f.tail.as_ref()))
            .flatten();
        let r = match once {
            Some(done) => done,
            None => self.fill(head_bytes, f, frame_len, hdr, soft, s),
        };
        if f.tagged {
            s.untag = head;
        }
        r
    }

    fn fill(
        &mut self,
        head: &[u8],
        f: &Frame<'_>,
        frame_len: usize,
        hdr: NetHdr,
        soft: Option<(usize, usize)>,
        s: &mut RxScratch,
    ) -> Result<(), DatapathDrop> {
        let total = HDR_LEN + frame_len;
        let start = self.ring.next_avail;
        s.segs.clear();
        s.chains.clear();
        let taken = take_chains(&mut self.ring, total, self.offloads.mrg_rxbuf, s);
        let copied = taken.and_then(|()| {
            // At most MAX_CHAINS (64) chains.
            let n = u16::try_from(s.chains.len()).unwrap_or(u16::MAX);
            // The stage only grows (to the longest head seen), so no frame pays for a
            // reallocation or for `Vec::extend`'s bookkeeping.
            let staged = HDR_LEN + head.len();
            if s.stage.len() < staged {
                s.stage.resize(staged, 0);
            }
            let stage = &mut s.stage[..staged];
            let (h, rest) = stage.split_at_mut(HDR_LEN);
            h.copy_from_slice(&hdr.emit(n));
            rest.copy_from_slice(head);
            let mem = self.ring.view();
            let start = Cursor::new(&s.segs, 0);
            chain::copy_in(mem, start, stage).ok_or(DatapathDrop::BadRxChain)?;
            if let Some(tail) = &f.tail {
                let at = Cursor::new(&s.segs, HDR_LEN + head.len());
                tail.copy_to_segs(mem, at).ok_or(DatapathDrop::BadRxChain)?;
            }
            if let Some((start, offset)) = soft {
                vnet::complete_csum(mem, &s.segs, frame_len, start, offset)
                    .ok_or(DatapathDrop::BadRxChain)?;
            }
            Ok(())
        });
        if let Err(e) = copied {
            // Nothing was used: the chains stay the guest's, for the next frame.
            self.ring.next_avail = start;
            return Err(e);
        }
        let mut left = total;
        for &(desc, cap) in &s.chains {
            let used = left.min(cap as usize);
            // `used` <= `cap`, a u32.
            self.ring
                .push_used(desc, u32::try_from(used).unwrap_or(cap));
            left -= used;
        }
        self.delivered = true;
        self.sent.0 += 1;
        self.sent.1 += frame_len as u64;
        Ok(())
    }

    /// The fast path: `hdr` (if not already at the start of `bytes`, as in a frame's
    /// [`staged`](Frame::staged) copy), `bytes` and the tail into the next RX chain, if that is
    /// one descriptor in one resolved region with room for it all (what Linux posts, with or
    /// without `MRG_RXBUF`). `None` if the chain is not such a one: nothing was taken, and the
    /// general path walks it.
    #[inline]
    fn fill_one(
        &mut self,
        hdr: Option<&[u8; HDR_LEN]>,
        bytes: &[u8],
        tail: Option<&Tail<'_>>,
    ) -> Option<Result<(), DatapathDrop>> {
        let lead = if hdr.is_some() { HDR_LEN } else { 0 };
        let total = lead + bytes.len() + tail.map_or(0, Tail::len);
        let (desc, buf) = self.one_buffer(total)?;
        let copied = (|| {
            match hdr {
                Some(h) => {
                    copy::to_guest(&buf, h)?;
                    copy::to_guest(&buf.offset(lead).ok()?, bytes)?;
                }
                None => copy::to_guest(&buf, bytes)?,
            }
            match tail {
                Some(tail) => tail.copy_to_slice(buf.offset(lead + bytes.len()).ok()?),
                None => Some(()),
            }
        })();
        if copied.is_none() {
            return Some(Err(DatapathDrop::BadRxChain));
        }
        self.used_one(desc, total);
        Some(Ok(()))
    }

    /// [`fill_one`](Self::fill_one) for a frame staged whole (`staged`: its header as the
    /// receiver gets it, then all its bytes), most frames of a small-packet load.
    #[inline]
    fn fill_whole(&mut self, staged: &[u8]) -> Option<Result<(), DatapathDrop>> {
        let (desc, buf) = self.one_buffer(staged.len())?;
        if copy::to_guest(&buf, staged).is_none() {
            return Some(Err(DatapathDrop::BadRxChain));
        }
        self.used_one(desc, staged.len());
        Some(Ok(()))
    }

    /// The next RX chain as one slice of at least `total` bytes, if it is one descriptor in
    /// one resolved region with that room (not yet taken).
    #[inline(always)]
    fn one_buffer(&mut self, total: usize) -> Option<(u16, VolatileSlice<'a, ()>)> {
        if self.ring.pending()? == 0 {
            return None;
        }
        let desc = self.ring.peek();
        let (addr, cap) = self.ring.single(desc, true)?;
        if (cap as usize) < total {
            return None;
        }
        Some((desc, self.ring.view().contiguous(addr, total)?))
    }

    /// Takes the chain [`one_buffer`](Self::one_buffer) found, `total` bytes of it filled.
    #[inline(always)]
    fn used_one(&mut self, desc: u16, total: usize) {
        self.ring.take_peeked();
        // `total` is at most the descriptor's length, a u32.
        self.ring
            .push_used(desc, u32::try_from(total).unwrap_or(u32::MAX));
        self.delivered = true;
        self.sent.0 += 1;
        self.sent.1 += (total - HDR_LEN) as u64;
    }

    /// Ends the batch: publishes what was delivered and interrupts the guest if it wants.
    pub fn close(self) {
        let nic = self.nic;
        if self.finish() {
            signal(nic);
        }
    }

    /// Ends the batch: publishes what was delivered; returns whether the guest wants an
    /// interrupt for it (then [`signal`] it, once for many batches).
    pub fn finish(mut self) -> bool {
        let c = &self.nic.counters;
        Counters::add(&c.tx_frames, self.sent.0);
        Counters::add(&c.tx_bytes, self.sent.1);
        let wants = self.delivered && self.ring.publish();
        self.ring.save(self.state.get_queue_mut());
        wants
    }

    /// The receiving NIC.
    pub fn nic(&self) -> &GuestNic {
        self.nic
    }
}

/// Interrupts `nic`'s guest (its RX call eventfd).
pub fn signal(nic: &GuestNic) {
    if let Some(v) = nic.vring(RX) {
        let _ = v.get_ref().signal_used_queue();
    }
}

/// Takes RX chains until they hold `total` bytes (one chain without `mrg`).
fn take_chains(
    ring: &mut Ring<'_>,
    total: usize,
    mrg: bool,
    s: &mut RxScratch,
) -> Result<(), DatapathDrop> {
    let mut cap = 0usize;
    while cap < total {
        if s.chains.len() == MAX_CHAINS || s.segs.len() > MAX_SEGS * MAX_CHAINS {
            return Err(DatapathDrop::RxBufferTooSmall);
        }
        if ring.pending().ok_or(DatapathDrop::BadRxChain)? == 0 {
            return Err(DatapathDrop::NoRxBuffers);
        }
        let desc = ring.pop().ok_or(DatapathDrop::BadRxChain)?;
        let n = ring
            .chain(desc, true, &mut s.segs)
            .map_err(|_| DatapathDrop::BadRxChain)?;
        s.chains.push((desc, n));
        cap += n as usize;
        if !mrg && cap < total {
            return Err(DatapathDrop::RxBufferTooSmall);
        }
    }
    Ok(())
}

/// Sends one frame out of an uplink: gathered with its egress tag, the virtio-net header
/// handed to the kernel when it asks for an offload.
pub fn deliver_uplink(
    up: &UplinkPort,
    io: &mut dyn crate::port::UplinkIo,
    f: &Frame<'_>,
    tag: Tag,
    s: &mut RxScratch,
) -> Result<(), DatapathDrop> {
    let tail_len = f.tail.map_or(0, |t| t.len());
    s.gather.resize(f.head.len() + 4 + tail_len, 0);
    let n = write_egress(f.head, f.tagged, tag, &mut s.gather).ok_or(DatapathDrop::BadHeader)?;
    if let Some(tail) = &f.tail {
        tail.copy_out(&mut s.gather[n..n + tail_len])
            .ok_or(DatapathDrop::BadChain)?;
    }
    let len = n + tail_len;
    let hdr = (f.hdr.needs_csum() || f.hdr.is_gso()).then(|| {
        // The tag moved everything after the addresses by 4 bytes one way or the other.
        let shift = |v: u16| {
            let v = i32::from(v) + i32::try_from(n).unwrap_or(0)
                - i32::try_from(f.head.len()).unwrap_or(0);
            u16::try_from(v).unwrap_or(0)
        };
        NetHdr {
            csum_start: shift(f.hdr.csum_start),
            hdr_len: shift(f.hdr.hdr_len),
            ..f.hdr
        }
        .emit(0)
    });
    io.send(hdr.as_ref(), &s.gather[..len])
        .map_err(|_| DatapathDrop::UplinkError)?;
    Counters::add(&up.counters.tx_frames, 1);
    Counters::add(&up.counters.tx_bytes, len as u64);
    Ok(())
}
