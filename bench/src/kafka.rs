//! The Kafka side of a benchmark run: loading the input topics once, and watching the result
//! topics until every window that can close has been committed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// How long result topics just created may stay unknown to the watcher's subscription.
const TOPIC_PROPAGATION: Duration = Duration::from_secs(30);

/// Whether a consumer error says a subscribed topic or partition does not exist (yet).
fn unknown_topic(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::error::RDKafkaErrorCode as C;
    matches!(e.rdkafka_error_code(), Some(C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition))
}

/// One result record as compared across runs: topic (without prefix), key, value.
pub type Record = (String, String, String);

/// Reads the result topics (`read_committed`) until, on each, a record of every window in
/// `windows` has arrived, or `timeout` passes. A window's records are committed together, so
/// its first record means all are published: that moment is returned, with every record seen
/// until the topics have been quiet for a moment after it.
pub fn await_windows(
    brokers: &str,
    prefix: &str,
    topics: &[&str],
    windows: &BTreeSet<String>,
    timeout: Duration,
    mut alive: impl FnMut() -> bool,
) -> anyhow::Result<(BTreeSet<Record>, Instant)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{prefix}watcher"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()
        .context("creating the result watcher")?;
    let full: Vec<String> = topics.iter().map(|t| format!("{prefix}{t}")).collect();
    consumer.subscribe(&full.iter().map(String::as_str).collect::<Vec<_>>()).context("subscribing to results")?;
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut records = BTreeSet::new();
    let deadline = Instant::now() + timeout;
    let done = |seen: &BTreeMap<String, BTreeSet<String>>| {
        topics.iter().all(|t| seen.get(*t).is_some_and(|w| windows.is_subset(w)))
    };
    let mut done_at = None;
    let propagation_deadline = Instant::now() + TOPIC_PROPAGATION;
    let mut told_unknown = false;
    loop {
        if done_at.is_none() && done(&seen) {
            done_at = Some(Instant::now());
        }
        anyhow::ensure!(Instant::now() < deadline, "the results did not all arrive within {timeout:?}");
        anyhow::ensure!(alive(), "the host exited before publishing every result");
        let Some(msg) = consumer.poll(Duration::from_millis(if done_at.is_some() { 500 } else { 20 })) else {
            match done_at {
                Some(at) => return Ok((records, at)),
                None => continue,
            }
        };
        let msg = match msg {
            Ok(msg) => msg,
            // The topics were created just before the host started, and a broker's metadata can
            // lag a creation: the subscription then reports them unknown until it catches up
            // (seen on a loaded machine, 60 ms after the creation).
            Err(e) if unknown_topic(&e) && Instant::now() < propagation_deadline => {
                if !told_unknown {
                    eprintln!("the result topics are not in the broker's metadata yet, waiting: {e}");
                    told_unknown = true;
                }
                continue;
            }
            Err(e) => return Err(e).context("reading results"),
        };
        let topic = msg.topic().strip_prefix(prefix).unwrap_or(msg.topic()).to_owned();
        let key = String::from_utf8_lossy(msg.key().unwrap_or_default()).into_owned();
        let value: serde_json::Value = serde_json::from_slice(msg.payload().unwrap_or_default())
            .with_context(|| format!("a result on {topic} that is not JSON"))?;
        let window =
            value["window_start"].as_str().with_context(|| format!("a result without window_start: {value}"))?;
        seen.entry(topic.clone()).or_default().insert(window.to_owned());
        // Serialised again, as the replay's records are, so that both compare field by field.
        records.insert((topic, key, value.to_string()));
    }
}
