//! Descriptor chains as the datapath uses them: checked once into a list of [`Seg`]s, each a
//! range that lies inside one region of guest memory, then copied through `vm-memory`'s
//! volatile slices. No Rust reference into guest memory is ever formed: the guest may change
//! its buffers while the switch reads them, so what the switch decides on is a copy (see
//! `tx`), and everything else is moved with volatile copies.

use vm_memory::{
    Address, GuestAddress, GuestMemory, GuestMemoryMmap, GuestMemoryRegion, MemoryRegionAddress,
    VolatileSlice,
};

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

/// Appends `len` bytes at `addr` as segments that each lie inside one region.
pub(crate) fn split(
    mem: &GuestMemoryMmap,
    mut addr: GuestAddress,
    len: u32,
    segs: &mut Vec<Seg>,
) -> Result<(), BadChain> {
    let mut left = len;
    while left > 0 {
        let (region_index, region) = find(mem, addr).ok_or(BadChain::OutOfMemory)?;
        let offset = addr.unchecked_offset_from(region.start_addr());
        // What the region holds from `addr` on, capped at `u32::MAX`; then at most `left`.
        let n = u32::try_from(region.len() - offset)
            .unwrap_or(u32::MAX)
            .min(left);
        segs.push(Seg {
            region: region_index,
            len: n,
            offset,
        });
        addr = addr
            .checked_add(u64::from(n))
            .ok_or(BadChain::OutOfMemory)?;
        left -= n;
        if segs.len() > MAX_SEGS * 4 {
            return Err(BadChain::Broken);
        }
    }
    Ok(())
}

/// The region holding `addr`, with its index. A linear walk: a vhost-user guest has a few
/// regions (the first usually holds everything), fewer than a binary search pays for.
/// Indices are `u32` (vhost-user allows a few dozen regions).
#[inline]
fn find(mem: &GuestMemoryMmap, addr: GuestAddress) -> Option<(u32, &vm_memory::GuestRegionMmap)> {
    (0u32..)
        .zip(mem.iter())
        .find(|(_, r)| r.start_addr() <= addr && addr <= r.last_addr())
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
    src_mem: &GuestMemoryMmap,
    mut src: Cursor<'_>,
    dst_mem: &GuestMemoryMmap,
    mut dst: Cursor<'_>,
    mut len: usize,
) -> Option<()> {
    while len > 0 {
        let (sa, so, sn) = src.piece()?;
        let (da, doff, dn) = dst.piece()?;
        let n = sn.min(dn).min(len);
        let s = slice(src_mem, sa, so, n)?;
        let d = slice(dst_mem, da, doff, n)?;
        s.copy_to_volatile_slice(d);
        src.advance(n);
        dst.advance(n);
        len -= n;
    }
    Some(())
}

/// Copies host bytes into the segments at `dst`.
pub fn copy_in(dst_mem: &GuestMemoryMmap, mut dst: Cursor<'_>, mut data: &[u8]) -> Option<()> {
    while !data.is_empty() {
        let (da, doff, dn) = dst.piece()?;
        let n = dn.min(data.len());
        slice(dst_mem, da, doff, n)?.copy_from(&data[..n]);
        dst.advance(n);
        data = &data[n..];
    }
    Some(())
}

/// Copies from the segments at `src` into host bytes.
pub fn copy_out(src_mem: &GuestMemoryMmap, mut src: Cursor<'_>, mut out: &mut [u8]) -> Option<()> {
    while !out.is_empty() {
        let (sa, so, sn) = src.piece()?;
        let n = sn.min(out.len());
        let (now, rest) = out.split_at_mut(n);
        slice(src_mem, sa, so, n)?.copy_to(now);
        src.advance(n);
        out = rest;
    }
    Some(())
}

/// `len` bytes at `at` in `seg`, straight from its region (no search).
#[inline]
fn slice<'m>(
    mem: &'m GuestMemoryMmap,
    seg: &Seg,
    at: u32,
    len: usize,
) -> Option<VolatileSlice<'m, ()>> {
    let region = mem.iter().nth(seg.region as usize)?;
    let offset = seg.offset.checked_add(u64::from(at))?;
    region.get_slice(MemoryRegionAddress(offset), len).ok()
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
        let mut segs = Vec::new();
        split(&mem, GuestAddress(0xf00), 600, &mut segs).expect("inside memory");
        assert_eq!(segs.len(), 2);
        let mut out = vec![0u8; 600];
        copy_out(&mem, Cursor::new(&segs, 0), &mut out).expect("copy out");
        assert_eq!(out, data);

        let mut far = Vec::new();
        split(&mem, GuestAddress(0x10_0100), 600, &mut far).expect("inside memory");
        copy_guest(
            &mem,
            Cursor::new(&segs, 10),
            &mem,
            Cursor::new(&far, 0),
            590,
        )
        .expect("copy across");
        let mut back = vec![0u8; 590];
        mem.read_slice(&mut back, GuestAddress(0x10_0100))
            .expect("read");
        assert_eq!(back, data[10..]);
        copy_in(&mem, Cursor::new(&far, 590), &[9; 10]).expect("copy in");
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(0x10_0100 + 599)).ok(),
            Some(9)
        );

        assert_eq!(
            split(&mem, GuestAddress(0x2000), 1, &mut Vec::new()),
            Err(BadChain::OutOfMemory)
        );
        assert_eq!(
            split(&mem, GuestAddress(0x1f00), 0x200, &mut Vec::new()),
            Err(BadChain::OutOfMemory)
        );
        assert_eq!(copy_out(&mem, Cursor::new(&segs, 1), &mut [0; 600]), None);
    }
}
