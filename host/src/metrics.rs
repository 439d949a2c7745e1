//! The pipeline's counters and gauges.
//!
//! Conservation (SPEC "Nothing is lost"): every message consumed is an impression, a click
//! (attributed, unattributed, or still waiting for its impression), late, dead-lettered, or a
//! re-read of a message an earlier run already handled:
//!
//! `consumed = impressions + clicks_attributed + clicks_unattributed + pending_clicks + late + dead_lettered + replayed`
//!
//! (an attributed click is counted when it is matched, so `clicks_attributed` includes clicks
//! released from pending.)

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
    /// Gauge: the current watermark, epoch ms.
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
    /// `run` only: per emitted window, from the watermark passing its end to its results being
    /// acknowledged by Kafka (the transaction, or the delivery, committed), in µs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub result_latencies_us: Vec<u64>,
}

impl Stats {
    /// Messages accounted for: must equal `consumed` at every moment.
    pub fn accounted(&self) -> u64 {
        self.impressions
            + self.clicks_attributed
            + self.clicks_unattributed
            + self.pending_clicks
            + self.late
            + self.dead_lettered
            + self.replayed
    }
}
