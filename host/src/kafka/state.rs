//! The merge stage's compacted topics, read back by whoever runs the merge stage before it
//! publishes its first window: the detectors' state (the guarantee is written in
//! [`crate::engine::detect`]) and the windows' completeness records ([`crate::engine::complete`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::{Failure, Health, HostContext, Role};
use crate::config::KafkaConfig;
use crate::sink::kafka::STEP_DEADLINE;

/// How long reading the state topic to its end may take.
const READ_DEADLINE: Duration = Duration::from_secs(60);

/// Every key of the state topic with its last committed value (a compacted topic holds about
/// one record per detector).
pub fn read(config: &KafkaConfig, health: &Health) -> Result<HashMap<String, Vec<u8>>, Failure> {
    read_compacted(config, health, &config.state_topic, "the detectors' state")
}

/// Every key of partition 0 of `topic` (holding `what`) with its last committed value. It is read with `read_committed` up to its last stable offset:
/// the transaction of an earlier owner of the merge stage that wrote the state is over by then,
/// since the committed offsets of the partials topic, which that transaction also wrote, were
/// read with KIP-447's "stable" rule first ([`crate::source::kafka::KafkaSource::assign`]).
pub fn read_compacted(
    config: &KafkaConfig,
    health: &Health,
    topic: &str,
    what: &str,
) -> Result<HashMap<String, Vec<u8>>, Failure> {
    let defaults = [
        // librdkafka looks the group's coordinator up: the host's own group, which the principal
        // may use already. This consumer never joins it or commits.
        ("group.id", config.group_id.as_str()),
        ("enable.auto.commit", "false"),
        ("isolation.level", "read_committed"),
        ("enable.partition.eof", "true"),
        ("auto.offset.reset", "earliest"),
        // The end of a transactional topic is a commit marker after the last record: the fetch
        // that finds no record past it would otherwise be held by the broker for 500 ms (the
        // default) before the end is known, and that is start-up time.
        ("fetch.wait.max.ms", "10"),
    ];
    let settings = &config.client;
    let context = HostContext::new(Role::Consumer, settings.clone(), health.clone());
    let consumer: BaseConsumer<HostContext> = settings
        .client_config(Role::Consumer, &defaults)
        .create_with_context(context)
        .map_err(|e| Failure::Fatal(settings.explain(Role::Consumer, e)))?;
    let what = || format!("reading {what} from {topic}");
    // Polling serves the client's callbacks: an OAUTHBEARER token is handed to it only then
    // (librdkafka asks for the first one as the client is created, so it is already waiting).
    let started = Instant::now();
    let mut pause = Duration::ZERO;
    let (low, high) = loop {
        let _ = consumer.poll(pause);
        match consumer.fetch_watermarks(topic, 0, Duration::from_secs(2)) {
            Ok(watermarks) => break watermarks,
            Err(e) if started.elapsed() >= STEP_DEADLINE => return Err(Failure::kafka(e, what())),
            Err(e) => tracing::debug!(%topic, error = %e, "reading the first and last offsets; again"),
        }
        pause = Duration::from_millis(100);
    };
    let mut state = HashMap::new();
    if high <= low {
        return Ok(state);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning).map_err(|e| Failure::kafka(e, what()))?;
    consumer.assign(&tpl).map_err(|e| Failure::kafka(e, what()))?;
    let deadline = Instant::now() + READ_DEADLINE;
    while Instant::now() < deadline {
        // Short waits: the end is known by an event that can come a moment after the records.
        match consumer.poll(Duration::from_millis(10)) {
            Some(Ok(m)) => {
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                match m.payload() {
                    Some(value) => state.insert(key, value.to_vec()),
                    None => state.remove(&key), // a tombstone: that key starts afresh
                };
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {
                // Closing a consumer takes librdkafka about 100 ms, on the way to the first
                // message: done aside.
                crate::kafka::aside::drop_aside("state-reader-close", consumer);
                return Ok(state);
            }
            Some(Err(e)) => return Err(Failure::kafka(e, what())),
            None => {}
        }
    }
    Err(Failure::Recoverable(anyhow::anyhow!("{}: not at its end after {READ_DEADLINE:?}", what())))
}
