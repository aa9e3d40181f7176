//! Descriptor chains as the datapath uses them: checked once into a list of [`Seg`]s, each a
//! range that lies inside one region of guest memory, then copied through `vm-memory`'s
//! volatile slices. No Rust reference into guest memory is ever formed: the guest may change
//! its buffers while the switch reads them, so what the switch decides on is a copy (see
//! `tx`), and everything else is moved with volatile copies.

use vm_memory::{Address, GuestAddress, GuestMemory, GuestMemoryMmap, GuestMemoryRegion};

/// Most segments one chain may have (after splitting at region boundaries). Linux sends at
/// most `MAX_SKB_FRAGS + 2` (19) descriptors per frame; a longer chain is refused rather than
/// walked.
pub const MAX_SEGS: usize = 64;

/// A checked piece of a chain: `len` bytes at `addr`, inside one guest memory region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seg {
    /// Where it starts.
    pub addr: GuestAddress,
    /// How long it is (never 0).
    pub len: u32,
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
    let mut left = u64::from(len);
    while left > 0 {
        let region = mem.find_region(addr).ok_or(BadChain::OutOfMemory)?;
        let offset = addr.unchecked_offset_from(region.start_addr());
        let n = (region.len() - offset).min(left);
        segs.push(Seg {
            addr,
            // `n` <= `left` <= u32::MAX.
            len: u32::try_from(n).map_err(|_| BadChain::Broken)?,
        });
        addr = addr.checked_add(n).ok_or(BadChain::OutOfMemory)?;
        left -= n;
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

    /// The contiguous piece at the cursor: its address and length.
    fn piece(&self) -> Option<(GuestAddress, usize)> {
        let seg = self.segs.get(self.index)?;
        Some((
            seg.addr.unchecked_add(u64::from(self.offset)),
            (seg.len - self.offset) as usize,
        ))
    }

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
        let (sa, sn) = src.piece()?;
        let (da, dn) = dst.piece()?;
        let n = sn.min(dn).min(len);
        let s = slice(src_mem, sa, n)?;
        let d = slice(dst_mem, da, n)?;
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
        let (da, dn) = dst.piece()?;
        let n = dn.min(data.len());
        slice(dst_mem, da, n)?.copy_from(&data[..n]);
        dst.advance(n);
        data = &data[n..];
    }
    Some(())
}

/// Copies from the segments at `src` into host bytes.
pub fn copy_out(src_mem: &GuestMemoryMmap, mut src: Cursor<'_>, mut out: &mut [u8]) -> Option<()> {
    while !out.is_empty() {
        let (sa, sn) = src.piece()?;
        let n = sn.min(out.len());
        let (now, rest) = out.split_at_mut(n);
        slice(src_mem, sa, n)?.copy_to(now);
        src.advance(n);
        out = rest;
    }
    Some(())
}

fn slice(
    mem: &GuestMemoryMmap,
    addr: GuestAddress,
    len: usize,
) -> Option<vm_memory::VolatileSlice<'_, ()>> {
    mem.get_slice(addr, len).ok()
}
