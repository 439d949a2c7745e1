//! Where a join bucket's records are, by the hash of their id.

/// Record positions by hash: open addressing with linear probing over a capacity chosen to fit
/// what it holds. General tables round their capacity up to a power of two, and a minute of
/// impressions is hundreds of thousands: rounding up gave the join up to twice the slots it
/// needed, about 10 bytes per impression where this index takes about 6. Each slot has a tag byte
/// beside it, 0 when the slot is empty and else 0x80 with seven bits of its hash, so a probe
/// reads the record behind a slot only when the tags agree (one time in 128 for another id).
/// Nothing is ever removed: the index is emptied whole, with its bucket.
#[derive(Debug, Default)]
pub(super) struct Index {
    tags: Vec<u8>,
    slots: Vec<u32>,
    len: usize,
}

/// The share of slots in use at most: linear probing's search for an absent hash (every new
/// impression makes one) reads about (1 + 1/(1 - load)²) / 2 tags, about 32 at 7/8 and 13 at
/// 0.8, one after the other in memory (one or two cache lines); a search for a present one about
/// (1 + 1/(1 - load)) / 2. A bucket is sized like the largest one kept, so it fills to about
/// 0.85.
const MAX_LOAD: (usize, usize) = (7, 8);

impl Index {
    pub fn len(&self) -> usize {
        self.len
    }

    /// The first slot to look at for `hash`: its high bits scaled to the capacity (no power of two
    /// needed, unlike a mask).
    fn home(hash: u64, capacity: usize) -> usize {
        ((u128::from(hash) * capacity as u128) >> 64) as usize
    }

    /// A used slot's tag: seven low bits of the hash (the home slot takes the high ones).
    fn tag(hash: u64) -> u8 {
        0x80 | (hash as u8 & 0x7f)
    }

    /// The position with this hash for which `is` holds.
    pub fn find(&self, hash: u64, mut is: impl FnMut(u32) -> bool) -> Option<u32> {
        let capacity = self.tags.len();
        if capacity == 0 {
            return None;
        }
        let tag = Self::tag(hash);
        let mut i = Self::home(hash, capacity);
        // Ends: the load bound leaves at least one slot empty.
        loop {
            match self.tags[i] {
                0 => return None,
                t if t == tag && is(self.slots[i]) => return Some(self.slots[i]),
                _ => i = if i + 1 == capacity { 0 } else { i + 1 },
            }
        }
    }

    /// Puts `at` in the slot of the position for which `is` holds, or in a new slot if there is
    /// none. `rehash` gives the hash of a position already in, for when the index grows.
    pub fn upsert(&mut self, hash: u64, at: u32, mut is: impl FnMut(u32) -> bool, rehash: impl Fn(u32) -> u64) {
        if Self::too_full(self.len + 1, self.tags.len()) {
            self.rebuild((self.len + 1) * 5 / 4, rehash);
        }
        let capacity = self.tags.len();
        let tag = Self::tag(hash);
        let mut i = Self::home(hash, capacity);
        loop {
            match self.tags[i] {
                0 => {
                    self.tags[i] = tag;
                    self.slots[i] = at;
                    self.len += 1;
                    return;
                }
                t if t == tag && is(self.slots[i]) => {
                    self.slots[i] = at;
                    return;
                }
                _ => i = if i + 1 == capacity { 0 } else { i + 1 },
            }
        }
    }

    /// Makes room for `n` positions in all, so that inserting that many does not grow it.
    pub fn reserve(&mut self, n: usize, rehash: impl Fn(u32) -> u64) {
        if Self::too_full(n, self.tags.len()) {
            self.rebuild(n, rehash);
        }
    }

    /// Empties the index, keeping its memory.
    pub fn clear(&mut self) {
        self.tags.fill(0);
        self.len = 0;
    }

    fn too_full(len: usize, capacity: usize) -> bool {
        len * MAX_LOAD.1 > capacity * MAX_LOAD.0
    }

    /// Moves every position into new slots sized for `n` at the load bound.
    fn rebuild(&mut self, n: usize, rehash: impl Fn(u32) -> u64) {
        let capacity = n * MAX_LOAD.1 / MAX_LOAD.0 + 1;
        let tags = std::mem::replace(&mut self.tags, vec![0; capacity]);
        let slots = std::mem::replace(&mut self.slots, vec![0; capacity]);
        for (tag, at) in tags.into_iter().zip(slots) {
            if tag != 0 {
                let hash = rehash(at);
                let mut i = Self::home(hash, capacity);
                while self.tags[i] != 0 {
                    i = if i + 1 == capacity { 0 } else { i + 1 };
                }
                self.tags[i] = Self::tag(hash);
                self.slots[i] = at;
            }
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
        /// run through clusters and wrap around the end.
        #[test]
        fn behaves_as_a_map(ops in prop::collection::vec((0u64..40, any::<bool>()), 0..300),
                            reserve in 0usize..50) {
            // Each key's hash: few distinct high bits (same home slots) and low bits (same tags).
            let hash = |key: u64| (key % 5).wrapping_mul(0x3333_3333_3333_3333) ^ (key % 3);
            let mut keys: Vec<u64> = Vec::new(); // position -> key
            let mut model: HashMap<u64, u32> = HashMap::new();
            let mut index = Index::default();
            index.reserve(reserve, |_| unreachable!("empty"));
            for (key, insert) in ops {
                if insert {
                    let at = keys.len() as u32;
                    keys.push(key);
                    index.upsert(hash(key), at, |p| keys[p as usize] == key, |p| hash(keys[p as usize]));
                    model.insert(key, at);
                }
                let found = index.find(hash(key), |p| keys[p as usize] == key);
                prop_assert_eq!(found, model.get(&key).copied());
                prop_assert_eq!(index.len(), model.len());
            }
            for key in 0..40 {
                prop_assert_eq!(index.find(hash(key), |p| keys[p as usize] == key), model.get(&key).copied());
            }
            index.clear();
            prop_assert_eq!(index.len(), 0);
            prop_assert_eq!(index.find(hash(1), |_| true), None);
        }
    }

    #[test]
    fn sized_to_its_contents_not_to_a_power_of_two() {
        let mut index = Index::default();
        index.reserve(490_000, |_| unreachable!("empty"));
        assert_eq!(index.tags.len(), 560_001);
        for at in 0..490_000u32 {
            let hash = u64::from(at).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            index.upsert(hash, at, |_| false, |_| unreachable!("no growth within the reservation"));
        }
        assert_eq!(index.len(), 490_000);
    }
}
