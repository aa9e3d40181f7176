//! What the switch's bounded tables share: a fast hash seeded per switch, eviction of the
//! oldest entries, and time as saturating microseconds.
//!
//! The tables are `HashMap`s (std's hashbrown; the switch's only item that `alloc` lacks, and
//! `hashbrown` itself would replace it in a `no_std` build) with a foldhash-style hasher:
//! two 64-bit multiplies per key instead of SipHash's rounds. It is keyed by a seed the
//! switch is given, so a peer that chooses MAC addresses or ports cannot aim them at one
//! bucket without knowing it.

use core::hash::{BuildHasher, Hasher};
use std::collections::HashMap;

use smoltcp::time::{Duration, Instant};

/// A table of the switch.
pub(crate) type Map<K, V> = HashMap<K, V, Seeded>;

/// The hasher factory of every table of one switch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seeded {
    start: u64,
    multiplier: u64,
}

impl Seeded {
    pub fn new(seed: u64) -> Self {
        let mut s = seed;
        Self {
            start: splitmix(&mut s),
            // Odd, so the multiply loses no input bit.
            multiplier: splitmix(&mut s) | 1,
        }
    }

    pub fn map<K, V>(&self) -> Map<K, V> {
        HashMap::with_hasher(*self)
    }

    /// A hash of four words (the flow cache's key) with two multiplies rather than the five a
    /// table's hasher would take: each word still passes through a keyed multiply, which is
    /// all a direct-mapped cache needs (a peer that makes its own keys collide only makes its
    /// own frames miss).
    #[inline]
    pub fn hash_words(&self, w: &[u64; 4]) -> u64 {
        let a = fold(w[0] ^ w[2].rotate_left(32) ^ self.start, self.multiplier);
        fold(a ^ w[1] ^ w[3].rotate_left(16), self.multiplier)
    }
}

impl BuildHasher for Seeded {
    type Hasher = Fold;

    fn build_hasher(&self) -> Fold {
        Fold {
            state: self.start,
            multiplier: self.multiplier,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Fold {
    state: u64,
    multiplier: u64,
}

fn fold(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    // The low and high halves of the product, folded together: the point of the construction.
    #[allow(clippy::cast_possible_truncation)]
    let (low, high) = (product as u64, (product >> 64) as u64);
    low ^ high
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Hasher for Fold {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, x: u8) {
        self.write_u64(x.into());
    }

    fn write_u16(&mut self, x: u16) {
        self.write_u64(x.into());
    }

    fn write_u32(&mut self, x: u32) {
        self.write_u64(x.into());
    }

    fn write_u64(&mut self, x: u64) {
        self.state = fold(self.state ^ x, self.multiplier);
    }

    fn write_u128(&mut self, x: u128) {
        #[allow(clippy::cast_possible_truncation)] // the two halves, on purpose
        let (low, high) = (x as u64, (x >> 64) as u64);
        self.write_u64(low);
        self.write_u64(high);
    }

    fn write_usize(&mut self, x: usize) {
        self.write_u64(x as u64);
    }

    fn finish(&self) -> u64 {
        fold(self.state, self.multiplier.rotate_left(32) | 1)
    }
}

/// A point in time: microseconds of the switch's clock.
pub(crate) type Stamp = i64;

pub(crate) fn stamp(now: Instant) -> Stamp {
    now.total_micros()
}

pub(crate) fn micros(d: Duration) -> i64 {
    i64::try_from(d.total_micros()).unwrap_or(i64::MAX)
}

/// `now + d`, saturating: time never wraps, whatever clock the caller feeds.
pub(crate) fn after(now: Stamp, d: Duration) -> Stamp {
    now.saturating_add(micros(d))
}

/// Whether `then` is at least `d` before `now` (a clock that went back ages nothing).
pub(crate) fn older_than(then: Stamp, now: Stamp, d: Duration) -> bool {
    now.saturating_sub(then) >= micros(d)
}

/// Removes at least `count` of the entries with the oldest `stamp`s (more when several share
/// the threshold), in two passes over the table. Evicting a batch keeps the cost per insertion
/// constant when a flood of new keys keeps the table full. `scratch` is reused from call to
/// call, so only the first eviction allocates.
pub(crate) fn evict_oldest<K, V>(
    map: &mut Map<K, V>,
    count: usize,
    stamp: impl Fn(&V) -> Stamp,
    scratch: &mut Vec<Stamp>,
) where
    K: Eq + core::hash::Hash,
{
    if count == 0 || map.is_empty() {
        return;
    }
    scratch.clear();
    scratch.extend(map.values().map(&stamp));
    let nth = count.min(scratch.len()) - 1;
    let (_, threshold, _) = scratch.select_nth_unstable(nth);
    let threshold = *threshold;
    map.retain(|_, v| stamp(v) > threshold);
    scratch.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_change_the_hash_and_keys_spread() {
        let (a, b) = (Seeded::new(1), Seeded::new(2));
        assert_ne!(a.hash_one(42u64), b.hash_one(42u64));
        // Consecutive MACs land in different buckets of a small table.
        let buckets: std::collections::HashSet<u64> =
            (0u64..64).map(|k| a.hash_one(k) >> 58).collect();
        assert!(buckets.len() > 32, "{} of 64 buckets used", buckets.len());
    }

    #[test]
    fn eviction_removes_the_oldest() {
        let mut map: Map<u32, Stamp> = Seeded::new(7).map();
        for k in 0..100 {
            map.insert(k, Stamp::from(k) * 10);
        }
        let mut scratch = Vec::new();
        evict_oldest(&mut map, 10, |v| *v, &mut scratch);
        assert_eq!(map.len(), 90);
        assert!((10..100).all(|k| map.contains_key(&k)));
        // Ties at the threshold go together; an empty table is left alone.
        let mut same: Map<u32, Stamp> = Seeded::new(7).map();
        same.extend((0..8).map(|k| (k, 5)));
        evict_oldest(&mut same, 1, |v| *v, &mut scratch);
        assert!(same.is_empty());
        evict_oldest(&mut same, 1, |v| *v, &mut scratch);
    }

    #[test]
    fn time_saturates() {
        assert_eq!(after(i64::MAX - 1, Duration::from_secs(1)), i64::MAX);
        assert!(older_than(0, 2_000_000, Duration::from_secs(2)));
        assert!(!older_than(5_000_000, 0, Duration::from_secs(1)));
    }
}
