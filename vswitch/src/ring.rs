//! A split virtqueue's rings as the datapath touches them: each ring resolved once per batch
//! into volatile slices and arrays of guest memory, then read and written at checked offsets
//! or indices.
//!
//! `virtio-queue`'s `Queue` keeps the state (sizes, addresses, `next_avail`, `next_used`, the
//! event-index switch, set by the vhost-user requests) and is used for notification control;
//! the per-frame accesses go through [`Ring`] instead, because `vm-memory` 0.17's `Bytes`
//! accessors on a whole `GuestMemory` walk a slice iterator for every two-byte read, which cost
//! more than everything else the switch does per frame. Used entries are written as frames are
//! delivered and published with one index store per batch ([`Ring::publish`]).

use std::marker::PhantomData;
use std::sync::atomic::Ordering;

use virtio_queue::{Queue, QueueT};
use vm_memory::{
    ByteValued, Bytes, GuestAddress, GuestMemoryMmap, VolatileArrayRef, VolatileSlice,
};

use crate::chain::{BadChain, MAX_SEGS, Seg, View, split};

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;
/// The driver asks for no interrupt when used entries are published (`VRING_AVAIL_F_NO_INTERRUPT`).
pub(crate) const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// A descriptor as two little-endian words: the address; length, flags and next.
type Descriptor = [u64; 2];

/// The rings of one queue, for one batch.
#[derive(Debug)]
pub struct Ring<'m> {
    /// The memory's regions, resolved for the batch.
    view: View<'m>,
    /// The descriptor table, one `[u64; 2]` per entry.
    desc: Entries<'m, Descriptor>,
    avail: VolatileSlice<'m, ()>,
    /// The available ring's entries (after its flags and index).
    avail_ring: Entries<'m, u16>,
    used: VolatileSlice<'m, ()>,
    /// The used ring's entries (after its flags and index), one `u64` each.
    used_ring: Entries<'m, u64>,
    size: u16,
    event_idx: bool,
    /// The next available entry to take.
    pub next_avail: u16,
    /// The next used entry to write.
    pub next_used: u16,
    /// The used index the guest last saw published (for `EVENT_IDX`).
    published: u16,
    /// The driver's available index as last read (see [`pending`](Self::pending)).
    avail_idx: u16,
}

impl<'m> Ring<'m> {
    /// `queue`'s rings in `mem`; `None` if the queue is not ready or a ring is not inside one
    /// region of guest memory.
    pub fn new(mem: &'m GuestMemoryMmap, queue: &Queue) -> Option<Self> {
        if !queue.ready() {
            return None;
        }
        let size = queue.size();
        // Split rings have a power-of-two size (virtio 1.1, 2.6): slots are indices masked
        // with `size - 1` rather than divided. `Queue` refuses other sizes; so does this.
        if !size.is_power_of_two() {
            return None;
        }
        let n = usize::from(size);
        // The rings are found through the view's resolved regions: a compare each, where
        // `GuestMemoryMmap` would search its regions for every one.
        let view = View::new(mem);
        let slice = |addr: u64, len: usize| view.contiguous(GuestAddress(addr), len);
        let avail = slice(queue.avail_ring(), 6 + 2 * n)?;
        let used = slice(queue.used_ring(), 6 + 8 * n)?;
        Some(Self {
            desc: Entries::new(view.array(queue.desc_table(), n)?)?,
            avail_ring: Entries::new(view.array(queue.avail_ring().checked_add(4)?, n)?)?,
            used_ring: Entries::new(view.array(queue.used_ring().checked_add(4)?, n)?)?,
            avail,
            used,
            view,
            size,
            event_idx: queue.event_idx_enabled(),
            next_avail: queue.next_avail(),
            next_used: queue.next_used(),
            published: queue.next_used(),
            avail_idx: queue.next_avail(),
        })
    }

    /// The queue's memory, resolved for the batch: what its chains' segments are copied with.
    pub fn view(&self) -> &View<'m> {
        &self.view
    }

    /// Stores the positions back into `queue` (after [`publish`](Self::publish)).
    pub fn save(&self, queue: &mut Queue) {
        queue.set_next_avail(self.next_avail);
        queue.set_next_used(self.next_used);
    }

    /// How many chains the driver has made available beyond `next_avail`; `None` if its index
    /// claims more than the ring holds (a broken or hostile driver: the queue is not served).
    /// The driver's index is read again only when the chains known from the last read are
    /// used up (drivers only add): one read of that shared cache line per burst, not per
    /// frame.
    #[inline]
    pub fn pending(&mut self) -> Option<u16> {
        let mut n = self.avail_idx.wrapping_sub(self.next_avail);
        if n == 0 {
            self.avail_idx = self.avail.load(2, Ordering::Acquire).ok()?;
            n = self.avail_idx.wrapping_sub(self.next_avail);
        }
        (n <= self.size).then_some(n)
    }

    /// Takes the next available chain's head.
    #[inline(always)]
    pub fn pop(&mut self) -> Option<u16> {
        let head = self.avail_ring.at(self.next_avail);
        self.next_avail = self.next_avail.wrapping_add(1);
        Some(u16::from_le(head))
    }

    /// Reads chain `head` into `segs` (appended), every descriptor device-writable if
    /// `writable`, device-readable otherwise; returns its length.
    ///
    /// # Errors
    /// See [`BadChain`]: at most [`MAX_SEGS`] descriptors, one level of indirection, indices
    /// within their table, addresses within guest memory.
    pub fn chain(&self, head: u16, writable: bool, segs: &mut Vec<Seg>) -> Result<u32, BadChain> {
        let mut table = self.desc;
        let mut i = head;
        let mut indirect = false;
        let mut total = 0u32;
        for _ in 0..=MAX_SEGS {
            // One element of the table: two word loads (a `[u8; 16]` would be sixteen byte
            // loads), if `i` is inside it.
            let [addr, word] = table.get(i).ok_or(BadChain::Broken)?.map(u64::from_le);
            #[allow(clippy::cast_possible_truncation)] // the word's fields, on purpose
            let (dlen, flags, next) = (word as u32, (word >> 32) as u16, (word >> 48) as u16);
            if flags & F_INDIRECT != 0 {
                if indirect || !dlen.is_multiple_of(16) || dlen == 0 || dlen / 16 > 0xffff {
                    return Err(BadChain::Broken);
                }
                let len = usize::try_from(dlen / 16).map_err(|_| BadChain::Broken)?;
                table = self
                    .view
                    .array(addr, len)
                    .and_then(Entries::new)
                    .ok_or(BadChain::OutOfMemory)?;
                (i, indirect) = (0, true);
                continue;
            }
            if (flags & F_WRITE != 0) != writable {
                return Err(BadChain::Direction);
            }
            total = total.checked_add(dlen).ok_or(BadChain::Broken)?;
            split(&self.view, GuestAddress(addr), dlen, segs)?;
            if flags & F_NEXT == 0 {
                return if total == 0 {
                    Err(BadChain::Empty)
                } else {
                    Ok(total)
                };
            }
            i = next;
        }
        Err(BadChain::Broken)
    }

    /// Chain `head`'s only descriptor, if it is one descriptor (no `NEXT`, not indirect) of
    /// the given direction with at least one byte: its guest address and length. `None` says
    /// nothing about the chain's validity: the caller walks it with [`chain`](Self::chain).
    /// The fast path of small frames, which Linux sends and receives in one descriptor each.
    #[inline]
    pub fn single(&self, head: u16, writable: bool) -> Option<(GuestAddress, u32)> {
        let [addr, word] = self.desc.get(head)?.map(u64::from_le);
        #[allow(clippy::cast_possible_truncation)] // the word's fields, on purpose
        let (dlen, flags) = (word as u32, (word >> 32) as u16);
        let want = if writable { F_WRITE } else { 0 };
        (flags & (F_NEXT | F_INDIRECT | F_WRITE) == want && dlen > 0)
            .then_some((GuestAddress(addr), dlen))
    }

    /// The head of the next available chain, without taking it (after [`pending`](Self::pending)
    /// said there is one).
    #[inline]
    pub fn peek(&self) -> u16 {
        let head = self.avail_ring.at(self.next_avail);
        u16::from_le(head)
    }

    /// Takes the chain [`peek`](Self::peek) showed.
    #[inline(always)]
    pub fn take_peeked(&mut self) {
        self.next_avail = self.next_avail.wrapping_add(1);
    }

    /// Writes a used entry (not yet visible to the driver: see [`publish`](Self::publish)).
    #[inline(always)]
    pub fn push_used(&mut self, head: u16, len: u32) {
        // The entry (id, then length, both little-endian u32) as one little-endian u64: one
        // store (`VolatileRef` stores unaligned-safe), where a `[u8; 8]` would be eight.
        let e = u64::from(head) | (u64::from(len) << 32);
        self.used_ring.set(self.next_used, e.to_le());
        self.next_used = self.next_used.wrapping_add(1);
    }

    /// Makes the used entries written so far visible; returns whether the driver wants an
    /// interrupt for them (`EVENT_IDX`'s `used_event`, or the `NO_INTERRUPT` flag).
    pub fn publish(&mut self) -> bool {
        let (old, new) = (self.published, self.next_used);
        if old == new {
            return false;
        }
        let _ = self.used.store(new, 2, Ordering::Release);
        self.published = new;
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.event_idx {
            let at = 4 + 2 * usize::from(self.size);
            let event: u16 = self.avail.load(at, Ordering::Acquire).unwrap_or(new);
            // virtio 1.1, 2.7.10: vring_need_event(used_event, new, old).
            new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
        } else {
            let flags: u16 = self.avail.load(0, Ordering::Acquire).unwrap_or(0);
            flags & AVAIL_F_NO_INTERRUPT == 0
        }
    }
}

/// A table of `T`s in guest memory (a ring's entries, a descriptor table), read and written
/// without `VolatileArrayRef`'s per-access assertion and offset arithmetic: [`get`](Self::get)
/// checks its index against the length, [`at`](Self::at) and [`set`](Self::set) take theirs
/// modulo the ring's size (a power of two: `i & (len - 1)`, always inside the table even for
/// another length). Accesses are volatile and unaligned-safe, as `VolatileRef`'s.
#[derive(Debug, Clone, Copy)]
struct Entries<'m, T> {
    ptr: *mut Packed<T>,
    /// At least 1.
    len: usize,
    _mem: PhantomData<VolatileArrayRef<'m, T>>,
}

/// `T` at any alignment.
#[repr(C, packed)]
#[derive(Clone, Copy)]
struct Packed<T>(T);

impl<'m, T: ByteValued> Entries<'m, T> {
    /// The table `array` covers; `None` if it is empty.
    fn new(array: VolatileArrayRef<'m, T>) -> Option<Self> {
        (!array.is_empty()).then(|| Self {
            ptr: array.ptr_guard_mut().as_ptr().cast(),
            len: array.len(),
            _mem: PhantomData,
        })
    }

    /// Entry `i`, if the table has it.
    #[inline(always)]
    fn get(&self, i: u16) -> Option<T> {
        let i = usize::from(i);
        // SAFETY: `ptr` is valid for `len` entries for `'m` (a `VolatileArrayRef`'s are), and
        // `i < len`; `Packed` has alignment 1.
        (i < self.len).then(|| unsafe { self.ptr.add(i).read_volatile().0 })
    }

    /// Entry `i` modulo the ring's size.
    #[inline(always)]
    fn at(&self, i: u16) -> T {
        // SAFETY: as in `get`: `i & (len - 1) <= len - 1` for any `len >= 1`.
        unsafe {
            self.ptr
                .add(usize::from(i) & (self.len - 1))
                .read_volatile()
                .0
        }
    }

    /// Writes entry `i` modulo the ring's size.
    #[inline(always)]
    fn set(&self, i: u16, v: T) {
        // SAFETY: as in `at`; guest memory is writable.
        unsafe {
            self.ptr
                .add(usize::from(i) & (self.len - 1))
                .write_volatile(Packed(v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring's entries wrap at its size; a table refuses an index past its end; both read
    /// and write at any alignment, in little-endian guest order.
    #[test]
    fn entries_wrap_at_the_ring_size_and_stay_inside_the_table() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).expect("mem");
        let view = View::new(&mem);
        // Four u16 entries at an odd address.
        let at = 0x101;
        for i in 0..4u16 {
            mem.write_obj(100 + i, GuestAddress(at + 2 * u64::from(i)))
                .expect("write");
        }
        let ring: Entries<'_, u16> =
            Entries::new(view.array(at, 4).expect("in")).expect("not empty");
        assert_eq!(
            (ring.at(0), ring.at(3), ring.at(5), ring.at(u16::MAX)),
            (100, 103, 101, 103)
        );
        assert_eq!((ring.get(3), ring.get(4)), (Some(103), None));
        ring.set(6, 7);
        assert_eq!(mem.read_obj::<u16>(GuestAddress(at + 4)).expect("read"), 7);
        // A table of three (an indirect one) still never reads past its end.
        let odd: Entries<'_, u16> =
            Entries::new(view.array(at, 3).expect("in")).expect("not empty");
        assert_eq!((odd.get(2), odd.get(3)), (Some(7), None));
        assert!(
            (0..=u16::MAX).all(|i| odd.at(i) != 103),
            "entry 3 is outside the table"
        );
        assert!(view.array::<u16>(at, 0).and_then(Entries::new).is_none());
    }
}
