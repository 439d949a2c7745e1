//! Produces output records to Kafka.
//!
//! Records are queued without waiting; [`KafkaSink::flush`] waits until every queued record is
//! acknowledged and fails if any delivery failed. The driver flushes before it commits input
//! offsets, so an offset is only committed once the output that covers it is durable.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, bail};
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

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

/// A Kafka producer behind the [`Sink`] trait.
pub struct KafkaSink {
    producer: ThreadedProducer<DeliveryContext>,
}

impl KafkaSink {
    /// An idempotent producer tuned for throughput (large batches, lz4).
    pub fn new(brokers: &str) -> anyhow::Result<Self> {
        let producer: ThreadedProducer<DeliveryContext> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set("compression.type", "lz4")
            .set("queue.buffering.max.messages", "1000000")
            .create_with_context(DeliveryContext::default())
            .context("creating the Kafka producer")?;
        Ok(KafkaSink { producer })
    }

    /// Waits until every queued record is acknowledged; fails if any could not be delivered.
    pub fn flush(&self, timeout: Duration) -> anyhow::Result<()> {
        self.producer.flush(timeout).context("waiting for the output to be acknowledged by Kafka")?;
        let mut failures = self.producer.context().failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.0 > 0 {
            let (count, first) = std::mem::take(&mut *failures);
            bail!("{count} output records could not be delivered, first {}", first.unwrap_or_default());
        }
        Ok(())
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
