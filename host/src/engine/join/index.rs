//! Where a join bucket's records are, by the hash of their id.

/// Record positions by hash: open addressing with linear probing over a capacity chosen to fit
/// what it holds. General tables round their capacity up to a power of two, and a minute of
/// impressions is hundreds of thousands: rounding up gave the join up to twice the slots it
/// needed, about 10 bytes per impression where this index takes about 5. A slot is one `u32`:
/// 0 when empty, else the position above a tag of [`Index::tag_bits`] low bits, a 1 and then
/// bits of the hash, so that a probe reads the record behind a slot only when the tags agree (one
/// time in 128 for another id at 8 bits). The tag shares the word with the position, rather than
/// sitting in an array of its own, so that a probe reads one cache line rather than two: the
/// join's lookups are mostly cache misses. Positions past what the bits above the tag hold (16
/// MiB of records at 8 bits) make the tag shorter, down to the 1 alone (2 GiB). Nothing is ever
/// removed: the index is emptied whole, with its bucket.
#[derive(Debug)]
pub(super) struct Index {
    slots: Vec<u32>,
    len: usize,
    /// The low bits of a used slot that are its tag, 1 to [`MAX_TAG_BITS`].
    tag_bits: u32,
}

/// The longest tag: 7 bits of hash below positions of up to 24 bits.
const MAX_TAG_BITS: u32 = 8;

/// The share of slots in use at most: linear probing's search for an absent hash (every new
/// impression makes one) reads about (1 + 1/(1 - load)²) / 2 slots, about 32 at 7/8 and 13 at
/// 0.8, one after the other in memory (two or three cache lines); a search for a present one
/// about (1 + 1/(1 - load)) / 2. A bucket is sized like the largest one kept, so it fills to
/// about 0.85.
const MAX_LOAD: (usize, usize) = (7, 8);

impl Default for Index {
    fn default() -> Self {
        Index { slots: Vec::new(), len: 0, tag_bits: MAX_TAG_BITS }
    }
}

impl Index {
    pub fn len(&self) -> usize {
        self.len
    }

    /// The first slot to look at for `hash`: its high bits scaled to the capacity (no power of two
    /// needed, unlike a mask).
    fn home(hash: u64, capacity: usize) -> usize {
        ((u128::from(hash) * capacity as u128) >> 64) as usize
    }

    /// A used slot's tag: a 1 above low bits of the hash (the home slot takes the high ones).
    fn tag(&self, hash: u64) -> u32 {
        let marker = 1 << (self.tag_bits - 1);
        marker | (hash as u32 & (marker - 1))
    }

    fn tag_mask(&self) -> u32 {
        (1 << self.tag_bits) - 1
    }

    fn next(i: usize, capacity: usize) -> usize {
        if i + 1 == capacity { 0 } else { i + 1 }
    }

    /// The position with this hash for which `is` holds.
    pub fn find(&self, hash: u64, mut is: impl FnMut(u32) -> bool) -> Option<u32> {
        let capacity = self.slots.len();
        if capacity == 0 {
            return None;
        }
        let (tag, mask) = (self.tag(hash), self.tag_mask());
        let mut i = Self::home(hash, capacity);
        // Ends: the load bound leaves at least one slot empty.
        loop {
            match self.slots[i] {
                0 => return None,
                slot if slot & mask == tag && is(slot >> self.tag_bits) => return Some(slot >> self.tag_bits),
                _ => i = Self::next(i, capacity),
            }
        }
    }

    /// Puts `at` in the slot of the position for which `is` holds, or in a new slot if there is
    /// none. `rehash` gives the hash of a position already in, for when the index grows or its
    /// tags shorten.
    ///
    /// # Panics
    /// If `at` is 2 GiB or more.
    pub fn upsert(&mut self, hash: u64, at: u32, mut is: impl FnMut(u32) -> bool, rehash: impl Fn(u32) -> u64) {
        if at >> (32 - self.tag_bits) != 0 {
            let tag_bits = at.leading_zeros();
            assert!(tag_bits >= 1, "a join bucket's records stay under 2 GiB");
            self.rebuild(self.slots.len(), tag_bits, &rehash);
        }
        if Self::too_full(self.len + 1, self.slots.len()) {
            self.rebuild(Self::capacity_for((self.len + 1) * 5 / 4), self.tag_bits, &rehash);
        }
        let capacity = self.slots.len();
        let (tag, mask) = (self.tag(hash), self.tag_mask());
        let mut i = Self::home(hash, capacity);
        loop {
            match self.slots[i] {
                0 => {
                    self.slots[i] = at << self.tag_bits | tag;
                    self.len += 1;
                    return;
                }
                slot if slot & mask == tag && is(slot >> self.tag_bits) => {
                    self.slots[i] = at << self.tag_bits | tag;
                    return;
                }
                _ => i = Self::next(i, capacity),
            }
        }
    }

    /// Makes room for `n` positions in all, so that inserting that many does not grow it.
    pub fn reserve(&mut self, n: usize, rehash: impl Fn(u32) -> u64) {
        if Self::too_full(n, self.slots.len()) {
            self.rebuild(Self::capacity_for(n), self.tag_bits, &rehash);
        }
    }

    /// Empties the index, keeping its memory and its tag length.
    pub fn clear(&mut self) {
        self.slots.fill(0);
        self.len = 0;
    }

    fn too_full(len: usize, capacity: usize) -> bool {
        len * MAX_LOAD.1 > capacity * MAX_LOAD.0
    }

    fn capacity_for(n: usize) -> usize {
        n * MAX_LOAD.1 / MAX_LOAD.0 + 1
    }

    /// Moves every position into `capacity` new slots with tags of `tag_bits`.
    fn rebuild(&mut self, capacity: usize, tag_bits: u32, rehash: &impl Fn(u32) -> u64) {
        let old = std::mem::replace(&mut self.slots, vec![0; capacity]);
        let old_tag_bits = std::mem::replace(&mut self.tag_bits, tag_bits);
        for slot in old.into_iter().filter(|&slot| slot != 0) {
            let at = slot >> old_tag_bits;
            let hash = rehash(at);
            let mut i = Self::home(hash, capacity);
            while self.slots[i] != 0 {
                i = Self::next(i, capacity);
            }
            self.slots[i] = at << tag_bits | self.tag(hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        /// Against a map: keys chosen from few hashes and with colliding tags, so that probes
        /// run through clusters and wrap around the end; positions spaced by `stride`, so that
        /// with a large one they outgrow the bits above the tag and the tags shorten on the way.
        #[test]
        fn behaves_as_a_map(ops in prop::collection::vec((0u64..40, any::<bool>()), 0..300),
                            reserve in 0usize..50,
                            stride in prop_oneof![Just(1u32), 1u32..(1 << 22)]) {
            // Each key's hash: few distinct high bits (same home slots) and low bits (same tags).
            let hash = |key: u64| (key % 5).wrapping_mul(0x3333_3333_3333_3333) ^ (key % 3);
            let mut keys: Vec<u64> = Vec::new(); // position -> key
            let mut model: HashMap<u64, u32> = HashMap::new();
            let mut index = Index::default();
            index.reserve(reserve, |_| unreachable!("empty"));
            for (key, insert) in ops {
                if insert {
                    let at = keys.len() as u32 * stride;
                    keys.push(key);
                    let key_at = |p: u32| keys[(p / stride) as usize];
                    index.upsert(hash(key), at, |p| key_at(p) == key, |p| hash(key_at(p)));
                    model.insert(key, at);
                }
                let found = index.find(hash(key), |p| keys[(p / stride) as usize] == key);
                prop_assert_eq!(found, model.get(&key).copied());
                prop_assert_eq!(index.len(), model.len());
            }
            for key in 0..40 {
                prop_assert_eq!(index.find(hash(key), |p| keys[(p / stride) as usize] == key), model.get(&key).copied());
            }
            let widest = keys.len().saturating_sub(1) as u32 * stride;
            prop_assert!(widest >> (32 - index.tag_bits) == 0, "{widest} fits beside the tag");
            index.clear();
            prop_assert_eq!(index.len(), 0);
            prop_assert_eq!(index.find(hash(1), |_| true), None);
        }
    }

    #[test]
    fn sized_to_its_contents_not_to_a_power_of_two() {
        let mut index = Index::default();
        index.reserve(490_000, |_| unreachable!("empty"));
        assert_eq!(index.slots.len(), 560_001);
        for at in 0..490_000u32 {
            let hash = u64::from(at).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            index.upsert(hash, at, |_| false, |_| unreachable!("no growth within the reservation"));
        }
        assert_eq!(index.len(), 490_000);
    }
}
