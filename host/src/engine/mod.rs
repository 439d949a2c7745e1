//! The engine: tasks, the merge stage, and what they publish, independent of where messages
//! come from and where output goes.
//!
//! ```text
//!             ┌ task 0 (impressions[0] + clicks[0]): decode → late? → join → batch → plugins ┐
//! input ──────┤ task 1 ...                                                                  ├─> partials ─> merge ─> results
//!             └ task p: its own watermark, join, offsets, open windows, plugin instances     ┘
//! ```
//!
//! - [`task`]: a task, the unit of work (SPEC "Time"): partition `p` of both input topics, with
//!   its own watermark and join and one instance of every plugin (the local phase).
//! - [`merge`]: the second phase: each window's partials from every task, merged with
//!   `merge-window` and closed once every task's watermark has closed the window.
//! - [`time`]: the window rule; [`watermark`]: watermarks and idleness; [`join`]: clicks matched
//!   to impressions; [`offsets`]: which input offsets are safe to commit; [`checkpoint`]: what a
//!   commit's metadata carries for a new owner to resume from.
//! - [`exchange`]: partials and progress as the records of the partials topic.
//! - [`detect`]: detectors, which read each published window's results and remember across
//!   windows, exactly-once.
//! - [`route`]: copies of late and invalid input; [`publish`]: result records and what is
//!   published in place of a result that cannot be vouched for; [`complete`]: each published
//!   window's completeness record.
//!
//! It is synchronous on purpose: the thread that runs an engine owns its tasks and plugin
//! instances, so the per-event path takes no lock and makes no async hop. The Kafka driver
//! ([`crate::app`]) and the file driver ([`crate::app::replay`]) feed it [`Input`]s and hand it
//! a [`Sink`].
//!
//! Lateness and exactly-once: an event is late when its task's watermark has closed its window
//! (SPEC "Time"). Its copy goes to the late topic when the window is *published*, in the same
//! transaction as the window's results, and its offset is held until then like a counted
//! event's: a restart before that re-reads it and decides again, so no decision is half kept.
//! An event whose window is already published is late at once.

pub mod checkpoint;
pub mod complete;
pub mod detect;
pub mod exchange;
pub mod join;
pub mod merge;
pub mod offsets;
pub mod peek;
pub mod publish;
pub mod route;
pub mod task;
pub mod time;
pub mod watermark;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use adstream_abi::time::format_rfc3339_millis;

use self::checkpoint::Checkpoint;
use self::complete::{Completeness, Counts, PluginRef, Record, Update};
use self::detect::{DetectorSlot, Stored};
use self::merge::{Added, Merge, Partial, Refusal, TaskClock, TaskId};
use self::offsets::OffsetTracker;
use self::publish::{check_record, plugin_error};
use self::task::{Failure, Task};
use self::time::WindowRule;
use self::watermark::PartitionId;
use crate::config::TimeConfig;
use crate::event::{Event, Rejected, Source, decode};
use crate::metrics::Stats;
use crate::plugin::slot::Which;
use crate::plugin::{
    Aggregator, Loaded, Loader, OutputRecord, PluginMeta, Slot, SwapMode, SwapRefused, SwapReport, Window,
};
use crate::sink::topics::{OutputTopics, record_bytes};

pub use self::publish::WindowResults;

/// Largest input message accepted; longer ones are dead-lettered.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Where the engine's output goes: result, late and dead-letter records alike.
pub trait Sink {
    /// Queues one record. An error here is an infrastructure failure and stops the engine.
    fn send(&mut self, topic: &str, key: Option<&[u8]>, value: &[u8], headers: &[(&str, &[u8])]) -> anyhow::Result<()>;

    /// The largest record `topic` takes, as [`record_bytes`] counts it; `None`: no limit. The
    /// engine never sends a larger one: it truncates a copy of an input message, and
    /// withholds a plugin's record.
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

/// Where an input partition is, for headers and logs, and which task it feeds.
#[derive(Clone, Debug)]
pub struct PartitionInfo {
    pub source: Source,
    pub topic: String,
    pub partition: i32,
    /// The task (an index into the engine's tasks) and the partition's index in it.
    task: usize,
    side: PartitionId,
    /// Messages below this offset were processed by an earlier run (see [`Engine::resume_partition`]).
    replay_until: i64,
    /// Still re-reading up to `replay_until`: the task's watermark waits (see
    /// [`Engine::resume_partition`]).
    rereading: bool,
}

/// A late event whose copy waits for its window to be published.
struct DeferredLate {
    partition: PartitionId,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    detail: String,
}

/// The partials topic, from both ends.
struct Exchange {
    topic: String,
    /// The largest share a record carries; larger ones are chunked.
    max_bytes: usize,
    /// Each task's clock as last sent.
    reported: BTreeMap<TaskId, merge::TaskClock>,
    /// `Some` while this engine runs the merge stage (its owner holds the topic's partition).
    input: Option<ExchangeInput>,
}

/// The merge stage's side of the partials topic.
struct ExchangeInput {
    /// The records of windows not published yet are held (partition 0 here).
    offsets: OffsetTracker,
    /// Records below this offset were read by an earlier owner.
    replay_until: i64,
    assembler: exchange::Assembler,
}

/// A plugin as the console shows it: the version in charge, and the counts over every
/// instance (one per task, and the merge's).
pub struct PluginSummary<'a> {
    pub meta: &'a PluginMeta,
    pub retiring: Option<(&'a PluginMeta, i64)>,
    pub errors: u64,
    pub last_error: Option<String>,
    pub withheld_windows: usize,
    pub swaps: u64,
}

pub struct Engine {
    time: TimeConfig,
    rule: WindowRule,
    topics: OutputTopics,
    partitions: Vec<PartitionInfo>,
    tasks: Vec<Task>,
    /// Task id (partition number) → index in `tasks`.
    task_index: BTreeMap<TaskId, usize>,
    merge: Merge,
    offsets: OffsetTracker,
    /// Window → late events of it waiting for its publication (in this process only; through
    /// a partials topic a task's decisions are durable with its partials, and late copies go
    /// out at once).
    deferred: BTreeMap<i64, Vec<DeferredLate>>,
    /// `Some`: tasks hand their partials to the merge through a Kafka topic.
    exchange: Option<Exchange>,
    /// Clicks that were pending at tasks given up since start (see [`Engine::reset_assignment`]).
    handed_over_pending: u64,
    /// A record of the partials topic came in since the merge last looked (see
    /// [`Engine::merge_due`]).
    merge_changed: bool,
    /// This host's share of a window is whole, or windows were published, since the last
    /// [`Engine::report_progress`]: the driver should commit soon, so that the merge sees them.
    checkpoint_wanted: bool,
    /// Through a partials topic: the newest window every task here has closed (idle ones
    /// aside), as [`WindowRule::newest_closed`] says. When it moves on, this host's share of
    /// the windows it closed is whole, and a checkpoint shows them to the merge.
    local_closed: i64,
    /// Detectors, run by the merge stage after each window it publishes.
    detectors: Vec<DetectorSlot>,
    /// Where the detectors' state is kept (`None`: in this process only, as in `replay`).
    state_topic: Option<String>,
    /// One instance of each plugin that new tasks' instances are made from (its current version).
    prototypes: Vec<Box<dyn Aggregator>>,
    /// What loaded the plugins, for live swaps (`None` for an engine built from aggregators).
    loader: Option<Loader>,
    batch_size: usize,
    /// Test-only failpoint (`ADSTREAM_FAILPOINT_EMIT_PAUSE_MS`): pause this long in the middle of
    /// publishing each window, after the first plugin's records, so that a crash test can kill
    /// the host while a window is half published.
    emit_pause: Option<std::time::Duration>,
    /// The results of each window published since [`Engine::take_results`], if the driver shows
    /// them (`None` otherwise, so nothing accumulates).
    results: Option<Vec<WindowResults>>,
    /// The merge stage's completeness records, and the counts of windows not published yet.
    completeness: Completeness,
    /// Late events decided here and not yet told to the merge, by task and window, for its
    /// completeness records (see [`Engine::count_late`]).
    late_counts: BTreeMap<(TaskId, i64), u64>,
    /// Through a partials topic: the partials this host's tasks sent of windows still open at
    /// another of its tasks, for the live figures of those windows ([`peek`]).
    sent: BTreeMap<i64, Vec<Partial>>,
    /// The completeness records published since [`Engine::take_completeness`], if the driver
    /// shows them.
    completeness_log: Option<Vec<Record>>,
    /// When every task's watermark had passed the end of each window published since
    /// [`Engine::take_emitted`], if the driver measures latency.
    emitted_at: Option<Vec<Instant>>,
    /// Through a partials topic, on the merge stage: when this process's tasks last handed each
    /// window over, for the windows not published yet.
    handed_over: BTreeMap<i64, Instant>,
    stats: Stats,
}

impl Engine {
    /// Loads the plugins `loader` was configured with and builds an empty engine.
    pub fn new(time: TimeConfig, loader: &Loader, topics: OutputTopics) -> anyhow::Result<Self> {
        let plugins = loader.config();
        let mut loaded: Vec<Box<dyn Aggregator>> = Vec::new();
        let mut detectors: Vec<DetectorSlot> = Vec::new();
        for path in &plugins.plugins {
            let plugin = loader.load_any(path)?;
            let meta = match &plugin {
                Loaded::Aggregation(a) => a.meta(),
                Loaded::Detector(d) => d.meta(),
            };
            let others = loaded.iter().map(|p| p.meta()).chain(detectors.iter().map(DetectorSlot::meta));
            if let Some(other) = others.clone().find(|m| m.name == meta.name) {
                anyhow::bail!(
                    "plugins {} and {} are both named {:?}: load one of them",
                    other.path.display(),
                    path.display(),
                    meta.name
                );
            }
            tracing::info!(plugin = %meta.name, version = %meta.version, hash = &meta.hash[..meta.hash.len().min(12)], outputs = ?meta.output_topics, detector = matches!(plugin, Loaded::Detector(_)), "loaded plugin");
            match plugin {
                Loaded::Aggregation(a) => loaded.push(a),
                Loaded::Detector(d) => detectors.push(DetectorSlot::new(*d)),
            }
        }
        for d in &detectors {
            for input in d.detector.inputs() {
                anyhow::ensure!(
                    loaded.iter().any(|p| &p.meta().name == input),
                    "detector {} reads the results of plugin {input:?}, which is not loaded (loaded aggregations: {}): add it with --plugin",
                    d.meta().name,
                    loaded.iter().map(|p| p.meta().name.as_str()).collect::<Vec<_>>().join(", ")
                );
            }
        }
        let metas = || loaded.iter().map(|p| p.meta()).chain(detectors.iter().map(DetectorSlot::meta));
        let named = plugins.settings.iter().map(|s| ("--plugin-setting", &s.plugin));
        for (flag, name) in named.chain(plugins.limits.iter().map(|l| ("--plugin-limit", &l.plugin))) {
            anyhow::ensure!(
                metas().any(|m| &m.name == name),
                "{flag} names {name:?}, but no plugin of that name is loaded (loaded: {})",
                metas().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
        topics.check_overrides(metas())?;
        let mut writers: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for meta in metas() {
            for topic in topics.of_plugin(meta) {
                writers.entry(topic).or_default().push(&meta.name);
            }
        }
        for (topic, names) in writers.iter().filter(|(_, names)| names.len() > 1) {
            tracing::warn!(%topic, plugins = ?names, "several plugins publish to this topic: their records mix there (each names its plugin in a header); give one its own topic with --plugin-topic if that is not meant");
        }
        drop(writers);
        let mut engine = Self::with_aggregators(time, loaded, plugins.batch_size, topics)?;
        engine.loader = Some(loader.clone());
        engine.detectors = detectors;
        Ok(engine)
    }

    /// An empty engine over the given aggregations (each task gets fresh instances of them).
    pub fn with_aggregators(
        time: TimeConfig,
        plugins: Vec<Box<dyn Aggregator>>,
        batch_size: usize,
        topics: OutputTopics,
    ) -> anyhow::Result<Self> {
        let rule = WindowRule::of(&time);
        let merge_slots = plugins.iter().map(|p| p.fresh().map(Slot::new)).collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Engine {
            time,
            rule,
            topics,
            partitions: Vec::new(),
            tasks: Vec::new(),
            task_index: BTreeMap::new(),
            merge: Merge::new(rule, merge_slots),
            offsets: OffsetTracker::default(),
            deferred: BTreeMap::new(),
            exchange: None,
            handed_over_pending: 0,
            merge_changed: false,
            checkpoint_wanted: false,
            local_closed: i64::MIN,
            detectors: Vec::new(),
            state_topic: None,
            prototypes: plugins,
            loader: None,
            batch_size,
            emit_pause: std::env::var("ADSTREAM_FAILPOINT_EMIT_PAUSE_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .map(std::time::Duration::from_millis),
            results: None,
            completeness: Completeness::new(),
            late_counts: BTreeMap::new(),
            sent: BTreeMap::new(),
            completeness_log: None,
            emitted_at: None,
            handed_over: BTreeMap::new(),
            stats: Stats::default(),
        })
    }

    /// Registers an input partition: partition `partition` of `source` feeds task `partition`
    /// (created with fresh plugin instances on its first partition).
    pub fn add_partition(
        &mut self,
        source: Source,
        topic: &str,
        partition: i32,
        now: Instant,
    ) -> anyhow::Result<PartitionId> {
        let task = match self.task_index.get(&partition) {
            Some(&t) => t,
            None => {
                let slots =
                    self.prototypes.iter().map(|p| p.fresh().map(Slot::new)).collect::<anyhow::Result<Vec<_>>>()?;
                let mut t = Task::new(partition, self.rule, &self.time, slots, self.batch_size);
                // In this process the merge's published windows are closed everywhere; through
                // a partials topic a task starts from its own checkpoint only.
                if self.exchange.is_none() {
                    t.resume(self.merge.published(), i64::MIN);
                }
                self.tasks.push(t);
                self.task_index.insert(partition, self.tasks.len() - 1);
                self.merge.expect(partition);
                self.tasks.len() - 1
            }
        };
        let side = self.tasks[task].add_partition(now);
        self.tasks[task].inputs.push(self.partitions.len());
        self.partitions.push(PartitionInfo {
            source,
            topic: topic.to_owned(),
            partition,
            task,
            side,
            replay_until: i64::MIN,
            rereading: false,
        });
        Ok(self.partitions.len() - 1)
    }

    /// Tasks hand their partials (and report their progress) to the merge stage through
    /// `topic`, whose records take shares of at most `max_bytes`, instead of in this process.
    /// A merge stage runs here only once [`Engine::open_merge`] is called.
    pub fn use_exchange(&mut self, topic: &str, max_bytes: usize) {
        self.exchange = Some(Exchange { topic: topic.to_owned(), max_bytes, reported: BTreeMap::new(), input: None });
    }

    /// Gives every task (and the merge stage) up, after a rebalance: the next assignment
    /// starts afresh from its checkpoints. Plugins, counters and swaps stay.
    pub fn reset_assignment(&mut self) {
        // Clicks waiting for their impression were consumed here and are read again by the
        // next owner: they stay accounted for (as an ended attempt's do, see Stats::then).
        self.handed_over_pending += self.tasks.iter().map(|t| t.join().pending_clicks() as u64).sum::<u64>();
        self.partitions.clear();
        self.tasks.clear();
        self.task_index.clear();
        self.offsets = OffsetTracker::default();
        self.deferred.clear();
        // Late events counted and not reported are read again by the next owner.
        self.late_counts.clear();
        self.sent.clear();
        self.local_closed = i64::MIN;
        self.completeness = Completeness::new();
        let rule = self.rule;
        let slots = std::mem::take(&mut self.merge).into_slots();
        self.merge = Merge::new(rule, slots);
        if let Some(x) = &mut self.exchange {
            x.reported.clear();
            x.input = None;
        }
    }

    /// Continues partition `p` from an earlier owner's checkpoint: its task's watermark, the
    /// windows it had handed to the merge (their partials are in the partials topic, or
    /// published), and how far that owner had read `p` (up to, not including, `next`); reading
    /// starts again at `from`.
    ///
    /// A re-read message of a window closed here is one the earlier owner decided for good: it
    /// is in a partial handed over, or its copy is on the late topic (both in the transactions
    /// its checkpoints committed). The checkpoint's cuts say which it was (see
    /// [`Task::was_on_time`]): a re-read impression joins the clicks still to be counted only
    /// if it was on time then, as the earlier owner's did (where the cuts do not reach, as in
    /// an older checkpoint, every one joins again).
    ///
    /// That holds only of windows closed *before* this run: an event that owner read in a
    /// window still open at its checkpoint was counted in state that died with it. So the
    /// task's watermark stays where that owner left it until each of the task's partitions has
    /// been read up to `next` again: every such event is counted again, in its window still
    /// open, before the task closes anything. (Otherwise a partition re-read slowly, an input
    /// read far ahead of its partner by the earlier owner, found some of those events in
    /// windows this run had closed meanwhile, took them for decided, and they were in no
    /// result and on no late topic.)
    pub fn resume_partition(&mut self, p: PartitionId, from: i64, checkpoint: &Checkpoint) {
        let info = &mut self.partitions[p];
        info.replay_until = checkpoint.next;
        let task = &mut self.tasks[info.task];
        task.resume(checkpoint.watermark, checkpoint.closed);
        task.resume_cuts(info.side, &checkpoint.cuts);
        if info.source == Source::Impressions {
            // Re-read impressions are what the cuts decide on.
            task.resume_cuts_from(checkpoint.cuts_from);
        }
        if from < checkpoint.next {
            info.rereading = true;
            task.hold_for_reread(1);
        }
    }

    /// `p` has been re-read up to where an earlier owner had read it (or has nothing more to
    /// read): its task's watermark no longer waits for it.
    fn end_reread(&mut self, p: PartitionId) {
        let info = &mut self.partitions[p];
        if std::mem::take(&mut info.rereading) {
            self.tasks[info.task].hold_for_reread(-1);
        }
    }

    /// Runs the merge stage here, over the partials of tasks `0..tasks`: an earlier owner
    /// published every window up to `published` and had read the partials topic up to
    /// `replay_until`; reading resumes below that, at the oldest partial of a window not
    /// published yet.
    pub fn open_merge(&mut self, tasks: usize, published: i64, replay_until: i64) {
        let Some(x) = &mut self.exchange else { return };
        x.input = Some(ExchangeInput {
            offsets: OffsetTracker::default(),
            replay_until,
            assembler: exchange::Assembler::default(),
        });
        self.merge.resume(published);
        for t in 0..tasks {
            self.merge.expect(i32::try_from(t).unwrap_or(i32::MAX));
        }
    }

    /// Keeps the detectors' state in `topic` (compacted, keyed by detector name), written in
    /// each checkpoint's transaction.
    pub fn use_state_topic(&mut self, topic: &str) {
        self.state_topic = Some(topic.to_owned());
    }

    /// Whether detectors run here (with the merge stage), so their state must be read.
    pub fn has_detectors(&self) -> bool {
        !self.detectors.is_empty()
    }

    /// Before the merge stage publishes its first window: each detector starts from the state
    /// an earlier owner committed (`stored`, by detector name), or from nothing.
    pub fn restore_detectors(&mut self, stored: &std::collections::HashMap<String, Stored>) -> anyhow::Result<()> {
        for slot in &mut self.detectors {
            let found = stored.get(&slot.meta().name);
            slot.restore(found)?;
            match found {
                Some(s) => {
                    tracing::info!(detector = %slot.meta().name, observed_through = %format_rfc3339_millis(s.observed_through), bytes = s.state.len(), "detector state restored")
                }
                None => tracing::info!(detector = %slot.meta().name, "no stored detector state: it starts afresh"),
            }
        }
        Ok(())
    }

    /// Before the merge stage publishes its first window: the completeness records an earlier
    /// owner committed (the topic read back: each key's last value), for the updates late
    /// events make. `published`: the watermark it had published through.
    pub fn restore_completeness(&mut self, stored: impl Iterator<Item = Vec<u8>>, published: i64) {
        let mut records = Vec::new();
        for value in stored {
            match serde_json::from_slice::<Record>(&value) {
                Ok(r) => records.push(r),
                Err(e) => {
                    tracing::warn!(topic = %self.topics.completeness, error = %e, "a record of the completeness topic is not one adstream wrote; ignored")
                }
            }
        }
        tracing::info!(topic = %self.topics.completeness, records = records.len(), "completeness records restored: late events of those windows update them");
        // The first window `published` does not close.
        let first_open = published
            .saturating_sub(self.rule.window_ms)
            .saturating_sub(self.rule.allowed_lateness_ms)
            .saturating_add(1);
        self.completeness = Completeness::restore(records, first_open);
    }

    /// Whether the merge stage runs here.
    pub fn merges(&self) -> bool {
        self.exchange.as_ref().is_none_or(|x| x.input.is_some())
    }

    /// Partition `p`'s checkpoint, `next` being one past the last offset handled (see
    /// [`Engine::next_offset`]): its task's watermark, through which window the task handed its
    /// windows to the merge, and the cuts of the panes still of use.
    pub fn checkpoint(&self, p: PartitionId, next: i64) -> Checkpoint {
        let info = &self.partitions[p];
        let task = &self.tasks[info.task];
        Checkpoint {
            watermark: task.watermark(),
            closed: task.closed_through(),
            next,
            cuts: task.cuts_of(info.side).collect(),
            cuts_from: task.cuts_from(),
        }
    }

    /// The offset of the partials topic to commit: its oldest record the merge still needs.
    pub fn exchange_committable(&self) -> Option<i64> {
        self.exchange.as_ref()?.input.as_ref()?.offsets.committable(0)
    }

    /// One past the last record of the partials topic this merge stage (or an earlier owner)
    /// has read.
    pub fn exchange_next(&self) -> Option<i64> {
        let input = self.exchange.as_ref()?.input.as_ref()?;
        let earlier = Some(input.replay_until).filter(|&u| u > i64::MIN);
        input.offsets.next(0).max(earlier)
    }

    /// Whether this host's share of a window became whole (every task here closed it), a task
    /// here turned busy again after an idle spell, or windows were published, since the last
    /// progress report: a checkpoint now shows it to the merge.
    pub fn checkpoint_wanted(&self) -> bool {
        self.checkpoint_wanted
    }

    /// Before a checkpoint: every task whose clock changed since it was last sent reports it
    /// on the partials topic, after the partials of the windows that clock closes; and the
    /// detectors' state, if it changed, goes to the state topic (see [`detect`]).
    pub fn report_progress(&mut self, sink: &mut dyn Sink) -> anyhow::Result<()> {
        self.checkpoint_wanted = false;
        if let Some(topic) = &self.state_topic {
            for slot in &mut self.detectors {
                if let Some(stored) = slot.take_unstored() {
                    let meta = slot.detector.meta();
                    let headers: [(&str, &[u8]); 2] =
                        [("plugin", meta.name.as_bytes()), ("plugin-version", meta.version.as_bytes())];
                    sink.send(topic, Some(meta.name.as_bytes()), &stored.encode(), &headers)?;
                }
            }
        }
        let Some(x) = &mut self.exchange else { return Ok(()) };
        // In the transaction of the late copies they count.
        for ((task, window), late) in std::mem::take(&mut self.late_counts) {
            let value = exchange::encode_counts(task, window, Counts::late(late));
            sink.send(&x.topic, Some(exchange::counts_key(task, window).as_bytes()), &value, &[])?;
        }
        for task in &self.tasks {
            let clock = task.clock();
            if x.reported.get(&task.id) == Some(&clock) {
                continue;
            }
            let value = exchange::encode_progress(task.id, clock);
            sink.send(&x.topic, Some(exchange::progress_key(task.id).as_bytes()), &value, &[])?;
            x.reported.insert(task.id, clock);
        }
        Ok(())
    }

    /// One record of the partials topic, for the merge stage running here (it publishes from
    /// [`Engine::publish_merged`]).
    pub fn ingest_exchange(&mut self, offset: i64, value: &[u8], sink: &mut dyn Sink) -> anyhow::Result<()> {
        let Some(input) = self.exchange.as_mut().and_then(|x| x.input.as_mut()) else { return Ok(()) };
        self.merge_changed = true;
        let replaying = offset < input.replay_until;
        let message = match exchange::decode(value) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(offset, error = %e, "a record of the partials topic is not one adstream wrote; skipped (is another application writing to it?)");
                input.offsets.seen(0, offset);
                return Ok(());
            }
        };
        match message {
            exchange::Message::Progress { task, clock } => {
                self.merge.report(task, clock);
                input.offsets.seen(0, offset);
            }
            exchange::Message::Counts { task, window_start_ms: window, counts } => {
                if self.rule.window_is_closed(window, self.merge.published()) {
                    input.offsets.seen(0, offset);
                    // The record an earlier owner published (read back) has them already.
                    if !replaying {
                        self.complete(window, task, counts, sink)?;
                    }
                } else {
                    // Held with the window's partials: a new owner gathers them again.
                    input.offsets.hold(0, offset, self.rule.window_closes_at(window));
                    self.complete(window, task, counts, sink)?;
                }
            }
            exchange::Message::Partial { partial, chunk, chunks } => {
                let window = partial.window_start_ms;
                if self.rule.window_is_closed(window, self.merge.published()) {
                    input.offsets.seen(0, offset);
                    // Reported once per partial, not per chunk.
                    if !replaying && chunk == 0 {
                        self.after_publication(&partial, sink)?;
                    }
                    return Ok(());
                }
                input.offsets.hold(0, offset, self.rule.window_closes_at(window));
                if let Some(whole) = input.assembler.add(partial, chunk, chunks) {
                    self.add_partial(whole);
                }
            }
        }
        Ok(())
    }

    /// Whether the merge stage running here has a window to publish, once the number of tasks
    /// is confirmed ([`Engine::publish_merged`]).
    pub fn merge_due(&mut self) -> bool {
        // Called per message: the tasks' clocks are looked at only when a record of the partials
        // topic came in since the last publication.
        if !std::mem::take(&mut self.merge_changed) || !self.merges() || self.exchange.is_none() {
            return false;
        }
        self.merge.advance();
        let due = self.merge.next_due().is_some();
        // Until it is published, the due window keeps the question open.
        self.merge_changed = due;
        due
    }

    /// Publishes what the merge stage can, now that the input topics are known to have `tasks`
    /// partitions: tasks added since (partitions added to both topics) hold the merge back
    /// until they report, so that no window is published without them.
    pub fn publish_merged(&mut self, tasks: usize, now: Instant, sink: &mut dyn Sink) -> anyhow::Result<()> {
        for t in 0..tasks {
            self.merge.expect(i32::try_from(t).unwrap_or(i32::MAX));
        }
        self.publish_due_from_exchange(now, sink)?;
        // What is left waits for a task (a new one, or one behind): its next record reopens it.
        self.merge_changed = false;
        Ok(())
    }

    /// A partial of a window already published (its task was idle, and the merge did not
    /// wait for it): reported on the plugin-errors topic, never merged into a published number.
    fn after_publication(&mut self, partial: &Partial, sink: &mut dyn Sink) -> anyhow::Result<()> {
        self.stats.windows_withheld += 1;
        let Some(i) = self.merge.slots().iter().position(|s| s.meta().name == partial.plugin) else { return Ok(()) };
        let window = self.rule.window(partial.window_start_ms);
        let reason = format!(
            "task {} closed this window after it was published (the task was idle when the others closed it): its {} events are not in the published result",
            partial.task, partial.events
        );
        tracing::error!(plugin = %partial.plugin, task = partial.task, window = %format_rfc3339_millis(window.start_ms), events = partial.events, "{reason}");
        let meta = self.merge.slots()[i].meta();
        plugin_error(
            &self.topics.plugin_errors,
            meta,
            window,
            |o| o.u64("events", partial.events).str("reason", &reason),
            sink,
        )
    }

    /// Every plugin loaded: the aggregations, then the detectors.
    pub fn plugins(&self) -> impl Iterator<Item = &PluginMeta> {
        self.merge.slots().iter().map(|s| s.meta()).chain(self.detectors.iter().map(DetectorSlot::meta))
    }

    /// Every plugin's versions, errors and swaps, over all its instances.
    pub fn plugin_summaries(&self) -> Vec<PluginSummary<'_>> {
        self.merge
            .slots()
            .iter()
            .enumerate()
            .map(|(i, merge)| {
                let slots = self.tasks.iter().map(|t| &t.slots()[i]).chain([merge]);
                let (mut errors, mut withheld, mut last_error) = (0, 0, None);
                for s in slots {
                    errors += s.errors;
                    withheld += s.withheld.len();
                    if s.last_error.is_some() {
                        last_error.clone_from(&s.last_error);
                    }
                }
                PluginSummary {
                    meta: merge.meta(),
                    retiring: merge.retiring(),
                    errors,
                    last_error,
                    withheld_windows: withheld,
                    swaps: merge.swaps,
                }
            })
            .chain(self.detectors.iter().map(|d| PluginSummary {
                meta: d.meta(),
                retiring: None,
                errors: d.errors,
                last_error: d.last_error.clone(),
                withheld_windows: 0,
                swaps: 0,
            }))
            .collect()
    }

    /// What loaded the plugins (for live swaps), unless the engine was built from aggregators.
    pub fn loader(&self) -> Option<&Loader> {
        self.loader.as_ref()
    }

    /// Puts a new version of a loaded plugin (found by name) in charge, in every task and in the
    /// merge, while the engine runs; see [`crate::plugin::slot`] for what happens to the open
    /// windows. Every task and the merge cut over at the same window, so that no window's
    /// partials mix the versions. Refused (and `new` dropped) if no plugin of that name is
    /// loaded, the previous swap is still finishing, or the new version cannot be instantiated.
    pub fn swap(&mut self, new: Box<dyn Aggregator>) -> Result<SwapReport, SwapRefused> {
        let name = new.meta().name.clone();
        let Some(i) = self.merge.slots().iter().position(|s| s.meta().name == name) else {
            let loaded = self.plugins().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ");
            return Err(SwapRefused::NotLoaded(name, loaded));
        };
        let running = self.merge.slots()[i].meta();
        if running.hash == new.meta().hash {
            tracing::info!(plugin = %name, version = %running.version, "the uploaded plugin is the version running (same SHA-256): nothing to swap");
            return Ok(SwapReport {
                plugin: name,
                from_version: running.version.clone(),
                to_version: running.version.clone(),
                from_hash: running.hash.clone(),
                to_hash: running.hash.clone(),
                mode: SwapMode::Unchanged,
            });
        }
        self.merge.slots()[i].check_idle()?;
        for task in &self.tasks {
            task.slots()[i].check_idle()?;
        }
        // With sliding windows an old version would have to finish every window that holds a
        // pane open now, and those hold later panes too: an event would go to both versions.
        if self.rule.sliding()
            && !self.open_windows().is_empty()
            && self.merge.slots()[i].meta().state_version != new.meta().state_version
        {
            return Err(SwapRefused::SlidingState {
                plugin: name,
                from: self.merge.slots()[i].meta().state_version,
                to: new.meta().state_version,
            });
        }
        let mut instances = Vec::with_capacity(self.tasks.len() + 1);
        for _ in 0..=self.tasks.len() {
            instances.push(new.fresh().map_err(|e| SwapRefused::Instantiate(format!("{e:#}")))?);
        }
        // Every event so far goes to the version that was in charge when it arrived.
        self.flush();
        let open = self.open_windows();
        let through = open.last().copied();
        // What the tasks' instances hold are panes.
        let window_ms = self.time.slide_ms;
        let mut finishing = None;
        for task in &mut self.tasks {
            let held: Vec<i64> = task.open_windows().collect();
            let instance = instances.pop().expect("one per task and one for the merge");
            let report = task.slots_mut()[i].swap(instance, &held, through, window_ms)?;
            if matches!(report.mode, SwapMode::FinishingOpenWindows { .. }) {
                finishing = Some(report);
            }
        }
        // The merge merges each window with the version its tasks folded it in: if one task
        // keeps the old version for the open windows, so does the merge.
        let instance = instances.pop().expect("one per task and one for the merge");
        let merge = &mut self.merge.slots_mut()[i];
        let mut report = match (finishing, through) {
            (Some(report), Some(through)) => {
                merge.retire(instance, through);
                merge.swaps += 1;
                report
            }
            _ => merge.swap(instance, &[], through, window_ms)?,
        };
        report.mode = match report.mode {
            SwapMode::CarriedOver { .. } => SwapMode::CarriedOver { windows: open.len() },
            SwapMode::FinishingOpenWindows { through, .. } => {
                SwapMode::FinishingOpenWindows { through, windows: open.len() }
            }
            mode => mode,
        };
        self.prototypes[i] = new;
        tracing::info!(plugin = %report.plugin, from = %report.from_version, to = %report.to_version, hash = &report.to_hash[..report.to_hash.len().min(12)], mode = ?report.mode, "plugin swapped");
        Ok(report)
    }

    /// The results of the windows published since the last call, for display. The first call
    /// starts the recording (and returns nothing), so a driver that never calls it accumulates
    /// nothing.
    pub fn take_results(&mut self) -> Vec<WindowResults> {
        self.results.replace(Vec::new()).unwrap_or_default()
    }

    pub fn stats(&self) -> Stats {
        let merging = self.exchange.as_ref().is_some_and(|x| x.input.is_some());
        let (merge_lag_ms, merge_pending_windows) = if merging { self.merge.lag() } else { (0, 0) };
        Stats {
            merge_lag_ms,
            merge_pending_windows,
            // Where the merge runs, the watermark results are published by; elsewhere the
            // lowest of the tasks' (what this host holds the merge back to).
            watermark_ms: match self.tasks.iter().map(Task::watermark).min() {
                Some(lowest) if self.exchange.is_some() && !merging => lowest,
                _ => self.merge.watermark(),
            },
            open_windows: self.open_windows().len() as u64,
            join_impressions: self.tasks.iter().map(|t| t.join().impressions() as u64).sum(),
            pending_clicks: self.handed_over_pending
                + self.tasks.iter().map(|t| t.join().pending_clicks() as u64).sum::<u64>(),
            tasks: self.tasks.len() as u64,
            merge_stage: u64::from(merging),
            ..self.stats.clone()
        }
    }

    /// The group moved partitions to or from this host.
    pub fn rebalanced(&mut self) {
        self.stats.rebalances += 1;
    }

    /// When every task's watermark had passed the end of each window published since the last
    /// call: when the last task handed it over, if every task runs here (through a partials
    /// topic the partials' round trip is then in the latency), else when the merge learned it.
    /// The driver calls it once the output is acknowledged, to measure result latency; the
    /// first call starts the recording (and returns nothing).
    pub fn take_emitted(&mut self) -> Vec<Instant> {
        self.emitted_at.replace(Vec::new()).unwrap_or_default()
    }

    /// The windows not published yet (open at some task, or waiting in the merge), oldest first.
    pub fn open_windows(&self) -> Vec<i64> {
        let mut open: BTreeSet<i64> = self.merge.pending_windows().collect();
        for task in &self.tasks {
            open.extend(task.open_windows());
        }
        open.extend(self.deferred.keys());
        open.into_iter().collect()
    }

    /// Windows published so far (cheap, unlike [`Engine::stats`]).
    pub fn windows_emitted(&self) -> u64 {
        self.stats.windows_emitted
    }

    pub fn partitions(&self) -> &[PartitionInfo] {
        &self.partitions
    }

    /// The number of tasks.
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// The offset to commit for `p`: the first message still needed.
    pub fn committable(&self, p: PartitionId) -> Option<i64> {
        self.offsets.committable(p)
    }

    /// Largest event time seen on `p`.
    pub fn max_event_time(&self, p: PartitionId) -> Option<i64> {
        let info = &self.partitions[p];
        self.tasks[info.task].watermarks().max_event_time(info.side)
    }

    /// The watermark partition `p` alone allows, and whether it is idle at `now`.
    pub fn partition_watermark(&self, p: PartitionId, now: Instant) -> (Option<i64>, bool) {
        let info = &self.partitions[p];
        let w = self.tasks[info.task].watermarks();
        (w.partition_watermark(info.side), w.is_partition_idle(info.side, now))
    }

    /// A message of `p` is in hand (taken in a batch, not delivered yet): `p` has data again
    /// and stops counting as idle now, before the batch's other messages are delivered. Which
    /// partition's messages come first in a batch is librdkafka's choice: a quiet partition's
    /// first message after the others' must not find its window closed by them.
    pub fn has_data(&mut self, p: PartitionId, now: Instant) {
        let info = &self.partitions[p];
        self.tasks[info.task].watermarks_mut().touch(info.side, now);
    }

    /// Whether `p` is idle at `now` (it does not hold its task's watermark back).
    pub fn is_idle(&self, p: PartitionId, now: Instant) -> bool {
        let info = &self.partitions[p];
        self.tasks[info.task].watermarks().is_partition_idle(info.side, now)
    }

    /// Whether the source has unread messages of `p` (such a partition is never idle). A task
    /// that was idle and is behind again holds the merge back from now on: the merge hears of
    /// it at once, not at the task's next message.
    pub fn set_backlog(&mut self, p: PartitionId, backlog: bool, now: Instant) {
        let info = &self.partitions[p];
        let task = &mut self.tasks[info.task];
        task.watermarks_mut().set_backlog(info.side, backlog, now);
        // Through a partials topic the merge hears of tasks only there, after their partials.
        if backlog && self.exchange.is_none() {
            let clock = task.advance(now);
            self.merge.report(task.id, clock);
        }
    }

    /// The broker says `p` has nothing after what was read: if it was still being re-read,
    /// its end is below where an earlier owner had read it (those messages are gone), and its
    /// task's watermark no longer waits for it.
    pub fn caught_up(&mut self, p: PartitionId) {
        let info = &self.partitions[p];
        if info.rereading {
            tracing::warn!(topic = %info.topic, partition = info.partition, earlier_owner_read_to = info.replay_until, "the partition ends below where the group's last checkpoint says it had been read (deleted by retention? the topic recreated?): nothing more to re-read");
            self.end_reread(p);
        }
    }

    /// Whether `p` would turn idle at `now` on a report that it has no backlog (see
    /// [`watermark::Watermarks::idle_due`]): the source confirms that report with the broker first.
    pub fn idle_due(&self, p: PartitionId, now: Instant) -> bool {
        let info = &self.partitions[p];
        self.tasks[info.task].watermarks().idle_due(info.side, now)
    }

    /// The input of `p` has ended: it no longer holds its task's watermark back.
    pub fn finish_partition(&mut self, p: PartitionId) {
        let info = &self.partitions[p];
        self.tasks[info.task].watermarks_mut().finish(info.side);
    }

    /// One past the last offset of `p` that this run or an earlier one has handled: what the
    /// next run must not route again. It carries the earlier run's position forward, for a run
    /// that stops before re-reading that far.
    pub fn next_offset(&self, p: PartitionId) -> Option<i64> {
        let earlier = Some(self.partitions[p].replay_until).filter(|&u| u > i64::MIN);
        self.offsets.next(p).max(earlier)
    }

    /// One past the last offset of `p` read in this run (`None` before the first): where the
    /// consumer is, unlike [`Engine::next_offset`].
    pub fn read_position(&self, p: PartitionId) -> Option<i64> {
        self.offsets.next(p)
    }

    /// The watermark through which windows are published (the merge's).
    pub fn watermark(&self) -> i64 {
        self.merge.published()
    }

    /// Processes one input message.
    pub fn ingest(&mut self, input: Input<'_>, now: Instant, sink: &mut dyn Sink) -> anyhow::Result<()> {
        let (p, offset) = (input.partition, input.offset);
        self.ingest_one(input, now, sink)?;
        let info = &self.partitions[p];
        if info.rereading && offset.saturating_add(1) >= info.replay_until {
            tracing::debug!(topic = %info.topic, partition = info.partition, through = offset, "re-read what an earlier owner had read");
            self.end_reread(p);
            // The task's watermark may move now.
            self.advance_task(self.partitions[p].task, now, sink)?;
        }
        Ok(())
    }

    fn ingest_one(&mut self, input: Input<'_>, now: Instant, sink: &mut dyn Sink) -> anyhow::Result<()> {
        let p = input.partition;
        let info = &self.partitions[p];
        let (t, side) = (info.task, info.side);
        let replaying = input.offset < info.replay_until;
        self.stats.consumed += 1;
        let event = match decode(info.source, input.payload, MAX_MESSAGE_BYTES) {
            Ok(event) => event,
            Err(reason) => {
                self.tasks[t].observe(side, None, now);
                if replaying {
                    self.stats.replayed += 1;
                } else {
                    self.dead_letter(input, &reason, sink)?;
                }
                self.offsets.seen(p, input.offset);
                return Ok(());
            }
        };
        let ts = event.event_time_ms();
        // The event's pane: its window, when tumbling.
        let window = self.rule.start_of(ts);
        // Through a partials topic, a task's decisions up to its watermark are durable with its
        // partials: it alone decides. In this process, a window the merge has published is
        // closed at every task too (an idle task's share was taken with it).
        let closed_at_task = self.tasks[t].has_closed(window);
        let final_now =
            if self.exchange.is_some() { closed_at_task } else { self.rule.is_closed(window, self.merge.published()) };
        // A re-read event of a pane closed at its task: the checkpoint's cut says whether the
        // earlier owner had it on time.
        let was_on_time =
            if final_now && replaying { self.tasks[t].was_on_time(window, side, input.offset) } else { None };
        // Sliding windows: one that windows still to be handed over hold, and the earlier owner
        // had in the pane, is counted again, as re-read events of open windows are.
        let counted_again = was_on_time == Some(true) && self.tasks[t].holds_closed_pane(window);
        if final_now && !counted_again {
            if replaying {
                self.stats.replayed += 1;
                match &event {
                    Event::Impression(_) if was_on_time == Some(false) => {
                        // Late then, and joined no click: not now either.
                        self.offsets.seen(p, input.offset);
                    }
                    Event::Impression(imp) => {
                        // Its window is closed, but a click of an open window may still join it
                        // (as it could when the earlier owner read it on time).
                        self.tasks[t].rejoin(imp, &mut self.stats);
                        self.offsets.hold(p, input.offset, self.rule.impression_released_at(ts));
                    }
                    Event::Click(click) => {
                        self.tasks[t].reread_click(click);
                        self.offsets.seen(p, input.offset);
                    }
                }
            } else {
                self.late_now(input, ts, window, t, sink)?;
                self.offsets.seen(p, input.offset);
            }
            self.tasks[t].observe(side, Some(ts), now);
            return Ok(());
        }
        let task = &mut self.tasks[t];
        if closed_at_task && !counted_again {
            // Late at its task; its copy goes out with the window's results.
            self.stats.late += 1;
            let detail = task.late_detail(window, ts);
            task.observe(side, Some(ts), now);
            self.count_late(t, window);
            self.deferred.entry(window).or_default().push(DeferredLate {
                partition: p,
                offset: input.offset,
                key: input.key.map(<[u8]>::to_vec),
                payload: input.payload.to_vec(),
                detail,
            });
            self.offsets.hold(p, input.offset, self.rule.closes_at(window));
            return Ok(());
        }
        match &event {
            Event::Impression(imp) => {
                if task.add_impression(imp, window, ts, &mut self.stats) {
                    self.offsets.hold(p, input.offset, self.rule.impression_released_at(ts));
                } else {
                    // A duplicate: the original, which is held, decides on a restart.
                    self.offsets.seen(p, input.offset);
                }
            }
            Event::Click(click) => {
                if task.add_click(click, window, &mut self.stats) {
                    // Until the pane's last window is published.
                    self.offsets.hold(p, input.offset, self.rule.window_closes_at(window));
                } else {
                    self.offsets.seen(p, input.offset);
                }
            }
        }
        task.observe(side, Some(ts), now);
        if counted_again {
            return Ok(());
        }
        if task.batch_full() {
            let failures = task.flush();
            self.report_failures(t, failures);
        }
        self.advance_task(t, now, sink)
    }

    /// Recomputes every task's watermark (call it also when no message arrives, so that idle
    /// partitions release them) and publishes every window the merge can.
    pub fn advance(&mut self, now: Instant, sink: &mut dyn Sink) -> anyhow::Result<()> {
        for t in 0..self.tasks.len() {
            self.close_at_task(t, now, sink)?;
        }
        self.publish_due(now, sink)
    }

    fn advance_task(&mut self, t: usize, now: Instant, sink: &mut dyn Sink) -> anyhow::Result<()> {
        if self.close_at_task(t, now, sink)? {
            self.publish_due(now, sink)?;
        }
        Ok(())
    }

    /// Recomputes task `t`'s watermark and hands the windows it closes to the merge (in this
    /// process, or on the partials topic); returns whether the merge might publish more now.
    fn close_at_task(&mut self, t: usize, now: Instant, sink: &mut dyn Sink) -> anyhow::Result<bool> {
        let task = &mut self.tasks[t];
        let before = task.watermark();
        let was = task.clock();
        let clock = task.advance(now);
        // An idle task does not hold the merge back, so the merge may publish any window: it
        // hands over every window it holds (SPEC "Time": its share is in the result).
        let bound = if clock.idle { i64::MAX } else { clock.watermark };
        // Most messages close nothing: the positions (an allocation) only when something closes.
        let (partials, counts, failures) = if task.closes_any(bound) {
            task.close_through(bound, &positions(task, &self.offsets), &mut self.stats)
        } else {
            Default::default()
        };
        let clock = task.clock();
        let id = task.id;
        self.report_failures(t, failures);
        let Some(x) = &self.exchange else {
            for partial in partials {
                self.add_partial(partial);
            }
            for (window, counts) in counts {
                self.complete(window, id, counts, sink)?;
            }
            self.merge.report(id, clock);
            return Ok(clock.watermark != before || clock.idle);
        };
        // Each window's partials are committed once every task here has closed it, in one
        // transaction rather than one per task: the merge could not publish it sooner, and a
        // transaction begun right after another often waits for its markers (BENCHMARKS.md,
        // "Result latency"). Partials handed over before wait in the open transaction. The
        // floor going back (a task busy again after an idle spell) is committed at once too:
        // until the merge learns it, it may publish windows without that task.
        let newest = |c: TaskClock| self.rule.newest_closed(if c.idle { i64::MAX } else { c.watermark });
        // Per message: most leave the clock within its window (or as it was).
        if was != clock && newest(was) != newest(clock) {
            let floor = self.tasks.iter().map(|t| newest(t.clock())).min().unwrap_or(i64::MAX);
            self.checkpoint_wanted |= floor != self.local_closed;
            self.local_closed = floor;
        }
        let merges = x.input.is_some();
        for partial in &partials {
            if merges && self.emitted_at.is_some() {
                self.handed_over.insert(partial.window_start_ms, now);
            }
            let key = exchange::partial_key(partial);
            for record in exchange::encode_partial(partial, x.max_bytes) {
                sink.send(&x.topic, Some(key.as_bytes()), &record, &[])?;
            }
        }
        for (window, counts) in counts.into_iter().filter(|(_, c)| !c.is_empty()) {
            let key = exchange::counts_key(id, window);
            sink.send(&x.topic, Some(key.as_bytes()), &exchange::encode_counts(id, window, counts), &[])?;
        }
        // Kept while another task here holds the window open: its live figures need them.
        if !partials.is_empty() {
            for partial in partials {
                self.sent.entry(partial.window_start_ms).or_default().push(partial);
            }
            let tasks = &self.tasks;
            self.sent.retain(|&w, _| tasks.iter().any(|t| t.holds_open(w)));
        }
        // The task's partitions are done up to what it closed: that is in the partials.
        let closed = self.tasks[t].closed_through();
        for &p in &self.tasks[t].inputs {
            self.offsets.release_partition(p, closed);
        }
        Ok(false)
    }

    fn add_partial(&mut self, partial: Partial) {
        let (task, window, plugin) = (partial.task, partial.window_start_ms, partial.plugin.clone());
        match self.merge.add(partial) {
            Added::Kept => {}
            Added::Duplicate => {
                tracing::debug!(task, window = %format_rfc3339_millis(window), %plugin, "partial already held; ignored")
            }
            Added::AfterPublication => {
                tracing::error!(task, window = %format_rfc3339_millis(window), %plugin, "a partial arrived after its window was published; it is not in the published result")
            }
            Added::UnknownPlugin => {
                tracing::error!(task, window = %format_rfc3339_millis(window), %plugin, "a partial of a plugin this host does not run: every host of a group must load the same plugins")
            }
        }
    }

    /// Publishes every window the merge watermark has closed, oldest first.
    fn publish_due(&mut self, now: Instant, sink: &mut dyn Sink) -> anyhow::Result<()> {
        // Through a partials topic the merge publishes from the driver, which confirms the
        // number of tasks first (see `publish_merged`).
        if self.exchange.is_some() {
            return Ok(());
        }
        let watermark = self.merge.advance();
        let deferred_due = self.deferred.first_key_value().is_some_and(|(&w, _)| self.rule.is_closed(w, watermark));
        if !deferred_due && self.next_to_publish(watermark).is_none() {
            return Ok(());
        }
        self.complete_late(sink)?;
        while let Some(start) = self.next_to_publish(watermark) {
            // A task that does not hold the merge back (it is idle) may still hold the window:
            // it hands its share over now, so the result is whole.
            for t in 0..self.tasks.len() {
                let positions = positions(&self.tasks[t], &self.offsets);
                let bound = self.rule.window_closes_at(start);
                let (partials, counts, failures) = self.tasks[t].close_through(bound, &positions, &mut self.stats);
                self.report_failures(t, failures);
                let id = self.tasks[t].id;
                for (window, counts) in counts {
                    self.complete(window, id, counts, sink)?;
                }
                for partial in partials {
                    self.add_partial(partial);
                }
            }
            self.publish_window(start, sink)?;
            if let Some(emitted) = &mut self.emitted_at {
                emitted.push(now);
            }
        }
        self.route_deferred(watermark, sink)?;
        self.complete_empty(sink)?;
        self.offsets.release(watermark);
        Ok(())
    }

    /// [`Engine::publish_due`] of a merge stage fed by the partials topic: only what the
    /// partials say, never this process's tasks (they report like everyone else's).
    fn publish_due_from_exchange(&mut self, now: Instant, sink: &mut dyn Sink) -> anyhow::Result<()> {
        if !self.merges() {
            return Ok(());
        }
        self.merge.advance();
        // When every task runs here, the last one's handing a window over is when every task's
        // watermark had passed its end: the latency then includes the partials' round trip
        // through Kafka. Otherwise the merge knows only when it learned it.
        let all_here = self.merge.tasks().all(|id| self.tasks.iter().any(|t| t.id == id));
        while let Some(start) = self.merge.next_due() {
            self.publish_window(start, sink)?;
            self.checkpoint_wanted = true;
            let handed_over = self.handed_over.remove(&start).filter(|_| all_here);
            if let Some(emitted) = &mut self.emitted_at {
                emitted.push(handed_over.unwrap_or(now));
            }
        }
        self.complete_empty(sink)?;
        let published = self.merge.published();
        let rule = self.rule;
        self.handed_over.retain(|&w, _| !rule.window_is_closed(w, published));
        if let Some(input) = self.exchange.as_mut().and_then(|x| x.input.as_mut()) {
            input.offsets.release(published);
        }
        Ok(())
    }

    /// The oldest window that `watermark` closes and that a task or the merge still holds.
    fn next_to_publish(&self, watermark: i64) -> Option<i64> {
        let merge = self.merge.next_due();
        let tasks = self.tasks.iter().filter_map(Task::next_window).min();
        let oldest = merge.into_iter().chain(tasks).min()?;
        self.rule.window_is_closed(oldest, watermark).then_some(oldest)
    }

    /// Late events whose windows `watermark` published: their copies go out now.
    fn route_deferred(&mut self, watermark: i64, sink: &mut dyn Sink) -> anyhow::Result<()> {
        while let Some((&w, _)) = self.deferred.first_key_value() {
            if !self.rule.is_closed(w, watermark) {
                break;
            }
            let (_, events) = self.deferred.pop_first().expect("checked above");
            for e in events {
                let input =
                    Input { partition: e.partition, offset: e.offset, key: e.key.as_deref(), payload: &e.payload };
                let info = &self.partitions[e.partition];
                tracing::debug!(topic = %info.topic, partition = info.partition, offset = e.offset, window = %format_rfc3339_millis(w), "late");
                route::copy(&self.topics.late, input, info, "late", &e.detail, &mut self.stats.truncated, sink)?;
            }
        }
        Ok(())
    }

    /// End of input (replay): publishes every window. Through a partials exchange (a replay on
    /// several threads), the tasks here hand every window over and report their last clocks, and
    /// a merge stage here, fed every record of the exchange first, publishes every window.
    pub fn finish(&mut self, sink: &mut dyn Sink) -> anyhow::Result<()> {
        if self.exchange.is_some() {
            // A merge stage that also ran tasks would publish before its own tasks' partials.
            debug_assert!(self.tasks.is_empty() || !self.merges(), "tasks and the merge on one engine");
            let now = Instant::now();
            for p in 0..self.partitions.len() {
                self.finish_partition(p);
            }
            // Every partition finished: each task is idle, and hands over every window it holds.
            for t in 0..self.tasks.len() {
                self.close_at_task(t, now, sink)?;
            }
            self.report_progress(sink)?;
            if self.merges() {
                self.merge.resume(i64::MAX);
                self.publish_due_from_exchange(now, sink)?;
            }
            return Ok(());
        }
        for t in 0..self.tasks.len() {
            let positions = positions(&self.tasks[t], &self.offsets);
            let (partials, counts, failures) = self.tasks[t].close_through(i64::MAX, &positions, &mut self.stats);
            self.report_failures(t, failures);
            let id = self.tasks[t].id;
            for (window, counts) in counts {
                self.complete(window, id, counts, sink)?;
            }
            for partial in partials {
                self.add_partial(partial);
            }
        }
        // Before every window counts as published: the late events of those still open go into
        // their first records.
        self.complete_late(sink)?;
        self.merge.resume(i64::MAX);
        self.publish_due(Instant::now(), sink)?;
        self.complete_empty(sink)
    }

    /// Hands every task's buffered events to its plugins.
    pub fn flush(&mut self) {
        for t in 0..self.tasks.len() {
            let failures = self.tasks[t].flush();
            self.report_failures(t, failures);
        }
    }

    fn report_failures(&mut self, t: usize, failures: Vec<Failure>) {
        for (i, which, error) in failures {
            self.stats.plugin_errors += 1;
            let task = &self.tasks[t];
            let name = &task.slots()[i].meta_of(which).name;
            tracing::error!(plugin = %name, task = task.id, kind = error.kind(), %error, "plugin call failed; restarting it with empty state, its results for the windows open at this task will be withheld");
        }
    }

    fn publish_window(&mut self, start: i64, sink: &mut dyn Sink) -> anyhow::Result<()> {
        let Some((due, by_plugin)) = self.merge.take(start) else {
            return Ok(());
        };
        let window = due.window;
        let events = due.events;
        let window_header = format_rfc3339_millis(start);
        // "ctr=100 engagement=3", for the log line below.
        let mut published = String::new();
        // Each plugin's records, for the detectors.
        let mut for_detectors: Vec<(String, Vec<OutputRecord>)> = Vec::new();
        // What the window's numbers came from, for its completeness record.
        let mut plugins = Vec::with_capacity(by_plugin.len());
        for (i, partials) in by_plugin.iter().enumerate() {
            let (which, closed) = self.merge.close(i, window, partials, &due.tasks);
            let records = match closed {
                Ok(records) => {
                    let meta = self.merge.slots()[i].meta_of(which);
                    let checked = records.into_iter().map(|r| check_record(r, meta)).collect::<Result<Vec<_>, _>>();
                    if let Err(reason) = &checked {
                        self.stats.plugin_errors += 1;
                        self.merge.slots_mut()[i].bad_record(reason);
                    }
                    checked
                }
                Err(Refusal::Withheld(reason)) => Err(reason),
                Err(Refusal::Failed(e)) => {
                    let reason = e.to_string();
                    self.stats.plugin_errors += 1;
                    let slot = &mut self.merge.slots_mut()[i];
                    tracing::error!(plugin = %slot.meta_of(which).name, kind = e.kind(), error = %e, "the merge's plugin call failed; restarting its instance");
                    slot.failed(which, &e, std::iter::empty());
                    Err(reason)
                }
            };
            plugins.push(PluginRef::of(self.merge.slots()[i].meta_of(which), records.is_err()));
            let records = match records {
                Ok(records) => records,
                Err(reason) => {
                    self.withhold(i, which, window, events, &reason, sink)?;
                    continue;
                }
            };
            let meta = self.merge.slots()[i].meta_of(which).clone();
            let sent = self.send_records(&meta, window, &window_header, records, sink)?;
            published.push_str(&format!("{}{}={}", if published.is_empty() { "" } else { " " }, meta.name, sent.len()));
            if !self.detectors.is_empty() {
                for_detectors.push((meta.name, sent));
            }
            if let Some(pause) = self.emit_pause.filter(|_| i == 0) {
                tracing::info!(window = %window_header, "failpoint: pausing in the middle of emitting a window");
                std::thread::sleep(pause);
                tracing::info!(window = %window_header, "failpoint: resumed");
            }
        }
        self.observe(window, &window_header, &for_detectors, &mut published, sink)?;
        let idle = self.merge.idle_tasks();
        let counts = self.completeness.take_pending(start);
        let watermark = Some(self.merge.watermark());
        let record = Record::new(window, events, counts, watermark, due.tasks.clone(), idle, plugins);
        let record = self.completeness.published(record).clone();
        self.send_completeness(record, sink)?;
        // Only now: the records above name the version that produced them.
        for slot in self.merge.slots_mut() {
            slot.emitted(start);
        }
        for task in &mut self.tasks {
            task.published(start);
        }
        self.stats.windows_emitted += 1;
        let watermark = format_rfc3339_millis(self.merge.watermark());
        tracing::info!(window = %window_header, events, tasks = due.tasks.len(), records = %published, %watermark, "window emitted");
        Ok(())
    }

    /// Hands `window`'s published records to the detectors that read them, and publishes theirs
    /// (see [`detect`]).
    fn observe(
        &mut self,
        window: Window,
        window_header: &str,
        published: &[(String, Vec<OutputRecord>)],
        log: &mut String,
        sink: &mut dyn Sink,
    ) -> anyhow::Result<()> {
        for d in 0..self.detectors.len() {
            let slot = &mut self.detectors[d];
            if slot.observed(window.start_ms) {
                tracing::debug!(detector = %slot.meta().name, window = %window_header, "window observed before the restart (its state says so): not again");
                continue;
            }
            let results = slot.inputs_of(published);
            if results.is_empty() {
                continue;
            }
            let meta = slot.meta().clone();
            match slot.observe(window, &results)? {
                Ok(records) => {
                    let sent = self.send_records(&meta, window, window_header, records, sink)?;
                    log.push_str(&format!(" {}={}", meta.name, sent.len()));
                }
                Err(reason) => {
                    self.stats.plugin_errors += 1;
                    self.stats.windows_withheld += 1;
                    tracing::error!(detector = %meta.name, window = %window_header, %reason, "detector failed on this window: it is skipped (a plugin-errors record says so), and the detector goes on from the state it saved after the window before");
                    let reason = format!("the detector skipped this window: {reason}");
                    plugin_error(&self.topics.plugin_errors, &meta, window, |o| o.str("reason", &reason), sink)?;
                }
            }
        }
        Ok(())
    }

    /// Adds task `task`'s `counts` to the completeness record of the window starting at
    /// `start`: kept for its publication, or, if it is published, the record published again,
    /// updated.
    fn complete(&mut self, start: i64, task: TaskId, counts: Counts, sink: &mut dyn Sink) -> anyhow::Result<()> {
        let is_published = self.rule.window_is_closed(start, self.merge.published());
        match self.completeness.add(self.rule.window(start), task, counts, is_published) {
            Update::Pending | Update::Unchanged => Ok(()),
            Update::Republish(record) => {
                let record = record.clone();
                self.send_completeness(record, sink)
            }
            Update::TooOld => {
                tracing::debug!(window = %format_rfc3339_millis(start), late = counts.late, "window older than the completeness records kept: its record is not updated");
                Ok(())
            }
        }
    }

    /// The records of windows published with nothing in them (every event of them came late):
    /// their counts are all there is to say.
    fn complete_empty(&mut self, sink: &mut dyn Sink) -> anyhow::Result<()> {
        let (rule, published) = (self.rule, self.merge.published());
        let records = self.completeness.published_empty(
            |w| rule.window_is_closed(w, published),
            |w| rule.window(w),
            self.merge.watermark(),
        );
        for record in records {
            self.send_completeness(record, sink)?;
        }
        Ok(())
    }

    /// A late event of the pane starting at `pane`, decided by task `t`: it counts for every
    /// window holding the pane. The counts go to the merge in batches, so that a window's record
    /// is updated once per batch, not per event: through the partials topic with the task's
    /// next progress report, in this process before the next window is published.
    fn count_late(&mut self, t: usize, pane: i64) {
        let id = self.tasks[t].id;
        let mut start = self.rule.first_window_of(pane);
        while start <= pane {
            *self.late_counts.entry((id, start)).or_default() += 1;
            start = start.saturating_add(self.rule.slide_ms);
        }
    }

    /// In this process: the late events counted since the last call, to the merge.
    fn complete_late(&mut self, sink: &mut dyn Sink) -> anyhow::Result<()> {
        for ((task, window), late) in std::mem::take(&mut self.late_counts) {
            self.complete(window, task, Counts::late(late), sink)?;
        }
        Ok(())
    }

    fn send_completeness(&mut self, record: Record, sink: &mut dyn Sink) -> anyhow::Result<()> {
        let value = record.to_json();
        sink.send(&self.topics.completeness, Some(record.key().as_bytes()), value.as_bytes(), &[])?;
        if let Some(log) = &mut self.completeness_log {
            log.push(record);
        }
        Ok(())
    }

    /// The completeness records published since the last call (a window's first, and its
    /// updates), for display. As with [`Engine::take_results`], the first call starts the
    /// recording.
    pub fn take_completeness(&mut self) -> Vec<Record> {
        self.completeness_log.replace(Vec::new()).unwrap_or_default()
    }

    /// Publishes plugin `meta`'s records of `window`, each to its topic unless it is larger than
    /// the topic takes (the broker would refuse it and, with it, the whole transaction): a
    /// record saying so goes out instead. Returns those published.
    fn send_records(
        &mut self,
        meta: &PluginMeta,
        window: Window,
        window_header: &str,
        records: Vec<OutputRecord>,
        sink: &mut dyn Sink,
    ) -> anyhow::Result<Vec<OutputRecord>> {
        let headers: [(&str, &[u8]); 3] = [
            ("plugin", meta.name.as_bytes()),
            ("plugin-version", meta.version.as_bytes()),
            ("window-start", window_header.as_bytes()),
        ];
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
        if let Some(results) = &mut self.results {
            results.push(WindowResults::new(meta, window, &sent));
        }
        for (topic, record, size, limit) in too_large {
            self.withhold_record(meta, window, &topic, &record, size, limit, sink)?;
        }
        Ok(sent)
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
        let meta = self.merge.slots()[i].meta_of(which);
        tracing::warn!(plugin = %meta.name, window = %format_rfc3339_millis(window.start_ms), events, reason, "result withheld");
        plugin_error(&self.topics.plugin_errors, meta, window, |o| o.u64("events", events).str("reason", reason), sink)
    }

    /// Publishes, instead of a record of plugin `meta` that is larger than its topic takes, a
    /// record saying so. The plugin's other records of the window are published.
    #[allow(clippy::too_many_arguments)] // one call site, each argument named there
    fn withhold_record(
        &mut self,
        meta: &PluginMeta,
        window: Window,
        topic: &str,
        record: &OutputRecord,
        size: usize,
        limit: usize,
        sink: &mut dyn Sink,
    ) -> anyhow::Result<()> {
        self.stats.records_withheld += 1;
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

    fn dead_letter(&mut self, input: Input<'_>, reason: &Rejected, sink: &mut dyn Sink) -> anyhow::Result<()> {
        self.stats.dead_lettered += 1;
        let info = &self.partitions[input.partition];
        tracing::debug!(topic = %info.topic, partition = info.partition, offset = input.offset, reason = reason.code(), "dead-lettered");
        let detail = reason.to_string();
        route::copy(&self.topics.dead_letter, input, info, reason.code(), &detail, &mut self.stats.truncated, sink)
    }

    /// An event whose window is closed for good (published, or closed at its task when the
    /// partials go through Kafka): its copy goes out at once.
    fn late_now(
        &mut self,
        input: Input<'_>,
        ts: i64,
        window: i64,
        t: usize,
        sink: &mut dyn Sink,
    ) -> anyhow::Result<()> {
        self.stats.late += 1;
        self.count_late(t, window);
        let detail = if self.exchange.is_some() {
            self.tasks[t].late_detail(window, ts)
        } else {
            format!(
                "window {} of event time {} was already emitted (watermark {})",
                format_rfc3339_millis(window),
                format_rfc3339_millis(ts),
                format_rfc3339_millis(self.merge.published())
            )
        };
        let info = &self.partitions[input.partition];
        tracing::debug!(topic = %info.topic, partition = info.partition, offset = input.offset, window = %format_rfc3339_millis(window), "late");
        route::copy(&self.topics.late, input, info, "late", &detail, &mut self.stats.truncated, sink)
    }
}

/// Where `task`'s partitions have been read (one past the last offset), by their index in it.
fn positions(task: &Task, offsets: &OffsetTracker) -> Vec<i64> {
    task.inputs.iter().map(|&p| offsets.next(p).unwrap_or(i64::MIN)).collect()
}
