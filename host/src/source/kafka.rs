//! The Kafka consumer: every partition of the two input topics, assigned explicitly, starting
//! from the group's committed offsets, read with `isolation.level=read_committed`.
//!
//! Commits carry metadata (`adstream/1 wm=<watermark> next=<offset>`): the watermark through
//! which windows had been emitted, and how far the partition had been read. A restarted host
//! resumes from both, so it neither emits a finished window again nor re-routes a late or
//! invalid message; see [`crate::engine::Engine::resume`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::metadata::Metadata;

use crate::config::KafkaConfig;
use crate::engine::Engine;
use crate::engine::watermark::PartitionId;
use crate::event::Source;
use crate::kafka::{Failure, Health, HostContext, Role};
use crate::ops::PartitionStatus;
use crate::sink::kafka::STEP_DEADLINE;

/// How long the first contact with the cluster may take before the attempt is given up (and
/// tried again after a backoff).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The consumer and the map from Kafka partitions to pipeline partitions.
pub struct KafkaSource {
    pub consumer: BaseConsumer<HostContext>,
    config: KafkaConfig,
    /// (source, Kafka partition) → pipeline partition.
    ids: HashMap<(Source, i32), PartitionId>,
    /// Engine partition → (topic, Kafka partition).
    topics: Vec<(String, i32)>,
    /// Engine partition → the offset reading started at (0 when unknown), for the backlog
    /// of a partition nothing was read from yet.
    start_offsets: Vec<i64>,
    /// The input partitions found at connection: (source, topic, partition).
    partitions: Vec<(Source, String, i32)>,
}

/// The high watermark of a partition as last seen in a fetch response, if any.
fn cached_high_watermark(consumer: &BaseConsumer<HostContext>, topic: &str, partition: i32) -> Option<i64> {
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

/// What an earlier run left in a commit's metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub watermark: i64,
    pub next: i64,
}

impl Checkpoint {
    pub fn encode(&self) -> String {
        format!("adstream/1 wm={} next={}", self.watermark, self.next)
    }

    pub fn decode(metadata: &str) -> Option<Self> {
        let rest = metadata.strip_prefix("adstream/1 ")?;
        let mut watermark = None;
        let mut next = None;
        for field in rest.split(' ') {
            match field.split_once('=')? {
                ("wm", v) => watermark = v.parse().ok(),
                ("next", v) => next = v.parse().ok(),
                _ => {}
            }
        }
        Some(Checkpoint { watermark: watermark?, next: next? })
    }
}

impl KafkaSource {
    /// Connects (waiting at most [`CONNECT_TIMEOUT`] for the cluster to answer, and not at all
    /// once a client hit an error that never heals, such as refused credentials), and checks
    /// that both input topics exist. Nothing is assigned yet: see [`KafkaSource::open`].
    pub fn connect(config: &KafkaConfig, health: &Health) -> Result<Self, Failure> {
        let settings = &config.client;
        let defaults = [
            ("group.id", config.group_id.as_str()),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
            ("isolation.level", "read_committed"),
            ("fetch.wait.max.ms", "50"),
            // librdkafka pauses a partition's fetching for this long once its local queue is
            // full (default 1 s): long enough to run the queue dry at our rate. Measured in
            // BENCHMARKS.md: with the default the host waited on fetches for half of a run.
            ("fetch.queue.backoff.ms", "5"),
            // Bounds the prefetched messages held in memory (default 64 MiB per partition); 4 MiB
            // kept the host fed in the benchmark and took ~30 MB off its peak RSS against 16.
            ("queued.max.messages.kbytes", "4096"),
            // After an outage, reconnect within 2 s of the broker's return (default: 10 s).
            ("reconnect.backoff.max.ms", "2000"),
        ];
        let context = HostContext::new(Role::Consumer, settings.clone(), health.clone());
        let consumer: BaseConsumer<HostContext> = settings
            .client_config(Role::Consumer, &defaults)
            .create_with_context(context)
            .map_err(|e| Failure::Fatal(settings.explain(Role::Consumer, e)))?;
        let mut source = KafkaSource {
            consumer,
            config: config.clone(),
            ids: HashMap::new(),
            topics: Vec::new(),
            start_offsets: Vec::new(),
            partitions: Vec::new(),
        };
        // The probe's answer is the impressions topic's metadata: the first of the two reads.
        let impressions = source.wait_for_cluster(health)?;
        let clicks = source.consumer.fetch_metadata(Some(&config.clicks_topic), STEP_DEADLINE).map_err(|e| {
            Failure::kafka(
                e,
                format!("fetching metadata of topic {} from {}", config.clicks_topic, config.client.brokers),
            )
        })?;
        for (kind, topic, metadata) in [
            (Source::Impressions, &config.impressions_topic, &impressions),
            (Source::Clicks, &config.clicks_topic, &clicks),
        ] {
            for partition in source.partitions_in(metadata, topic)? {
                source.partitions.push((kind, topic.clone(), partition));
            }
        }
        source.check_co_partitioned()?;
        Ok(source)
    }

    /// Polls the consumer (its errors reach the context, and the fatal slot, only then) and
    /// asks for the impressions topic's metadata until the cluster answers; returns it.
    fn wait_for_cluster(&self, health: &Health) -> Result<Metadata, Failure> {
        let started = Instant::now();
        loop {
            while let Some(Err(e)) = self.consumer.poll(Duration::ZERO) {
                tracing::debug!(error = %e, "while connecting");
            }
            if let Some(fatal) = health.fatal.get() {
                return Err(Failure::Fatal(anyhow::anyhow!(fatal)));
            }
            let topic = &self.config.impressions_topic;
            let error = match self.consumer.fetch_metadata(Some(topic), Duration::from_secs(1)) {
                Ok(metadata) => return Ok(metadata),
                Err(e) => e,
            };
            if started.elapsed() >= CONNECT_TIMEOUT {
                // The client may have said why in the meantime (a refused certificate, say).
                if let Some(fatal) = health.fatal.get() {
                    return Err(Failure::Fatal(anyhow::anyhow!(fatal)));
                }
                let seen = health.last_error.recent(CONNECT_TIMEOUT).unwrap_or_else(|| error.to_string());
                return Err(Failure::Recoverable(anyhow::anyhow!(
                    "no answer from Kafka at {} within {} s: {seen}",
                    self.config.client.describe(),
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
        }
    }

    /// A task is partition `p` of both input topics, so they must have the same partitions:
    /// otherwise some clicks' impressions would be in a partition no task pairs them with.
    fn check_co_partitioned(&self) -> Result<(), Failure> {
        let count = |kind| self.partitions.iter().filter(|(k, ..)| *k == kind).count();
        let (impressions, clicks) = (count(Source::Impressions), count(Source::Clicks));
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

    /// The number of partitions of the impressions topic.
    pub fn impression_partitions(&self) -> usize {
        self.partitions.iter().filter(|(kind, ..)| *kind == Source::Impressions).count()
    }

    /// Registers the partitions with the pipeline, resumes it from the committed checkpoints and
    /// assigns the partitions. Call it once the producer has fenced any predecessor, so that
    /// the offsets read here cannot move under us.
    pub fn open(&mut self, pipeline: &mut Engine) -> Result<(), Failure> {
        let mut assignment = TopicPartitionList::new();
        let now = Instant::now();
        for (kind, topic, partition) in &self.partitions {
            let id = pipeline.add_partition(*kind, topic, *partition, now).map_err(Failure::Fatal)?;
            self.ids.insert((*kind, *partition), id);
            self.topics.push((topic.clone(), *partition));
            assignment.add_partition(topic, *partition);
        }
        let committed = self.consumer.committed_offsets(assignment, STEP_DEADLINE).map_err(|e| {
            Failure::kafka(e, format!("reading the committed offsets of group {}", self.config.group_id))
        })?;
        let mut start = TopicPartitionList::new();
        let mut replays = Vec::new();
        let mut watermark = i64::MIN;
        for elem in committed.elements() {
            let id = self.ids[&(self.kind_of(elem.topic()), elem.partition())];
            let offset = match elem.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::Beginning,
            };
            if self.start_offsets.len() <= id {
                self.start_offsets.resize(id + 1, 0);
            }
            self.start_offsets[id] = if let Offset::Offset(o) = offset { o } else { 0 };
            if let Some(cp) = Checkpoint::decode(elem.metadata()) {
                watermark = watermark.max(cp.watermark);
                replays.push((id, cp.next));
            }
            tracing::info!(topic = elem.topic(), partition = elem.partition(), start = ?offset, "assigned");
            start
                .add_partition_offset(elem.topic(), elem.partition(), offset)
                .map_err(|e| Failure::kafka(e, "assigning the input partitions"))?;
        }
        if watermark > i64::MIN {
            tracing::info!(watermark = %adstream_abi::time::format_rfc3339_millis(watermark), "resuming: windows up to the committed watermark were already emitted");
        }
        pipeline.resume(watermark, &replays);
        self.consumer.assign(&start).map_err(|e| Failure::kafka(e, "assigning the input partitions"))
    }

    /// What a consumer error means: the host stops on one that never heals (an input topic
    /// gone, a codec it cannot read, a permission missing); librdkafka retries the others.
    pub fn judge(&self, error: &KafkaError) -> Option<Failure> {
        let code = error.rdkafka_error_code()?;
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
        let _ = std::thread::Builder::new().name("abandoned-consumer".into()).spawn(move || drop(self));
    }

    /// Which input a message's topic is.
    pub fn kind_of(&self, topic: &str) -> Source {
        if topic == self.config.impressions_topic { Source::Impressions } else { Source::Clicks }
    }

    /// The pipeline partition of a message.
    pub fn partition_id(&self, topic: &str, partition: i32) -> Option<PartitionId> {
        self.ids.get(&(self.kind_of(topic), partition)).copied()
    }

    /// Tells the pipeline which partitions have messages not read yet, from the high
    /// watermarks librdkafka caches from its fetch responses (no network round trip). A
    /// partition whose high watermark is not known yet counts as behind.
    pub fn report_backlog(&self, pipeline: &mut Engine, now: Instant) {
        for (id, (topic, partition)) in self.topics.iter().enumerate() {
            let backlog = match cached_high_watermark(&self.consumer, topic, *partition) {
                Some(high) => pipeline.next_offset(id).map_or(high > self.start_offsets[id], |next| high > next),
                None => true,
            };
            pipeline.set_backlog(id, backlog, now);
        }
    }

    /// Every input partition's position, end, lag and watermark, for the console and metrics.
    pub fn status(&self, pipeline: &Engine, now: Instant) -> Vec<PartitionStatus> {
        self.topics
            .iter()
            .enumerate()
            .map(|(id, (topic, partition))| {
                let next_offset = pipeline.next_offset(id).or(Some(self.start_offsets[id]));
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

    /// For every partition, the first offset the pipeline still needs, with the checkpoint
    /// metadata: what a checkpoint commits once the output covering it is durable.
    pub fn offsets(&self, pipeline: &Engine) -> Result<TopicPartitionList, Failure> {
        let mut tpl = TopicPartitionList::new();
        for (id, (topic, partition)) in self.topics.iter().enumerate() {
            let (Some(offset), Some(next)) = (pipeline.committable(id), pipeline.next_offset(id)) else { continue };
            let mut elem = tpl.add_partition(topic, *partition);
            elem.set_offset(Offset::Offset(offset)).map_err(|e| Failure::kafka(e, "recording an offset"))?;
            elem.set_metadata(Checkpoint { watermark: pipeline.watermark(), next }.encode());
        }
        Ok(tpl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_metadata_round_trips() {
        let cp = Checkpoint { watermark: -5, next: 42 };
        assert_eq!(Checkpoint::decode(&cp.encode()), Some(cp));
        assert_eq!(Checkpoint::decode(""), None);
        assert_eq!(Checkpoint::decode("adstream/1 wm=3"), None);
    }
}
