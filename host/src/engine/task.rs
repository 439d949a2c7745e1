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

use super::complete::Counts;
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
    /// Where each of the task's partitions had been read when each pane with events closed
    /// here, pane → (partition index here → next offset): an event of the pane below its
    /// partition's cut was on time (it is in the pane), one at or above it late. Kept in the
    /// checkpoints while still of use to a new owner re-reading the pane's events (see
    /// [`Task::was_on_time`]): while a window not handed over holds the pane (sliding windows),
    /// and while a click still to be counted may join its impressions.
    cuts: BTreeMap<i64, Vec<i64>>,
    /// Every pane from this one on that closed here with events has its cut in `cuts` (earlier
    /// ones closed before an older checkpoint). `i64::MAX`: the join reaches back more than
    /// [`MAX_CUTS`] panes, and cuts are kept only while a window holds their pane.
    cuts_from: i64,
    rule: WindowRule,
    /// Drop repeated ids (the default; `--keep-duplicates` counts them).
    dedup: bool,
    /// The task's partitions (at most one per input topic), by their index here.
    watermarks: Watermarks,
    join: Join,
    /// Panes (windows, when tumbling) with events at this task whose last window was not handed
    /// to the merge yet, and what they hold.
    open: BTreeMap<i64, Pane>,
    /// Events decoded since the plugins were last called.
    batch: BatchWriter,
    batch_size: usize,
    /// One instance of each plugin, in the engine's plugin order.
    plugins: Vec<Slot>,
    /// The task's partitions still re-reading what an earlier owner had read: until none is,
    /// the watermark stays where that owner left it (see
    /// [`super::Engine::resume_partition`]).
    rereading: usize,
}

/// The most panes whose impressions a click may join that a task keeps cuts of (see
/// [`Task::was_on_time`], [`WindowRule::joinable_panes`]): they go in every checkpoint, which
/// Kafka bounds to 4096 bytes by default (`offset.metadata.max.bytes`).
pub const MAX_CUTS: i64 = 100;

/// What a pane holds at a task, for the completeness record (see [`super::complete`]).
#[derive(Clone, Copy, Debug, Default)]
struct Pane {
    /// Events counted: impressions, and clicks attributed to one.
    events: u64,
    /// Repeats dropped.
    duplicates: u64,
}

/// What [`Task::close_through`] hands over: the partials, each window's counts, and the plugin
/// calls that failed on the way.
pub type Closed = (Vec<Partial>, Vec<(i64, Counts)>, Vec<Failure>);

/// A plugin's accumulators of a window's panes held here, or why they cannot be shown.
pub type PaneStates = Result<Vec<Vec<u8>>, String>;

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
            cuts: BTreeMap::new(),
            cuts_from: if rule.joinable_panes() <= MAX_CUTS { i64::MIN } else { i64::MAX },
            rule,
            dedup: !time.keep_duplicates,
            watermarks: Watermarks::new(time.out_of_orderness_ms, time.idle_timeout),
            join: Join::new(time.join_horizon_ms),
            open: BTreeMap::new(),
            batch: BatchWriter::new(),
            batch_size,
            plugins,
            rereading: 0,
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

    /// One more (`1`) or one fewer (`-1`) of the task's partitions re-reading what an earlier
    /// owner had read.
    pub fn hold_for_reread(&mut self, change: isize) {
        self.rereading = self.rereading.checked_add_signed(change).expect("a partition stops re-reading once");
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

    /// Whether the pane (the window, when tumbling) starting at `start` is closed at this task.
    pub fn has_closed(&self, start: i64) -> bool {
        self.rule.is_closed(start, self.closed_through())
    }

    /// Panes (windows, when tumbling) with events here that are not released, oldest first.
    pub fn open_windows(&self) -> impl Iterator<Item = i64> + '_ {
        self.open.keys().copied()
    }

    /// Whether the window starting at `start` is open here: not handed over, with a pane here.
    pub fn holds_open(&self, start: i64) -> bool {
        !self.rule.window_is_closed(start, self.closed_through())
            && self.rule.panes_of(start).any(|p| self.open.contains_key(&p))
    }

    /// The start of the oldest window this task has not handed over that holds one of its
    /// panes.
    pub fn next_window(&self) -> Option<i64> {
        let (&pane, _) = self.open.first_key_value()?;
        let mut start = self.rule.first_window_of(pane);
        // The last window that holds the pane starts where it does.
        while start < pane && self.rule.window_is_closed(start, self.closed_floor) {
            start += self.rule.slide_ms;
        }
        Some(start)
    }

    /// The panes closed here whose cuts are still of use, with where partition `side` had been
    /// read when each closed (for the checkpoint).
    pub fn cuts_of(&self, side: PartitionId) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.cuts.iter().map(move |(&pane, row)| (pane, cut(row, side)))
    }

    /// For the checkpoint: from which pane on the cuts of every pane closed here with events
    /// are kept; `None` when they are kept only while a window holds their pane. Panes no
    /// click still to be counted can join are left out.
    pub fn cuts_from(&self) -> Option<i64> {
        let joinable = self.rule.joinable_from(self.closed_through());
        self.keeps_join_cuts().then(|| self.cuts_from.max(joinable))
    }

    /// Whether cuts are kept for the join (its reach fits in [`MAX_CUTS`] panes), not only while
    /// a window holds their pane.
    fn keeps_join_cuts(&self) -> bool {
        self.cuts_from != i64::MAX
    }

    /// From the checkpoint of the task's impressions partition: from which pane on its cuts
    /// are complete. Without (an older checkpoint, or one whose cuts reached back less far than
    /// the join), only from the oldest pane it had not closed.
    pub fn resume_cuts_from(&mut self, from: Option<i64>) {
        if self.keeps_join_cuts() {
            self.cuts_from = from.unwrap_or_else(|| self.rule.oldest_open(self.closed_through()));
        }
    }

    /// Continues with the cuts an earlier owner checkpointed for partition `side`.
    pub fn resume_cuts(&mut self, side: PartitionId, cuts: &[(i64, i64)]) {
        for &(pane, offset) in cuts {
            let row = self.cuts.entry(pane).or_default();
            if row.len() <= side {
                row.resize(side + 1, i64::MAX);
            }
            row[side] = offset;
        }
    }

    /// Re-reading after a restart: whether the event at `offset` of partition `side`, of a pane
    /// closed here, was on time when an earlier owner read it (in the pane; an impression
    /// joined the clicks that came for it) or late (on the late topic). `None` when the cuts do
    /// not say: the pane is not closed here, or closed before what they cover.
    pub fn was_on_time(&self, pane: i64, side: PartitionId, offset: i64) -> Option<bool> {
        if !self.has_closed(pane) {
            return None;
        }
        match self.cuts.get(&pane) {
            Some(row) => Some(offset < cut(row, side)),
            // Closed with no event in it: every event of it came late.
            None => (pane >= self.cuts_from).then_some(false),
        }
    }

    /// Whether the pane starting at `pane` is closed here but still needed by a window not
    /// handed over: a re-read event of it may belong in it (see [`Task::was_on_time`]).
    pub fn holds_closed_pane(&self, pane: i64) -> bool {
        self.rule.sliding() && self.has_closed(pane) && !self.rule.window_is_closed(pane, self.closed_through())
    }

    /// An on-time impression: into its window, and joined with the clicks waiting for it; or,
    /// if the task already holds its id, a duplicate, dropped (`false`).
    pub fn add_impression(&mut self, imp: &Impression<'_>, window: i64, ts: i64, stats: &mut Stats) -> bool {
        if self.dedup && self.join.holds(&imp.impression_id, ts) {
            stats.duplicates += 1;
            self.open.entry(window).or_default().duplicates += 1;
            return false;
        }
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
        self.open.entry(window).or_default().events += 1;
        stats.impressions += 1;
        self.join_impression(imp, stats);
        true
    }

    /// An impression whose window is closed (re-read after a restart): only the clicks of open
    /// windows that wait for it are counted. A repeat of one held was dropped the first time.
    pub fn rejoin(&mut self, imp: &Impression<'_>, stats: &mut Stats) {
        if !(self.dedup && self.join.holds(&imp.impression_id, imp.event_time_ms)) {
            self.join_impression(imp, stats);
        }
    }

    /// A click of a closed window, re-read after a restart: its id is remembered, as it was the
    /// first time, so that a repeat of it is a repeat again.
    pub fn reread_click(&mut self, click: &Click<'_>) {
        if self.dedup {
            self.join.first_click(&click.click_id, click.event_time_ms);
        }
    }

    /// Keeps an impression for the join, and counts the clicks that waited for it.
    fn join_impression(&mut self, imp: &Impression<'_>, stats: &mut Stats) {
        let (batch, open) = (&mut self.batch, &mut self.open);
        self.join.add_impression(imp, |c| {
            stats.clicks_attributed += 1;
            open.entry(c.window_start_ms).or_default().events += 1;
            push_click(batch, &c);
        });
    }

    /// An on-time click: into its window if its impression is known, otherwise it waits; or, if
    /// the task has seen its id, a duplicate, dropped (`false`).
    pub fn add_click(&mut self, click: &Click<'_>, window: i64, stats: &mut Stats) -> bool {
        if self.dedup && !self.join.first_click(&click.click_id, click.event_time_ms) {
            stats.duplicates += 1;
            self.open.entry(window).or_default().duplicates += 1;
            return false;
        }
        let in_window = self.open.entry(window).or_default();
        if let Some(joined) = self.join.add_click(click, window) {
            in_window.events += 1;
            push_click(&mut self.batch, &joined);
            stats.clicks_attributed += 1;
        }
        true
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
        if self.rereading > 0 {
            // Neither the watermark nor an idle spell closes anything yet.
            self.clock = TaskClock { watermark: self.watermarks.current(), idle: false };
            return self.clock;
        }
        let watermark = self.watermarks.advance(now);
        self.clock = TaskClock { watermark, idle: self.watermarks.all_idle(now) };
        self.clock
    }

    /// The clock as last computed.
    pub fn clock(&self) -> TaskClock {
        self.clock
    }

    /// Whether [`Task::close_through`] with `watermark` would hand anything over. Asked after
    /// every message, so cheap: the oldest pane's first open window against the watermark.
    pub fn closes_any(&self, watermark: i64) -> bool {
        self.next_window().is_some_and(|w| self.rule.window_is_closed(w, watermark))
    }

    /// Hands over every window `watermark` closes (the task's own; `i64::MAX` when the task is
    /// idle, since the merge does not wait for it then; the merge's, in this process, when it
    /// publishes without waiting for this task): flushes the batch, exports each plugin's
    /// accumulator of the window (with sliding windows, the merge of its panes') and drops the
    /// panes no later window holds. `positions` are where the task's partitions have been read
    /// (one past the last offset, by index here): the cuts of the panes this closes. Returns the
    /// partials, and the plugin calls that failed on the way (their windows are withheld, not
    /// lost), and each window's counts for its completeness record.
    pub fn close_through(&mut self, watermark: i64, positions: &[i64], stats: &mut Stats) -> Closed {
        let rule = self.rule;
        let due = |task: &Self| task.next_window().filter(|&w| rule.window_is_closed(w, watermark));
        if !self.closes_any(watermark) {
            return (Vec::new(), Vec::new(), Vec::new());
        }
        let mut failures = self.flush();
        let mut partials = Vec::new();
        let mut counts = Vec::new();
        while let Some(start) = due(self) {
            // The window's newest pane closes with it: its clicks still waiting never will be
            // attributed (an impression is never newer than its click).
            let newest = start + rule.window_ms - rule.slide_ms;
            let mut unattributed = 0;
            if self.open.contains_key(&newest) {
                unattributed = self.join.close_window(newest);
                stats.clicks_unattributed += unattributed;
                // Decided once (a new owner would not decide it again), for every window that
                // holds the pane: this one is the first.
                let mut w = start;
                while unattributed > 0 && w <= newest {
                    counts.push((w, Counts { unattributed, ..Counts::default() }));
                    w += rule.slide_ms;
                }
            }
            let held: Vec<(i64, Pane)> =
                rule.panes_of(start).filter_map(|p| self.open.get(&p).map(|&pane| (p, pane))).collect();
            let panes: Vec<(i64, u64)> = held.iter().map(|&(p, pane)| (p, pane.events)).collect();
            let events = panes.iter().map(|&(_, n)| n).sum();
            let duplicates = held.iter().map(|(_, pane)| pane.duplicates).sum();
            if duplicates > 0 {
                counts.push((start, Counts { duplicates, ..Counts::default() }));
            }
            let window = rule.window(start);
            tracing::debug!(
                task = self.id,
                window = %format_rfc3339_millis(start),
                events,
                duplicates,
                unattributed,
                watermark = %format_rfc3339_millis(self.watermark()),
                read_to = ?positions,
                "window handed over to the merge"
            );
            for i in 0..self.plugins.len() {
                partials.push(self.share_of(i, start, &panes, events, &mut failures));
            }
            self.closed_floor = self.closed_floor.max(rule.window_closes_at(start));
            // No later window holds the window's oldest pane; its impressions may still be
            // joined (the pane closed now if it had no cut yet).
            if self.keeps_join_cuts() && self.open.contains_key(&start) {
                self.cuts.entry(start).or_insert_with(|| positions.to_vec());
            }
            self.release_pane(start, window, stats, &mut failures);
        }
        // What was handed over is closed here for good (an idle task hands over every window it
        // holds, and its later events of them are late), though the watermark it reports to the
        // merge stays its own. Panes closed but still held by later windows get their cuts.
        let closed = self.closed_through();
        if rule.sliding() {
            for &pane in self.open.keys() {
                if rule.is_closed(pane, closed) {
                    self.cuts.entry(pane).or_insert_with(|| positions.to_vec());
                }
            }
        }
        let joinable = if self.keeps_join_cuts() { rule.joinable_from(closed) } else { i64::MAX };
        self.cuts.retain(|&pane, _| pane >= joinable || !rule.window_is_closed(pane, closed));
        if self.keeps_join_cuts() {
            // Earlier panes' cuts are gone: no click still to be counted joins their impressions.
            self.cuts_from = self.cuts_from.max(joinable);
        }
        self.join.expire(rule.oldest_open(closed));
        (partials, counts, failures)
    }

    /// The window starting at `start`, not handed over yet, as it stands: its events so far and
    /// each plugin's accumulators of its panes held here (to be merged; `Err` with why a plugin's
    /// cannot be shown), without closing anything. Call [`Task::flush`] first. The plugin calls
    /// that failed are returned too (their windows are withheld, as after any failed call).
    pub fn peek(&mut self, start: i64) -> (u64, Vec<PaneStates>, Vec<Failure>) {
        let rule = self.rule;
        let panes: Vec<(i64, u64)> =
            rule.panes_of(start).filter_map(|p| self.open.get(&p).map(|pane| (p, pane.events))).collect();
        let events = panes.iter().map(|&(_, n)| n).sum();
        let mut shares = Vec::with_capacity(self.plugins.len());
        let mut failures = Vec::new();
        for i in 0..self.plugins.len() {
            let slot = &mut self.plugins[i];
            let which = slot.which_for(start);
            let mut states = Vec::new();
            let mut share = Ok(());
            for &(p, _) in &panes {
                if let Some(reason) = slot.withheld.get(&p) {
                    share = Err(format!("withheld: {reason}"));
                    break;
                }
                let key = if rule.sliding() { rule.pane(p) } else { rule.window(start) };
                match slot.instance(which).export_window(key) {
                    Ok(state) => states.extend(state),
                    Err(e) => {
                        share = Err(e.to_string());
                        slot.failed(which, &e, self.open.keys().copied());
                        failures.push((i, which, e));
                        break;
                    }
                }
            }
            shares.push(share.map(|()| states));
        }
        (events, shares, failures)
    }

    /// Plugin `i`'s share of the window starting at `start`, made of `panes` (those of the
    /// window with events here, and their events).
    fn share_of(
        &mut self,
        i: usize,
        start: i64,
        panes: &[(i64, u64)],
        events: u64,
        failures: &mut Vec<Failure>,
    ) -> Partial {
        let rule = self.rule;
        let slot = &mut self.plugins[i];
        let which = slot.which_for(start);
        let meta = slot.meta_of(which).clone();
        let withheld = panes.iter().find_map(|(p, _)| slot.withheld.get(p).cloned());
        let exported = if withheld.is_some() {
            Ok(None)
        } else if rule.sliding() {
            window_of_panes(slot.instance(which), rule, start, panes)
        } else {
            slot.instance(which).export_window(rule.window(start))
        };
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
        Partial {
            task: self.id,
            window_start_ms: start,
            plugin: meta.name,
            version: meta.version,
            state_version: meta.state_version,
            events,
            share,
        }
    }

    /// Drops the pane starting at `start` (no window to come holds it): its events and each
    /// plugin's accumulator of it (`window`: the pane's last window; the pane itself
    /// when tumbling). If dropping fails, the instance restarts, and the panes still open lose
    /// its state.
    fn release_pane(&mut self, start: i64, window: Window, stats: &mut Stats, failures: &mut Vec<Failure>) {
        // Clicks re-read after a restart into a closed pane wait for their impression until
        // the pane goes (with tumbling windows there are none left here).
        stats.clicks_unattributed += self.join.close_window(start);
        if self.open.remove(&start).is_none() {
            return;
        }
        let pane = if self.rule.sliding() { self.rule.pane(start) } else { window };
        for i in 0..self.plugins.len() {
            let slot = &mut self.plugins[i];
            if slot.withheld.remove(&start).is_some() {
                continue;
            }
            let which = slot.which_for(start);
            if let Err(e) = slot.instance(which).close_window(pane) {
                slot.failed(which, &e, self.open.keys().copied());
                failures.push((i, which, e));
            }
        }
    }

    /// The merge published through the window starting at `start`: a version retiring after
    /// a swap is no longer needed for it.
    pub fn published(&mut self, start: i64) {
        for slot in &mut self.plugins {
            slot.emitted(start);
        }
    }
}

/// The accumulator of the window starting at `start`, merged from its `panes` in `instance`:
/// restored into the window's oldest pane's place (that pane is dropped next: no later window
/// holds it) and merged there. `None` if no pane has state.
fn window_of_panes(
    instance: &mut dyn crate::plugin::Aggregator,
    rule: WindowRule,
    start: i64,
    panes: &[(i64, u64)],
) -> Result<Option<Vec<u8>>, PluginError> {
    let mut states = Vec::with_capacity(panes.len());
    for &(p, _) in panes {
        if let Some(state) = instance.export_window(rule.pane(p))? {
            states.push(state);
        }
    }
    let Some((first, rest)) = states.split_first() else { return Ok(None) };
    if rest.is_empty() && panes.first().is_some_and(|&(p, _)| p == start) {
        return Ok(Some(first.clone()));
    }
    let key = rule.pane(start);
    instance.restore_window(key, first)?;
    for state in rest {
        instance.merge_window(key, state)?;
    }
    let merged = instance.export_window(key)?;
    // A pane without events here is not dropped with the others: drop its place now.
    if !panes.iter().any(|&(p, _)| p == start) {
        instance.close_window(key)?;
    }
    Ok(merged)
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

/// Where partition `side` had been read when a pane closed, from the pane's row of cuts. A
/// place the row lacks (resumed from a checkpoint of the task's other partition only) says
/// nothing: every re-read event counts as on time there, as before the cuts existed.
fn cut(row: &[i64], side: PartitionId) -> i64 {
    row.get(side).copied().unwrap_or(i64::MAX)
}
