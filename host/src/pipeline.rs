//! The pipeline core, independent of where messages come from and where output goes: decode →
//! late check → join → batch → plugins, with the watermark closing windows.
//!
//! It is synchronous and single-threaded on purpose: one thread owns the windows, the join and
//! the plugin instances, so the per-event path takes no lock and makes no async hop. The Kafka
//! driver ([`crate::app`]) and the file driver ([`crate::replay`]) feed it [`Input`]s and hand it
//! a [`Sink`].
//!
//! Time semantics (SPEC "Time"): an event belongs to the window `[start, start + window)` with
//! `start = event time rounded down to the window size`. Its window is emitted once the
//! watermark reaches `end + allowed lateness`; an event whose window was already emitted is late
//! and goes to the late topic. Windows close strictly in order, each exactly once.

use std::collections::BTreeMap;
use std::time::Instant;

use sha2::Digest as _;

use adstream_abi::batch::{BatchWriter, Event as BatchEvent, Kind};
use adstream_abi::json::Obj;
use adstream_abi::time::{format_rfc3339_millis, window_start};

use crate::config::TimeConfig;
use crate::event::{Event, Rejected, Source, decode};
use crate::join::{Join, JoinedClick};
use crate::metrics::Stats;
use crate::offsets::OffsetTracker;
use crate::plugin::slot::Which;
use crate::plugin::{Aggregator, Loader, OutputRecord, PluginError, PluginMeta, Slot, SwapRefused, SwapReport, Window};
use crate::sink::topics::{OutputTopics, record_bytes};
use crate::watermark::{PartitionId, Watermarks};

/// Largest input message accepted; longer ones are dead-lettered.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// A key longer than this is cut to it in a truncated copy.
const KEPT_KEY_BYTES: usize = 1024;

/// Where the pipeline's output goes: result, late and dead-letter records alike.
pub trait Sink {
    /// Queues one record. An error here is an infrastructure failure and stops the pipeline.
    fn send(&mut self, topic: &str, key: Option<&[u8]>, value: &[u8], headers: &[(&str, &[u8])]) -> anyhow::Result<()>;

    /// The largest record `topic` takes, as [`record_bytes`] counts it; `None`: no limit. The
    /// pipeline never sends a larger one: it truncates a copy of an input message, and
    /// withholds a plugin's record (see [`Pipeline`]).
    fn record_limit(&self, _topic: &str) -> Option<usize> {
        None
    }
}

/// One input message.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    pub partition: PartitionId,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
}

/// Where an input partition is, for headers and logs.
#[derive(Clone, Debug)]
pub struct PartitionInfo {
    pub source: Source,
    pub topic: String,
    pub partition: i32,
    /// Messages below this offset were processed by an earlier run (see [`Pipeline::resume`]).
    replay_until: i64,
}

/// The pipeline: watermarks, open windows, the join, the plugins, and the counters.
pub struct Pipeline {
    time: TimeConfig,
    topics: OutputTopics,
    partitions: Vec<PartitionInfo>,
    watermarks: Watermarks,
    join: Join,
    offsets: OffsetTracker,
    plugins: Vec<Slot>,
    /// What loaded the plugins, for live swaps (`None` for a pipeline built from aggregators).
    loader: Option<Loader>,
    /// Events decoded since the plugins were last called.
    batch: BatchWriter,
    batch_size: usize,
    /// Test-only failpoint (`ADSTREAM_FAILPOINT_EMIT_PAUSE_MS`): pause this long in the middle of
    /// emitting each window, after the first plugin's records, so that a crash test can kill the
    /// host while a window is half published.
    emit_pause: Option<std::time::Duration>,
    /// Windows with events or pending clicks, not emitted yet → events handed to the plugins.
    open: BTreeMap<i64, u64>,
    /// The results of each window emitted since [`Pipeline::take_results`], if the driver shows
    /// them (`None` otherwise, so nothing accumulates).
    results: Option<Vec<WindowResults>>,
    /// When the watermark passed the end of each window emitted since [`Pipeline::take_emitted`],
    /// if the driver measures latency (`None` otherwise, so nothing accumulates).
    emitted_at: Option<Vec<Instant>>,
    stats: Stats,
}

impl Pipeline {
    /// Loads the plugins `loader` was configured with and builds an empty pipeline.
    pub fn new(time: TimeConfig, loader: &Loader, topics: OutputTopics) -> anyhow::Result<Self> {
        let plugins = loader.config();
        let mut loaded: Vec<Box<dyn Aggregator>> = Vec::new();
        for path in &plugins.plugins {
            let plugin = loader.load(path)?;
            let meta = plugin.meta();
            if let Some(other) = loaded.iter().find(|p| p.meta().name == meta.name) {
                anyhow::bail!(
                    "plugins {} and {} are both named {:?}: load one of them",
                    other.meta().path.display(),
                    path.display(),
                    meta.name
                );
            }
            tracing::info!(plugin = %meta.name, version = %meta.version, hash = &meta.hash[..meta.hash.len().min(12)], outputs = ?meta.output_topics, "loaded plugin");
            loaded.push(plugin);
        }
        for limit in &plugins.limits {
            anyhow::ensure!(
                loaded.iter().any(|p| p.meta().name == limit.plugin),
                "--plugin-limit names {:?}, but no plugin of that name is loaded (loaded: {})",
                limit.plugin,
                loaded.iter().map(|p| p.meta().name.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
        topics.check_overrides(loaded.iter().map(|p| p.meta()))?;
        let mut pipeline = Self::with_aggregators(time, loaded, plugins.batch_size, topics);
        pipeline.loader = Some(loader.clone());
        Ok(pipeline)
    }

    /// An empty pipeline over the given aggregations.
    pub fn with_aggregators(
        time: TimeConfig,
        plugins: Vec<Box<dyn Aggregator>>,
        batch_size: usize,
        topics: OutputTopics,
    ) -> Self {
        Pipeline {
            watermarks: Watermarks::new(time.out_of_orderness_ms, time.idle_timeout),
            join: Join::new(time.join_horizon_ms),
            time,
            topics,
            partitions: Vec::new(),
            offsets: OffsetTracker::default(),
            plugins: plugins.into_iter().map(Slot::new).collect(),
            loader: None,
            batch: BatchWriter::new(),
            batch_size,
            emit_pause: std::env::var("ADSTREAM_FAILPOINT_EMIT_PAUSE_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .map(std::time::Duration::from_millis),
            open: BTreeMap::new(),
            results: None,
            emitted_at: None,
            stats: Stats::default(),
        }
    }

    /// Registers an input partition.
    pub fn add_partition(&mut self, source: Source, topic: &str, partition: i32, now: Instant) -> PartitionId {
        let id = self.watermarks.add_partition(now);
        self.partitions.push(PartitionInfo { source, topic: topic.to_owned(), partition, replay_until: i64::MIN });
        id
    }

    /// Continues from an earlier run that emitted every window up to `watermark` and had read
    /// `p` up to (not including) `replay_until`. Messages re-read below that offset were
    /// already counted or routed: those of emitted windows only rebuild the join state;
    /// those of open windows are counted again, since open windows are not persisted.
    pub fn resume(&mut self, watermark: i64, replays: &[(PartitionId, i64)]) {
        self.watermarks.resume(watermark);
        for &(p, until) in replays {
            self.partitions[p].replay_until = until;
        }
    }

    pub fn plugins(&self) -> impl Iterator<Item = &PluginMeta> {
        self.plugins.iter().map(|p| p.meta())
    }

    /// Every plugin's place: its versions, errors and swaps.
    pub fn slots(&self) -> &[Slot] {
        &self.plugins
    }

    /// What loaded the plugins (for live swaps), unless the pipeline was built from aggregators.
    pub fn loader(&self) -> Option<&Loader> {
        self.loader.as_ref()
    }

    /// Puts a new version of a loaded plugin (found by name) in charge, while the pipeline runs;
    /// see [`crate::plugin::slot`] for what happens to the open windows. Refused (and `new`
    /// dropped) if no plugin of that name is loaded or the previous swap is still finishing.
    pub fn swap(&mut self, new: Box<dyn Aggregator>) -> Result<SwapReport, SwapRefused> {
        let name = new.meta().name.clone();
        let Some(i) = self.plugins.iter().position(|s| s.meta().name == name) else {
            let loaded = self.plugins.iter().map(|s| s.meta().name.as_str()).collect::<Vec<_>>().join(", ");
            return Err(SwapRefused::NotLoaded(name, loaded));
        };
        // Every event so far goes to the version that was in charge when it arrived.
        self.flush();
        let open = self.open_windows();
        let report = self.plugins[i].swap(new, &open, self.time.window_ms)?;
        tracing::info!(plugin = %report.plugin, from = %report.from_version, to = %report.to_version, hash = &report.to_hash[..report.to_hash.len().min(12)], mode = ?report.mode, "plugin swapped");
        Ok(report)
    }

    /// The results of the windows emitted since the last call, for display. The first call starts
    /// the recording (and returns nothing), so a driver that never calls it accumulates nothing.
    pub fn take_results(&mut self) -> Vec<WindowResults> {
        self.results.replace(Vec::new()).unwrap_or_default()
    }

    pub fn stats(&self) -> Stats {
        Stats {
            watermark_ms: self.watermarks.current(),
            open_windows: self.open.len() as u64,
            join_impressions: self.join.impressions() as u64,
            pending_clicks: self.join.pending_clicks() as u64,
            ..self.stats.clone()
        }
    }

    /// When the watermark passed the end of each window emitted since the last call. The driver
    /// calls it once the output is acknowledged, to measure result latency; the first call starts
    /// the recording (and returns nothing), so a driver that never calls it accumulates nothing.
    pub fn take_emitted(&mut self) -> Vec<Instant> {
        self.emitted_at.replace(Vec::new()).unwrap_or_default()
    }

    /// The windows open now (holding events, not emitted yet), oldest first.
    pub fn open_windows(&self) -> Vec<i64> {
        self.open.keys().copied().collect()
    }

    /// Windows emitted so far (cheap, unlike [`Pipeline::stats`]).
    pub fn windows_emitted(&self) -> u64 {
        self.stats.windows_emitted
    }

    pub fn partitions(&self) -> &[PartitionInfo] {
        &self.partitions
    }

    /// The offset to commit for `p`: the first message still needed.
    pub fn committable(&self, p: PartitionId) -> Option<i64> {
        self.offsets.committable(p)
    }

    /// Largest event time seen on `p`.
    pub fn max_event_time(&self, p: PartitionId) -> Option<i64> {
        self.watermarks.max_event_time(p)
    }

    /// The watermark partition `p` alone allows, and whether it is idle at `now`.
    pub fn partition_watermark(&self, p: PartitionId, now: Instant) -> (Option<i64>, bool) {
        (self.watermarks.partition_watermark(p), self.watermarks.is_partition_idle(p, now))
    }

    /// Whether the source has unread messages of `p` (such a partition is never idle).
    pub fn set_backlog(&mut self, p: PartitionId, backlog: bool) {
        self.watermarks.set_backlog(p, backlog);
    }

    /// The input of `p` has ended: it no longer holds the watermark back.
    pub fn finish_partition(&mut self, p: PartitionId) {
        self.watermarks.finish(p);
    }

    /// One past the last offset of `p` that this run or an earlier one has handled: what the
    /// next run must not route again. It carries the earlier run's position forward, for a run
    /// that stops before re-reading that far.
    pub fn next_offset(&self, p: PartitionId) -> Option<i64> {
        let earlier = Some(self.partitions[p].replay_until).filter(|&u| u > i64::MIN);
        self.offsets.next(p).max(earlier)
    }

    pub fn watermark(&self) -> i64 {
        self.watermarks.current()
    }

    fn is_emitted(&self, window: i64) -> bool {
        window + self.time.window_ms + self.time.allowed_lateness_ms <= self.watermarks.current()
    }

    /// Processes one input message.
    pub fn ingest(&mut self, input: Input<'_>, now: Instant, sink: &mut dyn Sink) -> anyhow::Result<()> {
        let p = input.partition;
        let info = &self.partitions[p];
        let replaying = input.offset < info.replay_until;
        self.stats.consumed += 1;
        self.watermarks.touch(p, now);
        let event = match decode(info.source, input.payload, MAX_MESSAGE_BYTES) {
            Ok(event) => event,
            Err(_) if replaying => {
                self.stats.replayed += 1;
                self.offsets.seen(p, input.offset);
                return Ok(());
            }
            Err(reason) => {
                self.dead_letter(input, &reason, sink)?;
                self.offsets.seen(p, input.offset);
                return Ok(());
            }
        };
        let ts = event.event_time_ms();
        let window = window_start(ts, self.time.window_ms);
        if self.is_emitted(window) {
            if replaying {
                self.stats.replayed += 1;
                if let Event::Impression(imp) = &event {
                    // Its window is done, but a click of an open window may still join it.
                    let (batch, stats, open) = (&mut self.batch, &mut self.stats, &mut self.open);
                    self.join.add_impression(imp, |c| {
                        stats.clicks_attributed += 1;
                        *open.entry(c.window_start_ms).or_default() += 1;
                        push_click(batch, &c);
                    });
                    self.offsets.hold(p, input.offset, self.impression_release(ts));
                } else {
                    self.offsets.seen(p, input.offset);
                }
            } else {
                self.late(input, ts, window, sink)?;
                self.offsets.seen(p, input.offset);
            }
            return Ok(());
        }
        let in_window = self.open.entry(window).or_default();
        match &event {
            Event::Impression(imp) => {
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
                *in_window += 1;
                self.stats.impressions += 1;
                let (batch, stats, open) = (&mut self.batch, &mut self.stats, &mut self.open);
                self.join.add_impression(imp, |c| {
                    stats.clicks_attributed += 1;
                    *open.entry(c.window_start_ms).or_default() += 1;
                    push_click(batch, &c);
                });
                self.offsets.hold(p, input.offset, self.impression_release(ts));
            }
            Event::Click(click) => {
                if let Some(joined) = self.join.add_click(click, window) {
                    *in_window += 1;
                    push_click(&mut self.batch, &joined);
                    self.stats.clicks_attributed += 1;
                }
                self.offsets.hold(p, input.offset, window + self.time.window_ms + self.time.allowed_lateness_ms);
            }
        }
        self.watermarks.observe(p, ts, now);
        if self.batch.len() >= self.batch_size {
            self.flush();
        }
        self.advance(now, sink)
    }

    /// The watermark at which no future click can join an impression of time `ts`: when the
    /// oldest open window starts after `ts + horizon`.
    fn impression_release(&self, ts: i64) -> i64 {
        window_start(ts + self.time.join_horizon_ms, self.time.window_ms)
            + self.time.window_ms
            + self.time.allowed_lateness_ms
    }

    /// Recomputes the watermark (call it also when no message arrives, so that idle partitions
    /// release it) and emits every window it completes.
    pub fn advance(&mut self, now: Instant, sink: &mut dyn Sink) -> anyhow::Result<()> {
        let watermark = self.watermarks.advance(now);
        let span = self.time.window_ms + self.time.allowed_lateness_ms;
        let due = |w: i64| w + span <= watermark;
        if !self.open.first_key_value().is_some_and(|(&w, _)| due(w)) {
            return Ok(());
        }
        self.flush();
        while let Some((&w, _)) = self.open.first_key_value() {
            if !due(w) {
                break;
            }
            let (w, events) = self.open.pop_first().expect("checked above");
            self.emit_window(w, events, sink)?;
            if let Some(emitted) = &mut self.emitted_at {
                emitted.push(now);
            }
        }
        self.offsets.release(watermark);
        self.join.expire(window_start(watermark - self.time.allowed_lateness_ms, self.time.window_ms));
        Ok(())
    }

    /// End of input (replay): emits every open window.
    pub fn finish(&mut self, sink: &mut dyn Sink) -> anyhow::Result<()> {
        self.flush();
        while let Some((w, events)) = self.open.pop_first() {
            self.emit_window(w, events, sink)?;
        }
        Ok(())
    }

    /// Hands the buffered events to every plugin.
    pub fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = self.batch.bytes();
        let failures: Vec<_> = self
            .plugins
            .iter_mut()
            .enumerate()
            .flat_map(|(i, p)| p.process(batch).into_iter().map(move |(which, e)| (i, which, e)))
            .collect();
        self.batch.clear();
        for (i, which, e) in failures {
            self.plugin_failed(i, which, e);
        }
    }

    fn emit_window(&mut self, start_ms: i64, events: u64, sink: &mut dyn Sink) -> anyhow::Result<()> {
        self.stats.clicks_unattributed += self.join.close_window(start_ms);
        let window = Window { start_ms, end_ms: start_ms + self.time.window_ms };
        let window_header = format_rfc3339_millis(start_ms);
        // "ctr=100 engagement=3", for the log line below.
        let mut published = String::new();
        for i in 0..self.plugins.len() {
            let (which, records) = self.plugins[i].close_window(window);
            let records = match records {
                Ok(records) => {
                    let meta = self.plugins[i].meta_of(which);
                    let checked = records.into_iter().map(|r| check_record(r, meta)).collect::<Result<Vec<_>, _>>();
                    if let Err(reason) = &checked {
                        self.stats.plugin_errors += 1;
                        self.plugins[i].bad_record(reason);
                    }
                    checked
                }
                Err(e) => {
                    let reason = e.to_string();
                    self.plugin_failed(i, which, e);
                    Err(reason)
                }
            };
            let withheld = self.plugins[i].withheld.remove(&start_ms);
            let records = match (withheld, records) {
                (None, Ok(records)) => records,
                (Some(reason), _) | (None, Err(reason)) => {
                    self.withhold(i, which, window, events, &reason, sink)?;
                    continue;
                }
            };
            let meta = self.plugins[i].meta_of(which);
            let headers: [(&str, &[u8]); 3] = [
                ("plugin", meta.name.as_bytes()),
                ("plugin-version", meta.version.as_bytes()),
                ("window-start", window_header.as_bytes()),
            ];
            // Each record to its topic, unless it is larger than the topic takes: the broker
            // would refuse it and, with it, the whole transaction.
            let mut sent = Vec::with_capacity(records.len());
            let mut too_large = Vec::new();
            for r in records {
                let topic = self.topics.plugin_topic(meta, &r.topic);
                let size = record_bytes(Some(r.key.as_bytes()), r.value.as_bytes(), &headers);
                match sink.record_limit(&topic) {
                    Some(limit) if size > limit => too_large.push((topic, r, size, limit)),
                    _ => {
                        sink.send(&topic, Some(r.key.as_bytes()), r.value.as_bytes(), &headers)?;
                        sent.push(r);
                    }
                }
            }
            self.stats.results += sent.len() as u64;
            published.push_str(&format!("{}{}={}", if published.is_empty() { "" } else { " " }, meta.name, sent.len()));
            if let Some(results) = &mut self.results {
                results.push(WindowResults::new(meta, window, &sent));
            }
            for (topic, record, size, limit) in too_large {
                self.withhold_record(i, which, window, &topic, &record, size, limit, sink)?;
            }
            if let Some(pause) = self.emit_pause.filter(|_| i == 0) {
                tracing::info!(window = %window_header, "failpoint: pausing in the middle of emitting a window");
                std::thread::sleep(pause);
                tracing::info!(window = %window_header, "failpoint: resumed");
            }
        }
        // Only now: the records above name the version that produced them.
        for slot in &mut self.plugins {
            slot.emitted(start_ms);
        }
        self.stats.windows_emitted += 1;
        let watermark = format_rfc3339_millis(self.watermarks.current());
        tracing::info!(window = %window_header, events, records = %published, %watermark, "window emitted");
        Ok(())
    }

    /// Publishes, instead of plugin `i`'s result for `window`, a record saying why there is none.
    fn withhold(
        &mut self,
        i: usize,
        which: Which,
        window: Window,
        events: u64,
        reason: &str,
        sink: &mut dyn Sink,
    ) -> anyhow::Result<()> {
        self.stats.windows_withheld += 1;
        let meta = self.plugins[i].meta_of(which);
        tracing::warn!(plugin = %meta.name, window = %format_rfc3339_millis(window.start_ms), events, reason, "result withheld");
        plugin_error(&self.topics.plugin_errors, meta, window, |o| o.u64("events", events).str("reason", reason), sink)
    }

    /// Publishes, instead of a record of plugin `i` that is larger than its topic takes, a
    /// record saying so. The plugin's other records of the window are published.
    #[allow(clippy::too_many_arguments)] // one call site, each argument named there
    fn withhold_record(
        &mut self,
        i: usize,
        which: Which,
        window: Window,
        topic: &str,
        record: &OutputRecord,
        size: usize,
        limit: usize,
        sink: &mut dyn Sink,
    ) -> anyhow::Result<()> {
        self.stats.records_withheld += 1;
        let meta = self.plugins[i].meta_of(which);
        let key: String = record.key.chars().take(256).collect();
        let reason = format!(
            "the record takes {size} bytes and topic {topic} takes at most {limit} (its max.message.bytes): raise that, or make the plugin's records smaller"
        );
        tracing::warn!(plugin = %meta.name, window = %format_rfc3339_millis(window.start_ms), %topic, key, size, limit, "result record withheld: larger than its topic takes");
        plugin_error(
            &self.topics.plugin_errors,
            meta,
            window,
            |o| {
                o.str("topic", topic)
                    .str("key", &key)
                    .u64("bytes", size as u64)
                    .u64("limit", limit as u64)
                    .str("reason", &reason)
            },
            sink,
        )
    }

    /// A plugin call failed: its instance restarts empty, so every window it held state for
    /// (every open window, and the one being closed) is incomplete for it. Those results are
    /// withheld rather than published wrong; windows that open afterwards are complete again.
    fn plugin_failed(&mut self, i: usize, which: Which, error: PluginError) {
        self.stats.plugin_errors += 1;
        let name = self.plugins[i].meta_of(which).name.clone();
        tracing::error!(plugin = %name, kind = error.kind(), %error, open_windows = self.open.len(), "plugin call failed; restarting it with empty state, its results for the windows open now will be withheld");
        self.plugins[i].failed(which, &error, self.open.keys().copied());
    }

    /// Where a copied message came from, as headers.
    fn source_headers<'a>(info: &'a PartitionInfo, offset: &'a str, partition: &'a str) -> [(&'a str, &'a [u8]); 3] {
        [
            ("source-topic", info.topic.as_bytes()),
            ("source-partition", partition.as_bytes()),
            ("source-offset", offset.as_bytes()),
        ]
    }

    fn dead_letter(&mut self, input: Input<'_>, reason: &Rejected, sink: &mut dyn Sink) -> anyhow::Result<()> {
        self.stats.dead_lettered += 1;
        let (offset, partition) = (input.offset.to_string(), self.partitions[input.partition].partition.to_string());
        let detail = reason.to_string();
        let source = Self::source_headers(&self.partitions[input.partition], &offset, &partition);
        let headers = [
            ("reason", reason.code().as_bytes()),
            ("reason-detail", detail.as_bytes()),
            source[0],
            source[1],
            source[2],
        ];
        let info = &self.partitions[input.partition];
        tracing::debug!(topic = %info.topic, partition = info.partition, offset = input.offset, reason = reason.code(), "dead-lettered");
        send_copy(&self.topics.dead_letter, input, info, &headers, &mut self.stats.truncated, sink)
    }

    fn late(&mut self, input: Input<'_>, ts: i64, window: i64, sink: &mut dyn Sink) -> anyhow::Result<()> {
        self.stats.late += 1;
        let (offset, partition) = (input.offset.to_string(), self.partitions[input.partition].partition.to_string());
        let detail = format!(
            "window {} of event time {} was already emitted (watermark {})",
            format_rfc3339_millis(window),
            format_rfc3339_millis(ts),
            format_rfc3339_millis(self.watermarks.current())
        );
        let info = &self.partitions[input.partition];
        tracing::debug!(topic = %info.topic, partition = info.partition, offset = input.offset, window = %format_rfc3339_millis(window), "late");
        let source = Self::source_headers(&self.partitions[input.partition], &offset, &partition);
        let headers =
            [("reason", b"late".as_slice()), ("reason-detail", detail.as_bytes()), source[0], source[1], source[2]];
        send_copy(&self.topics.late, input, info, &headers, &mut self.stats.truncated, sink)
    }
}

/// Publishes on `topic` (the plugin-errors topic) a record saying what of plugin `meta`'s result
/// for `window` is withheld: the plugin, its version, the window, and the `fields` of the case.
fn plugin_error(
    topic: &str,
    meta: &PluginMeta,
    window: Window,
    fields: impl for<'o> FnOnce(Obj<'o>) -> Obj<'o>,
    sink: &mut dyn Sink,
) -> anyhow::Result<()> {
    let mut value = String::new();
    let head = Obj::new(&mut value)
        .str("plugin", &meta.name)
        .str("plugin_version", &meta.version)
        .time("window_start", window.start_ms)
        .time("window_end", window.end_ms);
    fields(head).end();
    let headers: [(&str, &[u8]); 2] = [("plugin", meta.name.as_bytes()), ("plugin-version", meta.version.as_bytes())];
    sink.send(topic, Some(meta.name.as_bytes()), value.as_bytes(), &headers)
}

/// Sends a copy of an input message (late or dead-lettered) to `topic`, whole if the topic
/// takes it; otherwise as much of it as fits, with headers `truncated: true`,
/// `original-size` (bytes) and `original-sha256` (hex) beside the usual ones, so that
/// nothing the input topics accept can make the broker refuse the transaction. Counted in
/// `truncated`, on top of the late or dead-letter count.
fn send_copy(
    topic: &str,
    input: Input<'_>,
    info: &PartitionInfo,
    headers: &[(&str, &[u8])],
    truncated: &mut u64,
    sink: &mut dyn Sink,
) -> anyhow::Result<()> {
    let Some(limit) = sink.record_limit(topic).filter(|&l| record_bytes(input.key, input.payload, headers) > l) else {
        return sink.send(topic, input.key, input.payload, headers);
    };
    *truncated += 1;
    let size = input.payload.len().to_string();
    let sha = crate::bytes::hex(&sha2::Sha256::digest(input.payload));
    let mut headers = headers.to_vec();
    headers.extend([
        ("truncated", b"true".as_slice()),
        ("original-size", size.as_bytes()),
        ("original-sha256", sha.as_bytes()),
    ]);
    let key = input.key.map(|k| &k[..k.len().min(KEPT_KEY_BYTES)]);
    // The longest prefix that fits (record_bytes grows by at least one per byte kept).
    let mut kept = input.payload.len();
    while kept > 0 {
        let over = record_bytes(key, &input.payload[..kept], &headers).saturating_sub(limit);
        if over == 0 {
            break;
        }
        kept = kept.saturating_sub(over);
    }
    tracing::warn!(source_topic = %info.topic, partition = info.partition, offset = input.offset, %topic, size = input.payload.len(), kept, limit, "copy truncated: the message is larger than the topic takes");
    sink.send(topic, key, &input.payload[..kept], &headers)
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

/// A record a plugin returned, if the host can publish it: a non-empty key, a value that is one
/// JSON object, and a topic the plugin declared (the host creates and sizes only those).
fn check_record(r: OutputRecord, meta: &PluginMeta) -> Result<OutputRecord, String> {
    let plugin = &meta.name;
    if !meta.output_topics.contains(&r.topic) {
        return Err(format!(
            "plugin {plugin} returned a record for topic {:?}, which it did not declare (it declares {:?})",
            r.topic, meta.output_topics
        ));
    }
    let is_object =
        r.value.trim_start().starts_with('{') && serde_json::from_str::<serde::de::IgnoredAny>(&r.value).is_ok();
    if r.key.is_empty() || !is_object {
        let shown: String = r.value.chars().take(80).collect();
        return Err(format!(
            "plugin {plugin} returned a record the host cannot publish (key {:?}, value {shown:?}): values must be JSON objects",
            r.key
        ));
    }
    Ok(r)
}

/// The records one plugin published for one window, kept for the console.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WindowResults {
    pub plugin: String,
    pub version: String,
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    /// The records, in the plugin's order, at most [`WindowResults::MAX_RECORDS`].
    pub records: Vec<(String, serde_json::Value)>,
    /// How many records the window had in all.
    pub total: usize,
}

impl WindowResults {
    /// Records kept per window: enough for the console's charts and tables, and a bound on the
    /// memory a plugin with many keys can take.
    pub const MAX_RECORDS: usize = 500;

    fn new(meta: &PluginMeta, window: Window, records: &[OutputRecord]) -> Self {
        WindowResults {
            plugin: meta.name.clone(),
            version: meta.version.clone(),
            window_start_ms: window.start_ms,
            window_end_ms: window.end_ms,
            records: records
                .iter()
                .take(Self::MAX_RECORDS)
                .filter_map(|r| Some((r.key.clone(), serde_json::from_str(&r.value).ok()?)))
                .collect(),
            total: records.len(),
        }
    }
}
