//! The Kafka consumer: a member of the consumer group `--group-id`, subscribed to both input
//! topics and the partials topic, read with `isolation.level=read_committed`.
//!
//! The group's range assignor hands out partitions topic by topic in member order, so that
//! partition `p` of both input topics (one task) always goes to the same member (the topics
//! must have equal partition counts: checked at connection). The partials topic has one
//! partition: its owner runs the merge stage. Rebalances are carried out by the pipeline
//! thread ([`crate::kafka::group`]): on revoke the attempt commits, on assign
//! [`KafkaSource::assign`] reads the checkpoints before any message.
//!
//! Commits carry a checkpoint in their metadata ([`Checkpoint`]): for an input partition, its
//! task's watermark, how far the partition had been read and which windows the task had handed
//! over; for the partials topic, the watermark the merge published through and how far it had
//! read. A new owner resumes from both, so it neither hands over nor publishes a window again
//! nor re-routes a late or invalid message; see [`crate::engine::Engine::resume_partition`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::metadata::Metadata;

use crate::config::KafkaConfig;
use crate::engine::Engine;
use crate::engine::checkpoint::Checkpoint;
use crate::engine::watermark::PartitionId;
use crate::event::Source;
use crate::kafka::admin::Admin;
use crate::kafka::fetched::{Fetched, Lane, Message};
use crate::kafka::group::{GroupContext, Rebalanced};
use crate::kafka::{Failure, Health, HostContext, Role};
use crate::ops::PartitionStatus;
use crate::sink::kafka::STEP_DEADLINE;

/// How long the first contact with the cluster may take before the attempt is given up (and
/// tried again after a backoff).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The consumer, and what it is assigned now.
pub struct KafkaSource {
    /// The assigned partitions' messages, taken in batches. Declared before the consumer: it
    /// must be dropped first (see [`crate::kafka::fetched`]).
    pub fetched: Fetched,
    pub consumer: BaseConsumer<GroupContext>,
    config: KafkaConfig,
    /// For the short-lived reader of the detectors' state.
    health: Health,
    /// The input topics' partition count (the number of tasks), as last read.
    tasks: usize,
    assigned: Assignment,
}

/// The current assignment, mapped to the engine.
#[derive(Default)]
struct Assignment {
    /// (source, Kafka partition) → engine partition.
    ids: HashMap<(Source, i32), PartitionId>,
    /// Engine partition → (topic, Kafka partition).
    topics: Vec<(String, i32)>,
    /// Engine partition → the offset reading started at: what to commit while nothing of it
    /// was read, and the base of its backlog.
    start_offsets: Vec<i64>,
    /// The partials topic's partition is this member's (it runs the merge), reading from here.
    exchange: Option<i64>,
    /// Engine partition → the broker's last word on its backlog (see
    /// [`KafkaSource::report_backlog`]).
    asked: Vec<Option<Asked>>,
    /// No question to the broker before this (one failed).
    quiet_until: Option<Instant>,
}

/// What the broker said of a partition's backlog.
#[derive(Clone, Copy)]
struct Asked {
    /// The read position it was asked about.
    read: i64,
    at: Instant,
    backlog: bool,
}

/// How old a broker's answer on a quiet partition may grow before it is asked again (it stands
/// until then, and after, until the partition's turn comes).
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(1);
/// How long the broker has to answer: the question holds the pipeline thread.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long no question is asked after one failed (a broker that does not answer must not hold
/// the pipeline thread round after round).
const QUIET_AFTER_FAILURE: Duration = Duration::from_secs(10);

/// Where a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Input(PartitionId),
    /// A record of the partials topic, for the merge stage.
    Exchange,
}

/// The high watermark of a partition as last seen in a fetch response, if any.
fn cached_high_watermark(consumer: &BaseConsumer<GroupContext>, topic: &str, partition: i32) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid for the consumer's lifetime, `topic` is a valid C
    // string for the duration of the call, and the out-pointers point to live locals.
    // rd_kafka_get_watermark_offsets only reads librdkafka's cached state.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
}

impl KafkaSource {
    /// Connects (waiting at most [`CONNECT_TIMEOUT`] for the cluster to answer, and not at all
    /// once a client hit an error that never heals, such as refused credentials), and checks
    /// that both input topics exist with the same partition count. The group is joined by
    /// [`KafkaSource::join_group`], once the output topics and the producer are ready.
    pub fn connect(config: &KafkaConfig, health: &Health) -> Result<Self, Failure> {
        let settings = &config.client;
        let session_timeout = config.session_timeout.as_millis().to_string();
        let defaults = [
            ("group.id", config.group_id.as_str()),
            // Static membership (KIP-345): a host that restarts within the session timeout
            // takes its own tasks back at once, without moving anyone else's.
            ("group.instance.id", config.host_id.as_str()),
            // Partition p of every subscribed topic to the same member: a task stays whole.
            ("partition.assignment.strategy", "range"),
            // A member that dies is noticed (and its tasks given to the others) this soon.
            ("session.timeout.ms", session_timeout.as_str()),
            ("heartbeat.interval.ms", "1000"),
            // Partitions added to the input topics are noticed this soon (default: 5 min).
            ("topic.metadata.refresh.interval.ms", "10000"),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
            ("isolation.level", "read_committed"),
            ("fetch.wait.max.ms", "50"),
            // librdkafka pauses a partition's fetching for this long once its local queue is
            // full (default 1 s): long enough to run the queue dry at our rate. Measured in
            // BENCHMARKS.md: with the default the host waited on fetches for half of a run.
            ("fetch.queue.backoff.ms", "5"),
            // Bounds the prefetched messages held in memory (default 64 MiB). librdkafka measures
            // the queue a partition is forwarded to, so this bounds all the input partitions
            // together ([`crate::kafka::fetched`]); 4 MiB kept the host fed in the benchmark and
            // took ~30 MB off its peak RSS against 16.
            ("queued.max.messages.kbytes", "4096"),
            // After an outage, reconnect within 2 s of the broker's return (default: 10 s).
            ("reconnect.backoff.max.ms", "2000"),
            // Connect to every broker as soon as it is known (a consumer fetches from most of
            // them anyway). With sparse connections librdkafka opens one connection at a time
            // and holds back a second reason to connect for up to 50 ms (half of
            // `reconnect.backoff.ms`): about half of all start-ups waited that long for their
            // first connection (restart to first message 98–118 ms, now 43–66, BENCHMARKS.md).
            // The cost: a connection to every broker of the cluster per host, kept open (in a
            // very large cluster, `--consumer-property enable.sparse.connections=true`).
            ("enable.sparse.connections", "false"),
        ];
        let context = GroupContext::new(HostContext::new(Role::Consumer, settings.clone(), health.clone()));
        let mut consumer: BaseConsumer<GroupContext> = settings
            .client_config(Role::Consumer, &defaults)
            .create_with_context(context)
            .map_err(|e| Failure::Fatal(settings.explain(Role::Consumer, e)))?;
        // SAFETY: the source owns both, and drops `fetched` first (its field comes first).
        let fetched = unsafe { Fetched::new(&consumer) };
        // A rebalance or an error arriving while the pipeline waits for messages wakes it.
        consumer.set_nonempty_callback(fetched.waker());
        let mut source = KafkaSource {
            fetched,
            consumer,
            config: config.clone(),
            health: health.clone(),
            tasks: 0,
            assigned: Assignment::default(),
        };
        // The probe's answer is the impressions topic's metadata: the first of the two reads.
        let impressions = source.wait_for_cluster(health)?;
        let (i, c) = source.partition_counts(Some(impressions), source.by_consumer())?;
        source.check_co_partitioned(i, c)?;
        source.tasks = i;
        Ok(source)
    }

    /// The number of tasks while the host runs: the larger of the two partition counts. They
    /// differ only while an operator adds partitions to one topic and then the other: the host
    /// says so and goes on (refusing to start is for a host that starts that way).
    fn count_tasks(&self, ask: impl Fn(&str) -> KafkaResult<Metadata>) -> Result<usize, Failure> {
        let (i, c) = self.partition_counts(None, ask)?;
        if let Err(e) = self.check_co_partitioned(i, c) {
            tracing::warn!(error = %e, "the input topics have different partition counts; waiting for them to match");
        }
        Ok(i.max(c))
    }

    /// The partition counts of the impressions and the clicks topic (from `impressions`, the
    /// impressions topic's metadata, if given), asking the cluster with `ask`.
    fn partition_counts(
        &self,
        impressions: Option<Metadata>,
        ask: impl Fn(&str) -> KafkaResult<Metadata>,
    ) -> Result<(usize, usize), Failure> {
        let fetch = |topic: &str| {
            ask(topic).map_err(|e| {
                Failure::kafka(e, format!("fetching metadata of topic {topic} from {}", self.config.client.brokers))
            })
        };
        let impressions = match impressions {
            Some(m) => m,
            None => fetch(&self.config.impressions_topic)?,
        };
        let clicks = fetch(&self.config.clicks_topic)?;
        let i = self.partitions_in(&impressions, &self.config.impressions_topic)?.len();
        let c = self.partitions_in(&clicks, &self.config.clicks_topic)?.len();
        Ok((i, c))
    }

    /// Subscribes to the input topics and the partials topic: the group assigns the partitions
    /// from the next poll on ([`KafkaSource::take_rebalances`]).
    pub fn join_group(&self) -> Result<(), Failure> {
        let c = &self.config;
        // A partials topic created a moment ago may not be in every broker's metadata yet; a
        // subscription to a topic not found is an error librdkafka reports at once.
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        loop {
            let found = self
                .consumer
                .fetch_metadata(Some(&c.partials_topic), Duration::from_secs(1))
                .is_ok_and(|m| m.topics().first().is_some_and(|t| t.error().is_none() && !t.partitions().is_empty()));
            if found || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.consumer
            .subscribe(&[&c.impressions_topic, &c.clicks_topic, &c.partials_topic])
            .map_err(|e| Failure::kafka(e, format!("joining consumer group {}", c.group_id)))
    }

    /// The rebalances the group decided since the last call.
    pub fn take_rebalances(&self) -> Vec<Rebalanced> {
        self.consumer.context().take_rebalances()
    }

    /// The number of tasks (partitions of each input topic), as last read.
    pub fn task_count(&self) -> usize {
        self.tasks
    }

    /// Asks the cluster for a topic's metadata through the consumer.
    fn by_consumer(&self) -> impl Fn(&str) -> KafkaResult<Metadata> + '_ {
        |topic| self.consumer.fetch_metadata(Some(topic), STEP_DEADLINE)
    }

    /// The number of tasks, read from the cluster now through `admin`. More than before:
    /// partitions were added to both topics (the group gives the new tasks out at its next
    /// metadata refresh).
    ///
    /// Not through the consumer: the merge stage asks this before every window it publishes,
    /// and a broker serves one connection's requests in turn, so on the consumer's connection
    /// the question waited behind a fetch parked for `fetch.wait.max.ms` (the input queue full,
    /// in catch-up), twice: ~100 ms of every window's result latency (BENCHMARKS.md).
    pub fn refresh_task_count(&mut self, admin: &Admin) -> Result<usize, Failure> {
        let tasks = self.count_tasks(|topic| admin.metadata(topic, STEP_DEADLINE))?;
        if tasks != self.tasks {
            tracing::info!(
                from = self.tasks,
                to = tasks,
                "the input topics have more partitions now: the merge stage waits for the new tasks"
            );
            self.tasks = tasks;
        }
        Ok(tasks)
    }

    /// Polls the consumer (its errors reach the context, and the fatal slot, only then) and
    /// asks for the impressions topic's metadata until the cluster answers; returns it.
    fn wait_for_cluster(&self, health: &Health) -> Result<Metadata, Failure> {
        let started = Instant::now();
        loop {
            self.fatal_so_far(health)?;
            let topic = &self.config.impressions_topic;
            let error = match self.consumer.fetch_metadata(Some(topic), Duration::from_secs(1)) {
                Ok(metadata) => return Ok(metadata),
                Err(e) => e,
            };
            if started.elapsed() >= CONNECT_TIMEOUT {
                // The client may have said why in the meantime (a refused certificate, say).
                self.fatal_so_far(health)?;
                let seen = health.last_error.recent(CONNECT_TIMEOUT).unwrap_or_else(|| error.to_string());
                return Err(Failure::Recoverable(anyhow::anyhow!(
                    "no answer from Kafka at {} within {} s: {seen}",
                    self.config.client.describe(),
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
        }
    }

    /// Serves what the consumer's queue holds while connecting (its logs and errors reach the
    /// context, and the fatal slot, only so), then fails with the fatal error reported, if any.
    /// `poll` says `None` after serving a log event as when the queue is empty, so the queue's
    /// length ends the serving, not a `None`: stopping at the first `None` served one event per
    /// second of [`Self::wait_for_cluster`], and a refused client certificate, queued behind the
    /// connection's log lines, was seen 3-10 s late.
    fn fatal_so_far(&self, health: &Health) -> Result<(), Failure> {
        for _ in 0..self.fetched.group_events().max(1) {
            if let Some(Err(e)) = self.consumer.poll(Duration::ZERO) {
                tracing::debug!(error = %e, "while connecting");
            }
        }
        match health.fatal.get() {
            Some(fatal) => Err(Failure::Fatal(anyhow::anyhow!(fatal))),
            None => Ok(()),
        }
    }

    /// A task is partition `p` of both input topics, so they must have the same partitions:
    /// otherwise some clicks' impressions would be in a partition no task pairs them with.
    fn check_co_partitioned(&self, impressions: usize, clicks: usize) -> Result<(), Failure> {
        if impressions == clicks {
            return Ok(());
        }
        let (fewer, more, target) = if impressions < clicks {
            (&self.config.impressions_topic, &self.config.clicks_topic, clicks)
        } else {
            (&self.config.clicks_topic, &self.config.impressions_topic, impressions)
        };
        Err(Failure::Fatal(anyhow::anyhow!(
            "input topic {} has {impressions} partitions and {} has {clicks}: the host joins partition p of one with partition p of the other (both keyed by impression_id), so they must have the same count. Add partitions to {fewer} to match {more} (with this project's broker: bash scripts/kafka.sh add-partitions {fewer} {target}; elsewhere: kafka-topics.sh --bootstrap-server {} --alter --topic {fewer} --partitions {target}) and make sure the producers of both use the same partitioner",
            self.config.impressions_topic,
            self.config.clicks_topic,
            self.config.client.brokers
        )))
    }

    /// Takes the partitions the group assigned: gives the engine a task for each pair of input
    /// partitions and the merge stage if the partials topic's partition is among them, resumes
    /// each from its committed checkpoint, and starts reading. The committed offsets are read
    /// with KIP-447's "stable" rule: a transaction of the previous owner still open on them is
    /// waited out (committed or aborted) first.
    pub fn assign(&mut self, engine: &mut Engine, partitions: &[(String, i32)]) -> Result<(), Failure> {
        engine.reset_assignment();
        self.assigned = Assignment::default();
        self.tasks = self.count_tasks(self.by_consumer())?;
        let mut asked = TopicPartitionList::new();
        for (topic, partition) in partitions {
            asked.add_partition(topic, *partition);
        }
        let committed = self.consumer.committed_offsets(asked, STEP_DEADLINE).map_err(|e| {
            Failure::kafka(e, format!("reading the committed offsets of group {}", self.config.group_id))
        })?;
        let mut start = Vec::new();
        for elem in committed.elements() {
            let (topic, partition) = (elem.topic(), elem.partition());
            let committed = match elem.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            let checkpoint = Checkpoint::decode(elem.metadata());
            let from = match committed {
                Some(o) => o,
                None => self.first_offset(topic, partition)?,
            };
            start.push((topic.to_owned(), partition, Some(from)));
            if topic == self.config.partials_topic {
                let (published, next) = checkpoint.map_or((i64::MIN, i64::MIN), |c| (c.watermark, c.next));
                engine.open_merge(self.tasks, published, next);
                let records = crate::kafka::state::read_compacted(
                    &self.config,
                    &self.health,
                    &self.config.outputs.completeness,
                    "the windows' completeness records",
                )?;
                engine.restore_completeness(records.into_values(), published);
                if engine.has_detectors() {
                    let stored = crate::kafka::state::read(&self.config, &self.health)?;
                    let stored =
                        crate::engine::detect::decode_all(stored, &self.config.state_topic).map_err(Failure::Fatal)?;
                    engine.restore_detectors(&stored).map_err(Failure::Fatal)?;
                }
                self.assigned.exchange = Some(from);
                tracing::info!(topic, partition, start = from, published = %format_watermark(published), "assigned: this host runs the merge stage");
                continue;
            }
            let kind = self.kind_of(topic);
            let id = engine.add_partition(kind, topic, partition, Instant::now()).map_err(Failure::Fatal)?;
            self.assigned.ids.insert((kind, partition), id);
            self.assigned.topics.push((topic.to_owned(), partition));
            self.assigned.start_offsets.push(from);
            self.assigned.asked.push(None);
            let task_watermark = checkpoint.as_ref().map_or(i64::MIN, |c| c.watermark);
            if let Some(cp) = checkpoint {
                engine.resume_partition(id, from, &cp);
            }
            tracing::info!(topic, partition, start = from, task_watermark = %format_watermark(task_watermark), "assigned");
        }
        // The idle deadlines count from here, after the merge's records were read (which can
        // take seconds, and the group lists the partials topic anywhere among the others); and
        // each partition is behind until a report says otherwise, made after its deadline.
        let now = Instant::now();
        for id in 0..self.assigned.topics.len() {
            engine.has_data(id, now);
            engine.set_backlog(id, true, now);
        }
        self.wait_for_missing_halves(engine, now)?;
        for (topic, partition, _) in &start {
            let lane = if *topic == self.config.partials_topic { Lane::Partials } else { Lane::Input };
            self.fetched
                .forward(topic, *partition, lane)
                .map_err(|e| Failure::kafka(e, "taking the assigned partitions' messages"))?;
        }
        let tpl = crate::kafka::group::assignment(&start).map_err(|e| Failure::kafka(e, "assigning partitions"))?;
        self.consumer.assign(&tpl).map_err(|e| Failure::kafka(e, "assigning partitions"))
    }

    /// A task given partition `p` of one input topic and not of the other (it does not exist
    /// yet: an operator adds partitions to one topic, then the other, and the group sees them
    /// apart) waits for the missing one as for an empty partition: it holds the task's watermark
    /// until the idle timeout (SPEC "Time": the watermark of task `p` is over partition `p` of
    /// both topics). Otherwise the task's watermark would follow the one side alone, and the
    /// other side's first events, once the group assigns it, would be late. The missing
    /// partition is the engine's only, after the assigned ones: it is not read or committed.
    fn wait_for_missing_halves(&self, engine: &mut Engine, now: Instant) -> Result<(), Failure> {
        let missing: Vec<(Source, i32)> = self
            .assigned
            .ids
            .keys()
            .filter_map(|&(kind, p)| {
                let other = match kind {
                    Source::Impressions => Source::Clicks,
                    Source::Clicks => Source::Impressions,
                };
                (!self.assigned.ids.contains_key(&(other, p))).then_some((other, p))
            })
            .collect();
        for (kind, partition) in missing {
            let topic = match kind {
                Source::Impressions => &self.config.impressions_topic,
                Source::Clicks => &self.config.clicks_topic,
            };
            engine.add_partition(kind, topic, partition, now).map_err(Failure::Fatal)?;
            tracing::warn!(
                topic,
                partition,
                "this task's partition of the other input topic is not assigned (not created yet?): the task waits for it up to --idle-timeout"
            );
        }
        Ok(())
    }

    /// The first offset `partition` of `topic` still holds (where a partition never committed
    /// is read from).
    fn first_offset(&self, topic: &str, partition: i32) -> Result<i64, Failure> {
        let (low, _) = self
            .consumer
            .fetch_watermarks(topic, partition, STEP_DEADLINE)
            .map_err(|e| Failure::kafka(e, format!("reading the first offset of {topic} [{partition}]")))?;
        Ok(low.max(0))
    }

    /// Whether every input partition has been read to the end librdkafka last fetched.
    pub fn caught_up(&self, pipeline: &Engine) -> bool {
        (0..self.assigned.topics.len()).all(|id| !self.cached_backlog(pipeline, id))
    }

    /// Stops (or resumes) fetching the assigned input partitions (a test failpoint's).
    pub fn pause_inputs(&self, pause: bool) -> Result<(), Failure> {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in &self.assigned.topics {
            tpl.add_partition(topic, *partition);
        }
        let done = if pause { self.consumer.pause(&tpl) } else { self.consumer.resume(&tpl) };
        done.map_err(|e| Failure::kafka(e, "pausing or resuming the input partitions"))
    }

    /// Gives every partition up, after the attempt committed (or aborted) what covered them.
    pub fn revoke(&mut self) -> Result<(), Failure> {
        self.assigned = Assignment::default();
        self.consumer.unassign().map_err(|e| Failure::kafka(e, "giving the partitions up"))
    }

    /// The generation of the group this consumer last joined, if it has joined.
    pub fn group_generation(&self) -> Option<u64> {
        // SAFETY: the client pointer is valid for the consumer's lifetime; the metadata
        // librdkafka returns is a copy owned here, read once and destroyed.
        let generation = unsafe {
            let metadata = rdkafka::bindings::rd_kafka_consumer_group_metadata(self.consumer.client().native_ptr());
            if metadata.is_null() {
                return None;
            }
            let generation = rdkafka::bindings::rd_kafka_consumer_group_metadata_generation_id(metadata);
            rdkafka::bindings::rd_kafka_consumer_group_metadata_destroy(metadata);
            generation
        };
        u64::try_from(generation).ok()
    }

    /// The tasks and whether the merge runs here, for logs and the console.
    pub fn describe_assignment(&self) -> String {
        let mut tasks: Vec<i32> = self.assigned.ids.keys().map(|(_, p)| *p).collect();
        tasks.sort_unstable();
        tasks.dedup();
        format!("tasks {tasks:?}{}", if self.assigned.exchange.is_some() { " and the merge stage" } else { "" })
    }

    /// What a consumer error means: the host stops on one that never heals (an input topic
    /// gone, a codec it cannot read, a permission missing); librdkafka retries the others.
    pub fn judge(&self, error: &KafkaError) -> Option<Failure> {
        let code = error.rdkafka_error_code()?;
        // A subscribed topic not found: stop only if it is an input topic (the error does not
        // say which); the partials topic is the host's own, and one just created may not be in
        // every broker's metadata yet.
        use rdkafka::error::RDKafkaErrorCode as C;
        if matches!(code, C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition)
            && self.partition_counts(None, self.by_consumer()).is_ok()
        {
            return None;
        }
        // The error a poll returns carries no reason, and librdkafka gives a connection lost in
        // the SASL handshake the authentication code too: the client's error callback, which has
        // the reason, tells a refusal (it stops the host) from that (retried).
        if code == C::Authentication {
            return None;
        }
        let fix = crate::kafka::failure::fix_for(code, &format!("consuming: {error}"))?;
        Some(Failure::Fatal(anyhow::anyhow!(
            "{fix} (reading {} and {}: {error})",
            self.config.impressions_topic,
            self.config.clicks_topic
        )))
    }

    /// The partitions of `topic` in `metadata` (an answer for that topic).
    fn partitions_in(&self, metadata: &Metadata, topic: &str) -> Result<Vec<i32>, Failure> {
        let missing = || {
            Failure::Fatal(anyhow::anyhow!(
                "input topic {topic} does not exist on {}: create it (adgen creates its topics; with this project's broker: bash scripts/kafka.sh create-topic {topic} 3; elsewhere: kafka-topics.sh --create --topic {topic} --partitions N), or name the right one with --impressions-topic / --clicks-topic",
                self.config.client.brokers
            ))
        };
        let t = metadata.topics().first().ok_or_else(missing)?;
        if let Some(err) = t.error() {
            let code = rdkafka::error::RDKafkaErrorCode::from(err);
            if code == rdkafka::error::RDKafkaErrorCode::UnknownTopicOrPartition {
                return Err(missing());
            }
            return Err(Failure::kafka(KafkaError::MetadataFetch(code), format!("topic {topic} is not usable")));
        }
        if t.partitions().is_empty() {
            return Err(missing());
        }
        Ok(t.partitions().iter().map(|p| p.id()).collect())
    }

    /// Gives the consumer up without waiting: closing it can wait on an absent broker.
    pub fn abandon(self) {
        self.consumer.context().closing();
        crate::kafka::aside::drop_aside("abandoned-consumer", self);
    }

    /// Gives the partitions up and unsubscribes after the last commit. A static member (KIP-345,
    /// `group.instance.id`) sends no LeaveGroup: its tasks move to the others when its session
    /// expires (`--session-timeout`), or come back to it at once if it restarts before.
    pub fn close(self) {
        self.consumer.context().closing();
        if let Err(e) = self.consumer.unassign() {
            tracing::debug!(error = %e, "giving the partitions up");
        }
        self.consumer.unsubscribe();
        drop(self);
    }

    /// Which input a message's topic is.
    pub fn kind_of(&self, topic: &str) -> Source {
        if topic == self.config.impressions_topic { Source::Impressions } else { Source::Clicks }
    }

    /// Where a message goes.
    pub fn route(&self, topic: &str, partition: i32) -> Option<Route> {
        if topic == self.config.partials_topic {
            return self.assigned.exchange.is_some().then_some(Route::Exchange);
        }
        self.assigned.ids.get(&(self.kind_of(topic), partition)).copied().map(Route::Input)
    }

    /// Tells the pipeline which partitions have messages not read yet, from the high
    /// watermarks librdkafka caches from its fetch responses (no network round trip). A
    /// partition whose high watermark is not known yet counts as behind.
    ///
    /// The cache is only as fresh as the last fetch: while librdkafka does not fetch (it pauses
    /// for a rebalance; the whole host stalled) it says "caught up" of a partition that is not.
    /// So a partition the cache calls caught up, past its idle deadline, is as the broker last
    /// said of it at this read position, and behind until it has said: a quiet of the host's own
    /// making must not turn on-time events late. The broker is asked once per round (the
    /// pipeline thread waits for the answer), the partition whose answer is missing or oldest
    /// first; an answer is asked again after [`ASK_AGAIN_AFTER`], and after a question fails
    /// none is asked for [`QUIET_AFTER_FAILURE`].
    pub fn report_backlog(&mut self, pipeline: &mut Engine, now: Instant) {
        let mut to_ask: Option<(PartitionId, i64, Option<Instant>)> = None;
        for id in 0..self.assigned.topics.len() {
            let read = self.read_position(pipeline, id);
            let mut backlog = self.cached_backlog(pipeline, id);
            if !backlog && pipeline.idle_due(id, now) {
                let answer = self.assigned.asked[id].filter(|a| a.read == read);
                backlog = answer.is_none_or(|a| a.backlog);
                let asked_at = answer.map(|a| a.at);
                if asked_at.is_none_or(|at| now.duration_since(at) >= ASK_AGAIN_AFTER)
                    && to_ask.is_none_or(|(_, _, other)| asked_at < other)
                {
                    to_ask = Some((id, read, asked_at));
                }
            }
            pipeline.set_backlog(id, backlog, now);
        }
        if let Some((id, read, _)) = to_ask
            && self.assigned.quiet_until.is_none_or(|until| now >= until)
        {
            let (topic, partition) = &self.assigned.topics[id];
            match self.consumer.fetch_watermarks(topic, *partition, ASK_TIMEOUT) {
                Ok((_, high)) => {
                    if high > read {
                        tracing::info!(
                            topic,
                            partition,
                            read,
                            end = high,
                            "no message for the idle timeout, but the partition is behind (a paused fetch or a stalled host), not idle"
                        );
                    }
                    self.assigned.asked[id] = Some(Asked { read, at: now, backlog: high > read });
                    pipeline.set_backlog(id, high > read, now);
                    if high <= read {
                        pipeline.caught_up(id);
                    }
                }
                Err(e) => {
                    tracing::warn!(topic, partition, error = %e, "could not ask the broker whether a quiet partition is idle; it counts as it did");
                    self.assigned.quiet_until = Some(now + QUIET_AFTER_FAILURE);
                }
            }
        }
    }

    /// Before the `taken` messages of the batch just taken are delivered: an idle partition with
    /// a message among them, or whose cached high watermark is past what was read, has data
    /// again and holds its task back from now on. Otherwise the batch's order would decide: a
    /// quiet click partition's straggler, taken together with the impressions that move its
    /// task past the straggler's window, would find that window closed (late, though it was in
    /// hand). Between [`KafkaSource::report_backlog`]'s rounds only this looks. While no
    /// partition is idle it costs one check per partition and batch.
    ///
    /// A task whose partitions are all idle has already handed its open windows over (see
    /// [`Engine::advance`]): its later events of them stay late, message in hand or not.
    pub fn wake_idle(&self, pipeline: &mut Engine, taken: usize, now: Instant) {
        let inputs = self.assigned.topics.len();
        if !(0..inputs).any(|id| pipeline.is_idle(id, now)) {
            return;
        }
        // A batch is runs of one partition's messages: each run is looked up once.
        let mut previous: Option<Message<'_>> = None;
        for i in 0..taken {
            let msg = self.fetched.message(i);
            if msg.error().is_some() || previous.as_ref().is_some_and(|p| p.same_partition(&msg)) {
                continue;
            }
            if let Some(Route::Input(id)) = self.route(msg.topic(), msg.partition()) {
                pipeline.has_data(id, now);
            }
            previous = Some(msg);
        }
        for id in 0..inputs {
            if pipeline.is_idle(id, now) && self.cached_backlog(pipeline, id) {
                pipeline.set_backlog(id, true, now);
            }
        }
    }

    /// Whether librdkafka's cached high watermark of engine partition `id` is past what was
    /// read (or not known yet).
    fn cached_backlog(&self, pipeline: &Engine, id: PartitionId) -> bool {
        let (topic, partition) = &self.assigned.topics[id];
        let read = self.read_position(pipeline, id);
        cached_high_watermark(&self.consumer, topic, *partition).is_none_or(|high| high > read)
    }

    /// One past the last offset of engine partition `id` read in this assignment, or where
    /// reading starts (not [`Engine::next_offset`], which runs ahead to where an earlier owner
    /// got while this one re-reads up to there).
    fn read_position(&self, pipeline: &Engine, id: PartitionId) -> i64 {
        pipeline.read_position(id).unwrap_or(self.assigned.start_offsets[id])
    }

    /// Every input partition's position, end, lag and watermark, for the console and metrics.
    pub fn status(&self, pipeline: &Engine, now: Instant) -> Vec<PartitionStatus> {
        self.assigned
            .topics
            .iter()
            .enumerate()
            .map(|(id, (topic, partition))| {
                let next_offset = pipeline.next_offset(id).or(Some(self.assigned.start_offsets[id]));
                let high_watermark = cached_high_watermark(&self.consumer, topic, *partition);
                let (watermark_ms, idle) = pipeline.partition_watermark(id, now);
                PartitionStatus {
                    topic: topic.clone(),
                    partition: *partition,
                    next_offset,
                    high_watermark,
                    lag: high_watermark.zip(next_offset).map(|(h, n)| (h - n).max(0)),
                    watermark_ms,
                    idle,
                }
            })
            .collect()
    }

    /// For every assigned partition, the first offset still needed (where reading started, if
    /// nothing was read), with the checkpoint metadata: what a checkpoint commits once the
    /// output covering it is durable. Every assigned partition is in it, so that every
    /// transaction carries the group's metadata and a member that lost its partitions is
    /// fenced (KIP-447).
    pub fn offsets(&self, engine: &Engine) -> Result<TopicPartitionList, Failure> {
        let mut tpl = TopicPartitionList::new();
        let mut add = |topic: &str, partition: i32, offset: i64, cp: Checkpoint| -> Result<(), Failure> {
            let mut elem = tpl.add_partition(topic, partition);
            elem.set_offset(Offset::Offset(offset)).map_err(|e| Failure::kafka(e, "recording an offset"))?;
            elem.set_metadata(cp.encode());
            Ok(())
        };
        for (id, (topic, partition)) in self.assigned.topics.iter().enumerate() {
            let offset = engine.committable(id).unwrap_or(self.assigned.start_offsets[id]);
            let next = engine.next_offset(id).unwrap_or(offset);
            add(topic, *partition, offset, engine.checkpoint(id, next))?;
        }
        if let Some(from) = self.assigned.exchange {
            let offset = engine.exchange_committable().unwrap_or(from);
            let next = engine.exchange_next().unwrap_or(offset);
            let published = engine.watermark();
            add(&self.config.partials_topic, 0, offset, Checkpoint::new(published, published, next))?;
        }
        Ok(tpl)
    }
}

fn format_watermark(w: i64) -> String {
    if w == i64::MIN { "none".into() } else { adstream_abi::time::format_rfc3339_millis(w) }
}
