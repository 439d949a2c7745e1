//! Produces output records to Kafka, and commits input offsets with them.
//!
//! Exactly-once (the default): every record is produced inside a Kafka transaction, and a
//! [`KafkaSink::checkpoint`] adds the input offsets (with the pipeline's checkpoint metadata) to
//! that transaction and commits both at once, then opens the next one. A `read_committed`
//! consumer sees a window's results if and only if the offsets covering them were committed. A
//! host that dies mid-transaction leaves it open; its successor, with the same transactional id,
//! fences it at start-up (`init_transactions`) and the broker aborts it, so nothing it produced
//! after its last checkpoint is ever visible. The cost: one transaction commit per checkpoint
//! (a few milliseconds on a local broker), and results appear to `read_committed` consumers only
//! at checkpoints.
//!
//! At-least-once (`--delivery at-least-once`): records are produced without a transaction;
//! a checkpoint waits until all of them are acknowledged, then commits the offsets.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, bail};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, TopicPartitionList};

use crate::pipeline::Sink;

/// Counts failed deliveries, reported by librdkafka's delivery callbacks.
#[derive(Default)]
pub struct DeliveryContext {
    /// The first delivery error since the last flush, with how many failed in all.
    failures: Mutex<(u64, Option<String>)>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, message)) = result {
            let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            failures.0 += 1;
            if failures.1.is_none() {
                use rdkafka::Message;
                failures.1 = Some(format!("to {}: {error}", message.topic()));
            }
        }
    }
}

/// How long one transaction step (init, commit) may wait for the broker, e.g. through an outage.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(120);

/// A Kafka producer behind the [`Sink`] trait.
pub struct KafkaSink {
    producer: ThreadedProducer<DeliveryContext>,
    /// A transaction is open (exactly-once) or there are none (at-least-once).
    transactional: bool,
}

impl KafkaSink {
    /// An idempotent producer tuned for throughput (large batches, lz4); transactional when
    /// `transactional_id` is given, in which case it fences any earlier producer with that id and
    /// opens the first transaction.
    pub fn new(brokers: &str, transactional_id: Option<&str>) -> anyhow::Result<Self> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            // Results leave in bursts, once per window: waiting long for a batch to fill only
            // adds to their latency (see BENCHMARKS.md).
            .set("linger.ms", "1")
            .set("batch.num.messages", "10000")
            .set("compression.type", "lz4")
            .set("queue.buffering.max.messages", "1000000");
        if let Some(id) = transactional_id {
            config.set("transactional.id", id).set("transaction.timeout.ms", "300000");
        }
        let producer: ThreadedProducer<DeliveryContext> =
            config.create_with_context(DeliveryContext::default()).context("creating the Kafka producer")?;
        if let Some(id) = transactional_id {
            producer.init_transactions(TRANSACTION_TIMEOUT).with_context(|| {
                format!("initialising transactions as {id:?} (this also fences any earlier host with that id)")
            })?;
            producer.begin_transaction().context("beginning a transaction")?;
        }
        Ok(KafkaSink { producer, transactional: transactional_id.is_some() })
    }

    /// Makes everything produced so far durable together with `offsets` (committed for the
    /// consumer's group): in one transaction (exactly-once), or after waiting for every record's
    /// acknowledgement (at-least-once).
    pub fn checkpoint(&self, offsets: &TopicPartitionList, consumer: &BaseConsumer) -> anyhow::Result<()> {
        if !self.transactional {
            self.flush(TRANSACTION_TIMEOUT)?;
            if offsets.count() > 0 {
                consumer.commit(offsets, CommitMode::Sync).context("committing input offsets")?;
            }
            return Ok(());
        }
        if offsets.count() > 0 {
            let group = consumer.group_metadata().context("the consumer has no group metadata")?;
            retry_retriable("adding the input offsets to the transaction", || {
                self.producer.send_offsets_to_transaction(offsets, &group, TRANSACTION_TIMEOUT)
            })?;
        }
        // commit_transaction would flush by itself, but through rust-rdkafka's flush, which
        // waits in steps of 100 ms here (the producer thread takes the delivery reports it
        // polls for): a window's results would wait ~100 ms to be acknowledged.
        self.flush(TRANSACTION_TIMEOUT)?;
        retry_retriable("committing the transaction", || self.producer.commit_transaction(TRANSACTION_TIMEOUT))?;
        self.check_deliveries()?;
        self.producer.begin_transaction().context("beginning the next transaction")
    }

    fn check_deliveries(&self) -> anyhow::Result<()> {
        let mut failures = self.producer.context().failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.0 > 0 {
            let (count, first) = std::mem::take(&mut *failures);
            bail!("{count} output records could not be delivered, first {}", first.unwrap_or_default());
        }
        Ok(())
    }

    /// Waits until every queued record is acknowledged; fails if any could not be delivered.
    /// The producer's own thread serves the delivery reports as they arrive; this only watches
    /// the count of records in flight, at a millisecond's granularity.
    pub fn flush(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let in_flight = self.producer.in_flight_count();
            if in_flight == 0 {
                return self.check_deliveries();
            }
            if std::time::Instant::now() >= deadline {
                bail!("{in_flight} output records were not acknowledged by Kafka within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
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
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The background thread drains the queue; wait for room rather than drop.
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e).with_context(|| format!("producing to {topic}")),
            }
        }
    }
}

/// Runs a transaction step again while librdkafka says the error is retriable (a broker that is
/// briefly unreachable); any other error ends the host, whose successor resumes from the last
/// committed transaction.
fn retry_retriable(what: &str, mut step: impl FnMut() -> Result<(), KafkaError>) -> anyhow::Result<()> {
    for attempt in 1.. {
        match step() {
            Ok(()) => return Ok(()),
            Err(KafkaError::Transaction(e)) if e.is_retriable() && attempt < 30 => {
                tracing::warn!(error = %e, attempt, "{what}: retrying");
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => return Err(e).context(what.to_owned()),
        }
    }
    unreachable!("the loop returns")
}
