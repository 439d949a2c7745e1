//! One attempt of `run` over Kafka: connect, set up the output and partials topics, join the
//! consumer group and meanwhile fence any predecessor, then consume until shutdown or a
//! [`Failure`], carrying out the group's rebalances between messages.
//!
//! Order matters for exactly-once: the producer initialises its transactions (which aborts
//! what an earlier run of this host left open) before the host takes any assignment (the
//! group may decide one meanwhile: the join runs in librdkafka's background), and a
//! partition's committed offset is read only once it is assigned, after its previous owner
//! committed or aborted. On revoke the attempt commits what covers the revoked partitions
//! before giving them up; on a lost assignment it aborts. Between messages the attempt looks
//! at the shared [`Health`]: an error that never heals, reported by any client, ends it
//! within a tenth of a second.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Message;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::{Engine, Input};
use crate::kafka::admin::{Admin, HEADROOM};
use crate::kafka::group::Rebalanced;
use crate::kafka::{Failure, Health};
use crate::metrics::Stats;
use crate::ops::{Ops, Phase, PluginStatus, SwapInbox};
use crate::plugin::{Aggregator, Loader, Plugin, SwapReport};
use crate::sink::kafka::KafkaSink;
use crate::source::kafka::{KafkaSource, Route};

/// How long the pipeline thread waits for a message before it moves the tasks' clocks on (a
/// rebalance or an error wakes it sooner).
const WAIT_FOR_MESSAGES: Duration = Duration::from_millis(100);
/// The most events of the consumer's own queue served between two batches of messages.
const GROUP_EVENTS_PER_ROUND: usize = 256;
/// How often the partitions' backlog, the fatal slot and the swap inbox are looked at.
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(100);
/// How often progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// How often the console's and /metrics' figures are refreshed.
const PUBLISH_EVERY: Duration = Duration::from_millis(250);
/// How often the open windows' live figures are taken, while someone looks at them: each time
/// costs an export of every plugin's accumulators of those windows.
const OPEN_EVERY: Duration = Duration::from_secs(1);
/// The largest record of the partials topic the host creates: big windows (a million users'
/// sets) go in fewer chunks.
const PARTIALS_MAX_BYTES: usize = 8 << 20;
/// The smallest `max.message.bytes` of an output topic the host can publish to (a truncated
/// copy's headers, a plugin-error record).
const MIN_TOPIC_BYTES: usize = 4096;

/// What every attempt of a run shares.
pub struct Env<'a> {
    pub config: &'a Config,
    pub loader: &'a Loader,
    pub ops: &'a Arc<Ops>,
    pub swaps: &'a SwapInbox,
    pub shutdown: &'a CancellationToken,
    /// What every attempt's clients report: a fatal error stays (it never heals).
    pub health: &'a Health,
    /// Which of the host's pipeline threads runs these attempts.
    pub thread: usize,
}

/// When each periodic task last ran.
struct Timers {
    commit: Instant,
    progress: Instant,
    housekeeping: Instant,
    publish: Instant,
    open: Instant,
}

impl Timers {
    fn new() -> Self {
        let now = Instant::now();
        let publish = now.checked_sub(PUBLISH_EVERY).unwrap_or(now);
        Timers { commit: now, progress: now, housekeeping: now, publish, open: publish }
    }

    /// Whether `every` has passed since `*last` (as of `now`); if so, `*last` becomes `now`.
    fn due(last: &mut Instant, every: Duration, now: Instant) -> bool {
        let due = now.duration_since(*last) >= every;
        if due {
            *last = now;
        }
        due
    }
}

/// A running attempt.
pub struct Attempt<'a> {
    env: &'a Env<'a>,
    pipeline: Engine,
    source: KafkaSource,
    sink: KafkaSink,
    /// Kept from start-up for the output topics of plugins swapped in (and because destroying
    /// a client takes librdkafka about 100 ms: not on the way to the first message).
    admin: Admin,
    health: Health,
    /// The counters of the run's earlier attempts.
    carried: Stats,
    /// The largest `max.message.bytes` of the input topics (for topics created later).
    input_max_bytes: usize,
    timers: Timers,
    /// Windows emitted as of the last checkpoint.
    committed_windows: u64,
    /// The consumer's last error, until a message is read or a checkpoint commits offsets.
    consumer_error: Option<String>,
    first_message: Option<Duration>,
    latencies_us: Vec<u64>,
    /// The group generation of the last assignment.
    generation: u64,
    fetch_pause: FetchPause,
}

/// Test-only failpoint (`ADSTREAM_FAILPOINT_FETCH_PAUSE_MS`): once the third window is
/// published and the host has read all its input as far as librdkafka knows, the consumer stops
/// fetching its input for this long, as librdkafka does during a rebalance, while the host runs
/// on; then it fetches again.
#[derive(Clone, Copy)]
enum FetchPause {
    Off,
    Armed(Duration),
    Until(Instant),
}

impl FetchPause {
    fn from_env() -> Self {
        std::env::var("ADSTREAM_FAILPOINT_FETCH_PAUSE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(FetchPause::Off, |ms| FetchPause::Armed(Duration::from_millis(ms)))
    }
}

/// How an attempt ended.
pub struct Ended {
    /// The run's counters so far (earlier attempts' included).
    pub stats: Stats,
    /// `None`: a clean stop.
    pub failure: Option<Failure>,
    /// Sizes of records the broker refused, by topic, for the next attempt.
    pub refused: Vec<(String, usize)>,
}

impl<'a> Attempt<'a> {
    /// Connects and resumes, with `pipeline` if given (the first attempt's, loaded before) or a
    /// new one. `refused` are sizes of records the broker refused in earlier attempts, by
    /// topic: the topic's limit is taken to be below them.
    pub fn start(
        env: &'a Env<'a>,
        pipeline: Option<Engine>,
        carried: Stats,
        refused: &[(String, usize)],
    ) -> Result<Self, Failure> {
        let config = env.config;
        // A later attempt leaves the phase at "waiting", with the reason, until it consumes.
        let mut pipeline = match pipeline {
            Some(p) => {
                env.ops.set_phase(env.thread, Phase::Starting);
                p
            }
            None => Engine::new(config.time, env.loader, config.kafka.outputs.clone())?,
        };
        let health = env.health.clone();
        tracing::info!(kafka = %config.kafka.client.describe(), "connecting");
        let topics = Topics::of(config, &pipeline);
        // The consumer connects first, alone: a refused certificate or password is then told
        // from a broker that is down by the consumer's own errors within seconds (with the admin
        // client connecting beside it, one run in three reported a refused certificate only
        // after the 10 s connect timeout, not understood). Then, on another thread, the admin
        // client sets the topics up and the producer is created (its batches are sized by the
        // topics' limits; with exactly-once it initialises its transactions, fencing any
        // predecessor), while this one joins the group as soon as the partials topic exists.
        // What must follow the fencing waits for the assignment, which is carried out only once
        // `start` returns: reading the committed offsets, and producing.
        let source = KafkaSource::connect(&config.kafka, &health)?;
        let outputs = std::thread::scope(|scope| {
            let (topics_ready, ready) = std::sync::mpsc::channel();
            let outputs = std::thread::Builder::new()
                .name("set-up-outputs".into())
                .spawn_scoped(scope, || set_up_outputs(config, &health, &topics, refused, topics_ready))
                .map_err(|e| Failure::Fatal(anyhow::anyhow!("starting a thread: {e}")));
            // No partials topic, no group: the other thread's failure says why.
            let joined = if ready.recv().unwrap_or(false) { source.join_group() } else { Ok(()) };
            let outputs = outputs.and_then(|o| o.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
            joined.and(outputs)
        });
        let Outputs { admin, sink, input_max_bytes, partials_limit } = match outputs {
            Ok(outputs) => outputs,
            Err(failure) => {
                // Joined, the consumer would wait for this attempt to act on a rebalance.
                source.abandon();
                return Err(failure);
            }
        };
        pipeline.reset_assignment();
        pipeline.use_exchange(&config.kafka.partials_topic, partials_limit.saturating_sub(HEADROOM).max(1024));
        if pipeline.has_detectors() {
            pipeline.use_state_topic(&config.kafka.state_topic);
        }
        pipeline.take_emitted();
        pipeline.take_results();
        pipeline.take_completeness();
        // The tasks may change: live figures taken before are not shown again.
        env.ops.set_open(env.thread, crate::engine::peek::OpenWindows::default());
        Ok(Attempt {
            env,
            pipeline,
            source,
            sink,
            admin,
            health,
            carried,
            input_max_bytes,
            timers: Timers::new(),
            committed_windows: 0,
            consumer_error: None,
            first_message: None,
            latencies_us: Vec::new(),
            generation: 0,
            fetch_pause: FetchPause::from_env(),
        })
    }

    /// Consumes until shutdown (then commits what is done) or a failure.
    pub fn run(mut self) -> Ended {
        let config = &self.env.config.kafka;
        tracing::info!(kafka = %config.client.describe(), group = %config.group_id, host = %config.host_id, tasks = self.source.task_count(), "joining the consumer group");
        self.env.ops.set_phase(self.env.thread, Phase::Running);
        match self.consume() {
            Ok(()) => self.shut_down(),
            Err(failure) => {
                let ended = Ended { stats: self.stats(), failure: Some(failure), refused: self.sink.refused_sizes() };
                self.abandon();
                ended
            }
        }
    }

    /// The run's counters: earlier attempts' and this one's.
    fn stats(&self) -> Stats {
        Stats { group_generation: self.generation, ..self.carried.then(&self.pipeline.stats()) }
    }

    fn consume(&mut self) -> Result<(), Failure> {
        while !self.env.shutdown.is_cancelled() {
            self.serve_group_events()?;
            for rebalance in self.source.take_rebalances() {
                self.rebalance(rebalance)?;
            }
            let taken = self.source.fetched.take(WAIT_FOR_MESSAGES);
            // One clock read per batch (`now`) serves every message and every check below: the
            // clock is a measurable share of the per-message cost.
            let now = Instant::now();
            if taken == 0 {
                self.pipeline.advance(now, &mut self.sink)?;
            } else {
                self.source.wake_idle(&mut self.pipeline, taken, now);
            }
            let mut delivered = false;
            // A batch is runs of one partition's messages: each run is routed once (the topic's
            // name read and compared, the partition looked up), not each message.
            let mut run: Option<((usize, i32), Option<Route>)> = None;
            for i in 0..taken {
                // The message borrows the source: the attempt's other parts are borrowed apart.
                let Attempt { source, pipeline, sink, first_message, consumer_error, .. } = &mut *self;
                let msg = source.fetched.message(i);
                if let Some(e) = msg.error() {
                    note_consumer_error(source, consumer_error, e)?;
                    continue;
                }
                let route = match run {
                    Some((key, route)) if key == msg.run_key() => route,
                    _ => {
                        let route = source.route(msg.topic(), msg.partition());
                        run = Some((msg.run_key(), route));
                        route
                    }
                };
                deliver(pipeline, sink, first_message, route, msg.offset(), msg.key(), msg.payload(), now)?;
                delivered = true;
                // A window closed (or published) is committed before the next message, as if
                // messages came one at a time: its results do not wait for the rest of the batch,
                // and each publication has its own transaction.
                if self.pipeline.merge_due()
                    || self.pipeline.windows_emitted() > self.committed_windows
                    || self.pipeline.checkpoint_wanted()
                {
                    self.periodic(now)?;
                }
            }
            if delivered && self.consumer_error.take().is_some() {
                self.health.last_error.clear();
            }
            self.periodic(now)?;
        }
        Ok(())
    }

    /// Serves the consumer's own queue: the group's events (rebalances, recorded for the caller),
    /// and errors. The assigned partitions' messages come through [`KafkaSource::fetched`] (see
    /// [`crate::kafka::fetched`] for why none should come here); one that did would be handled.
    fn serve_group_events(&mut self) -> Result<(), Failure> {
        // `poll` says `None` both when the queue is empty and after serving an event (a log
        // line): the queue's length says how many to serve, up to a bound (what is left is served
        // after the next batch), and at least one poll a round, which librdkafka counts as the
        // application's (`max.poll.interval.ms`). Stopping at the first `None` served one log
        // line a round, ten a second while idle: with librdkafka's debug logs on, a rebalance
        // waited 29 s behind them.
        let Attempt { source, pipeline, sink, first_message, consumer_error, health, .. } = &mut *self;
        for _ in 0..source.fetched.group_events().clamp(1, GROUP_EVENTS_PER_ROUND) {
            match source.consumer.poll(Duration::ZERO) {
                Some(Ok(msg)) => {
                    let route = source.route(msg.topic(), msg.partition());
                    let (key, payload) = (msg.key(), msg.payload().unwrap_or_default());
                    deliver(pipeline, sink, first_message, route, msg.offset(), key, payload, Instant::now())?;
                    if consumer_error.take().is_some() {
                        health.last_error.clear();
                    }
                }
                Some(Err(e)) => note_consumer_error(source, consumer_error, e)?,
                None => {}
            }
        }
        Ok(())
    }

    /// Carries out what the group decided (see [`crate::kafka::group`]).
    fn rebalance(&mut self, rebalance: Rebalanced) -> Result<(), Failure> {
        self.pipeline.rebalanced();
        self.env.ops.set_open(self.env.thread, crate::engine::peek::OpenWindows::default());
        match rebalance {
            Rebalanced::Revoked { lost: false } => {
                tracing::info!(assignment = %self.source.describe_assignment(), "rebalance: committing, then giving the partitions up");
                self.pipeline.flush();
                self.checkpoint(false)?;
                self.timers.commit = Instant::now();
            }
            Rebalanced::Revoked { lost: true } => {
                tracing::warn!(assignment = %self.source.describe_assignment(), "rebalance: this host lost its partitions (its session expired); aborting what it did since its last commit, another host does it again");
                self.sink.abort()?;
            }
            Rebalanced::Failed(reason) => {
                tracing::warn!(%reason, "rebalance failed; aborting since the last commit and rejoining");
                self.sink.abort()?;
            }
            Rebalanced::Assigned(partitions) => {
                self.source.assign(&mut self.pipeline, &partitions)?;
                self.committed_windows = self.pipeline.windows_emitted();
                self.generation = self.source.group_generation().unwrap_or(self.generation);
                tracing::info!(assignment = %self.source.describe_assignment(), generation = self.generation, "rebalance: consuming");
                return Ok(());
            }
        }
        self.pipeline.reset_assignment();
        self.source.revoke()
    }

    fn periodic(&mut self, now: Instant) -> Result<(), Failure> {
        // A window the merge stage can publish: first the input topics' partition counts from
        // the cluster (a metadata request per input topic and window, on the admin client's
        // connection: see `refresh_task_count`), so that partitions added since are waited for
        // rather than left out.
        if self.pipeline.merge_due() {
            let tasks = self.source.refresh_task_count(&self.admin)?;
            self.pipeline.publish_merged(tasks, now, &mut self.sink)?;
        }
        if Timers::due(&mut self.timers.housekeeping, HOUSEKEEPING_EVERY, now) {
            self.health.fatal.check()?;
            self.fetch_pause_failpoint(now)?;
            self.source.report_backlog(&mut self.pipeline, now);
            // Every task's clock, for those idle or behind since their last message.
            self.pipeline.advance(now, &mut self.sink)?;
            self.apply_swaps();
        }
        // Per message: only a counter. The full stats (which walk the join's pending clicks) are
        // gathered when progress is logged.
        let windows_emitted = self.pipeline.windows_emitted();
        if now.duration_since(self.timers.commit) >= self.env.config.kafka.commit_interval
            || windows_emitted > self.committed_windows
            || self.pipeline.checkpoint_wanted()
        {
            self.checkpoint(false)?;
            self.committed_windows = windows_emitted;
            self.timers.commit = Instant::now();
        }
        if Timers::due(&mut self.timers.publish, PUBLISH_EVERY, now) {
            self.publish(now);
        }
        if Timers::due(&mut self.timers.open, OPEN_EVERY, now) && self.env.ops.open_wanted() {
            self.env.ops.set_open(self.env.thread, self.pipeline.peek_open());
        }
        if Timers::due(&mut self.timers.progress, PROGRESS_EVERY, now) {
            super::log_progress(&self.stats());
        }
        Ok(())
    }

    fn fetch_pause_failpoint(&mut self, now: Instant) -> Result<(), Failure> {
        match self.fetch_pause {
            FetchPause::Armed(pause)
                if self.pipeline.windows_emitted() >= 3 && self.source.caught_up(&self.pipeline) =>
            {
                tracing::warn!(?pause, "failpoint: the consumer stops fetching the input");
                self.source.pause_inputs(true)?;
                self.fetch_pause = FetchPause::Until(now + pause);
            }
            FetchPause::Until(until) if now >= until => {
                tracing::warn!("failpoint: the consumer fetches the input again");
                self.source.pause_inputs(false)?;
                self.fetch_pause = FetchPause::Off;
            }
            _ => {}
        }
        Ok(())
    }

    /// Commits the output so far with the input offsets it covers; `last` on the clean stop.
    fn checkpoint(&mut self, last: bool) -> Result<(), Failure> {
        self.pipeline.report_progress(&mut self.sink).map_err(Failure::Recoverable)?;
        let offsets = self.source.offsets(&self.pipeline)?;
        self.sink.checkpoint(&offsets, &self.source.consumer, last)?;
        // Committing offsets is a round trip to the broker: a consumer error seen before is
        // over, as far as readiness goes (on an idle stream no message comes to say so).
        if offsets.count() > 0 {
            self.consumer_error = None;
            self.health.last_error.clear();
        }
        self.record_latencies();
        Ok(())
    }

    fn publish(&mut self, now: Instant) {
        let ops = self.env.ops;
        ops.add_results(self.pipeline.take_results());
        ops.add_completeness(self.pipeline.take_completeness());
        let kafka_error = self.consumer_error.clone().or_else(|| self.health.last_error.recent(Duration::MAX));
        ops.publish(
            self.env.thread,
            self.stats(),
            self.source.status(&self.pipeline, now),
            PluginStatus::of(&self.pipeline),
            kafka_error,
        );
    }

    /// The output of the windows emitted since the last call is acknowledged now: how long after
    /// the watermark passed their end.
    fn record_latencies(&mut self) {
        let acknowledged = Instant::now();
        for passed in self.pipeline.take_emitted() {
            let latency = acknowledged.duration_since(passed);
            self.env.ops.result_latency(latency);
            let us = latency.as_micros() as u64;
            tracing::debug!(latency_us = us, "window results acknowledged");
            self.latencies_us.push(us);
        }
    }

    /// Clean stop: commits what is done.
    fn shut_down(mut self) -> Ended {
        self.env.ops.set_phase(self.env.thread, Phase::Stopping);
        tracing::info!(
            open_windows = self.pipeline.stats().open_windows,
            "shutting down: committing what is done; open windows are rebuilt from Kafka on restart"
        );
        self.pipeline.flush();
        let failure = self.checkpoint(true).err();
        let mut stats = self.stats();
        super::log_progress(&stats);
        stats.startup_to_first_message_us = self.first_message.map(|d| d.as_micros() as u64);
        stats.result_latencies_us = std::mem::take(&mut self.latencies_us);
        // The tasks move to the others when this member's session expires (static membership);
        // after a failed last commit the consumer is given up like any failed one.
        if failure.is_none() {
            self.source.close();
        } else {
            self.source.abandon();
        }
        Ended { stats, failure, refused: Vec::new() }
    }

    /// Gives the clients up without waiting on Kafka; whatever this attempt produced after its
    /// last checkpoint is aborted (or fenced by the next attempt) and never seen.
    fn abandon(self) {
        self.sink.abandon();
        self.source.abandon();
    }

    /// Puts in charge the plugin versions the console or the file watcher loaded, between two
    /// messages. Output topics a new version names are created first if missing (unless
    /// `--no-create-topics`), and their size limits read.
    fn apply_swaps(&mut self) {
        while let Some(request) = self.env.swaps.try_recv() {
            let name = request.plugin.meta().name.clone();
            // The requester gave up waiting (the pipeline was blocked on Kafka) and reported the
            // swap as not taken: keep it that way.
            if request.reply.is_closed() {
                tracing::warn!(plugin = %name, origin = request.origin, "a swap request was abandoned by its requester while the pipeline was busy; not applied");
                continue;
            }
            let result = self.swap(request.plugin);
            // The console shows the new version before the requester hears of it: a host of
            // several threads answers once every thread has answered.
            if result.is_ok() {
                self.publish(Instant::now());
            }
            // If the requester gave up in the meantime, nobody records the outcome: do it here.
            if let Err(result) = request.reply.send(result) {
                self.env.ops.swapped(&name, request.origin, &result);
            }
        }
    }

    fn swap(&mut self, plugin: Plugin) -> Result<SwapReport, String> {
        let config = &self.env.config.kafka;
        let outputs = config.outputs.of_plugin(plugin.meta());
        let new: Vec<String> = outputs.into_iter().filter(|t| !self.sink.knows(t)).collect();
        if !new.is_empty() {
            let limits = output_limits(&self.admin, config, &new, self.input_max_bytes)
                .map_err(|f| format!("setting up its output topics: {f}"))?;
            for (topic, limit) in limits {
                if limit < self.sink.batch_limit() {
                    return Err(format!(
                        "its output topic {topic} takes at most {limit} bytes, less than the producer's batches (sized at start-up for the strictest topic then): raise the topic's max.message.bytes, or restart the host with the new plugin file"
                    ));
                }
                self.sink.add_limit(topic, limit);
            }
        }
        self.pipeline.swap(Box::new(plugin)).map_err(|e| e.to_string())
    }
}

/// One message of an assigned partition (at `offset`, routed to `route`), to the pipeline.
#[allow(clippy::too_many_arguments)]
fn deliver(
    pipeline: &mut Engine,
    sink: &mut KafkaSink,
    first_message: &mut Option<Duration>,
    route: Option<Route>,
    offset: i64,
    key: Option<&[u8]>,
    payload: &[u8],
    now: Instant,
) -> Result<(), Failure> {
    match route {
        Some(Route::Input(partition)) => {
            let input = Input { partition, offset, key, payload };
            first_message.get_or_insert_with(crate::metrics::since_start);
            pipeline.ingest(input, now, sink)?;
        }
        Some(Route::Exchange) => pipeline.ingest_exchange(offset, payload, sink)?,
        None => {}
    }
    Ok(())
}

/// A consumer error: the host stops on one that never heals; the others are remembered in
/// `slot` (for readiness) until a message or a commit shows the consumer working again.
fn note_consumer_error(
    source: &KafkaSource,
    slot: &mut Option<String>,
    error: rdkafka::error::KafkaError,
) -> Result<(), Failure> {
    if let Some(fatal) = source.judge(&error) {
        return Err(fatal);
    }
    *slot = Some(error.to_string());
    Ok(())
}

/// The topics the host writes to: the output topics (the host's and the plugins'), and its own
/// (the partials topic, the completeness records, the detectors' state if any).
struct Topics {
    outputs: Vec<String>,
    own: Vec<String>,
}

impl Topics {
    fn of(config: &Config, pipeline: &Engine) -> Self {
        let kafka = &config.kafka;
        let completeness = &kafka.outputs.completeness;
        let mut outputs: Vec<String> = kafka.outputs.host_topics().into_iter().filter(|t| t != completeness).collect();
        for meta in pipeline.plugins() {
            for t in kafka.outputs.of_plugin(meta) {
                if !outputs.contains(&t) {
                    outputs.push(t);
                }
            }
        }
        let mut own = vec![kafka.partials_topic.clone(), completeness.clone()];
        if pipeline.has_detectors() {
            own.push(kafka.state_topic.clone());
        }
        Topics { outputs, own }
    }
}

/// What [`set_up_outputs`] made ready.
struct Outputs {
    admin: Admin,
    sink: KafkaSink,
    input_max_bytes: usize,
    partials_limit: usize,
}

/// Sets the topics up (saying on `topics_ready` whether that worked), then creates the producer.
fn set_up_outputs(
    config: &Config,
    health: &Health,
    topics: &Topics,
    refused: &[(String, usize)],
    topics_ready: std::sync::mpsc::Sender<bool>,
) -> Result<Outputs, Failure> {
    let admin = Admin::new(&config.kafka.client, health);
    let set_up =
        admin.map_err(Failure::from).and_then(|admin| Ok((set_up_topics(config, &admin, topics, refused)?, admin)));
    let _ = topics_ready.send(set_up.is_ok());
    let ((limits, input_max_bytes), admin) = set_up?;
    let partials_limit = limits.get(&config.kafka.partials_topic).copied().unwrap_or(MIN_TOPIC_BYTES);
    let kafka = &config.kafka;
    let sink =
        KafkaSink::new(&kafka.client, health, kafka.transactional_id.as_deref(), &kafka.output_compression, limits)?;
    Ok(Outputs { admin, sink, input_max_bytes, partials_limit })
}

/// Creates the missing output topics (sized to hold what the inputs can hold) and reads every
/// output topic's size limit, lowered below any size the broker refused before. Returns the
/// limits by output topic and the largest input topic's limit.
///
/// One round trip when every topic exists and is readable (a restart): every limit at once.
fn set_up_topics(
    config: &Config,
    admin: &Admin,
    topics: &Topics,
    refused: &[(String, usize)],
) -> Result<(HashMap<String, usize>, usize), Failure> {
    let kafka = &config.kafka;
    let inputs = [kafka.impressions_topic.clone(), kafka.clicks_topic.clone()];
    let wanted: Vec<String> = topics.outputs.iter().chain(&topics.own).cloned().collect();
    // Every limit at once; among the topics without an answer are the ones to create.
    let all: Vec<String> = inputs.iter().chain(&wanted).cloned().collect();
    let (mut limits, unread) = admin.describe_limits(&all)?;
    // Those without an answer may be missing (the ones to create), or not readable: one more
    // round trip tells, when there are any.
    let candidates: Vec<String> = unread.iter().filter(|t| wanted.contains(t)).cloned().collect();
    let missing = if candidates.is_empty() { Vec::new() } else { admin.missing(&candidates)? };
    let largest_input = inputs.iter().filter_map(|t| limits.get(t).copied()).max();
    let created = create_missing(admin, kafka, &missing, &topics.outputs, largest_input)?;
    // Not readable, or created by another host a moment ago: taken as Kafka's default.
    let others: Vec<String> = unread.into_iter().filter(|t| !created.contains_key(t)).collect();
    limits.extend(admin.max_message_bytes(&others)?);
    let input_max = input_max(&mut limits, &inputs);
    limits.extend(created);
    for (topic, size) in refused {
        if let Some(limit) = limits.get_mut(topic) {
            *limit = (*limit).min(size.saturating_sub(1));
        }
    }
    for (topic, &limit) in &limits {
        if limit < MIN_TOPIC_BYTES {
            return Err(Failure::Fatal(anyhow::anyhow!(
                "output topic {topic} takes records of at most {limit} bytes (max.message.bytes); the host needs at least {MIN_TOPIC_BYTES} to publish to it"
            )));
        }
        let copies = [&kafka.outputs.late, &kafka.outputs.dead_letter].contains(&topic);
        if copies && limit < input_max + HEADROOM {
            tracing::warn!(%topic, limit, input_max, "this topic takes records of at most {limit} bytes, less than a copy of the largest message the input topics take ({input_max} bytes) with its headers: copies of larger messages will be truncated (headers truncated=true, original-size, original-sha256)");
        }
    }
    Ok((limits, input_max))
}

/// The largest of the input topics' limits, taken out of `limits`.
fn input_max(limits: &mut HashMap<String, usize>, inputs: &[String]) -> usize {
    inputs.iter().filter_map(|t| limits.remove(t)).max().unwrap_or(crate::kafka::admin::KAFKA_DEFAULT_MAX_MESSAGE_BYTES)
}

/// Creates the `missing` topics, returning the limit each was created with:
///
/// - output topics (unless `--no-create-topics`): as many partitions as the input topics, room
///   for the largest input message and its headers;
/// - the partials topic (whatever `--no-create-topics` says: it is the host's own): one
///   partition, whose owner runs the merge stage, records of up to [`PARTIALS_MAX_BYTES`]
///   (larger shares are sent in chunks);
/// - the completeness topic (unless `--no-create-topics`): one partition (the merge stage reads
///   it back when it takes over), compacted (the last record of each window supersedes the
///   others), kept for a week;
/// - the detectors' state topic (the host's own): one partition, compacted (only the last
///   state of each detector matters).
fn create_missing(
    admin: &Admin,
    kafka: &crate::config::KafkaConfig,
    missing: &[String],
    outputs: &[String],
    input_max: Option<usize>,
) -> Result<HashMap<String, usize>, Failure> {
    let mut created = HashMap::new();
    let missing_outputs: Vec<String> = missing.iter().filter(|t| outputs.contains(t)).cloned().collect();
    if !missing_outputs.is_empty() {
        if !kafka.create_topics {
            return Err(Failure::Fatal(anyhow::anyhow!(
                "output topics {missing_outputs:?} do not exist and --no-create-topics is set: create them, or run without --no-create-topics"
            )));
        }
        let input_max = input_max.unwrap_or(crate::kafka::admin::KAFKA_DEFAULT_MAX_MESSAGE_BYTES);
        // As many partitions as the input topics: a task's outputs stay together.
        let partitions = admin.partitions(&kafka.impressions_topic)?.map_or(1, |p| p.len());
        let partitions = i32::try_from(partitions.max(1)).unwrap_or(1);
        created.extend(admin.create(&missing_outputs, partitions, input_max + HEADROOM)?);
    }
    for topic in missing.iter().filter(|t| !outputs.contains(t)) {
        let topics = [topic.clone()];
        let settings: &[(&str, &str)] = if *topic == kafka.partials_topic {
            &[]
        } else if *topic == kafka.state_topic {
            &[("cleanup.policy", "compact")]
        } else if kafka.create_topics {
            &[("cleanup.policy", "compact,delete"), ("retention.ms", COMPLETENESS_RETENTION_MS)]
        } else {
            return Err(Failure::Fatal(anyhow::anyhow!(
                "output topic {topic} (the windows' completeness records) does not exist and --no-create-topics is set: create it (one partition, cleanup.policy=compact,delete), or run without --no-create-topics"
            )));
        };
        created.extend(admin.create_with(&topics, 1, PARTIALS_MAX_BYTES, settings)?);
    }
    Ok(created)
}

/// A week: longer than a window's record is updated ([`crate::engine::complete::UPDATE_HORIZON_MS`]).
const COMPLETENESS_RETENTION_MS: &str = "604800000";

/// Creates those of the output `topics` that are missing (see [`create_missing`]) and returns
/// every one's size limit: for the output topics of a plugin swapped in.
fn output_limits(
    admin: &Admin,
    kafka: &crate::config::KafkaConfig,
    topics: &[String],
    input_max: usize,
) -> Result<HashMap<String, usize>, Failure> {
    let missing = admin.missing(topics)?;
    let created = create_missing(admin, kafka, &missing, topics, Some(input_max))?;
    admin.limits(topics, created)
}
