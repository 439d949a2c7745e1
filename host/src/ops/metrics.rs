//! `/metrics`: the host's counters and gauges in the Prometheus (OpenMetrics) text format.
//!
//! The pipeline thread never touches these: it publishes a snapshot a few times a second
//! ([`super::Ops::publish`]) and the snapshot is copied in here, so the per-event path stays free
//! of atomics and locks. Every name is listed in [`NAMES`], which the dashboard test checks
//! the Grafana dashboard against.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::{PartitionStatus, PluginStatus};
use crate::engine::WindowResults;
use crate::metrics::Stats;

type Labels = Vec<(&'static str, String)>;
type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Every metric family the host exports, as Prometheus names it (counters with `_total`,
/// histograms with their `_bucket`/`_sum`/`_count` series).
pub const NAMES: &[&str] = &[
    "adstream_messages_consumed_total",
    "adstream_impressions_total",
    "adstream_clicks_attributed_total",
    "adstream_clicks_unattributed_total",
    "adstream_late_events_total",
    "adstream_dead_lettered_total",
    "adstream_duplicates_total",
    "adstream_replayed_total",
    "adstream_windows_emitted_total",
    "adstream_result_records_total",
    "adstream_windows_withheld_total",
    "adstream_records_withheld_total",
    "adstream_truncated_copies_total",
    "adstream_restarts_total",
    "adstream_rebalances_total",
    "adstream_tasks",
    "adstream_merge_stage",
    "adstream_pipeline_threads",
    "adstream_group_generation",
    "adstream_merge_lag_seconds",
    "adstream_merge_pending_windows",
    "adstream_plugin_errors_total",
    "adstream_plugin_swaps_total",
    "adstream_watermark_seconds",
    "adstream_watermark_delay_seconds",
    "adstream_open_windows",
    "adstream_join_impressions",
    "adstream_pending_clicks",
    "adstream_ready",
    "adstream_partition_offset",
    "adstream_partition_lag_messages",
    "adstream_partition_watermark_seconds",
    "adstream_plugin_info",
    "adstream_result_value",
    "adstream_result_window_start_seconds",
    "adstream_window_result_latency_seconds_bucket",
    "adstream_window_result_latency_seconds_sum",
    "adstream_window_result_latency_seconds_count",
];

/// Result records of one window exported as `adstream_result_value` gauges, at most: enough for
/// 100 campaigns with three numbers each, and a bound on the series a plugin with many keys
/// makes.
pub const MAX_RESULT_SERIES: usize = 1000;

pub struct Metrics {
    registry: Registry,
    consumed: Counter,
    impressions: Counter,
    clicks_attributed: Counter,
    clicks_unattributed: Counter,
    late: Counter,
    dead_lettered: Counter,
    duplicates: Counter,
    replayed: Counter,
    windows_emitted: Counter,
    results: Counter,
    windows_withheld: Counter,
    records_withheld: Counter,
    truncated: Counter,
    restarts: Counter,
    rebalances: Counter,
    tasks: Gauge,
    merge_stage: Gauge,
    threads: Gauge,
    group_generation: Gauge,
    merge_lag: FloatGauge,
    merge_pending_windows: Gauge,
    plugin_errors: Family<Labels, Counter>,
    swaps: Family<Labels, Counter>,
    watermark: FloatGauge,
    watermark_delay: FloatGauge,
    open_windows: Gauge,
    join_impressions: Gauge,
    pending_clicks: Gauge,
    ready: Gauge,
    partition_offset: Family<Labels, Gauge>,
    partition_lag: Family<Labels, Gauge>,
    partition_watermark: Family<Labels, FloatGauge>,
    plugin_info: Family<Labels, Gauge>,
    result_value: Family<Labels, FloatGauge>,
    result_window: Family<Labels, FloatGauge>,
    latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("adstream"),
            consumed: Counter::default(),
            impressions: Counter::default(),
            clicks_attributed: Counter::default(),
            clicks_unattributed: Counter::default(),
            late: Counter::default(),
            dead_lettered: Counter::default(),
            duplicates: Counter::default(),
            replayed: Counter::default(),
            windows_emitted: Counter::default(),
            results: Counter::default(),
            windows_withheld: Counter::default(),
            records_withheld: Counter::default(),
            truncated: Counter::default(),
            restarts: Counter::default(),
            rebalances: Counter::default(),
            tasks: Gauge::default(),
            merge_stage: Gauge::default(),
            threads: Gauge::default(),
            group_generation: Gauge::default(),
            merge_lag: FloatGauge::default(),
            merge_pending_windows: Gauge::default(),
            plugin_errors: Family::default(),
            swaps: Family::default(),
            watermark: FloatGauge::default(),
            watermark_delay: FloatGauge::default(),
            open_windows: Gauge::default(),
            join_impressions: Gauge::default(),
            pending_clicks: Gauge::default(),
            ready: Gauge::default(),
            partition_offset: Family::default(),
            partition_lag: Family::default(),
            partition_watermark: Family::default(),
            plugin_info: Family::default(),
            result_value: Family::default(),
            result_window: Family::default(),
            // 1 ms to ~33 s.
            latency: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
        };
        let r = &mut m.registry;
        r.register("messages_consumed", "Input messages read from Kafka", m.consumed.clone());
        r.register("impressions", "Valid impressions counted into a window", m.impressions.clone());
        r.register("clicks_attributed", "Clicks matched to their impression and counted", m.clicks_attributed.clone());
        r.register(
            "clicks_unattributed",
            "Valid clicks whose impression never arrived within the join horizon",
            m.clicks_unattributed.clone(),
        );
        r.register("late_events", "Events whose window was already emitted, sent to the late topic", m.late.clone());
        r.register("dead_lettered", "Invalid messages sent to the dead-letter topic", m.dead_lettered.clone());
        r.register(
            "duplicates",
            "On-time events dropped as retried copies: their task held one with the same id and event time",
            m.duplicates.clone(),
        );
        r.register("replayed", "Messages re-read after a restart that an earlier run had handled", m.replayed.clone());
        r.register("windows_emitted", "Windows whose results were published", m.windows_emitted.clone());
        r.register("result_records", "Result records the plugins produced", m.results.clone());
        r.register(
            "windows_withheld",
            "Per-plugin window results withheld because the plugin failed while holding the window",
            m.windows_withheld.clone(),
        );
        r.register(
            "records_withheld",
            "Plugin result records withheld because they were larger than their topic takes (see adstream-plugin-errors)",
            m.records_withheld.clone(),
        );
        r.register(
            "truncated_copies",
            "Late and dead-letter copies cut to fit their topic (header truncated=true; also counted as late or dead-lettered)",
            m.truncated.clone(),
        );
        r.register(
            "restarts",
            "Times the pipeline started again from the last checkpoint after Kafka failed it",
            m.restarts.clone(),
        );
        r.register(
            "rebalances",
            "Times the consumer group moved partitions to or from this host",
            m.rebalances.clone(),
        );
        r.register("tasks", "Tasks (partition p of both input topics) this host runs", m.tasks.clone());
        r.register(
            "merge_stage",
            "1 if this host runs the merge stage (it owns the partials topic), else 0",
            m.merge_stage.clone(),
        );
        r.register(
            "pipeline_threads",
            "Pipeline threads of this host (--threads), each a member of the consumer group",
            m.threads.clone(),
        );
        r.register(
            "group_generation",
            "The consumer group generation this host's members joined last",
            m.group_generation.clone(),
        );
        r.register(
            "merge_lag_seconds",
            "On the merge stage's host: how far in event time the merge watermark trails the most advanced busy task (what the slowest task holds back)",
            m.merge_lag.clone(),
        );
        r.register(
            "merge_pending_windows",
            "On the merge stage's host: windows whose partials wait for another task",
            m.merge_pending_windows.clone(),
        );
        r.register("plugin_errors", "Failed plugin calls and unusable plugin records", m.plugin_errors.clone());
        r.register(
            "plugin_swaps",
            "Live plugin swaps, by outcome (applied, rejected, unchanged: the file was the version running)",
            m.swaps.clone(),
        );
        r.register("watermark_seconds", "The pipeline's watermark, Unix seconds", m.watermark.clone());
        r.register(
            "watermark_delay_seconds",
            "How far the watermark trails the wall clock, in seconds",
            m.watermark_delay.clone(),
        );
        r.register("open_windows", "Windows holding events, not emitted yet", m.open_windows.clone());
        r.register("join_impressions", "Impressions kept for the click join", m.join_impressions.clone());
        r.register("pending_clicks", "Clicks waiting for their impression", m.pending_clicks.clone());
        r.register("ready", "1 when consuming and Kafka answers, else 0", m.ready.clone());
        r.register("partition_offset", "Next offset to read, per input partition", m.partition_offset.clone());
        r.register(
            "partition_lag_messages",
            "Messages not read yet (high watermark minus next offset), per input partition",
            m.partition_lag.clone(),
        );
        r.register(
            "partition_watermark_seconds",
            "Per input partition: largest event time seen minus the allowed out-of-orderness, Unix seconds",
            m.partition_watermark.clone(),
        );
        r.register(
            "plugin_info",
            "1 per loaded plugin version, with its name, version, hash and status",
            m.plugin_info.clone(),
        );
        r.register(
            "result_value",
            "The numeric fields of each plugin's latest window results, by key (e.g. ctr per campaign)",
            m.result_value.clone(),
        );
        r.register(
            "result_window_start_seconds",
            "Start of each plugin's latest published window, Unix seconds",
            m.result_window.clone(),
        );
        r.register(
            "window_result_latency_seconds",
            "From the watermark passing a window's end to its results being acknowledged by Kafka",
            m.latency.clone(),
        );
        m
    }
}

/// Moves a counter up to `value` (the pipeline's counters only grow).
fn set_counter(c: &Counter, value: u64) {
    c.inc_by(value.saturating_sub(c.get()));
}

fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

impl Metrics {
    /// The host's pipeline threads (fixed at start-up).
    pub fn threads(&self, threads: usize) {
        self.threads.set(threads as i64);
    }

    pub fn update(
        &self,
        stats: &Stats,
        partitions: &[PartitionStatus],
        plugins: &[PluginStatus],
        ready: bool,
        now_ms: i64,
    ) {
        set_counter(&self.consumed, stats.consumed);
        set_counter(&self.impressions, stats.impressions);
        set_counter(&self.clicks_attributed, stats.clicks_attributed);
        set_counter(&self.clicks_unattributed, stats.clicks_unattributed);
        set_counter(&self.late, stats.late);
        set_counter(&self.dead_lettered, stats.dead_lettered);
        set_counter(&self.duplicates, stats.duplicates);
        set_counter(&self.replayed, stats.replayed);
        set_counter(&self.windows_emitted, stats.windows_emitted);
        set_counter(&self.results, stats.results);
        set_counter(&self.windows_withheld, stats.windows_withheld);
        set_counter(&self.records_withheld, stats.records_withheld);
        set_counter(&self.truncated, stats.truncated);
        set_counter(&self.restarts, stats.restarts);
        set_counter(&self.rebalances, stats.rebalances);
        self.tasks.set(stats.tasks as i64);
        self.merge_stage.set(stats.merge_stage as i64);
        self.group_generation.set(stats.group_generation as i64);
        self.merge_lag.set(stats.merge_lag_ms as f64 / 1000.0);
        self.merge_pending_windows.set(stats.merge_pending_windows as i64);
        // Before the first event the watermark is "no time yet": leave the gauges at 0.
        if stats.watermark_ms > i64::MIN / 2 {
            self.watermark.set(secs(stats.watermark_ms));
            self.watermark_delay.set(secs(now_ms - stats.watermark_ms));
        }
        self.open_windows.set(stats.open_windows as i64);
        self.join_impressions.set(stats.join_impressions as i64);
        self.pending_clicks.set(stats.pending_clicks as i64);
        self.ready(ready);
        for p in partitions {
            let labels = vec![("topic", p.topic.clone()), ("partition", p.partition.to_string())];
            if let Some(next) = p.next_offset {
                self.partition_offset.get_or_create(&labels).set(next);
            }
            if let Some(lag) = p.lag {
                self.partition_lag.get_or_create(&labels).set(lag);
            }
            if let Some(w) = p.watermark_ms {
                self.partition_watermark.get_or_create(&labels).set(secs(w));
            }
        }
        self.plugin_info.clear();
        for p in plugins {
            set_counter(&self.plugin_errors.get_or_create(&vec![("plugin", p.name.clone())]), p.errors);
            let info = |version: &str, hash: &str, status: &str| {
                vec![
                    ("plugin", p.name.clone()),
                    ("version", version.to_owned()),
                    ("hash", hash.chars().take(12).collect()),
                    ("status", status.to_owned()),
                ]
            };
            self.plugin_info.get_or_create(&info(&p.version, &p.hash, "running")).set(1);
            if let Some(r) = &p.retiring {
                self.plugin_info.get_or_create(&info(&r.version, &r.hash, "finishing-windows")).set(1);
            }
        }
    }

    /// A plugin published a window: its numeric fields become `adstream_result_value` gauges,
    /// replacing the plugin's previous window.
    pub fn results(&self, latest: &[&WindowResults]) {
        self.result_value.clear();
        let mut series = 0;
        for w in latest {
            self.result_window.get_or_create(&vec![("plugin", w.plugin.clone())]).set(secs(w.window_start_ms));
            for (key, value) in &w.records {
                let Some(fields) = value.as_object() else { continue };
                for (field, v) in fields {
                    let Some(v) = v.as_f64() else { continue };
                    if series == MAX_RESULT_SERIES {
                        return;
                    }
                    series += 1;
                    let labels = vec![("plugin", w.plugin.clone()), ("key", key.clone()), ("field", field.clone())];
                    self.result_value.get_or_create(&labels).set(v);
                }
            }
        }
    }

    pub fn ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// A swap attempt: `applied`, `rejected` or `unchanged` (the file was the version running).
    pub fn swap(&self, plugin: &str, outcome: &str) {
        self.swaps.get_or_create(&vec![("plugin", plugin.to_owned()), ("outcome", outcome.to_owned())]).inc();
    }

    pub fn latency(&self, seconds: f64) {
        self.latency.observe(seconds);
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}
