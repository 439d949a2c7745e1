//! The merge stage: the second phase of every aggregation.
//!
//! Each task folds its own events into per-window accumulators (the local phase; per pane, with
//! sliding windows). When a window closes at a task, the task hands over its share of it, one
//! [`Partial`] per plugin: the accumulator's exported bytes (`export-window`; with sliding
//! windows, of its panes merged), or why it has none it can vouch for. Windows are keyed by
//! their start, so sliding windows overlap here without meeting. The
//! merge keeps the partials of every window not published yet and each task's watermark, and
//! publishes a window once the merge watermark has closed it: the smallest over the tasks that
//! are not idle (the largest if all are), the rule a task applies to its own two partitions.
//!
//! Publishing window `w` for one plugin restores the first task's partial into the merge's
//! instance (`restore-window`), merges the others in (`merge-window`, associative and
//! commutative: the order partials arrive in does not matter) and closes it (`close-window`).
//! Unique users stay exact: the accumulators carry sets, and merging is their union.
//!
//! What is never merged into a number: a partial a task could not vouch for (its instance
//! failed while holding the window), partials of different `state-version`s, or of a version
//! the merge has no instance of. The window's result is then withheld, with the reason. A
//! partial that repeats one already held (a replay after a failover) is ignored; one that
//! arrives after its window was published is reported, never folded into a published number.

use std::collections::BTreeMap;

use super::time::WindowRule;
use crate::plugin::slot::Which;
use crate::plugin::{OutputRecord, PluginError, Slot, Window};

/// A task: the partition number `p` of both input topics.
pub type TaskId = i32;

/// What a task knows of one window for one plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Share {
    /// The accumulator, as the plugin's `export-window` wrote it.
    State(Vec<u8>),
    /// The plugin held no state for the window at this task (no event of the kinds it wants).
    Empty,
    /// The task's instance lost the window's state (it failed while holding it): the window's
    /// result cannot be complete.
    Withheld(String),
}

/// One task's share of one window for one plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partial {
    pub task: TaskId,
    pub window_start_ms: i64,
    pub plugin: String,
    pub version: String,
    pub state_version: u32,
    /// Events of the window the task counted (every plugin's partial of a window says the same).
    pub events: u64,
    pub share: Share,
}

/// A task's progress as the merge sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskClock {
    /// Windows this watermark closes are closed at the task: their partials are all in.
    pub watermark: i64,
    /// All the task's partitions are idle: it does not hold the merge back.
    pub idle: bool,
}

/// The partials of one window not published yet.
#[derive(Debug, Default)]
struct Pending {
    /// By plugin (the order of the merge's slots), then by task.
    partials: Vec<BTreeMap<TaskId, Partial>>,
}

/// A window ready to publish.
pub struct Due {
    pub window: Window,
    /// Events counted in it, over every task.
    pub events: u64,
    /// Tasks that contributed a partial.
    pub tasks: Vec<TaskId>,
}

/// What became of a partial handed to [`Merge::add`].
#[derive(Debug, PartialEq, Eq)]
pub enum Added {
    Kept,
    /// The same task's partial of the same window and plugin was already held.
    Duplicate,
    /// Its window was already published: nothing merges into a published number.
    AfterPublication,
    /// Of a plugin the merge does not run (the hosts of a group load different plugins).
    UnknownPlugin,
}

#[derive(Default)]
pub struct Merge {
    rule: WindowRule,
    clocks: BTreeMap<TaskId, TaskClock>,
    /// The merge watermark: every window it closes is due. Never goes back.
    watermark: i64,
    /// Every window this closes is published (or had nothing to publish): no partial of it is
    /// taken any more.
    published: i64,
    pending: BTreeMap<i64, Pending>,
    /// One slot per plugin: the instances windows are merged and closed in.
    slots: Vec<Slot>,
}

impl Merge {
    pub fn new(rule: WindowRule, slots: Vec<Slot>) -> Self {
        Merge {
            rule,
            clocks: BTreeMap::new(),
            watermark: i64::MIN,
            published: i64::MIN,
            pending: BTreeMap::new(),
            slots,
        }
    }

    /// The plugin slots, for a new merge after a rebalance.
    pub fn into_slots(self) -> Vec<Slot> {
        self.slots
    }

    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    pub fn slots_mut(&mut self) -> &mut [Slot] {
        &mut self.slots
    }

    /// Starts from the watermark an earlier run published through.
    pub fn resume(&mut self, watermark: i64) {
        self.watermark = self.watermark.max(watermark);
        self.published = self.published.max(watermark);
    }

    /// The merge watermark: the windows it closes are due (published, once
    /// [`Merge::next_due`] has none left).
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// The watermark through which windows are published.
    pub fn published(&self) -> i64 {
        self.published
    }

    /// The tasks whose partitions are all idle: the merge does not wait for them.
    pub fn idle_tasks(&self) -> Vec<TaskId> {
        self.clocks.iter().filter(|(_, c)| c.idle).map(|(&t, _)| t).collect()
    }

    /// The tasks the merge waits for.
    pub fn tasks(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.clocks.keys().copied()
    }

    /// A task the merge waits for; it holds the merge back until it reports.
    pub fn expect(&mut self, task: TaskId) {
        self.clocks.entry(task).or_insert(TaskClock { watermark: i64::MIN, idle: false });
    }

    /// `task` reports its progress.
    pub fn report(&mut self, task: TaskId, clock: TaskClock) {
        self.clocks.insert(task, clock);
    }

    pub fn add(&mut self, partial: Partial) -> Added {
        if self.rule.window_is_closed(partial.window_start_ms, self.published) {
            return Added::AfterPublication;
        }
        let Some(i) = self.slots.iter().position(|s| s.meta().name == partial.plugin) else {
            return Added::UnknownPlugin;
        };
        let pending = self.pending.entry(partial.window_start_ms).or_default();
        if pending.partials.len() < self.slots.len() {
            pending.partials.resize_with(self.slots.len(), BTreeMap::new);
        }
        match pending.partials[i].entry(partial.task) {
            std::collections::btree_map::Entry::Occupied(_) => Added::Duplicate,
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(partial);
                Added::Kept
            }
        }
    }

    /// Recomputes the merge watermark from the tasks' clocks and returns it. It may go back (a
    /// task that turned busy again, a task added since), but never below what was published:
    /// a published window stays published, and no other window is due until every busy task
    /// has closed it.
    pub fn advance(&mut self) -> i64 {
        let active = self.clocks.values().filter(|c| !c.idle).map(|c| c.watermark).min();
        let candidate = active.or_else(|| self.clocks.values().map(|c| c.watermark).max()).unwrap_or(i64::MIN);
        self.watermark = candidate.max(self.published);
        self.watermark
    }

    /// The oldest window with partials that the merge watermark closes, if any.
    pub fn next_due(&self) -> Option<i64> {
        let (&w, _) = self.pending.first_key_value()?;
        self.rule.window_is_closed(w, self.watermark).then_some(w)
    }

    /// How far in event time, ms, the merge watermark trails the most advanced busy task's (0
    /// until a task has an event time and the merge a watermark), and how many windows hold
    /// partials: what the slowest task holds back.
    pub fn lag(&self) -> (u64, u64) {
        let ahead = self.clocks.values().filter(|c| !c.idle).map(|c| c.watermark).max();
        let known = |t: i64| t > i64::MIN / 2;
        let lag = match ahead {
            Some(a) if known(a) && known(self.watermark) => a.saturating_sub(self.watermark).max(0) as u64,
            _ => 0,
        };
        (lag, self.pending.len() as u64)
    }

    /// The partials held of the window starting at `start`, every plugin's.
    pub fn pending_partials(&self, start: i64) -> impl Iterator<Item = &Partial> + '_ {
        self.pending.get(&start).into_iter().flat_map(|p| p.partials.iter().flat_map(BTreeMap::values))
    }

    /// The windows holding partials, oldest first.
    pub fn pending_windows(&self) -> impl Iterator<Item = i64> + '_ {
        self.pending.keys().copied()
    }

    /// Takes window `start`'s partials out for publishing: from now on it counts as published.
    pub fn take(&mut self, start: i64) -> Option<(Due, Vec<Vec<Partial>>)> {
        self.published = self.published.max(self.rule.window_closes_at(start));
        let pending = self.pending.remove(&start)?;
        let mut events: BTreeMap<TaskId, u64> = BTreeMap::new();
        let mut by_plugin = Vec::with_capacity(self.slots.len());
        for i in 0..self.slots.len() {
            let partials: Vec<Partial> =
                pending.partials.get(i).map(|m| m.values().cloned().collect()).unwrap_or_default();
            for p in &partials {
                events.insert(p.task, p.events);
            }
            by_plugin.push(partials);
        }
        let window = self.rule.window(start);
        let due = Due { window, events: events.values().sum(), tasks: events.keys().copied().collect() };
        Some((due, by_plugin))
    }

    /// Merges plugin `i`'s partials of `window` and closes it: the records, with the instance
    /// that produced them, or why there are none to publish.
    /// `contributors` are the tasks that sent any plugin's partial of the window: each must have
    /// sent this plugin's too, or its host does not run it and the result would miss its events.
    pub fn close(
        &mut self,
        i: usize,
        window: Window,
        partials: &[Partial],
        contributors: &[TaskId],
    ) -> (Which, Result<Vec<OutputRecord>, Refusal>) {
        let slot = &mut self.slots[i];
        let which = slot.which_for(window.start_ms);
        let meta = slot.meta_of(which).clone();
        let missing: Vec<TaskId> =
            contributors.iter().copied().filter(|t| !partials.iter().any(|p| p.task == *t)).collect();
        if !missing.is_empty() {
            return (
                which,
                Err(Refusal::Withheld(format!(
                    "tasks {missing:?} sent partials of this window for other plugins but none of {}: their hosts do not run it (every host of a group must load the same plugins)",
                    meta.name
                ))),
            );
        }
        if let Some(p) = partials.iter().find_map(|p| match &p.share {
            Share::Withheld(reason) => Some(format!("task {}: {reason}", p.task)),
            _ => None,
        }) {
            return (which, Err(Refusal::Withheld(p)));
        }
        if let Some(p) = partials.iter().find(|p| p.state_version != meta.state_version) {
            return (
                which,
                Err(Refusal::Withheld(format!(
                    "task {} exported this window with {} version {} (state-version {}), but the window is merged by version {} (state-version {}): accumulators of different state versions are never merged",
                    p.task, p.plugin, p.version, p.state_version, meta.version, meta.state_version
                ))),
            );
        }
        let mut restored = false;
        for p in partials {
            let Share::State(bytes) = &p.share else { continue };
            let result = if restored {
                slot.instance(which).merge_window(window, bytes)
            } else {
                slot.instance(which).restore_window(window, bytes)
            };
            if let Err(e) = result {
                return (which, Err(Refusal::Failed(e)));
            }
            restored = true;
        }
        match slot.instance(which).close_window(window) {
            Ok(records) => (which, Ok(records)),
            Err(e) => (which, Err(Refusal::Failed(e))),
        }
    }
}

/// Why the merge has no records of a window for a plugin.
pub enum Refusal {
    /// A reason known before any call: published in place of the result.
    Withheld(String),
    /// A call failed: the merge's instance restarts empty.
    Failed(PluginError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::NativeAggregator;

    fn rule() -> WindowRule {
        WindowRule { window_ms: 60_000, slide_ms: 60_000, allowed_lateness_ms: 0, join_horizon_ms: 0 }
    }

    fn merge() -> Merge {
        Merge::new(rule(), vec![Slot::new(Box::new(NativeAggregator::<ctr::Ctr>::new("ctr", "ctr")))])
    }

    #[test]
    fn the_slowest_busy_task_holds_the_merge_and_idle_ones_do_not() {
        let mut m = merge();
        m.expect(0);
        m.expect(1);
        assert_eq!(m.advance(), i64::MIN, "task 1 has not reported");
        m.report(0, TaskClock { watermark: 120_000, idle: false });
        m.report(1, TaskClock { watermark: 60_000, idle: false });
        assert_eq!(m.advance(), 60_000);
        m.report(1, TaskClock { watermark: 60_000, idle: true });
        assert_eq!(m.advance(), 120_000);
        m.report(0, TaskClock { watermark: 130_000, idle: true });
        assert_eq!(m.advance(), 130_000, "all idle: the largest");
        m.report(1, TaskClock { watermark: 61_000, idle: false });
        assert_eq!(m.advance(), 61_000, "a task busy again holds it back");
        m.expect(2);
        assert_eq!(m.advance(), i64::MIN, "so does a task added since");
        m.resume(60_000);
        assert_eq!(m.advance(), 60_000, "never below what was published");
    }

    #[test]
    fn the_lag_is_how_far_the_slowest_busy_task_holds_the_merge_back() {
        let mut m = merge();
        m.expect(0);
        m.expect(1);
        m.report(0, TaskClock { watermark: 120_000, idle: false });
        m.advance();
        assert_eq!(m.lag(), (0, 0), "the merge has no watermark yet: task 1 has not reported");
        m.report(1, TaskClock { watermark: 45_000, idle: false });
        m.advance();
        assert_eq!(m.lag(), (75_000, 0));
        m.report(1, TaskClock { watermark: 45_000, idle: true });
        m.advance();
        assert_eq!(m.lag(), (0, 0), "an idle task holds nothing back");
    }

    #[test]
    fn partials_of_one_window_with_different_state_versions_are_withheld_not_merged() {
        // A swap that one host took and another did not: task 1 exported with state version 2.
        let mut m = merge();
        let partial = |task, state_version| Partial {
            task,
            window_start_ms: 0,
            plugin: "ctr".into(),
            version: if state_version == 0 { "native".into() } else { "next".into() },
            state_version,
            events: 1,
            share: Share::Empty,
        };
        assert_eq!(m.add(partial(0, 0)), Added::Kept);
        assert_eq!(m.add(partial(1, 2)), Added::Kept);
        let (due, by_plugin) = m.take(0).expect("pending");
        let (_, result) = m.close(0, due.window, &by_plugin[0], &due.tasks);
        assert!(
            matches!(&result, Err(Refusal::Withheld(r)) if r.contains("task 1") && r.contains("never merged")),
            "{:?}",
            result.as_ref().err().map(|e| match e {
                Refusal::Withheld(r) => r.clone(),
                Refusal::Failed(e) => e.to_string(),
            })
        );
    }

    #[test]
    fn a_window_a_task_sent_no_partial_of_for_a_plugin_is_withheld() {
        let mut m = Merge::new(
            rule(),
            vec![
                Slot::new(Box::new(NativeAggregator::<ctr::Ctr>::new("ctr", "ctr"))),
                Slot::new(Box::new(NativeAggregator::<ctr::Ctr>::new("spend", "spend"))),
            ],
        );
        let partial = |task, plugin: &str| Partial {
            task,
            window_start_ms: 0,
            plugin: plugin.into(),
            version: "native".into(),
            state_version: 0,
            events: 1,
            share: Share::Empty,
        };
        // Task 1's host runs ctr only (and a plugin the merge does not know).
        for p in [partial(0, "ctr"), partial(0, "spend"), partial(1, "ctr")] {
            assert_eq!(m.add(p), Added::Kept);
        }
        assert_eq!(m.add(partial(1, "other")), Added::UnknownPlugin);
        let (due, by_plugin) = m.take(0).expect("pending");
        assert_eq!(due.tasks, [0, 1]);
        assert!(m.close(0, due.window, &by_plugin[0], &due.tasks).1.is_ok());
        let (_, spend) = m.close(1, due.window, &by_plugin[1], &due.tasks);
        assert!(matches!(spend, Err(Refusal::Withheld(r)) if r.contains("[1]") && r.contains("same plugins")));
    }

    #[test]
    fn duplicates_are_ignored_and_late_partials_refused() {
        let mut m = merge();
        let p = Partial {
            task: 0,
            window_start_ms: 0,
            plugin: "ctr".into(),
            version: "native".into(),
            state_version: 0,
            events: 0,
            share: Share::Empty,
        };
        assert_eq!(m.add(p.clone()), Added::Kept);
        assert_eq!(m.add(p.clone()), Added::Duplicate);
        m.resume(60_000);
        assert_eq!(m.next_due(), Some(0));
        assert_eq!(m.add(Partial { task: 1, ..p }), Added::AfterPublication);
    }
}
