//! The Kafka consumer: every partition of the two input topics, assigned explicitly, starting
//! from the group's committed offsets, read with `isolation.level=read_committed`.
//!
//! Commits carry metadata (`adstream/1 wm=<watermark> next=<offset>`): the watermark through
//! which windows had been emitted, and how far the partition had been read. A restarted host
//! resumes from both, so it neither emits a finished window again nor re-routes a late or
//! invalid message; see [`crate::pipeline::Pipeline::resume`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::config::KafkaConfig;
use crate::event::Source;
use crate::ops::PartitionStatus;
use crate::pipeline::Pipeline;
use crate::watermark::PartitionId;

const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

/// The consumer and the map from Kafka partitions to pipeline partitions.
pub struct KafkaSource {
    pub consumer: BaseConsumer,
    config: KafkaConfig,
    /// (source, Kafka partition) → pipeline partition.
    ids: HashMap<(Source, i32), PartitionId>,
    /// Pipeline partition → (topic, Kafka partition).
    topics: Vec<(String, i32)>,
    /// Pipeline partition → the offset reading started at (0 when unknown), for the backlog
    /// of a partition nothing was read from yet.
    start_offsets: Vec<i64>,
}

/// The high watermark of a partition as last seen in a fetch response, if any.
fn cached_high_watermark(consumer: &BaseConsumer, topic: &str, partition: i32) -> Option<i64> {
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
    /// Connects, finds the partitions of both input topics, registers them with the pipeline,
    /// resumes it from the committed checkpoints and assigns the partitions.
    pub fn open(config: &KafkaConfig, pipeline: &mut Pipeline) -> anyhow::Result<Self> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "50")
            // librdkafka pauses a partition's fetching for this long once its local queue is
            // full (default 1 s): long enough to run the queue dry at our rate. Measured in
            // BENCHMARKS.md: with the default the host waited on fetches for half of a run.
            .set("fetch.queue.backoff.ms", "5")
            // Bounds the prefetched messages held in memory (default 64 MiB per partition); 4 MiB
            // kept the host fed in the benchmark and took ~30 MB off its peak RSS against 16.
            .set("queued.max.messages.kbytes", "4096")
            .create()
            .context("creating the Kafka consumer")?;
        let mut source = KafkaSource {
            consumer,
            config: config.clone(),
            ids: HashMap::new(),
            topics: Vec::new(),
            start_offsets: Vec::new(),
        };
        let mut assignment = TopicPartitionList::new();
        let now = Instant::now();
        for (kind, topic) in [(Source::Impressions, &config.impressions_topic), (Source::Clicks, &config.clicks_topic)]
        {
            for partition in source.partitions_of(topic)? {
                let id = pipeline.add_partition(kind, topic, partition, now);
                source.ids.insert((kind, partition), id);
                source.topics.push((topic.clone(), partition));
                assignment.add_partition(topic, partition);
            }
        }
        let committed = source
            .consumer
            .committed_offsets(assignment, METADATA_TIMEOUT)
            .with_context(|| format!("reading the committed offsets of group {}", config.group_id))?;
        let mut start = TopicPartitionList::new();
        let mut replays = Vec::new();
        let mut watermark = i64::MIN;
        for elem in committed.elements() {
            let id = source.ids[&(source.kind_of(elem.topic()), elem.partition())];
            let offset = match elem.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::Beginning,
            };
            if source.start_offsets.len() <= id {
                source.start_offsets.resize(id + 1, 0);
            }
            source.start_offsets[id] = if let Offset::Offset(o) = offset { o } else { 0 };
            if let Some(cp) = Checkpoint::decode(elem.metadata()) {
                watermark = watermark.max(cp.watermark);
                replays.push((id, cp.next));
            }
            tracing::info!(topic = elem.topic(), partition = elem.partition(), start = ?offset, "assigned");
            start.add_partition_offset(elem.topic(), elem.partition(), offset)?;
        }
        if watermark > i64::MIN {
            tracing::info!(watermark = %adstream_abi::time::format_rfc3339_millis(watermark), "resuming: windows up to the committed watermark were already emitted");
        }
        pipeline.resume(watermark, &replays);
        source.consumer.assign(&start).context("assigning the input partitions")?;
        Ok(source)
    }

    fn partitions_of(&self, topic: &str) -> anyhow::Result<Vec<i32>> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(topic), METADATA_TIMEOUT)
            .with_context(|| format!("fetching metadata of topic {topic} from {}", self.config.brokers))?;
        let t = metadata.topics().first().with_context(|| format!("no metadata for topic {topic}"))?;
        if let Some(err) = t.error() {
            bail!(
                "topic {topic} is not usable ({err:?}): create it first (the generator creates it, or `kafka-topics.sh --create`)"
            );
        }
        if t.partitions().is_empty() {
            bail!("topic {topic} does not exist: create it first (the generator creates it)");
        }
        Ok(t.partitions().iter().map(|p| p.id()).collect())
    }

    /// Those of `topics` the cluster does not have (by one metadata request for all topics).
    pub fn missing_topics(&self, topics: &[String]) -> anyhow::Result<Vec<String>> {
        let metadata = self
            .consumer
            .fetch_metadata(None, METADATA_TIMEOUT)
            .with_context(|| format!("fetching the cluster's topics from {}", self.config.brokers))?;
        let existing: std::collections::HashSet<&str> =
            metadata.topics().iter().filter(|t| t.error().is_none()).map(|t| t.name()).collect();
        Ok(topics.iter().filter(|t| !existing.contains(t.as_str())).cloned().collect())
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
    pub fn report_backlog(&self, pipeline: &mut Pipeline) {
        for (id, (topic, partition)) in self.topics.iter().enumerate() {
            let backlog = match cached_high_watermark(&self.consumer, topic, *partition) {
                Some(high) => pipeline.next_offset(id).map_or(high > self.start_offsets[id], |next| high > next),
                None => true,
            };
            pipeline.set_backlog(id, backlog);
        }
    }

    /// Every input partition's position, end, lag and watermark, for the console and metrics.
    pub fn status(&self, pipeline: &Pipeline, now: Instant) -> Vec<PartitionStatus> {
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
    pub fn offsets(&self, pipeline: &Pipeline) -> anyhow::Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        for (id, (topic, partition)) in self.topics.iter().enumerate() {
            let (Some(offset), Some(next)) = (pipeline.committable(id), pipeline.next_offset(id)) else { continue };
            let mut elem = tpl.add_partition(topic, *partition);
            elem.set_offset(Offset::Offset(offset))?;
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
