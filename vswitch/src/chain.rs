//! Descriptor chains as the datapath uses them: checked once into a list of [`Seg`]s, each a
//! range that lies inside one region of guest memory, then copied between `vm-memory`'s
//! bounds-checked slices (by [`crate::copy`]). No Rust reference into guest memory is ever
//! formed: the guest may change its buffers while the switch reads them, so what the switch
//! decides on is a copy (see `tx`), and everything else is moved by raw copies.
//!
//! A [`View`] resolves a guest memory's regions once per batch into volatile slices, so finding
//! the region of an address and making the slice of a piece are a compare or two and a
//! checked offset, not a walk through `GuestMemoryMmap`'s collection and its `MmapRegion`
//! checks for every copy.

use vm_memory::{
    Address, ByteValued, GuestAddress, GuestMemory, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap, VolatileArrayRef, VolatileMemory, VolatileSlice,
};

use crate::copy;

/// Most segments one chain may have (after splitting at region boundaries). Linux sends at
/// most `MAX_SKB_FRAGS + 2` (19) descriptors per frame; a longer chain is refused rather than
/// walked.
pub const MAX_SEGS: usize = 64;

/// A checked piece of a chain: `len` bytes inside one guest memory region, kept as the
/// region's index and the offset in it, so copying a piece never searches the regions again.
/// Only meaningful with the memory it was checked against (the datapath loads a port's memory
/// once per batch and clears its segments with it); with any other, every access is still
/// bounds-checked by `vm-memory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seg {
    /// The region's index in the guest memory.
    region: u32,
    /// How long it is (never 0).
    pub len: u32,
    /// Where it starts in the region.
    offset: u64,
}

/// Why a chain was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadChain {
    /// A descriptor outside guest memory.
    #[error("a descriptor outside guest memory")]
    OutOfMemory,
    /// More than [`MAX_SEGS`] segments, a loop, or a `next` that leads nowhere.
    #[error("a chain that is too long, loops, or leads nowhere")]
    Broken,
    /// A descriptor the device may not use that way (writable in a TX chain, readable in an
    /// RX chain).
    #[error("a descriptor of the wrong direction")]
    Direction,
    /// No bytes at all.
    #[error("an empty chain")]
    Empty,
}

/// How many regions a [`View`] holds resolved; the rest are looked up in the memory when a
/// piece lies in them. A vhost-user guest has a few regions (the first usually holds
/// everything).
const RESOLVED: usize = 4;

/// A region resolved for a batch: where it starts in the guest, all of it as one slice, the
/// region itself (for typed arrays in it).
#[derive(Debug, Clone, Copy)]
struct Resolved<'m> {
    start: u64,
    slice: VolatileSlice<'m, ()>,
    region: &'m GuestRegionMmap,
}

/// One guest memory, its first regions resolved (see the module documentation). Made once per
/// batch, with the memory the batch loaded; every piece is still bounds-checked against its
/// region's slice, so a segment used with another view reads or writes only that memory.
#[derive(Debug, Clone, Copy)]
pub struct View<'m> {
    mem: &'m GuestMemoryMmap,
    resolved: [Option<Resolved<'m>>; RESOLVED],
}

impl<'m> View<'m> {
    /// Resolves `mem`'s first regions.
    pub fn new(mem: &'m GuestMemoryMmap) -> Self {
        let mut resolved = [None; RESOLVED];
        for (slot, region) in resolved.iter_mut().zip(mem.iter()) {
            *slot = region.as_volatile_slice().ok().map(|slice| Resolved {
                start: region.start_addr().0,
                slice,
                region,
            });
        }
        Self { mem, resolved }
    }

    /// The region holding `addr`: its index, the offset of `addr` in it, and how many bytes
    /// the region holds from there.
    #[inline]
    fn find(&self, addr: GuestAddress) -> Option<(u32, u64, u64)> {
        for (i, r) in (0u32..).zip(&self.resolved) {
            let Some(r) = r else { break };
            let offset = addr.0.wrapping_sub(r.start);
            if offset < r.slice.len() as u64 {
                return Some((i, offset, r.slice.len() as u64 - offset));
            }
        }
        // A linear walk over the rest: fewer than a binary search pays for.
        let (i, region) = (0u32..)
            .zip(self.mem.iter())
            .skip(RESOLVED)
            .find(|(_, r)| r.start_addr() <= addr && addr <= r.last_addr())?;
        let offset = addr.unchecked_offset_from(region.start_addr());
        Some((i, offset, region.len() - offset))
    }

    /// `len` bytes at guest address `addr` as one slice, if they lie in one resolved region.
    #[inline]
    pub fn contiguous(&self, addr: GuestAddress, len: usize) -> Option<VolatileSlice<'m, ()>> {
        for r in &self.resolved {
            let r = r.as_ref()?;
            let offset = addr.0.wrapping_sub(r.start);
            if offset < r.slice.len() as u64 {
                // `subslice` checks that all `len` bytes are in the region.
                return r.slice.subslice(usize::try_from(offset).ok()?, len).ok();
            }
        }
        None
    }

    /// `n` values of `T` at guest address `addr`, if they lie in one region.
    pub fn array<T: ByteValued>(&self, addr: u64, n: usize) -> Option<VolatileArrayRef<'m, T>> {
        let (i, offset, _) = self.find(GuestAddress(addr))?;
        let region = match self.resolved.get(i as usize) {
            Some(Some(r)) => r.region,
            _ => self.mem.iter().nth(i as usize)?,
        };
        // `get_array_ref` checks that all `n` values are in the region.
        VolatileMemory::get_array_ref(&**region, usize::try_from(offset).ok()?, n).ok()
    }

    /// `len` bytes at `at` in `seg`, bounds-checked against its region.
    #[inline]
    fn slice(&self, seg: &Seg, at: u32, len: usize) -> Option<VolatileSlice<'m, ()>> {
        let offset = usize::try_from(seg.offset.checked_add(u64::from(at))?).ok()?;
        let region = match self.resolved.get(seg.region as usize) {
            Some(Some(r)) => r.slice,
            _ => self
                .mem
                .iter()
                .nth(seg.region as usize)?
                .as_volatile_slice()
                .ok()?,
        };
        region.subslice(offset, len).ok()
    }
}

/// Appends `len` bytes at `addr` as segments that each lie inside one region.
pub(crate) fn split(
    view: &View<'_>,
    mut addr: GuestAddress,
    len: u32,
    segs: &mut Vec<Seg>,
) -> Result<(), BadChain> {
    let mut left = len;
    while left > 0 {
        let (region, offset, room) = view.find(addr).ok_or(BadChain::OutOfMemory)?;
        // What the region holds from `addr` on, capped at `u32::MAX`; then at most `left`.
        let n = u32::try_from(room).unwrap_or(u32::MAX).min(left);
        segs.push(Seg {
            region,
            len: n,
            offset,
        });
        left -= n;
        if left == 0 {
            break;
        }
        addr = addr
            .checked_add(u64::from(n))
            .ok_or(BadChain::OutOfMemory)?;
        if segs.len() > MAX_SEGS * 4 {
            return Err(BadChain::Broken);
        }
    }
    Ok(())
}

/// A position in a list of segments.
#[derive(Debug, Clone, Copy)]
pub struct Cursor<'s> {
    segs: &'s [Seg],
    index: usize,
    offset: u32,
}

impl<'s> Cursor<'s> {
    /// At byte `at` of the concatenated segments (at the end if beyond).
    pub fn new(segs: &'s [Seg], mut at: usize) -> Self {
        let mut index = 0;
        while let Some(seg) = segs.get(index) {
            if at < seg.len as usize {
                break;
            }
            at -= seg.len as usize;
            index += 1;
        }
        Self {
            segs,
            index,
            // `at` < the segment's u32 length here, or 0 at the end.
            offset: u32::try_from(at).unwrap_or(0),
        }
    }

    /// The contiguous piece at the cursor: its segment, the offset in it, its length.
    #[inline]
    fn piece(&self) -> Option<(&'s Seg, u32, usize)> {
        let seg = self.segs.get(self.index)?;
        Some((seg, self.offset, (seg.len - self.offset) as usize))
    }

    #[inline]
    fn advance(&mut self, n: usize) {
        // `n` <= the piece's length, a u32.
        self.offset += u32::try_from(n).unwrap_or(u32::MAX);
        if self
            .segs
            .get(self.index)
            .is_some_and(|s| self.offset >= s.len)
        {
            self.index += 1;
            self.offset = 0;
        }
    }
}

/// Copies `len` bytes from `src` (in `src_mem`) to `dst` (in `dst_mem`), guest buffer to
/// guest buffer with volatile copies. `None` if either runs out or a slice is refused.
pub fn copy_guest(
    src_mem: &View<'_>,
    mut src: Cursor<'_>,
    dst_mem: &View<'_>,
    mut dst: Cursor<'_>,
    mut len: usize,
) -> Option<()> {
    while len > 0 {
        let (sa, so, sn) = src.piece()?;
        let (da, doff, dn) = dst.piece()?;
        let n = sn.min(dn).min(len);
        let s = src_mem.slice(sa, so, n)?;
        let d = dst_mem.slice(da, doff, n)?;
        copy::guest_to_guest(&s, &d)?;
        src.advance(n);
        dst.advance(n);
        len -= n;
    }
    Some(())
}

/// Copies `len` bytes from `src` (in `src_mem`) into `dst`, a slice of another guest's memory.
/// `None` if `src` runs out or a slice is refused.
pub fn copy_to_slice(
    src_mem: &View<'_>,
    mut src: Cursor<'_>,
    dst: VolatileSlice<'_, ()>,
    len: usize,
) -> Option<()> {
    let mut done = 0;
    while done < len {
        let (sa, so, sn) = src.piece()?;
        let n = sn.min(len - done);
        let s = src_mem.slice(sa, so, n)?;
        copy::guest_to_guest(&s, &dst.subslice(done, n).ok()?)?;
        src.advance(n);
        done += n;
    }
    Some(())
}

/// Copies `src`, a slice of another guest's memory, into the segments at `dst`. `None` if
/// they run out or a slice is refused.
pub fn copy_slice_in(
    dst_mem: &View<'_>,
    mut dst: Cursor<'_>,
    src: VolatileSlice<'_, ()>,
) -> Option<()> {
    let mut done = 0;
    while done < src.len() {
        let (da, doff, dn) = dst.piece()?;
        let n = dn.min(src.len() - done);
        copy::guest_to_guest(&src.subslice(done, n).ok()?, &dst_mem.slice(da, doff, n)?)?;
        dst.advance(n);
        done += n;
    }
    Some(())
}

/// Copies host bytes into the segments at `dst`.
pub fn copy_in(dst_mem: &View<'_>, mut dst: Cursor<'_>, mut data: &[u8]) -> Option<()> {
    while !data.is_empty() {
        let (da, doff, dn) = dst.piece()?;
        let n = dn.min(data.len());
        copy::to_guest(&dst_mem.slice(da, doff, n)?, &data[..n])?;
        dst.advance(n);
        data = &data[n..];
    }
    Some(())
}

/// Copies from the segments at `src` into host bytes.
pub fn copy_out(src_mem: &View<'_>, mut src: Cursor<'_>, mut out: &mut [u8]) -> Option<()> {
    while !out.is_empty() {
        let (sa, so, sn) = src.piece()?;
        let n = sn.min(out.len());
        let (now, rest) = out.split_at_mut(n);
        copy::from_guest(&src_mem.slice(sa, so, n)?, now)?;
        src.advance(n);
        out = rest;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    /// Two adjacent regions and a third after a hole: segments carry their region, so a
    /// piece that crosses into the second region, or one in the third, lands where its
    /// guest address says.
    #[test]
    fn segments_remember_their_region() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), 0x1000),
            (GuestAddress(0x1000), 0x1000),
            (GuestAddress(0x10_0000), 0x1000),
        ])
        .expect("guest memory");
        let data: Vec<u8> = (0..=255u8).cycle().take(600).collect();
        mem.write_slice(&data, GuestAddress(0xf00)).expect("write");
        let view = View::new(&mem);
        let mut segs = Vec::new();
        split(&view, GuestAddress(0xf00), 600, &mut segs).expect("inside memory");
        assert_eq!(segs.len(), 2);
        let mut out = vec![0u8; 600];
        copy_out(&view, Cursor::new(&segs, 0), &mut out).expect("copy out");
        assert_eq!(out, data);

        let mut far = Vec::new();
        split(&view, GuestAddress(0x10_0100), 600, &mut far).expect("inside memory");
        copy_guest(
            &view,
            Cursor::new(&segs, 10),
            &view,
            Cursor::new(&far, 0),
            590,
        )
        .expect("copy across");
        let mut back = vec![0u8; 590];
        mem.read_slice(&mut back, GuestAddress(0x10_0100))
            .expect("read");
        assert_eq!(back, data[10..]);
        copy_in(&view, Cursor::new(&far, 590), &[9; 10]).expect("copy in");
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(0x10_0100 + 599)).ok(),
            Some(9)
        );

        assert_eq!(
            split(&view, GuestAddress(0x2000), 1, &mut Vec::new()),
            Err(BadChain::OutOfMemory)
        );
        assert_eq!(
            split(&view, GuestAddress(0x1f00), 0x200, &mut Vec::new()),
            Err(BadChain::OutOfMemory)
        );
        assert_eq!(copy_out(&view, Cursor::new(&segs, 1), &mut [0; 600]), None);
    }

    /// A memory of more regions than a view resolves: pieces in the later ones are found and
    /// copied through the memory itself, and a piece crossing from a resolved region into an
    /// unresolved one lands where its guest address says.
    #[test]
    fn regions_beyond_the_resolved_ones() {
        #[allow(clippy::cast_possible_truncation)] // 4
        const RESOLVED_U32: u32 = RESOLVED as u32;
        let ranges: Vec<_> = (0..RESOLVED as u64 + 3)
            .map(|i| (GuestAddress(i * 0x1000), 0x1000))
            .collect();
        let mem = GuestMemoryMmap::<()>::from_ranges(&ranges).expect("guest memory");
        let view = View::new(&mem);
        let last = (RESOLVED as u64 + 2) * 0x1000;
        let data: Vec<u8> = (0..=255u8).cycle().take(0x1800).collect();
        let at = GuestAddress(RESOLVED as u64 * 0x1000 - 0x800);
        mem.write_slice(&data, at).expect("write");
        let mut segs = Vec::new();
        split(&view, at, 0x1800, &mut segs).expect("inside memory");
        assert_eq!(
            segs.iter().map(|s| (s.region, s.len)).collect::<Vec<_>>(),
            [(RESOLVED_U32 - 1, 0x800), (RESOLVED_U32, 0x1000)]
        );
        let mut out = vec![0u8; 0x1800];
        copy_out(&view, Cursor::new(&segs, 0), &mut out).expect("copy out");
        assert_eq!(out, data);
        let mut far = Vec::new();
        split(&view, GuestAddress(last + 0x10), 0x20, &mut far).expect("inside memory");
        copy_in(&view, Cursor::new(&far, 0), &[7; 0x20]).expect("copy in");
        assert_eq!(mem.read_obj::<u8>(GuestAddress(last + 0x2f)).ok(), Some(7));
        assert_eq!(
            split(&view, GuestAddress(last + 0x1000), 1, &mut Vec::new()),
            Err(BadChain::OutOfMemory)
        );
    }
}
