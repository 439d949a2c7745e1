//! A task: partition `p` of `ad-impressions` with partition `p` of `ad-clicks` (SPEC "Time").
//! The unit of work: an impression and its clicks share a partition number (both topics are
//! keyed by `impression_id`), so the join is local to a task.
//!
//! A task owns its two partitions' watermarks, its join, its open windows and one instance of
//! every plugin (the local phase of each aggregation). Its watermark (the smaller of its
//! partitions', with the idle rule) decides which of its events are late and when it hands each
//! window over to the merge as [`Partial`]s. Nothing in a task depends on the other tasks, so
//! the same input gives the same partials wherever the task runs.

use std::collections::BTreeMap;
use std::time::Instant;

use adstream_abi::batch::{BatchWriter, Event as BatchEvent, Kind};
use adstream_abi::time::format_rfc3339_millis;

use super::join::{Join, JoinedClick};
use super::merge::{Partial, Share, TaskClock, TaskId};
use super::time::WindowRule;
use super::watermark::{PartitionId, Watermarks};
use crate::event::{Click, Impression};
use crate::metrics::Stats;
use crate::plugin::slot::Which;
use crate::plugin::{PluginError, Slot, Window};

pub struct Task {
    pub id: TaskId,
    /// The engine's ids of the task's partitions.
    pub inputs: Vec<PartitionId>,
    /// The clock as last computed by [`Task::advance`].
    clock: TaskClock,
    /// Every window this closes was handed to the merge, even if the watermark has not closed
    /// it (an idle task hands over all it holds).
    closed_floor: i64,
    rule: WindowRule,
    /// The task's partitions (at most one per input topic), by their index here.
    watermarks: Watermarks,
    join: Join,
    /// Windows with events at this task, not handed to the merge yet → events counted.
    open: BTreeMap<i64, u64>,
    /// Events decoded since the plugins were last called.
    batch: BatchWriter,
    batch_size: usize,
    /// One instance of each plugin, in the engine's plugin order.
    plugins: Vec<Slot>,
}

/// A plugin call of a task failed: the slot, the instance, the error.
pub type Failure = (usize, Which, PluginError);

impl Task {
    pub fn new(
        id: TaskId,
        rule: WindowRule,
        time: &crate::config::TimeConfig,
        plugins: Vec<Slot>,
        batch_size: usize,
    ) -> Self {
        Task {
            id,
            inputs: Vec::new(),
            clock: TaskClock { watermark: i64::MIN, idle: false },
            closed_floor: i64::MIN,
            rule,
            watermarks: Watermarks::new(time.out_of_orderness_ms, time.idle_timeout),
            join: Join::new(time.join_horizon_ms),
            open: BTreeMap::new(),
            batch: BatchWriter::new(),
            batch_size,
            plugins,
        }
    }

    /// Registers one of the task's partitions; returns its index in the task.
    pub fn add_partition(&mut self, now: Instant) -> PartitionId {
        self.watermarks.add_partition(now)
    }

    pub fn watermarks(&self) -> &Watermarks {
        &self.watermarks
    }

    pub fn watermarks_mut(&mut self) -> &mut Watermarks {
        &mut self.watermarks
    }

    pub fn slots(&self) -> &[Slot] {
        &self.plugins
    }

    pub fn slots_mut(&mut self) -> &mut [Slot] {
        &mut self.plugins
    }

    pub fn join(&self) -> &Join {
        &self.join
    }

    /// Starts from where an earlier owner left the task: its watermark, and the windows it had
    /// handed over (`closed`; at least the watermark's).
    pub fn resume(&mut self, watermark: i64, closed: i64) {
        self.watermarks.resume(watermark);
        self.closed_floor = self.closed_floor.max(closed);
    }

    /// Why an event of time `ts` in `window` is late here: the reason of its copy on the late
    /// topic.
    pub fn late_detail(&self, window: i64, ts: i64) -> String {
        format!(
            "window {} of event time {} was already closed at task {} (its watermark {})",
            format_rfc3339_millis(window),
            format_rfc3339_millis(ts),
            self.id,
            format_rfc3339_millis(self.watermark())
        )
    }

    /// The task's watermark as last computed.
    pub fn watermark(&self) -> i64 {
        self.watermarks.current()
    }

    /// Every window this closes is closed here (handed over, or never to be): the watermark,
    /// or beyond it what an idle spell handed over.
    pub fn closed_through(&self) -> i64 {
        self.watermarks.current().max(self.closed_floor)
    }

    /// Whether the window starting at `start` is closed at this task.
    pub fn has_closed(&self, start: i64) -> bool {
        self.rule.is_closed(start, self.closed_through())
    }

    /// Windows with events here, oldest first.
    pub fn open_windows(&self) -> impl Iterator<Item = i64> + '_ {
        self.open.keys().copied()
    }

    /// An on-time impression: into its window, and joined with the clicks waiting for it.
    pub fn add_impression(&mut self, imp: &Impression<'_>, window: i64, ts: i64, stats: &mut Stats) {
        self.batch.push(&BatchEvent {
            kind: Kind::Impression,
            window_start_ms: window,
            event_time_ms: ts,
            impression_time_ms: ts,
            cost: imp.cost,
            campaign_id: &imp.campaign_id,
            ad_id: &imp.ad_id,
            device_type: &imp.device_type,
            browser: &imp.browser,
            user_id: &imp.user_id,
        });
        *self.open.entry(window).or_default() += 1;
        stats.impressions += 1;
        self.rejoin(imp, stats);
    }

    /// An impression whose window is closed (re-read after a restart): only the clicks of open
    /// windows that wait for it are counted.
    pub fn rejoin(&mut self, imp: &Impression<'_>, stats: &mut Stats) {
        let (batch, open) = (&mut self.batch, &mut self.open);
        self.join.add_impression(imp, |c| {
            stats.clicks_attributed += 1;
            *open.entry(c.window_start_ms).or_default() += 1;
            push_click(batch, &c);
        });
    }

    /// An on-time click: into its window if its impression is known, otherwise it waits.
    pub fn add_click(&mut self, click: &Click<'_>, window: i64, stats: &mut Stats) {
        let in_window = self.open.entry(window).or_default();
        if let Some(joined) = self.join.add_click(click, window) {
            *in_window += 1;
            push_click(&mut self.batch, &joined);
            stats.clicks_attributed += 1;
        }
    }

    /// An event of time `ts` arrived on the task's partition `side`; `is_event` is false for a
    /// message that is not one (it keeps the partition from turning idle all the same).
    pub fn observe(&mut self, side: PartitionId, ts: Option<i64>, now: Instant) {
        match ts {
            Some(ts) => self.watermarks.observe(side, ts, now),
            None => self.watermarks.touch(side, now),
        }
    }

    /// Whether the batch is full.
    pub fn batch_full(&self) -> bool {
        self.batch.len() >= self.batch_size
    }

    /// Hands the buffered events to every plugin. A failed call restarts that instance empty
    /// and withholds its share of every window open here; the failures are returned for the
    /// engine to log and count.
    pub fn flush(&mut self) -> Vec<Failure> {
        if self.batch.is_empty() {
            return Vec::new();
        }
        let batch = self.batch.bytes();
        let failures: Vec<Failure> = self
            .plugins
            .iter_mut()
            .enumerate()
            .flat_map(|(i, p)| p.process(batch).into_iter().map(move |(which, e)| (i, which, e)))
            .collect();
        self.batch.clear();
        for (i, which, e) in &failures {
            self.plugins[*i].failed(*which, e, self.open.keys().copied());
        }
        failures
    }

    /// Recomputes the task's watermark at `now`: what it tells the merge.
    pub fn advance(&mut self, now: Instant) -> TaskClock {
        let watermark = self.watermarks.advance(now);
        self.clock = TaskClock { watermark, idle: self.watermarks.all_idle(now) };
        self.clock
    }

    /// The clock as last computed.
    pub fn clock(&self) -> TaskClock {
        self.clock
    }

    /// Hands over every window `watermark` closes (the task's own; `i64::MAX` when the task is
    /// idle, since the merge does not wait for it then; the merge's, in this process, when it
    /// publishes without waiting for this task): flushes the batch, exports
    /// each plugin's accumulator of the window and drops it. Returns the partials, and the
    /// plugin calls that failed on the way (their windows are withheld, not lost).
    pub fn close_through(&mut self, watermark: i64, stats: &mut Stats) -> (Vec<Partial>, Vec<Failure>) {
        let rule = self.rule;
        if !self.open.first_key_value().is_some_and(|(&w, _)| rule.is_closed(w, watermark)) {
            return (Vec::new(), Vec::new());
        }
        let mut failures = self.flush();
        let mut partials = Vec::new();
        while let Some((&start, _)) = self.open.first_key_value() {
            if !rule.is_closed(start, watermark) {
                break;
            }
            let (start, events) = self.open.pop_first().expect("checked above");
            stats.clicks_unattributed += self.join.close_window(start);
            let window = Window { start_ms: start, end_ms: start + rule.window_ms };
            for i in 0..self.plugins.len() {
                let slot = &mut self.plugins[i];
                let (which, exported) = slot.export_window(window);
                let meta = slot.meta_of(which).clone();
                let withheld = slot.withheld.remove(&start);
                let share = match (withheld, exported) {
                    (Some(reason), _) => Share::Withheld(reason),
                    (None, Ok(Some(state))) => Share::State(state),
                    (None, Ok(None)) => Share::Empty,
                    (None, Err(e)) => {
                        let reason = e.to_string();
                        slot.failed(which, &e, self.open.keys().copied());
                        failures.push((i, which, e));
                        Share::Withheld(reason)
                    }
                };
                // The state is exported: drop it (the records are the merge's to make). If that
                // fails, the instance restarts, and the windows still open lose its state.
                if !matches!(share, Share::Withheld(_))
                    && let Err(e) = slot.instance(which).close_window(window)
                {
                    slot.failed(which, &e, self.open.keys().copied());
                    failures.push((i, which, e));
                }
                partials.push(Partial {
                    task: self.id,
                    window_start_ms: start,
                    plugin: meta.name,
                    version: meta.version,
                    state_version: meta.state_version,
                    events,
                    share,
                });
            }
        }
        // What was handed over is closed here for good (an idle task hands over every window it
        // holds, and its later events of them are late), though the watermark it reports to the
        // merge stays its own.
        if let Some(last) = partials.last() {
            self.closed_floor = self.closed_floor.max(rule.closes_at(last.window_start_ms));
        }
        self.join.expire(rule.oldest_open(self.closed_through()));
        (partials, failures)
    }

    /// The merge published through the window starting at `start`: a version retiring after
    /// a swap is no longer needed for it.
    pub fn published(&mut self, start: i64) {
        for slot in &mut self.plugins {
            slot.emitted(start);
        }
    }
}

fn push_click(batch: &mut BatchWriter, c: &JoinedClick<'_>) {
    batch.push(&BatchEvent {
        kind: Kind::Click,
        window_start_ms: c.window_start_ms,
        event_time_ms: c.event_time_ms,
        impression_time_ms: c.impression.event_time_ms,
        cost: c.impression.cost,
        campaign_id: c.impression.campaign_id,
        ad_id: c.impression.ad_id,
        device_type: c.impression.device_type,
        browser: c.impression.browser,
        user_id: c.user_id,
    });
}
