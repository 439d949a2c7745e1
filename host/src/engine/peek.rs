//! Live figures of the windows not published yet: what each plugin would publish for a window
//! if it closed now, without closing it (Kafka Streams' interactive queries, for our windows).
//!
//! No new plugin call is needed, so every plugin already written can be peeked at: each task
//! exports its accumulators of the window's panes (`export-window` leaves them in place), a
//! fresh instance of the plugin (of the version in charge of the window) merges them
//! (`merge-window`) and closes that copy (`close-window`), which returns the records; the
//! instance is then dropped. The tasks' and the merge stage's instances see only
//! `export-window`, which the WIT allows at any time. A task that has already handed the window
//! over contributes the partial it handed over.
//!
//! The figures are those of this host's tasks (under scale-out, the others' are not here), as of
//! the positions given: they hold exactly the input events below those offsets, less the late,
//! invalid and repeated ones, and clicks whose impression has not come yet. They are marked
//! partial wherever they are shown.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::merge::{Share, TaskId};
use super::{Engine, WindowResults, positions};
use crate::plugin::Aggregator;

/// At most this many open windows are shown, the oldest first.
const MAX_SHOWN: usize = 10;

/// What this host's tasks hold of the windows not published yet.
#[derive(Clone, Debug, Serialize)]
pub struct OpenWindows {
    /// Always true: none of these figures is a published result.
    pub partial: bool,
    /// The tasks whose shares are in the figures (those this host runs).
    pub tasks: Vec<TaskId>,
    /// Where each of their partitions had been read when the figures were taken.
    pub positions: Vec<Position>,
    pub windows: Vec<OpenWindow>,
}

/// Before the first figures are taken (they are taken only while someone looks, every second),
/// and after a rebalance: no window yet, and still never a published result.
impl Default for OpenWindows {
    fn default() -> Self {
        OpenWindows { partial: true, tasks: Vec::new(), positions: Vec::new(), windows: Vec::new() }
    }
}

/// An input partition and the offset below which its events are in the figures.
#[derive(Clone, Debug, Serialize)]
pub struct Position {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
}

/// One window not published yet.
#[derive(Clone, Debug, Serialize)]
pub struct OpenWindow {
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    /// Events counted in it so far: impressions, and clicks attributed to one.
    pub events: u64,
    /// Each plugin's records, were the window to close now.
    pub results: Vec<WindowResults>,
    /// Plugins whose figures cannot be shown (a failed instance's window is withheld), and why.
    pub unavailable: BTreeMap<String, String>,
}

impl Engine {
    /// The current figures of the windows still open at a task of this host, oldest first (see
    /// the module's documentation). Hands the buffered events to the plugins first.
    pub fn peek_open(&mut self) -> OpenWindows {
        self.flush();
        let rule = self.rule;
        let mut starts = BTreeSet::new();
        for task in &self.tasks {
            let closed = task.closed_through();
            for pane in task.open_windows() {
                let mut start = rule.first_window_of(pane);
                while start <= pane {
                    if !rule.window_is_closed(start, closed) {
                        starts.insert(start);
                    }
                    start = start.saturating_add(rule.slide_ms);
                }
            }
        }
        let mut positions_now = Vec::new();
        // Kept while the figures are taken; one per plugin, made on first use.
        let mut scratch: Vec<Option<Box<dyn Aggregator>>> = Vec::new();
        for task in &self.tasks {
            for (&p, next) in task.inputs.iter().zip(positions(task, &self.offsets)) {
                let info = &self.partitions[p];
                positions_now.push(Position {
                    topic: info.topic.clone(),
                    partition: info.partition,
                    next_offset: next.max(0),
                });
            }
        }
        let windows = starts.into_iter().take(MAX_SHOWN).map(|start| self.peek_window(start, &mut scratch)).collect();
        OpenWindows {
            partial: true,
            tasks: self.tasks.iter().map(|t| t.id).collect(),
            positions: positions_now,
            windows,
        }
    }

    fn peek_window(&mut self, start: i64, scratch: &mut Vec<Option<Box<dyn Aggregator>>>) -> OpenWindow {
        let rule = self.rule;
        let plugins = self.merge.slots().len();
        let mut events = 0;
        let mut states: Vec<Result<Vec<Vec<u8>>, String>> = vec![Ok(Vec::new()); plugins];
        let mut add = |i: usize, share: Result<Vec<Vec<u8>>, String>| {
            if let Ok(held) = &mut states[i] {
                match share {
                    Ok(more) => held.extend(more),
                    Err(reason) => states[i] = Err(reason),
                }
            }
        };
        for t in 0..self.tasks.len() {
            let task = &mut self.tasks[t];
            if !rule.window_is_closed(start, task.closed_through()) {
                let (n, shares, failures) = task.peek(start);
                events += n;
                for (i, share) in shares.into_iter().enumerate() {
                    add(i, share);
                }
                self.report_failures(t, failures);
                continue;
            }
            // Handed over: the partials it sent (through Kafka), or the merge holds them here.
            let id = task.id;
            let handed: Vec<&super::merge::Partial> = match self.exchange {
                Some(_) => self.sent.get(&start).into_iter().flatten().filter(|p| p.task == id).collect(),
                None => self.merge.pending_partials(start).filter(|p| p.task == id).collect(),
            };
            for partial in handed {
                let Some(i) = self.merge.slots().iter().position(|s| s.meta().name == partial.plugin) else { continue };
                if i == 0 {
                    events += partial.events;
                }
                add(
                    i,
                    match &partial.share {
                        Share::State(bytes) => Ok(vec![bytes.clone()]),
                        Share::Empty => Ok(Vec::new()),
                        Share::Withheld(reason) => Err(format!("withheld: {reason}")),
                    },
                );
            }
        }
        let window = rule.window(start);
        let mut results = Vec::new();
        let mut unavailable = BTreeMap::new();
        scratch.resize_with(plugins, || None);
        for (i, states) in states.into_iter().enumerate() {
            let slot = &mut self.merge.slots_mut()[i];
            let which = slot.which_for(start);
            let meta = slot.meta_of(which).clone();
            let states = match states {
                Ok(states) => states,
                Err(reason) => {
                    unavailable.insert(meta.name.clone(), reason);
                    continue;
                }
            };
            // A fresh instance of the version in charge of the window (a swap may be finishing),
            // made once per peek: the copy is merged and closed there.
            let fresh = match &scratch[i] {
                Some(s) if s.meta().hash == meta.hash => Ok(()),
                _ => slot.instance(which).fresh().map(|f| scratch[i] = Some(f)),
            };
            let closed = fresh.map_err(|e| format!("{e:#}")).and_then(|()| {
                let instance = scratch[i].as_mut().expect("made above");
                states
                    .iter()
                    .try_for_each(|s| instance.merge_window(window, s))
                    .and_then(|()| instance.close_window(window))
                    .map_err(|e| {
                        // Its state is unknown now: the next window gets another.
                        scratch[i] = None;
                        e.to_string()
                    })
            });
            match closed {
                Ok(records) => results.push(WindowResults::new(&meta, window, &records)),
                Err(reason) => {
                    tracing::warn!(plugin = %meta.name, window = %adstream_abi::time::format_rfc3339_millis(start), %reason, "a window's live figures could not be computed");
                    unavailable.insert(meta.name.clone(), reason);
                }
            }
        }
        OpenWindow { window_start_ms: window.start_ms, window_end_ms: window.end_ms, events, results, unavailable }
    }
}
