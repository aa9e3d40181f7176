//! Byte copies into, out of and between slices of guest memory, for the datapath.
//!
//! `vm-memory`'s `VolatileSlice` copies call the C library's `memcpy` for anything longer
//! than a word, through two layers of wrappers. For the frames that dominate a switch's
//! packet rate (64 to 128 bytes, header included) that call costs more than the copy: here a
//! copy of at most [`INLINE`] bytes is a few unaligned loads and stores (guest to guest, all
//! loads first, so it is also right when a guest makes two of its buffers overlap); a longer
//! one is `memmove`, as `vm-memory`'s guest-to-guest copy is.
//!
//! The slices are `vm-memory`'s, so every address was bounds-checked when the slice was made;
//! these functions check only that the destination is long enough. The guest may write its
//! memory while it is copied: what arrives is then some mix of its old and new bytes, as with
//! `vm-memory`, and the switch never decides on guest memory, only on its own copies.

use std::ptr;

use vm_memory::VolatileSlice;

/// The longest copy done inline.
const INLINE: usize = 128;

/// Copies `src` to the start of `dst`, a slice of guest memory; `None` if `dst` is shorter.
#[inline(always)]
pub fn to_guest(dst: &VolatileSlice<'_, ()>, src: &[u8]) -> Option<()> {
    if dst.len() < src.len() {
        return None;
    }
    // SAFETY: `dst`'s pointer is valid for writes of its length (a `VolatileSlice` is made
    // only over mapped memory, bounds-checked), which is at least `src.len()`; `src` is valid
    // for reads of its length.
    unsafe { bytes::<false>(dst.ptr_guard_mut().as_ptr(), src.as_ptr(), src.len()) };
    Some(())
}

/// Copies the first `dst.len()` bytes of `src`, a slice of guest memory, into `dst`; `None`
/// if `src` is shorter.
#[inline(always)]
pub fn from_guest(src: &VolatileSlice<'_, ()>, dst: &mut [u8]) -> Option<()> {
    if src.len() < dst.len() {
        return None;
    }
    // SAFETY: `src`'s pointer is valid for reads of its length, at least `dst.len()`; `dst`
    // is valid for writes of its length.
    unsafe { bytes::<false>(dst.as_mut_ptr(), src.ptr_guard().as_ptr(), dst.len()) };
    Some(())
}

/// Copies `src` to the start of `dst`, both slices of guest memory (they may overlap: a
/// guest's buffers are its own to arrange); `None` if `dst` is shorter.
#[inline(always)]
pub fn guest_to_guest(src: &VolatileSlice<'_, ()>, dst: &VolatileSlice<'_, ()>) -> Option<()> {
    if dst.len() < src.len() {
        return None;
    }
    // SAFETY: both pointers are valid for their slices' lengths, at least `src.len()`.
    unsafe {
        bytes::<true>(
            dst.ptr_guard_mut().as_ptr(),
            src.ptr_guard().as_ptr(),
            src.len(),
        )
    };
    Some(())
}

/// Copies `n` bytes from `src` to `dst` as `memmove` does (as `memcpy`, if not `OVERLAP`).
///
/// # Safety
/// - `src` is valid for reads of `n` bytes;
/// - `dst` is valid for writes of `n` bytes;
/// - without `OVERLAP`, the two do not overlap.
#[inline(always)]
unsafe fn bytes<const OVERLAP: bool>(dst: *mut u8, src: *const u8, n: usize) {
    if n > INLINE {
        // SAFETY: the caller's contract; `copy` allows overlap.
        unsafe { ptr::copy(src, dst, n) };
        return;
    }
    // Two (or four) chunks, one from each end: together they cover all `n` bytes, and where
    // they overlap the same bytes are written twice.
    // SAFETY: in each arm every chunk lies within the first `n` bytes of `src` and `dst`, by
    // the arm's bounds on `n` (the caller's contract covers those).
    unsafe {
        if n >= 64 {
            if OVERLAP {
                let (a, b) = (ld::<32>(src), ld::<32>(src.add(32)));
                let (c, d) = (ld::<32>(src.add(n - 64)), ld::<32>(src.add(n - 32)));
                st(dst, a);
                st(dst.add(32), b);
                st(dst.add(n - 64), c);
                st(dst.add(n - 32), d);
            } else {
                // Not overlapping: each chunk stored as it is loaded, so no register is held
                // (holding four spilled them to the stack).
                st(dst, ld::<32>(src));
                st(dst.add(32), ld::<32>(src.add(32)));
                st(dst.add(n - 64), ld::<32>(src.add(n - 64)));
                st(dst.add(n - 32), ld::<32>(src.add(n - 32)));
            }
        } else if n >= 32 {
            two::<32>(dst, src, n);
        } else if n >= 16 {
            two::<16>(dst, src, n);
        } else if n >= 8 {
            two::<8>(dst, src, n);
        } else if n >= 4 {
            two::<4>(dst, src, n);
        } else if n > 0 {
            // One to three bytes: the first, the middle and the last.
            let (a, b, c) = (*src, *src.add(n / 2), *src.add(n - 1));
            *dst = a;
            *dst.add(n / 2) = b;
            *dst.add(n - 1) = c;
        }
    }
}

/// The first and the last `N` of `n` bytes (`N <= n <= 2 * N`), both loads first.
///
/// # Safety
/// `src` is valid for reads and `dst` for writes of `n` bytes.
#[inline(always)]
unsafe fn two<const N: usize>(dst: *mut u8, src: *const u8, n: usize) {
    // SAFETY: both chunks lie within the first `n` bytes.
    unsafe {
        let (a, b) = (ld::<N>(src), ld::<N>(src.add(n - N)));
        st(dst, a);
        st(dst.add(n - N), b);
    }
}

/// # Safety
/// `p` is valid for reads of `N` bytes.
#[inline(always)]
unsafe fn ld<const N: usize>(p: *const u8) -> [u8; N] {
    // SAFETY: the caller's contract; `[u8; N]` has no alignment and no invalid values.
    unsafe { p.cast::<[u8; N]>().read_unaligned() }
}

/// # Safety
/// `p` is valid for writes of `N` bytes.
#[inline(always)]
unsafe fn st<const N: usize>(p: *mut u8, v: [u8; N]) {
    // SAFETY: the caller's contract; `[u8; N]` has no alignment.
    unsafe { p.cast::<[u8; N]>().write_unaligned(v) }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test patterns, wrapping on purpose
mod tests {
    use super::*;

    /// Every length up to past the inline limit, at odd offsets, into and out of a slice and
    /// between two, against a plain slice copy.
    #[test]
    fn every_length_is_copied_exactly() {
        for n in 0..=INLINE + 40 {
            let src: Vec<u8> = (0..n + 3).map(|i| (i * 7 + 1) as u8).collect();
            let mut guest = vec![0xeeu8; n + 9];
            let dst = VolatileSlice::from(&mut guest[5..5 + n + 1]);
            to_guest(&dst, &src[3..]).expect("fits");
            let mut want = vec![0xeeu8; n + 9];
            want[5..5 + n].copy_from_slice(&src[3..]);
            assert_eq!(guest, want, "to_guest, {n} bytes");

            let mut out = vec![0u8; n];
            let mut from = src.clone();
            from_guest(&VolatileSlice::from(&mut from[3..]), &mut out).expect("long enough");
            assert_eq!(out, src[3..], "from_guest, {n} bytes");

            let mut a = src.clone();
            let mut b = vec![0xeeu8; n + 2];
            guest_to_guest(
                &VolatileSlice::from(&mut a[3..]),
                &VolatileSlice::from(&mut b[1..]),
            )
            .expect("fits");
            assert_eq!(&b[1..1 + n], &src[3..], "guest_to_guest, {n} bytes");
            assert_eq!((b[0], b[n + 1]), (0xee, 0xee), "guest_to_guest, {n} bytes");
        }
    }

    #[test]
    fn a_short_destination_is_refused_untouched() {
        let mut g = [0u8; 8];
        let dst = VolatileSlice::from(&mut g[..]);
        assert_eq!(to_guest(&dst, &[1; 9]), None);
        let mut s = [1u8; 8];
        assert_eq!(
            from_guest(&VolatileSlice::from(&mut s[..]), &mut [0; 9]),
            None
        );
        assert_eq!(g, [0; 8]);
    }

    /// A guest may post buffers that overlap: the copy is `memmove`'s, at every size.
    #[test]
    fn overlapping_guest_buffers_copy_as_memmove() {
        for n in [3, 7, 15, 31, 63, 100, 128, 300] {
            for shift in [1usize, 5, 17] {
                let mut mem: Vec<u8> = (0..n + shift).map(|i| i as u8).collect();
                let want: Vec<u8> = mem[..n].to_vec();
                let base = VolatileSlice::from(&mut mem[..]);
                let src = base.subslice(0, n).expect("in");
                let dst = base.subslice(shift, n).expect("in");
                guest_to_guest(&src, &dst).expect("fits");
                assert_eq!(
                    &mem[shift..shift + n],
                    &want[..],
                    "{n} bytes, shifted {shift}"
                );
            }
        }
    }
}
