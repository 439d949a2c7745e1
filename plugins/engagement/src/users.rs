//! A set of user ids that allocates per window, not per user: the ids sit one after another
//! in a byte arena (each after its u16 length), found through a table of their offsets.
//! Against a set of boxed strings it saves an allocation and a free for every distinct user of
//! every window, and a third of the memory.

use std::hash::BuildHasher;

use adstream_abi::bytes::short_eq;
use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

#[derive(Debug, Default)]
pub(crate) struct UserSet {
    ids: Vec<u8>,
    index: HashTable<u32>,
}

fn id_at(ids: &[u8], at: u32) -> &[u8] {
    let at = at as usize;
    let len = u16::from_le_bytes([ids[at], ids[at + 1]]) as usize;
    &ids[at + 2..at + 2 + len]
}

impl UserSet {
    /// Adds `user` if it is not there yet. Ids are bytes here: they are only hashed, compared
    /// and counted, so no step needs to know they are UTF-8. Ids longer than 65535 bytes are
    /// cut (the host never passes one: it rejects fields over 1 KiB).
    pub fn insert(&mut self, user: &[u8]) {
        let user = &user[..user.len().min(u16::MAX as usize)];
        let hash = FxBuildHasher.hash_one(user);
        let (ids, index) = (&mut self.ids, &mut self.index);
        if index.find(hash, |&at| short_eq(id_at(ids, at), user)).is_some() {
            return;
        }
        let at = u32::try_from(ids.len()).expect("less than 4 GiB of user ids per device and window");
        ids.extend_from_slice(&(user.len() as u16).to_le_bytes());
        ids.extend_from_slice(user);
        index.insert_unique(hash, at, |&at| FxBuildHasher.hash_one(id_at(ids, at)));
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Makes room for `users` more ids in the table, so that inserting them does not grow it
    /// step by step (each step hashes every id again).
    pub fn reserve(&mut self, users: usize) {
        let ids = &self.ids;
        self.index.reserve(users, |&at| FxBuildHasher.hash_one(id_at(ids, at)));
    }

    /// The ids, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let mut at = 0;
        std::iter::from_fn(move || {
            let id = self.ids.get(at..).filter(|rest| !rest.is_empty()).map(|_| id_at(&self.ids, at as u32))?;
            at += 2 + id.len();
            Some(id)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_each_id_once_in_order() {
        let mut s = UserSet::default();
        for u in ["u1", "u2", "u1", "", "ü", "u2", ""] {
            s.insert(u.as_bytes());
        }
        assert_eq!(s.len(), 4);
        assert!(s.iter().eq(["u1", "u2", "", "ü"].map(str::as_bytes)));
        let many: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
        let mut big = UserSet::default();
        for u in many.iter().chain(&many) {
            big.insert(u.as_bytes());
        }
        assert_eq!(big.len(), 10_000);
        assert!(big.iter().eq(many.iter().map(String::as_bytes)));
    }
}
