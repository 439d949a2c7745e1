//! Produces output records to Kafka, and commits input offsets with them.
//!
//! Exactly-once (the default): every record is produced inside a Kafka transaction, and a
//! [`KafkaSink::checkpoint`] adds the input offsets (with the pipeline's checkpoint metadata) to
//! that transaction and commits both at once, then opens the next one. A `read_committed`
//! consumer sees a window's results if and only if the offsets covering them were committed. A
//! host that dies mid-transaction leaves it open; its successor, with the same transactional id,
//! fences it at start-up (`init_transactions`) and the broker aborts it, so nothing it produced
//! after its last checkpoint is ever visible. Nor is anything of a transaction the host aborts
//! itself, or gives up on, when a step fails: it then starts again from the last checkpoint
//! (see `app::run`), which is the same path.
//!
//! Every transaction step runs on a thread of its own ([`Steps`]) and the pipeline waits for it
//! at most [`STEP_DEADLINE`]: librdkafka can wait past the timeout it is given when a
//! coordinator went away (confluentinc/librdkafka#5456, the cause of a two-minute stall seen
//! after a broker outage), and a host blocked there would neither consume nor say why. A step
//! that overruns abandons this producer; the next one fences it.
//!
//! Records are checked against their topic's size limit before they are produced
//! ([`Sink::record_limit`]), so the broker does not refuse them; one it refuses all the same
//! (a limit lowered under a running host) fails the transaction, and the next attempt learns the
//! size ([`KafkaSink::refused_sizes`]).
//!
//! At-least-once (`--delivery at-least-once`): records are produced without a transaction;
//! a checkpoint waits until all of them are acknowledged, then commits the offsets.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, ConsumerGroupMetadata};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, TopicPartitionList};

use super::topics::record_bytes;
use crate::engine::Sink;
use crate::kafka::admin::KAFKA_DEFAULT_MAX_MESSAGE_BYTES;
use crate::kafka::failure::fix_for;
use crate::kafka::polled::Polled;
use crate::kafka::{ClientSettings, Failure, Health, HostContext, Role};

/// How long one transaction step (init, the offsets, the flush, the commit) may take, retries
/// included, before the host gives this producer up and starts again from the last checkpoint.
pub const STEP_DEADLINE: Duration = Duration::from_secs(30);

/// The transaction timeout the host asks for (`transaction.timeout.ms`): how long the broker
/// keeps a dead host's transaction open. Until then it holds back every `read_committed`
/// reader of what it wrote to: the output topics, the partials topic (so the merge stage), and
/// the offsets of its tasks (so the host that takes them over). With `--session-timeout` it
/// bounds the failover after a crash, so it is short: a host commits every
/// `--commit-interval` (1 s), ten times more often. A step that outlasts it (a broker away
/// longer) finds its transaction aborted by the broker, and the attempt starts again from the
/// last checkpoint.
const TRANSACTION_TIMEOUT_MS: &str = "10000";

/// Failed deliveries, as librdkafka's delivery reports tell them.
#[derive(Default)]
struct Deliveries {
    failed: u64,
    first: Option<(RDKafkaErrorCode, String)>,
    /// Records the broker refused as too large: (topic, size as [`record_bytes`] counts).
    too_large: Vec<(String, usize)>,
}

/// The producer's context: the host's, plus the delivery reports.
pub struct SinkContext {
    client: HostContext,
    deliveries: Mutex<Deliveries>,
    /// Why librdkafka last failed the current transaction, as its log says (`TXNERR`): a later
    /// call may only answer "erroneous state", and the cause is needed to tell a refused
    /// permission (stop) from a broker away (start again).
    transaction_error: Mutex<Option<String>>,
}

/// How long a failed transaction's cause may take to reach the log after it was aborted.
const LATE_TRANSACTION_LOG: Duration = Duration::from_millis(500);

/// The broker errors, by the name librdkafka logs them with, that fail a transaction for good.
const NEVER_HEALING_TRANSACTION_ERRORS: &[(&str, RDKafkaErrorCode)] = &[
    ("TOPIC_AUTHORIZATION_FAILED", RDKafkaErrorCode::TopicAuthorizationFailed),
    ("GROUP_AUTHORIZATION_FAILED", RDKafkaErrorCode::GroupAuthorizationFailed),
    ("CLUSTER_AUTHORIZATION_FAILED", RDKafkaErrorCode::ClusterAuthorizationFailed),
    ("TRANSACTIONAL_ID_AUTHORIZATION_FAILED", RDKafkaErrorCode::TransactionalIdAuthorizationFailed),
];

impl SinkContext {
    /// The error that failed the current transaction, if librdkafka logged one that never heals.
    fn never_healing_transaction_error(&self) -> Option<(RDKafkaErrorCode, String)> {
        let logged = self.transaction_error.lock().unwrap_or_else(|e| e.into_inner()).clone()?;
        NEVER_HEALING_TRANSACTION_ERRORS.iter().find(|(name, _)| logged.contains(name)).map(|(_, code)| (*code, logged))
    }
}

impl ClientContext for SinkContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        if fac == "TXNERR" {
            *self.transaction_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(message.to_owned());
        }
        self.client.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.client.error(error, reason);
    }

    fn generate_oauth_token(
        &self,
        config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        self.client.generate_oauth_token(config)
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        use rdkafka::Message;
        use rdkafka::message::Headers;
        let Err((error, message)) = result else { return };
        let mut d = self.deliveries.lock().unwrap_or_else(|e| e.into_inner());
        d.failed += 1;
        let code = error.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Unknown);
        if code == RDKafkaErrorCode::MessageSizeTooLarge {
            let headers: Vec<(&str, &[u8])> = message
                .headers()
                .map(|h| h.iter().map(|h| (h.key, h.value.unwrap_or_default())).collect())
                .unwrap_or_default();
            let size = record_bytes(message.key(), message.payload().unwrap_or_default(), &headers);
            d.too_large.push((message.topic().to_owned(), size));
        }
        // Records purged by an abort say nothing of why the transaction failed.
        let purged = matches!(code, RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight);
        if d.first.is_none() && !purged {
            d.first = Some((code, format!("to {}: {error}", message.topic())));
        }
    }
}

/// A transaction step for the [`Steps`] thread.
enum Step {
    Init,
    Checkpoint {
        offsets: TopicPartitionList,
        group: Box<ConsumerGroupMetadata>,
    },
    /// Drop what was produced since the last checkpoint (the partitions it covers were lost).
    Abort,
}

/// The thread that runs transaction steps, so that the pipeline can stop waiting for one.
struct Steps {
    requests: mpsc::Sender<Step>,
    replies: mpsc::Receiver<Result<(), Failure>>,
}

/// A Kafka producer behind the [`Sink`] trait.
pub struct KafkaSink {
    producer: Arc<Polled<SinkContext>>,
    /// Exactly-once: the transaction thread; at-least-once: none.
    steps: Option<Steps>,
    /// The largest record each output topic takes, as [`record_bytes`] counts.
    limits: HashMap<String, usize>,
    health: Health,
}

/// What the producer is sized for: the largest record any output topic takes, and the smallest
/// topic limit (a batch of many records must still fit the strictest topic).
/// Both in bytes: `message.max.bytes` and `batch.size`.
fn size_settings(limits: &HashMap<String, usize>) -> (usize, usize) {
    let largest = limits.values().copied().max().unwrap_or(KAFKA_DEFAULT_MAX_MESSAGE_BYTES);
    let smallest = limits.values().copied().min().unwrap_or(KAFKA_DEFAULT_MAX_MESSAGE_BYTES);
    (largest.clamp(1_000_000, 1_000_000_000), smallest.saturating_sub(1024).clamp(1024, 1_000_000))
}

impl KafkaSink {
    /// An idempotent producer tuned for throughput (large batches, `compression`); transactional
    /// when `transactional_id` is given, in which case it fences any earlier producer with that
    /// id and opens the first transaction. `limits` are the output topics' size limits.
    pub fn new(
        settings: &Arc<ClientSettings>,
        health: &Health,
        transactional_id: Option<&str>,
        compression: &str,
        limits: HashMap<String, usize>,
    ) -> Result<Self, Failure> {
        let (message_max, batch_size) = size_settings(&limits);
        let (message_max, batch_size) = (message_max.to_string(), batch_size.to_string());
        let mut defaults: Vec<(&str, &str)> = vec![
            ("enable.idempotence", "true"),
            // Results leave in bursts, once per window: waiting long for a batch to fill only
            // adds to their latency (see BENCHMARKS.md).
            ("linger.ms", "1"),
            ("batch.num.messages", "10000"),
            ("compression.type", compression),
            ("queue.buffering.max.messages", "1000000"),
            ("message.max.bytes", &message_max),
            ("batch.size", &batch_size),
            // After an outage, reconnect within 2 s of the broker's return (default: 10 s).
            ("reconnect.backoff.max.ms", "2000"),
        ];
        if let Some(id) = transactional_id {
            defaults.push(("transactional.id", id));
            defaults.push(("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS));
            // Connect to every broker as soon as it is known, not when first needed: otherwise
            // `init_transactions` often finds its coordinator not connected yet and tries again
            // only 500 ms later (4 start-ups in 10 took 0.6 s instead of 0.15, BENCHMARKS.md).
            defaults.push(("enable.sparse.connections", "false"));
            // A transaction that begins right after a commit (a host's share of a window is
            // committed once its last task closed it, then the merge's publication; or a
            // periodic checkpoint just before either) often finds the coordinator
            // still writing the last one's markers: `CONCURRENT_TRANSACTIONS`, and librdkafka
            // sends `AddOffsetsToTxn` again after `retry.backoff.ms`, 100 ms by default. That
            // was most of the live result latency's p99 (233–292 ms, 118–127 ms with this;
            // BENCHMARKS.md). Other retries start from it too (and the fast metadata refresh,
            // `topic.metadata.refresh.fast.interval.ms`), backing off exponentially up to
            // `retry.backoff.max.ms` (1 s) as before.
            defaults.push(("retry.backoff.ms", "10"));
        }
        let context = SinkContext {
            client: HostContext::new(Role::Producer, settings.clone(), health.clone()),
            deliveries: Mutex::default(),
            transaction_error: Mutex::default(),
        };
        let producer: BaseProducer<SinkContext> = settings
            .client_config(Role::Producer, &defaults)
            .create_with_context(context)
            .map_err(|e| Failure::Fatal(settings.explain(Role::Producer, e)))?;
        let producer = Arc::new(Polled::start(producer, "producer-events").map_err(Failure::Fatal)?);
        let mut sink = KafkaSink { steps: None, producer, limits, health: health.clone() };
        if let Some(id) = transactional_id {
            if let Some(topic) = sink.limits.keys().next() {
                sink.await_learned_broker(topic);
            }
            sink.steps = Some(Steps::start(sink.producer.clone(), id.to_owned())?);
            sink.run_step(Step::Init, "initialising transactions (this also fences any earlier host with that id)")?;
        }
        Ok(sink)
    }

    /// Returns once the producer is connected to a broker it learned from the cluster's metadata,
    /// or after 2 s (`init_transactions` then finds its own way, and says what is wrong, e.g.
    /// brokers that advertise an address this machine cannot reach).
    ///
    /// `init_transactions` looks the transaction coordinator up at once and, finding no broker
    /// connected, again only 500 ms later. A client a moment old is connected to none: its first
    /// connection is to a bootstrap address, which librdkafka closes as soon as the metadata it
    /// answered names the cluster's brokers, a few milliseconds before the connection to the
    /// broker it learned is up (seen as "No brokers available for Transactions (2 broker(s)
    /// known)" in its `eos` debug log, then the 500 ms, in about one start in four). A metadata
    /// request waits for a connected broker, not a timer, and its answer says which one answered:
    /// asked until a learned broker (one with a node id) answers.
    fn await_learned_broker(&self, topic: &str) {
        let deadline = Instant::now() + Duration::from_secs(2);
        for attempt in 0.. {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::debug!(
                    "no broker learned from the metadata answered within 2 s; initialising transactions anyway"
                );
                return;
            }
            match self.producer.client().fetch_metadata(Some(topic), left) {
                Ok(metadata) if metadata.orig_broker_id() >= 0 => return,
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "waiting for the producer's first connection"),
            }
            // The bootstrap connection answered again: it is being closed, so not for long.
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// Hands `step` to the transaction thread and waits for it, at most [`STEP_DEADLINE`] and a
    /// little more, and no longer once a client has hit an error that never heals.
    fn run_step(&self, step: Step, what: &str) -> Result<(), Failure> {
        let steps = self.steps.as_ref().expect("only transactional sinks run steps");
        steps
            .requests
            .send(step)
            .map_err(|_| Failure::Recoverable(anyhow::anyhow!("{what}: the transaction thread stopped")))?;
        let deadline = Instant::now() + STEP_DEADLINE + Duration::from_secs(2);
        loop {
            match steps.replies.recv_timeout(Duration::from_millis(100)) {
                Ok(result) => return result.map_err(|f| with_context(f, what)),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(Failure::Recoverable(anyhow::anyhow!("{what}: the transaction thread stopped")));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if let Some(fatal) = self.health.fatal.get() {
                return Err(Failure::Fatal(anyhow::anyhow!(fatal).context(what.to_owned())));
            }
            if Instant::now() >= deadline {
                return Err(Failure::Recoverable(anyhow::anyhow!(
                    "{what}: no answer from Kafka within {} s (librdkafka can wait past its own timeout after a coordinator was away: confluentinc/librdkafka#5456); this producer is given up",
                    STEP_DEADLINE.as_secs()
                )));
            }
        }
    }

    /// Makes everything produced so far durable together with `offsets` (committed for the
    /// consumer's group): in one transaction (exactly-once), or after waiting for every record's
    /// acknowledgement (at-least-once).
    ///
    /// At-least-once commits are asynchronous while the host runs (one lost in an outage is
    /// covered by the next, and the output it covers is already acknowledged), and synchronous
    /// when `last` (the clean stop), so that a restart does not publish again what was done.
    pub fn checkpoint<C: ConsumerContext>(
        &self,
        offsets: &TopicPartitionList,
        consumer: &BaseConsumer<C>,
        last: bool,
    ) -> Result<(), Failure> {
        if self.steps.is_none() {
            self.flush(STEP_DEADLINE)?;
            if offsets.count() > 0 {
                let mode = if last { CommitMode::Sync } else { CommitMode::Async };
                consumer.commit(offsets, mode).map_err(|e| Failure::kafka(e, "committing input offsets"))?;
            }
            return Ok(());
        }
        let group = consumer
            .group_metadata()
            .ok_or_else(|| Failure::Fatal(anyhow::anyhow!("the consumer has no group metadata")))?;
        let t0 = Instant::now();
        let r = self.run_step(
            Step::Checkpoint { offsets: offsets.clone(), group: Box::new(group) },
            "committing a transaction",
        );
        tracing::debug!(us = t0.elapsed().as_micros() as u64, "checkpoint");
        r
    }

    /// Drops everything produced since the last checkpoint: the partitions it covered were
    /// lost to another member, which does that work again. (At-least-once: nothing to drop;
    /// what was sent stays, as after a crash.)
    pub fn abort(&self) -> Result<(), Failure> {
        if self.steps.is_none() {
            return Ok(());
        }
        self.run_step(Step::Abort, "aborting the transaction of lost partitions")
    }

    /// Waits until every queued record is acknowledged; fails if any could not be delivered.
    pub fn flush(&self, timeout: Duration) -> Result<(), Failure> {
        wait_for_deliveries(&self.producer, timeout)
    }

    /// The sizes of records the broker refused as too large, by topic (for the next attempt).
    pub fn refused_sizes(&self) -> Vec<(String, usize)> {
        self.producer.context().deliveries.lock().unwrap_or_else(|e| e.into_inner()).too_large.clone()
    }

    /// Whether the size limit of `topic` is known (it was set up at start-up or since).
    pub fn knows(&self, topic: &str) -> bool {
        self.limits.contains_key(topic)
    }

    /// A topic created or found after start-up (a swapped-in plugin's), with its size limit.
    pub fn add_limit(&mut self, topic: String, limit: usize) {
        self.limits.insert(topic, limit);
    }

    /// The smallest topic limit the producer's batches fit.
    pub fn batch_limit(&self) -> usize {
        size_settings(&self.limits).1
    }

    /// Gives the producer up without waiting: its thread may be stuck in librdkafka, and closing
    /// it could wait on the broker. Dropped on a thread of its own.
    pub fn abandon(self) {
        let KafkaSink { producer, steps, .. } = self;
        drop(steps);
        crate::kafka::aside::drop_aside("abandoned-producer", producer);
    }
}

/// Adds `what` to a recoverable failure's message. A fatal one is left to open with what to fix.
fn with_context(failure: Failure, what: &str) -> Failure {
    match failure {
        Failure::Fatal(e) => Failure::Fatal(e),
        Failure::Recoverable(e) => Failure::Recoverable(e.context(what.to_owned())),
    }
}

/// Waits until every queued record is acknowledged (or failed), watching the count of records in
/// flight every 100 µs: rust-rdkafka's flush waits in steps of 100 ms here, and a window's
/// results would wait that long to be acknowledged (steps of 1 ms cost half a millisecond a
/// commit on average, twice per window). Whether none is left in flight.
fn all_acknowledged(producer: &Polled<SinkContext>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while producer.in_flight_count() > 0 {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    true
}

/// [`all_acknowledged`], then the failed deliveries, as one failure.
fn wait_for_deliveries(producer: &Polled<SinkContext>, timeout: Duration) -> Result<(), Failure> {
    if !all_acknowledged(producer, timeout) {
        return Err(Failure::Recoverable(anyhow::anyhow!(
            "{} output records were not acknowledged by Kafka within {timeout:?}",
            producer.in_flight_count()
        )));
    }
    take_failures(producer)
}

/// The delivery failures since the last call, as one failure.
fn take_failures(producer: &Polled<SinkContext>) -> Result<(), Failure> {
    let mut d = producer.context().deliveries.lock().unwrap_or_else(|e| e.into_inner());
    if d.failed == 0 {
        return Ok(());
    }
    let count = std::mem::take(&mut d.failed);
    let Some((code, first)) = d.first.take() else {
        return Err(Failure::Recoverable(anyhow::anyhow!(
            "{count} output records were purged when their transaction was aborted"
        )));
    };
    Err(Failure::kafka(
        KafkaError::MessageProduction(code),
        format!("{count} output records could not be delivered, the first {first}"),
    ))
}

impl Steps {
    fn start(producer: Arc<Polled<SinkContext>>, id: String) -> Result<Steps, Failure> {
        let (requests, inbox) = mpsc::channel::<Step>();
        let (outbox, replies) = mpsc::channel();
        // When the sink goes, this thread often holds the producer's last reference, and the
        // producer then closes here: counted, so that the process does not end under it.
        let counted = crate::kafka::aside::closing();
        std::thread::Builder::new()
            .name("transactions".into())
            .spawn(move || {
                let mut last_commit = Instant::now();
                for step in inbox {
                    let result = match step {
                        Step::Init => init(&producer),
                        Step::Checkpoint { offsets, group } => commit(&producer, &offsets, &group),
                        Step::Abort => abort(&producer),
                    };
                    let result = result.map_err(|e| judge(&producer, e, &id, last_commit));
                    if result.is_ok() {
                        last_commit = Instant::now();
                        *producer.context().transaction_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    }
                    if outbox.send(result).is_err() {
                        break;
                    }
                }
                drop(producer);
                drop(counted);
            })
            .context("starting the transaction thread")
            .map_err(Failure::Fatal)?;
        Ok(Steps { requests, replies })
    }
}

fn abort(producer: &Polled<SinkContext>) -> Result<(), KafkaError> {
    producer.abort_transaction(STEP_DEADLINE)?;
    // The purged records' delivery reports say nothing that matters any more.
    let _ = take_failures(producer);
    producer.begin_transaction()
}

fn init(producer: &Polled<SinkContext>) -> Result<(), KafkaError> {
    producer.init_transactions(STEP_DEADLINE)?;
    producer.begin_transaction()
}

/// Offsets into the transaction, every record acknowledged, commit, and the next one begun.
fn commit(
    producer: &Polled<SinkContext>,
    offsets: &TopicPartitionList,
    group: &ConsumerGroupMetadata,
) -> Result<(), KafkaError> {
    let deadline = Instant::now() + STEP_DEADLINE;
    let left = || deadline.saturating_duration_since(Instant::now());
    if offsets.count() > 0 {
        retry(deadline, "adding the input offsets to the transaction", || {
            producer.send_offsets_to_transaction(offsets, group, left())
        })?;
    }
    // commit_transaction would flush by itself, but through rust-rdkafka's flush, which waits
    // in steps of 100 ms here (see all_acknowledged). A failed delivery makes the transaction
    // abortable: the commit below says so, and `judge` reports the delivery's own error.
    if !all_acknowledged(producer, left()) {
        return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
    }
    retry(deadline, "committing the transaction", || producer.commit_transaction(left()))?;
    producer.begin_transaction()
}

/// Runs a step again while librdkafka says its error is retriable (a broker briefly away), until
/// `deadline`.
fn retry(deadline: Instant, what: &str, mut step: impl FnMut() -> Result<(), KafkaError>) -> Result<(), KafkaError> {
    loop {
        match step() {
            Err(KafkaError::Transaction(e))
                if e.is_retriable() && Instant::now() + Duration::from_secs(1) < deadline =>
            {
                tracing::warn!(error = %e, "{what}: retrying");
                std::thread::sleep(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

/// What a failed transaction step means. An abortable error is aborted here (its output must
/// not survive), and the attempt restarts from the last checkpoint. A fenced producer is
/// another host with the same transactional id, unless the broker could have aborted this
/// host's transaction on its own (no commit for longer than the transaction timeout, as
/// through a long outage): then it is only a restart.
fn judge(producer: &Polled<SinkContext>, error: KafkaError, id: &str, last_commit: Instant) -> Failure {
    if let KafkaError::Transaction(e) = &error
        && e.txn_requires_abort()
    {
        if let Err(abort) = producer.abort_transaction(STEP_DEADLINE) {
            tracing::warn!(error = %abort, "aborting the failed transaction");
        }
        // The transaction's own error first: a refused permission is in it, or in what librdkafka
        // logged when it failed the transaction (the records' delivery reports then only say
        // they were purged by the abort). That log is read after the abort: librdkafka's main
        // thread may fail the transaction (and log why) just after this thread saw the failure,
        // but it runs the abort only after that. A broker's answer that comes in during the
        // abort is logged a moment later: it is waited for briefly, since a restart costs more.
        let mut logged = producer.context().never_healing_transaction_error();
        let waited = Instant::now();
        while logged.is_none() && waited.elapsed() < LATE_TRANSACTION_LOG {
            std::thread::sleep(Duration::from_millis(50));
            logged = producer.context().never_healing_transaction_error();
        }
        let never_heals =
            fix_for(e.code(), &e.to_string()).or_else(|| logged.as_ref().and_then(|(code, text)| fix_for(*code, text)));
        let delivered = take_failures(producer);
        if let Some(fix) = never_heals {
            let cause = logged.map_or_else(|| error.to_string(), |(_, text)| text);
            return Failure::Fatal(anyhow::anyhow!(cause).context("the transaction was aborted").context(fix));
        }
        return match delivered {
            Err(f @ Failure::Fatal(_)) => f,
            Err(Failure::Recoverable(d)) => Failure::Recoverable(
                anyhow::Error::new(error).context(format!("{d:#}")).context("the transaction was aborted"),
            ),
            Ok(()) => Failure::Recoverable(anyhow::Error::new(error).context("the transaction was aborted")),
        };
    }
    if let Some((code, reason)) = producer.client().fatal_error() {
        let fenced = matches!(
            code,
            RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch | RDKafkaErrorCode::Fenced
        );
        let timeout = Duration::from_millis(TRANSACTION_TIMEOUT_MS.parse().unwrap_or(60_000));
        if fenced && last_commit.elapsed() < timeout {
            return Failure::Fatal(anyhow::anyhow!(
                "another producer took over transactional id {id:?} ({reason}): two hosts of a group must not share a --host-id (the transactional id is <group-id>.<host-id>) or a --transactional-id"
            ));
        }
        return Failure::Recoverable(anyhow::anyhow!("the producer hit a fatal error: {reason}"));
    }
    if let KafkaError::Flush(_) = error {
        return Failure::Recoverable(anyhow::anyhow!(
            "output records were not acknowledged within {} s",
            STEP_DEADLINE.as_secs()
        ));
    }
    Failure::kafka(error, "a transaction step")
}

impl Sink for KafkaSink {
    fn send(&mut self, topic: &str, key: Option<&[u8]>, value: &[u8], headers: &[(&str, &[u8])]) -> anyhow::Result<()> {
        let mut owned = OwnedHeaders::new_with_capacity(headers.len());
        for (k, v) in headers {
            owned = owned.insert(Header { key: k, value: Some(*v) });
        }
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(value).headers(owned);
        if let Some(key) = key {
            record = record.key(key);
        }
        let mut full_since: Option<Instant> = None;
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The background thread drains the queue; wait for room rather than drop,
                    // but not forever: a queue that stays full means Kafka is away.
                    let since = *full_since.get_or_insert_with(Instant::now);
                    self.health.fatal.check()?;
                    anyhow::ensure!(
                        since.elapsed() < STEP_DEADLINE,
                        Failure::Recoverable(anyhow::anyhow!(
                            "the producer's queue stayed full for {} s: Kafka does not take the output",
                            STEP_DEADLINE.as_secs()
                        ))
                    );
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e).with_context(|| format!("producing to {topic}")),
            }
        }
    }

    fn record_limit(&self, topic: &str) -> Option<usize> {
        Some(self.limits.get(topic).copied().unwrap_or(KAFKA_DEFAULT_MAX_MESSAGE_BYTES))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_producer_is_sized_for_the_largest_record_and_the_strictest_topic() {
        let limits: HashMap<String, usize> =
            [("dlq".to_owned(), 8 << 20), ("results".to_owned(), 200_000)].into_iter().collect();
        assert_eq!(size_settings(&limits), (8 << 20, 200_000 - 1024));
        assert_eq!(size_settings(&HashMap::new()), (1_048_588, 1_000_000));
    }
}
