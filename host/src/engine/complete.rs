//! The completeness record of each published window: what its numbers rest on.
//!
//! With each window it publishes, the merge stage publishes one record on the completeness
//! topic (`adstream-window-completeness`, keyed by the window's start): the events counted in
//! it, the late events of it so far, the duplicates dropped and the clicks left unattributed in
//! it, the merge watermark and the idle tasks when it was published, each plugin's name,
//! version and SHA-256, and the tasks that contributed. A late event that comes after the
//! window was published publishes the record again with one more `revision`: the topic is
//! compacted, and the last record of a key supersedes the others.
//!
//! Where the figures come from:
//! - events and duplicates: each task counts them per pane and hands the window's sums over with
//!   its partials (through the partials topic, a `counts` record after them);
//! - unattributed clicks: counted when a pane's first window closes at its task, for every
//!   window that holds the pane at once (a new owner of the task would not decide them again);
//! - late events: the task that decides an event is late counts it for every window that holds
//!   its pane (one, when tumbling). In this process the counts go to the merge before the next
//!   window is published; through the partials topic, in `counts` records with the task's next
//!   checkpoint, in the same transaction as the late copies.
//!
//! Once a window is published, only late events change its record, and the copies and
//! unattributed clicks of tasks whose share is in it (an idle task's share handed over after
//! publication is not, nor are its counts).
//!
//! A merge stage that takes over reads the topic back first ([`Completeness::restore`]), so
//! that an update carries the totals on. Updates are kept for [`UPDATE_HORIZON_MS`] of event
//! time after a window; a late event of an older window is counted in the host's statistics
//! and copied to the late topic as always, but its window's record is not published again.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use adstream_abi::time::format_rfc3339_millis;
use serde::{Deserialize, Serialize};

use super::merge::TaskId;
use crate::plugin::{PluginMeta, Window};

/// How far behind the newest published window a window's record is still updated: one day.
pub const UPDATE_HORIZON_MS: i64 = 24 * 60 * 60 * 1000;

/// What a task adds to a window's record: its duplicates and unattributed clicks at hand-over,
/// late events any time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub late: u64,
    pub duplicates: u64,
    pub unattributed: u64,
}

impl Counts {
    pub fn late(n: u64) -> Self {
        Counts { late: n, ..Counts::default() }
    }

    pub fn is_empty(&self) -> bool {
        *self == Counts::default()
    }

    fn add(&mut self, other: Counts) {
        self.late += other.late;
        self.duplicates += other.duplicates;
        self.unattributed += other.unattributed;
    }
}

/// A plugin a window's numbers came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRef {
    pub name: String,
    pub version: String,
    pub sha256: String,
    /// Its result for the window was withheld (the plugin-errors topic says why).
    #[serde(default)]
    pub withheld: bool,
}

impl PluginRef {
    pub fn of(meta: &PluginMeta, withheld: bool) -> Self {
        PluginRef { name: meta.name.clone(), version: meta.version.clone(), sha256: meta.hash.clone(), withheld }
    }
}

/// One window's completeness record, as published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub window_start: String,
    pub window_end: String,
    pub window_start_ms: i64,
    /// 0 when the window is published; one more with each update.
    pub revision: u64,
    /// Events counted in the window's results: impressions, and clicks attributed to one.
    pub events: u64,
    /// Events of the window that came after their task had closed it (copied to the late topic).
    pub late: u64,
    /// Repeated impressions and clicks of the window dropped (see the README's "Duplicates").
    pub duplicates: u64,
    /// Clicks of the window whose impression never came within the join horizon.
    pub unattributed_clicks: u64,
    /// The merge watermark when the window was published (`null` for a window published with
    /// nothing in it, whose record its late events started).
    pub watermark: Option<String>,
    /// Tasks (task p: partition p of both input topics) whose partials are in the results.
    pub tasks: Vec<TaskId>,
    /// Tasks whose partitions were all idle when the window was published: the merge did not
    /// wait for them (each handed over what it held).
    pub idle_tasks: Vec<TaskId>,
    pub plugins: Vec<PluginRef>,
}

impl Record {
    /// The record of `window`, published now.
    pub fn new(
        window: Window,
        events: u64,
        counts: Counts,
        watermark: Option<i64>,
        tasks: Vec<TaskId>,
        idle_tasks: Vec<TaskId>,
        plugins: Vec<PluginRef>,
    ) -> Self {
        Record {
            window_start: format_rfc3339_millis(window.start_ms),
            window_end: format_rfc3339_millis(window.end_ms),
            window_start_ms: window.start_ms,
            revision: 0,
            events,
            late: counts.late,
            duplicates: counts.duplicates,
            unattributed_clicks: counts.unattributed,
            watermark: watermark.map(format_rfc3339_millis),
            tasks,
            idle_tasks,
            plugins,
        }
    }

    /// The record's key on the topic: the window's start.
    pub fn key(&self) -> &str {
        &self.window_start
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a record serializes")
    }
}

/// What the merge stage knows of windows' completeness: the counts of windows not published
/// yet, and the records of those published within [`UPDATE_HORIZON_MS`].
#[derive(Default)]
pub struct Completeness {
    pending: BTreeMap<i64, Counts>,
    published: BTreeMap<i64, Record>,
    /// A published window at or after this one without a record had nothing published (no
    /// event): a late event of it starts one. Before it, only the records kept are known.
    known_from: i64,
}

/// What [`Completeness::add`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Update<'a> {
    /// The window is not published yet: its record will carry the counts.
    Pending,
    /// The window's record, updated: publish it again.
    Republish(&'a Record),
    /// The window is older than the records kept: its record is not updated.
    TooOld,
    /// Nothing to add to the published record.
    Unchanged,
}

impl Completeness {
    /// Knows every window's record from the start (a merge that never ran before, or replay).
    pub fn new() -> Self {
        Completeness { known_from: i64::MIN, ..Completeness::default() }
    }

    /// Takes the records an earlier merge stage published (the topic read back, by key), those
    /// of windows within the horizon of `first_open`, the first window it had not published.
    /// Windows before that one without a record are not known here (the records may be gone, or
    /// never written by an older version): their late events do not make up a record.
    pub fn restore(records: impl IntoIterator<Item = Record>, first_open: i64) -> Self {
        let horizon = first_open.saturating_sub(UPDATE_HORIZON_MS);
        let published = records.into_iter().filter(|r| r.window_start_ms >= horizon).map(|r| (r.window_start_ms, r));
        Completeness { pending: BTreeMap::new(), published: published.collect(), known_from: first_open }
    }

    /// Adds task `task`'s `counts` to `window`, which is published if `is_published`. Once it
    /// is, only late events count: duplicates and unattributed clicks of a task whose share is
    /// not in the result (an idle task handed it over after publication, which the
    /// plugin-errors topic reports) are not the result's.
    pub fn add(&mut self, window: Window, task: TaskId, counts: Counts, is_published: bool) -> Update<'_> {
        let start = window.start_ms;
        if !is_published {
            self.pending.entry(start).or_default().add(counts);
            return Update::Pending;
        }
        let in_result = self.published.get(&start).is_some_and(|r| r.tasks.contains(&task));
        let counts = if in_result { counts } else { Counts::late(counts.late) };
        if counts.is_empty() {
            return Update::Unchanged;
        }
        let record = match self.published.entry(start) {
            Entry::Occupied(o) => {
                let r = o.into_mut();
                r.revision += 1;
                r
            }
            Entry::Vacant(_) if start < self.known_from => return Update::TooOld,
            // Published with nothing in it: every event of it so far was late.
            Entry::Vacant(v) => {
                v.insert(Record::new(window, 0, Counts::default(), None, Vec::new(), Vec::new(), Vec::new()))
            }
        };
        record.late += counts.late;
        record.duplicates += counts.duplicates;
        record.unattributed_clicks += counts.unattributed;
        Update::Republish(record)
    }

    /// The counts gathered for the window starting at `start`, which is being published.
    pub fn take_pending(&mut self, start: i64) -> Counts {
        self.pending.remove(&start).unwrap_or_default()
    }

    /// Keeps the record of a window just published, and forgets those past the horizon. A
    /// record its late events started (a window taken for published with nothing in it, which a
    /// task then handed over after all) is carried on: its counts added, its revision followed.
    pub fn published(&mut self, mut record: Record) -> &Record {
        let start = record.window_start_ms;
        if let Some(earlier) = self.published.get(&start) {
            record.revision = earlier.revision + 1;
            record.late += earlier.late;
            record.duplicates += earlier.duplicates;
            record.unattributed_clicks += earlier.unattributed_clicks;
        }
        let horizon = start.saturating_sub(UPDATE_HORIZON_MS);
        if horizon > self.known_from {
            self.known_from = horizon;
            self.published = self.published.split_off(&horizon);
        }
        self.published.entry(start).insert_entry(record).into_mut()
    }

    /// The windows with counts that `is_published` says are published though nothing of them
    /// was (every event of them was late, say): their records, to publish now.
    pub fn published_empty(
        &mut self,
        is_published: impl Fn(i64) -> bool,
        window: impl Fn(i64) -> Window,
        watermark: i64,
    ) -> Vec<Record> {
        let done: Vec<i64> = self.pending.keys().copied().filter(|&w| is_published(w)).collect();
        done.into_iter()
            .map(|start| {
                let counts = self.pending.remove(&start).unwrap_or_default();
                let record = Record::new(window(start), 0, counts, Some(watermark), Vec::new(), Vec::new(), Vec::new());
                self.published(record).clone()
            })
            .collect()
    }

    /// The record of the window starting at `start`, if published and kept.
    pub fn record(&self, start: i64) -> Option<&Record> {
        self.published.get(&start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn window(start: i64) -> Window {
        Window { start_ms: start, end_ms: start + MIN }
    }

    fn published(c: &mut Completeness, start: i64, events: u64) -> Record {
        let counts = c.take_pending(start);
        c.published(Record::new(window(start), events, counts, Some(start + MIN), vec![0, 1], vec![1], Vec::new()))
            .clone()
    }

    #[test]
    fn counts_gather_until_publication_and_late_events_after_it_update_the_record() {
        let mut c = Completeness::new();
        let t0 = 1_800_000_000_000 / MIN * MIN;
        assert_eq!(c.add(window(t0), 0, Counts { duplicates: 2, unattributed: 1, late: 0 }, false), Update::Pending);
        assert_eq!(c.add(window(t0), 1, Counts::late(3), false), Update::Pending);
        let r = published(&mut c, t0, 100);
        assert_eq!((r.revision, r.events, r.late, r.duplicates, r.unattributed_clicks), (0, 100, 3, 2, 1));
        let Update::Republish(r) = c.add(window(t0), 0, Counts::late(1), true) else { panic!("republished") };
        assert_eq!((r.revision, r.events, r.late), (1, 100, 4));
        // After publication: the copies and unattributed clicks of a task in the result count;
        // those of a task whose share came too late for it (not in `tasks`) do not.
        let more = Counts { late: 0, duplicates: 5, unattributed: 5 };
        assert_eq!(c.add(window(t0), 7, more, true), Update::Unchanged);
        let Update::Republish(r) = c.add(window(t0), 1, more, true) else { panic!("in the result") };
        assert_eq!((r.revision, r.duplicates, r.unattributed_clicks), (2, 7, 6));
        // A window published with nothing in it gets its first record from its late events.
        let Update::Republish(r) = c.add(window(t0 + MIN), 0, Counts::late(1), true) else { panic!("a first record") };
        assert_eq!((r.revision, r.events, r.late), (0, 0, 1));
        // The record survives a restore and carries the totals on; past the horizon it does not.
        let restored: Vec<Record> = [t0, t0 + MIN].iter().map(|&s| c.record(s).unwrap().clone()).collect();
        let json: Vec<Record> = restored.iter().map(|r| serde_json::from_str(&r.to_json()).unwrap()).collect();
        assert_eq!(json, restored);
        let mut again = Completeness::restore(json, t0 + 2 * MIN);
        let Update::Republish(r) = again.add(window(t0), 0, Counts::late(1), true) else { panic!("restored") };
        assert_eq!((r.revision, r.events, r.late), (3, 100, 5));
        // A window published before the restore whose record was not read back (an older
        // version wrote none, or it is gone): its late events do not make one up.
        assert_eq!(again.add(window(t0 - MIN), 0, Counts::late(1), true), Update::TooOld);
        let Update::Republish(r) = again.add(window(t0 + 2 * MIN), 0, Counts::late(1), true) else { panic!("new") };
        assert_eq!((r.revision, r.events, r.late), (0, 0, 1));
        let mut later = Completeness::restore(restored, t0 + UPDATE_HORIZON_MS + 2 * MIN);
        assert_eq!(later.add(window(t0), 0, Counts::late(1), true), Update::TooOld);
    }
}
