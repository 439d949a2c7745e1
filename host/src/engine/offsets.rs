//! Which input offsets are safe to commit.
//!
//! An input message is *done* once nothing downstream needs it again: a late or invalid message
//! as soon as it is routed; a click once its window has been emitted; an impression once its
//! window has been emitted *and* no future click can join it (the join horizon has passed).
//! The committable offset of a partition is the smallest offset not yet done; after a restart
//! the host re-reads from there, which rebuilds the open windows and the join state.
//!
//! Rather than one entry per message, offsets are bucketed by the watermark at which they become
//! done: a handful of buckets per partition, whatever the rate.

use std::collections::BTreeMap;

use super::watermark::PartitionId;

#[derive(Clone, Debug, Default)]
struct Partition {
    /// One past the largest offset seen: what to commit when nothing is held.
    next: Option<i64>,
    /// Watermark at which the messages are done → the smallest offset among them.
    held: BTreeMap<i64, i64>,
}

/// Offsets held per partition until the watermark releases them.
#[derive(Clone, Debug, Default)]
pub struct OffsetTracker {
    partitions: Vec<Partition>,
}

impl OffsetTracker {
    fn part(&mut self, p: PartitionId) -> &mut Partition {
        if self.partitions.len() <= p {
            self.partitions.resize_with(p + 1, Partition::default);
        }
        &mut self.partitions[p]
    }

    /// A message at `offset` that is done at once (late, invalid, replayed).
    pub fn seen(&mut self, p: PartitionId, offset: i64) {
        let part = self.part(p);
        part.next = Some(part.next.map_or(offset + 1, |n| n.max(offset + 1)));
    }

    /// A message at `offset` that is needed until the watermark reaches `release_at`.
    pub fn hold(&mut self, p: PartitionId, offset: i64, release_at: i64) {
        self.seen(p, offset);
        let min = self.part(p).held.entry(release_at).or_insert(offset);
        *min = (*min).min(offset);
    }

    /// The watermark is now `watermark`: release what it covers.
    pub fn release(&mut self, watermark: i64) {
        for part in &mut self.partitions {
            part.held = part.held.split_off(&(watermark.saturating_add(1)));
        }
    }

    /// `p`'s own watermark is now `watermark` (its task's): release what it covers there.
    pub fn release_partition(&mut self, p: PartitionId, watermark: i64) {
        let part = self.part(p);
        if part.held.first_key_value().is_some_and(|(&at, _)| at <= watermark) {
            part.held = part.held.split_off(&(watermark.saturating_add(1)));
        }
    }

    /// One past the largest offset seen on `p`.
    pub fn next(&self, p: PartitionId) -> Option<i64> {
        self.partitions.get(p)?.next
    }

    /// The offset to commit for `p` (the first message still needed), if any message was seen.
    pub fn committable(&self, p: PartitionId) -> Option<i64> {
        let part = self.partitions.get(p)?;
        let held = part.held.values().copied().min();
        match (held, part.next) {
            (Some(h), _) => Some(h),
            (None, next) => next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_up_to_the_oldest_message_still_needed() {
        let mut t = OffsetTracker::default();
        assert_eq!(t.committable(0), None);
        t.hold(0, 10, 60_000);
        t.hold(0, 11, 120_000);
        t.seen(0, 12);
        t.hold(1, 5, 120_000);
        assert_eq!((t.committable(0), t.committable(1)), (Some(10), Some(5)));
        t.release(59_999);
        assert_eq!(t.committable(0), Some(10));
        t.release(60_000);
        assert_eq!(t.committable(0), Some(11));
        t.release(120_000);
        assert_eq!((t.committable(0), t.committable(1)), (Some(13), Some(6)));
    }
}
