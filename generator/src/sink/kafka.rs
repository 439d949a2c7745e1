//! Kafka: creating the topics, and an idempotent, batching producer.
//!
//! Delivery guarantee: every message is produced with `acks=all` and `enable.idempotence=true`, so each lands
//! exactly once, in the order written, on the partition its key (the impression id) hashes to. A run succeeds
//! only if every message was acknowledged; any failed delivery fails the run with the first error seen.
//!
//! Speed comes from large batches (`linger.ms`, `batch.num.messages`, lz4) and a deep local queue; when the
//! queue is full the writer serves delivery reports until there is room again, so it never drops a message.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::util::Timeout;

use super::Sink;
use crate::model::Topic;

/// The producer settings adgen starts from; `-X key=value` overrides any of them.
const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    ("client.id", "adgen"),
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("linger.ms", "10"),
    ("batch.num.messages", "10000"),
    ("queue.buffering.max.messages", "1000000"),
    ("queue.buffering.max.kbytes", "1048576"),
    // A broker that is gone fails the run after two minutes instead of the default five.
    ("message.timeout.ms", "120000"),
];

/// How long creating the topics may take, including finding a broker.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the final flush may take; `message.timeout.ms` normally ends it well before.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(600);

/// Where and how to produce.
#[derive(Clone, Debug)]
pub struct KafkaSettings {
    pub brokers: String,
    /// Topic names, indexed by [`Topic::index`].
    pub topics: [String; 2],
    /// Partitions of a topic adgen creates.
    pub partitions: i32,
    /// `compression.type` (before the `-X` overrides).
    pub compression: String,
    /// `-X` overrides.
    pub overrides: Vec<(String, String)>,
}

impl KafkaSettings {
    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in PRODUCER_DEFAULTS {
            config.set(*key, *value);
        }
        config.set("compression.type", &self.compression);
        for (key, value) in &self.overrides {
            config.set(key, value);
        }
        config
    }
}

/// Creates the topics that do not exist yet, with `partitions` partitions and replication factor 1. Existing
/// topics are left as they are, whatever their partition count.
pub async fn ensure_topics(settings: &KafkaSettings) -> Result<()> {
    ensure!(settings.topics[0] != settings.topics[1], "impressions and clicks need two different topics");
    let admin: AdminClient<DefaultClientContext> =
        settings.client_config().create().context("creating the Kafka admin client")?;
    let topics: Vec<NewTopic<'_>> = settings
        .topics
        .iter()
        .map(|name| NewTopic::new(name, settings.partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().request_timeout(Some(ADMIN_TIMEOUT)).operation_timeout(Some(ADMIN_TIMEOUT));
    let deadline = std::time::Instant::now() + ADMIN_TIMEOUT;
    loop {
        let results = admin
            .create_topics(&topics, &options)
            .await
            .with_context(|| format!("creating topics on {} (is a Kafka broker running there?)", settings.brokers))?;
        let failed = results.into_iter().find_map(|result| match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => None,
            Err(failure) => Some(failure),
        });
        match failed {
            None => return Ok(()),
            Some((topic, code)) if transient(code) && std::time::Instant::now() < deadline => {
                eprintln!("adgen: creating topic {topic}: {code}; again in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Some((topic, code)) => bail!("creating topic {topic} on {}: {code}", settings.brokers),
        }
    }
}

/// Answers to a topic creation that a cluster gives while a broker or its controller is briefly
/// away (a one-node cluster's only broker fenced, say: no broker to place a replica on).
fn transient(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::InvalidReplicationFactor
            | C::NotController
            | C::RequestTimedOut
            | C::BrokerNotAvailable
            | C::LeaderNotAvailable
            | C::NetworkException
    )
}

/// Delivery reports, counted as the producer serves them.
struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
    /// The first failure (delivery or fatal client error), reported when the run stops.
    first_failure: Mutex<Option<String>>,
    /// The client error printed last, so that a broker that stays away is reported once, not per retry.
    last_error: Mutex<String>,
}

impl Deliveries {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_failure.lock() {
            first.get_or_insert(what);
        }
    }
}

impl ClientContext for Deliveries {
    fn error(&self, error: KafkaError, reason: &str) {
        // Transport errors are retried by librdkafka and only worth a line; a fatal error (the idempotent
        // producer lost its guarantee) ends the run.
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            self.fail(format!("fatal producer error: {reason}"));
        }
        let line = format!("adgen: kafka: {error}: {reason}");
        if let Ok(mut last) = self.last_error.lock()
            && *last != line
        {
            eprintln!("{line}");
            *last = line;
        }
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, message)) => {
                self.fail(format!("delivery to {} partition {} failed: {error}", message.topic(), message.partition()));
            }
        }
    }
}

pub struct KafkaSink {
    producer: BaseProducer<Deliveries>,
    /// Topic names, indexed by [`Topic::index`].
    topics: [String; 2],
    /// Messages handed to the producer; at the end, all of them must be delivered.
    sent: u64,
}

impl KafkaSink {
    pub fn connect(settings: &KafkaSettings) -> Result<KafkaSink> {
        let deliveries = Deliveries {
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            first_failure: Mutex::new(None),
            last_error: Mutex::default(),
        };
        let producer = settings
            .client_config()
            .create_with_context(deliveries)
            .with_context(|| format!("creating a Kafka producer for {}", settings.brokers))?;
        Ok(KafkaSink { producer, topics: settings.topics.clone(), sent: 0 })
    }

    /// Fails as soon as any message failed, rather than producing on for minutes.
    fn check(&self) -> Result<()> {
        let deliveries = self.producer.context();
        if deliveries.failed.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let first = deliveries.first_failure.lock().ok().and_then(|first| first.clone()).unwrap_or_default();
        bail!(
            "{} of {} messages were not delivered; the first: {first}",
            deliveries.failed.load(Ordering::Relaxed),
            self.sent
        )
    }
}

impl Sink for KafkaSink {
    fn write(&mut self, topic: Topic, key: &[u8], payload: &[u8]) -> Result<()> {
        let name = &self.topics[topic.index()];
        let mut record = BaseRecord::to(name).key(key).payload(payload);
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    self.producer.poll(Duration::from_millis(5));
                    self.check()?;
                }
                Err((error, _)) => {
                    return Err(error).with_context(|| format!("producing to {name}"));
                }
            }
        }
        self.sent += 1;
        if self.sent.is_multiple_of(512) {
            self.producer.poll(Duration::ZERO);
            self.check()?;
        }
        Ok(())
    }

    fn idle(&mut self, duration: Duration) -> Result<()> {
        self.producer.poll(duration);
        self.check()
    }

    fn finish(&mut self) -> Result<()> {
        let flushed = self.producer.flush(Timeout::After(FLUSH_TIMEOUT));
        self.check()?;
        flushed.context("flushing the Kafka producer")?;
        let delivered = self.producer.context().delivered.load(Ordering::Relaxed);
        ensure!(delivered == self.sent, "only {delivered} of {} messages were acknowledged", self.sent);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_producer_accepts_its_settings_without_a_broker() {
        let settings = KafkaSettings {
            brokers: "127.0.0.1:1".to_owned(),
            topics: ["a".to_owned(), "b".to_owned()],
            partitions: 1,
            compression: "zstd".to_owned(),
            overrides: vec![("linger.ms".to_owned(), "20".to_owned())],
        };
        assert!(KafkaSink::connect(&settings).is_ok());
    }
}
