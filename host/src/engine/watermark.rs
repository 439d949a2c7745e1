//! Per-partition watermarks (SPEC "Time").
//!
//! The watermark is the smallest, over the input partitions that are not idle, of (largest
//! event time seen on that partition minus the allowed out-of-orderness). A partition with no
//! message for longer than the idle timeout, or whose input has ended, stops holding the
//! watermark back until it has data again. When every partition is idle the watermark is the
//! largest such value over all partitions: nothing holds it back, and it never runs ahead of
//! what some partition has actually seen. The watermark never goes backwards.
//!
//! "No message" means no *new data*: a partition the consumer has not caught up on (the
//! source reports a backlog) is behind, not idle, however long it has been since its last
//! message was processed. Otherwise a slow consumer would declare its own partitions idle and
//! turn their on-time events into late ones. Where a source reports backlogs, a partition turns
//! idle only on a report made after its idle deadline: a report from before says nothing of
//! the messages written since (a host that stalled, or whose client paused fetching for a
//! rebalance, would otherwise take the quiet of its own making for an idle partition).

use std::time::{Duration, Instant};

/// Index of an input partition (dense, assigned by `add_partition`): in the engine, every
/// partition it reads; in a task's [`Watermarks`], its own.
pub type PartitionId = usize;

#[derive(Clone, Debug)]
struct Partition {
    /// Largest event time seen on the partition; `i64::MIN` until its first event.
    max_event_time: i64,
    /// When the partition turns idle unless it delivers a message (valid or not) first: its
    /// last message plus the idle timeout. Kept as a deadline so that the per-message check is
    /// a comparison rather than a subtraction. `None`: an idle timeout too long to represent.
    idle_at: Option<Instant>,
    /// Input ended (replay): it never holds the watermark back again.
    finished: bool,
    /// The source knows of messages not read yet: the partition cannot be idle.
    backlog: bool,
    /// When the source last reported on the backlog (`None`: a source that never does, such
    /// as a replay's files). With reports, idleness needs one made after `idle_at`.
    checked_at: Option<Instant>,
}

/// The watermark over a set of partitions.
#[derive(Clone, Debug)]
pub struct Watermarks {
    out_of_orderness_ms: i64,
    idle_timeout: Duration,
    partitions: Vec<Partition>,
    /// The watermark last returned: the floor for the next one.
    current: i64,
}

impl Watermarks {
    pub fn new(out_of_orderness_ms: i64, idle_timeout: Duration) -> Self {
        Watermarks { out_of_orderness_ms, idle_timeout, partitions: Vec::new(), current: i64::MIN }
    }

    /// Registers a partition; it holds the watermark back until its first event or until it
    /// has been idle for the idle timeout.
    pub fn add_partition(&mut self, now: Instant) -> PartitionId {
        self.partitions.push(Partition {
            max_event_time: i64::MIN,
            idle_at: self.idle_deadline(now),
            finished: false,
            backlog: false,
            checked_at: None,
        });
        self.partitions.len() - 1
    }

    /// A message arrived on `p` (an invalid one too: the partition is alive).
    pub fn touch(&mut self, p: PartitionId, now: Instant) {
        self.partitions[p].idle_at = self.idle_deadline(now);
    }

    fn idle_deadline(&self, now: Instant) -> Option<Instant> {
        now.checked_add(self.idle_timeout)
    }

    /// An event with time `event_time_ms` arrived on `p`.
    pub fn observe(&mut self, p: PartitionId, event_time_ms: i64, now: Instant) {
        let idle_at = self.idle_deadline(now);
        let part = &mut self.partitions[p];
        part.max_event_time = part.max_event_time.max(event_time_ms);
        part.idle_at = idle_at;
    }

    /// Whether the source has messages of `p` not read yet, as it knew at `now`.
    pub fn set_backlog(&mut self, p: PartitionId, backlog: bool, now: Instant) {
        let part = &mut self.partitions[p];
        part.backlog = backlog;
        part.checked_at = Some(now);
    }

    /// Whether `p` has gone without a message past its idle deadline (and has not finished):
    /// it turns idle on a report, made from now on, that it has no backlog.
    pub fn idle_due(&self, p: PartitionId, now: Instant) -> bool {
        let part = &self.partitions[p];
        !part.finished && part.idle_at.is_some_and(|at| now >= at)
    }

    /// The input of `p` has ended.
    pub fn finish(&mut self, p: PartitionId) {
        self.partitions[p].finished = true;
    }

    /// Largest event time seen on `p`, if any.
    pub fn max_event_time(&self, p: PartitionId) -> Option<i64> {
        Some(self.partitions[p].max_event_time).filter(|&t| t != i64::MIN)
    }

    /// Starts from the watermark an earlier run reached, so that its emitted windows stay closed.
    pub fn resume(&mut self, watermark: i64) {
        self.current = self.current.max(watermark);
    }

    /// The current watermark (`i64::MIN` before there is one).
    pub fn current(&self) -> i64 {
        self.current
    }

    /// Recomputes the watermark at wall-clock time `now` and returns it.
    pub fn advance(&mut self, now: Instant) -> i64 {
        let lag = self.out_of_orderness_ms;
        let active = self.partitions.iter().filter(|p| !self.is_idle(p, now));
        let candidate = match active.map(|p| p.max_event_time).min() {
            Some(min) => min,
            None => self.partitions.iter().map(|p| p.max_event_time).max().unwrap_or(i64::MIN),
        };
        self.current = self.current.max(candidate.saturating_sub(lag));
        self.current
    }

    /// Whether some partition is idle or finished right now (for logs and the console).
    pub fn idle_partitions(&self, now: Instant) -> usize {
        self.partitions.iter().filter(|p| self.is_idle(p, now)).count()
    }

    /// Whether every partition is idle or finished right now: nothing holds the watermark.
    pub fn all_idle(&self, now: Instant) -> bool {
        self.partitions.iter().all(|p| self.is_idle(p, now))
    }

    /// Whether `p` is idle or finished right now (for the console).
    pub fn is_partition_idle(&self, p: PartitionId, now: Instant) -> bool {
        self.is_idle(&self.partitions[p], now)
    }

    /// The watermark `p` alone allows: its largest event time minus the out-of-orderness.
    pub fn partition_watermark(&self, p: PartitionId) -> Option<i64> {
        self.max_event_time(p).map(|t| t.saturating_sub(self.out_of_orderness_ms))
    }

    fn is_idle(&self, p: &Partition, now: Instant) -> bool {
        p.finished
            || (!p.backlog && p.idle_at.is_some_and(|at| now >= at && p.checked_at.is_none_or(|checked| checked >= at)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slowest_active_partition_holds_the_watermark() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(5_000, Duration::from_secs(10));
        let (a, b) = (w.add_partition(t0), w.add_partition(t0));
        w.observe(a, 100_000, t0);
        assert_eq!(w.advance(t0), i64::MIN, "b has no data and is not idle yet");
        w.observe(b, 50_000, t0);
        assert_eq!(w.advance(t0), 45_000);
        w.observe(b, 40_000, t0);
        assert_eq!(w.advance(t0), 45_000, "an older event does not move it back");
        // b goes idle: a alone decides.
        let later = t0 + Duration::from_secs(11);
        w.touch(a, later);
        assert_eq!(w.advance(later), 95_000);
        // A partition with unread messages is behind, not idle.
        w.set_backlog(b, true, later);
        let much_later = later + Duration::from_secs(60);
        w.touch(a, much_later);
        w.observe(a, 200_000, much_later);
        assert_eq!(w.advance(much_later), 95_000, "b holds it, being behind");
        w.set_backlog(b, false, much_later);
        assert_eq!(w.advance(much_later), 195_000);
        // b wakes up with old data: the watermark does not go backwards.
        w.observe(b, 60_000, much_later);
        assert_eq!(w.advance(much_later), 195_000);
    }

    #[test]
    fn with_backlog_reports_only_one_made_after_the_deadline_makes_a_partition_idle() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut w = Watermarks::new(0, s(3));
        let (a, b) = (w.add_partition(t0), w.add_partition(t0));
        w.set_backlog(a, true, t0);
        w.set_backlog(b, true, t0);
        w.observe(a, 100_000, t0);
        w.observe(b, 50_000, t0);
        assert_eq!(w.advance(t0), 50_000);
        // Caught up at t0 + 1 s; then nothing for 4 s (a stall, a paused fetch).
        w.set_backlog(b, false, t0 + s(1));
        w.touch(a, t0 + s(4));
        assert!(w.idle_due(b, t0 + s(4)));
        assert_eq!(w.advance(t0 + s(4)), 50_000, "the report of t0 + 1 s predates b's deadline");
        assert_eq!(w.idle_partitions(t0 + s(4)), 0);
        // A report after the deadline: still behind, then caught up.
        w.set_backlog(b, true, t0 + s(4));
        assert_eq!(w.advance(t0 + s(5)), 50_000);
        w.set_backlog(b, false, t0 + s(5));
        assert_eq!(w.advance(t0 + s(5)), 100_000, "now b is idle");
        // A message makes it busy again, and its next deadline needs a report of its own.
        w.observe(b, 120_000, t0 + s(6));
        assert!(!w.idle_due(b, t0 + s(6)));
        w.touch(a, t0 + s(10));
        assert_eq!(w.advance(t0 + s(10)), 100_000);
    }

    #[test]
    fn all_idle_or_finished_lets_the_largest_time_through() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(1_000, Duration::from_secs(1));
        let (a, b) = (w.add_partition(t0), w.add_partition(t0));
        w.observe(a, 10_000, t0);
        w.observe(b, 20_000, t0);
        assert_eq!(w.advance(t0), 9_000);
        w.finish(a);
        assert_eq!(w.advance(t0), 19_000);
        assert_eq!(w.advance(t0 + Duration::from_secs(5)), 19_000);
        assert_eq!(w.idle_partitions(t0 + Duration::from_secs(5)), 2);
    }
}
