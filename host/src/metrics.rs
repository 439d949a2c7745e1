//! The pipeline's counters and gauges.
//!
//! Conservation (SPEC "Nothing is lost"): every message consumed is an impression, a click
//! (attributed, unattributed, or still waiting for its impression), late, dead-lettered, a
//! duplicate (the id and time of an event its task holds: see `engine::join`), or a re-read of a message an
//! earlier run already handled:
//!
//! `consumed = impressions + clicks_attributed + clicks_unattributed + pending_clicks + late + dead_lettered + duplicates + replayed`
//!
//! (an attributed click is counted when it is matched, so `clicks_attributed` includes clicks
//! released from pending.) Copies cut to fit their topic (`truncated`) are among the late and
//! dead-lettered, not beside them. When `run` starts again from its last checkpoint after
//! Kafka failed it, the attempts' counters add up ([`Stats::then`]): the messages read after
//! that checkpoint are read, and counted, again, and the identity holds over the whole run.

use std::sync::OnceLock;
use std::time::Instant;

use serde::Serialize;

static STARTED: OnceLock<Instant> = OnceLock::new();

/// Marks the start of the process (the first thing `main` does), for start-up figures.
pub fn process_started() {
    STARTED.get_or_init(Instant::now);
}

/// Time since [`process_started`] (or since the first call, if it was never called).
pub fn since_start() -> std::time::Duration {
    STARTED.get_or_init(Instant::now).elapsed()
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Input messages read.
    pub consumed: u64,
    /// Valid impressions counted into a window.
    pub impressions: u64,
    /// Valid clicks matched to their impression and counted into a window.
    pub clicks_attributed: u64,
    /// Valid clicks whose impression never arrived within the horizon.
    pub clicks_unattributed: u64,
    /// Events whose window was already emitted, sent to the late topic.
    pub late: u64,
    /// Invalid messages, sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// On-time events dropped because their task already held one with the same id
    /// (`impression_id`, `click_id`) and event time: a producer's retried copies. 0 with
    /// `--keep-duplicates`.
    pub duplicates: u64,
    /// Messages re-read after a restart that an earlier run had already handled.
    pub replayed: u64,
    /// Windows emitted.
    pub windows_emitted: u64,
    /// Result records produced by the plugins.
    pub results: u64,
    /// Failed plugin calls (traps, deadlines, memory, bad output).
    pub plugin_errors: u64,
    /// (plugin, window) results withheld because the plugin failed while holding the window.
    pub windows_withheld: u64,
    /// Plugin records withheld because they were larger than their topic takes.
    pub records_withheld: u64,
    /// Late and dead-letter copies cut to fit their topic (also counted as late or
    /// dead-lettered).
    pub truncated: u64,
    /// Times `run` started again from the last checkpoint after Kafka failed it.
    pub restarts: u64,
    /// Times the consumer group moved partitions to or from this host.
    pub rebalances: u64,
    /// Gauge: tasks (partition pairs) this host runs.
    pub tasks: u64,
    /// Gauge: 1 if this host runs the merge stage (owns the partials topic), else 0.
    pub merge_stage: u64,
    /// Gauge: the consumer group generation this host's members joined last (0 before).
    pub group_generation: u64,
    /// Gauge, on the merge stage's host: how far in event time, ms, the merge watermark trails
    /// the most advanced busy task's (what the slowest task holds back).
    pub merge_lag_ms: u64,
    /// Gauge, on the merge stage's host: windows whose partials wait for another task.
    pub merge_pending_windows: u64,
    /// Gauge: the current watermark, epoch ms: on the merge stage's host the merge watermark
    /// (through which results are published), elsewhere the lowest of the host's tasks'.
    pub watermark_ms: i64,
    /// Gauge: windows open.
    pub open_windows: u64,
    /// Gauge: impressions kept for the join.
    pub join_impressions: u64,
    /// Gauge: clicks waiting for their impression.
    pub pending_clicks: u64,
    /// `run` only: from process start to the first message consumed, in µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub startup_to_first_message_us: Option<u64>,
    /// `run` only: per emitted window, from every task's watermark passing its end (as far as
    /// this host knows: see `Engine::take_emitted`) to its results being acknowledged by Kafka
    /// (the transaction, or the delivery, committed), in µs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub result_latencies_us: Vec<u64>,
}

impl Stats {
    /// The counters of `self` and of `later` (a later attempt of the same run) added up, with
    /// `later`'s gauges.
    pub fn then(&self, later: &Stats) -> Stats {
        Stats {
            consumed: self.consumed + later.consumed,
            impressions: self.impressions + later.impressions,
            clicks_attributed: self.clicks_attributed + later.clicks_attributed,
            clicks_unattributed: self.clicks_unattributed + later.clicks_unattributed,
            late: self.late + later.late,
            dead_lettered: self.dead_lettered + later.dead_lettered,
            duplicates: self.duplicates + later.duplicates,
            replayed: self.replayed + later.replayed,
            windows_emitted: self.windows_emitted + later.windows_emitted,
            results: self.results + later.results,
            plugin_errors: self.plugin_errors + later.plugin_errors,
            windows_withheld: self.windows_withheld + later.windows_withheld,
            records_withheld: self.records_withheld + later.records_withheld,
            truncated: self.truncated + later.truncated,
            restarts: self.restarts + later.restarts,
            rebalances: self.rebalances + later.rebalances,
            // Clicks an ended attempt held pending were consumed there (and are read again by
            // the next one): adding them keeps `consumed == accounted()` over the whole run.
            pending_clicks: self.pending_clicks + later.pending_clicks,
            ..later.clone()
        }
    }

    /// The figures of the host's pipeline threads together: every counter and size adds up
    /// (each thread runs tasks of its own); the watermark is the lowest of the threads that run
    /// a task or the merge.
    pub fn host<'a>(threads: impl IntoIterator<Item = &'a Stats>) -> Stats {
        let mut host = Stats::default();
        let mut watermark: Option<i64> = None;
        for t in threads {
            // `then` adds the counters (and the pending clicks); the other gauges add up here.
            let gauges = (host.tasks, host.merge_stage, host.open_windows, host.join_impressions);
            let merge = (host.group_generation, host.merge_lag_ms, host.merge_pending_windows);
            let first = host.startup_to_first_message_us;
            let mut latencies = std::mem::take(&mut host.result_latencies_us);
            host = host.then(t);
            host.tasks += gauges.0;
            host.merge_stage = host.merge_stage.max(gauges.1);
            host.open_windows += gauges.2;
            host.join_impressions += gauges.3;
            // One thread runs the merge; every member shares the group's generation.
            host.group_generation = host.group_generation.max(merge.0);
            host.merge_lag_ms = host.merge_lag_ms.max(merge.1);
            host.merge_pending_windows = host.merge_pending_windows.max(merge.2);
            host.startup_to_first_message_us = match (first, t.startup_to_first_message_us) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            latencies.extend_from_slice(&t.result_latencies_us);
            host.result_latencies_us = latencies;
            if t.tasks > 0 || t.merge_stage > 0 {
                watermark = Some(watermark.map_or(t.watermark_ms, |w| w.min(t.watermark_ms)));
            }
        }
        if let Some(w) = watermark {
            host.watermark_ms = w;
        }
        host
    }

    /// Messages accounted for: must equal `consumed` at every moment.
    pub fn accounted(&self) -> u64 {
        self.impressions
            + self.clicks_attributed
            + self.clicks_unattributed
            + self.pending_clicks
            + self.late
            + self.dead_lettered
            + self.duplicates
            + self.replayed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_s_figures_are_its_threads_added_up_with_the_lowest_busy_watermark() {
        let busy =
            Stats { consumed: 10, impressions: 7, pending_clicks: 3, tasks: 2, watermark_ms: 500, ..Stats::default() };
        let merging = Stats {
            consumed: 5,
            late: 4,
            duplicates: 1,
            tasks: 1,
            merge_stage: 1,
            watermark_ms: 300,
            ..Stats::default()
        };
        let idle = Stats { watermark_ms: 0, startup_to_first_message_us: Some(9), ..Stats::default() };
        let host = Stats::host([&busy, &merging, &idle]);
        assert_eq!((host.consumed, host.accounted(), host.duplicates), (15, 15, 1));
        assert_eq!((host.tasks, host.merge_stage, host.watermark_ms), (3, 1, 300));
        assert_eq!(host.startup_to_first_message_us, Some(9));
    }
}
