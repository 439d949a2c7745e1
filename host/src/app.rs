//! Wires sources, the pipeline and sinks together: [`run`] over Kafka, [`replay`] over files.
//!
//! Delivery guarantee of `run` (exactly-once by default): every output record — window results,
//! late and dead-lettered messages, plugin error records — is produced in a Kafka transaction,
//! and each checkpoint commits that transaction together with the input offsets it covers and the
//! watermark through which windows were emitted (see `sink/kafka.rs`). Offsets are committed only
//! for messages nothing needs any more (`offsets.rs`). A host that stops, cleanly or not, resumes
//! from the last committed transaction: it re-reads from the committed offsets, rebuilds the open
//! windows and the join state, and emits no window at or below the committed watermark again,
//! while whatever its predecessor produced after that checkpoint was aborted and is never seen by
//! `read_committed` consumers. So each window's result appears exactly once, with the numbers of
//! an uninterrupted run. Cost: a transaction commit per checkpoint (every `--commit-interval`,
//! and after each emitted window), and a replay on restart of at most the join horizon plus the
//! open windows. With `--delivery at-least-once` the same checkpoints commit offsets after the
//! output is acknowledged, without transactions; a crash can then publish a window twice.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::Message;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, PluginConfig, TimeConfig};
use crate::event::Source;
use crate::metrics::Stats;
use crate::ops::{Ops, Phase, PluginStatus, SwapInbox};
use crate::pipeline::{Input, OutputTopics, Pipeline};
use crate::plugin::{Aggregator, Plugin, SwapReport};
use crate::sink::jsonl::JsonlSink;
use crate::sink::kafka::KafkaSink;
use crate::sink::topics::ensure_topics;
use crate::source::files::JsonlFile;
use crate::source::kafka::KafkaSource;

/// How often the partitions' backlog is checked (for idleness).
const BACKLOG_EVERY: Duration = Duration::from_millis(100);
/// How often progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// How often the console's and /metrics' figures are refreshed.
const PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// Runs the pipeline over Kafka until `shutdown` is cancelled or an infrastructure error
/// occurs. Blocking: call it from a thread of its own.
pub fn run(config: &Config, shutdown: &CancellationToken) -> anyhow::Result<Stats> {
    let topics = OutputTopics {
        late: config.kafka.late_topic.clone(),
        dead_letter: config.kafka.dlq_topic.clone(),
        plugin_errors: config.kafka.plugin_errors_topic.clone(),
        prefix: config.kafka.topic_prefix.clone(),
    };
    let mut pipeline = Pipeline::new(config.time, &config.plugins, topics.clone())?;
    let admin_open = config.http.addr.is_some_and(|a| a.ip().is_loopback());
    let (ops, swaps) = Ops::new(pipeline.loader().cloned(), config.http.admin_token.clone(), admin_open);
    // The server outlives the loop: it reports "stopping" while the last transaction commits.
    let server_stop = CancellationToken::new();
    let _stop_server = server_stop.clone().drop_guard();
    if let Some(addr) = config.http.addr {
        let bound = crate::ops::http::serve(addr, ops.clone(), server_stop.clone())?;
        tracing::info!(url = %format!("http://{bound}/"), "console, /metrics, /healthz, /readyz and /api/ listening");
        if !admin_open && config.http.admin_token.is_none() {
            tracing::warn!(
                "plugin swaps through the API are disabled: the console listens beyond loopback and no --admin-token is set"
            );
        }
    }
    ops.publish(pipeline.stats(), Vec::new(), PluginStatus::of(&pipeline), None);
    // Transactions first: initialising them fences a predecessor still running with our id, so
    // that the offsets read next cannot move under us.
    let mut sink = KafkaSink::new(&config.kafka.brokers, config.kafka.transactional_id.as_deref())?;
    let source = KafkaSource::open(&config.kafka, &mut pipeline)?;
    if config.kafka.create_topics {
        let mut outputs = vec![topics.late, topics.dead_letter, topics.plugin_errors];
        for plugin in pipeline.plugins() {
            outputs.extend(plugin.output_topics.iter().map(|t| format!("{}{t}", topics.prefix)));
        }
        // Only when one is missing: an admin client costs ~100 ms of start-up.
        let missing = source.missing_topics(&outputs)?;
        if !missing.is_empty() {
            create_topics(config, &pipeline, &missing)?;
        }
    }
    if config.plugins.watch {
        let files = pipeline.plugins().filter(|m| m.path.is_file()).map(|m| (m.name.clone(), m.path.clone())).collect();
        crate::ops::watch::start(ops.clone(), files, server_stop.clone())?;
    }
    tracing::info!(brokers = %config.kafka.brokers, group = %config.kafka.group_id, partitions = pipeline.partitions().len(), "consuming");
    ops.set_phase(Phase::Running);
    let mut last_commit = Instant::now();
    let mut last_progress = Instant::now();
    let mut last_backlog_check = Instant::now();
    let mut last_publish = Instant::now().checked_sub(PUBLISH_EVERY).unwrap_or_else(Instant::now);
    let mut committed_windows = 0;
    let mut last_error: Option<String> = None;
    let mut first_message = None;
    let mut latencies_us = Vec::new();
    pipeline.take_emitted();
    pipeline.take_results();
    while !shutdown.is_cancelled() {
        let now = Instant::now();
        match source.consumer.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) => {
                let Some(partition) = source.partition_id(msg.topic(), msg.partition()) else {
                    continue;
                };
                let input = Input {
                    partition,
                    offset: msg.offset(),
                    key: msg.key(),
                    payload: msg.payload().unwrap_or_default(),
                };
                first_message.get_or_insert_with(crate::metrics::since_start);
                pipeline.ingest(input, now, &mut sink)?;
                last_error = None;
            }
            Some(Err(e)) => {
                // librdkafka reconnects by itself; say so once per distinct error.
                let text = e.to_string();
                if last_error.as_deref() != Some(&text) {
                    tracing::warn!(error = %text, "Kafka consumer error; retrying");
                    last_error = Some(text);
                }
            }
            None => pipeline.advance(now, &mut sink)?,
        }
        // One clock read per message (`now`) serves every check below: the clock is a
        // measurable share of the per-message cost.
        if now.duration_since(last_backlog_check) >= BACKLOG_EVERY {
            source.report_backlog(&mut pipeline);
            apply_swaps(&swaps, &mut pipeline, &source, config, &ops);
            last_backlog_check = now;
        }
        // Per message: only a counter. The full stats (which walk the join's pending clicks) are
        // gathered when progress is logged.
        let windows_emitted = pipeline.windows_emitted();
        if now.duration_since(last_commit) >= config.kafka.commit_interval || windows_emitted > committed_windows {
            let offsets = source.offsets(&pipeline)?;
            sink.checkpoint(&offsets, &source.consumer)?;
            // Committing offsets is a round trip to the broker: a consumer error seen before is
            // over, as far as readiness goes (on an idle stream no message comes to say so).
            if offsets.count() > 0 {
                last_error = None;
            }
            record_latencies(&mut pipeline, &mut latencies_us, &ops);
            committed_windows = windows_emitted;
            last_commit = Instant::now();
        }
        if now.duration_since(last_publish) >= PUBLISH_EVERY {
            ops.add_results(pipeline.take_results());
            ops.publish(
                pipeline.stats(),
                source.status(&pipeline, now),
                PluginStatus::of(&pipeline),
                last_error.clone(),
            );
            last_publish = now;
        }
        if now.duration_since(last_progress) >= PROGRESS_EVERY {
            log_progress(&pipeline.stats());
            last_progress = now;
        }
    }
    ops.set_phase(Phase::Stopping);
    let mut stats = pipeline.stats();
    tracing::info!(
        open_windows = stats.open_windows,
        "shutting down: committing what is done; open windows are rebuilt from Kafka on restart"
    );
    pipeline.flush();
    sink.checkpoint(&source.offsets(&pipeline)?, &source.consumer)?;
    record_latencies(&mut pipeline, &mut latencies_us, &ops);
    log_progress(&stats);
    stats.startup_to_first_message_us = first_message.map(|d| d.as_micros() as u64);
    stats.result_latencies_us = latencies_us;
    Ok(stats)
}

/// The output of the windows emitted since the last call is acknowledged now: how long after
/// the watermark passed their end.
fn record_latencies(pipeline: &mut Pipeline, latencies_us: &mut Vec<u64>, ops: &Ops) {
    let acknowledged = Instant::now();
    for passed in pipeline.take_emitted() {
        let latency = acknowledged.duration_since(passed);
        ops.result_latency(latency);
        let us = latency.as_micros() as u64;
        tracing::debug!(latency_us = us, "window results acknowledged");
        latencies_us.push(us);
    }
}

/// Puts in charge the plugin versions the console or the file watcher loaded, between two
/// messages. Output topics a new version names are created first if missing (unless
/// `--no-create-topics`).
fn apply_swaps(swaps: &SwapInbox, pipeline: &mut Pipeline, source: &KafkaSource, config: &Config, ops: &Ops) {
    while let Some(request) = swaps.try_recv() {
        let name = request.plugin.meta().name.clone();
        // The requester gave up waiting (the pipeline was blocked on Kafka) and reported the
        // swap as not taken: keep it that way.
        if request.reply.is_closed() {
            tracing::warn!(plugin = %name, origin = request.origin, "a swap request was abandoned by its requester while the pipeline was busy; not applied");
            continue;
        }
        let result = swap(request.plugin, pipeline, source, config);
        // If the requester gave up in the meantime, nobody records the outcome: do it here.
        if let Err(result) = request.reply.send(result) {
            ops.swapped(&name, request.origin, &result);
        }
    }
}

fn swap(plugin: Plugin, pipeline: &mut Pipeline, source: &KafkaSource, config: &Config) -> Result<SwapReport, String> {
    let prefix = &config.kafka.topic_prefix;
    let outputs: Vec<String> = plugin.meta().output_topics.iter().map(|t| format!("{prefix}{t}")).collect();
    let missing = source.missing_topics(&outputs).map_err(|e| format!("{e:#}"))?;
    if !missing.is_empty() {
        if !config.kafka.create_topics {
            return Err(format!("its output topics {missing:?} do not exist, and --no-create-topics is set"));
        }
        create_topics(config, pipeline, &missing).map_err(|e| format!("creating its output topics: {e:#}"))?;
    }
    pipeline.swap(Box::new(plugin)).map_err(|e| e.to_string())
}

/// Creates output topics with as many partitions as the impressions topic.
fn create_topics(config: &Config, pipeline: &Pipeline, topics: &[String]) -> anyhow::Result<()> {
    let partitions = pipeline.partitions().iter().filter(|p| p.source == Source::Impressions).count();
    ensure_topics(&config.kafka.brokers, topics, i32::try_from(partitions.max(1)).unwrap_or(1))
}

fn log_progress(s: &Stats) {
    tracing::info!(
        consumed = s.consumed,
        impressions = s.impressions,
        clicks = s.clicks_attributed,
        unattributed = s.clicks_unattributed,
        late = s.late,
        dead_lettered = s.dead_lettered,
        windows = s.windows_emitted,
        watermark = %adstream_abi::time::format_rfc3339_millis(s.watermark_ms.max(0)),
        "progress"
    );
}

/// Runs the pipeline over two JSONL files, as if each were one Kafka partition, writing every
/// output record (results, late, dead letters) to `out` as JSON lines. The end of the input
/// closes every window.
///
/// The files are read in step: the next line always comes from the file whose largest event
/// time so far is the smaller, so the watermark advances as it would with two live partitions.
pub fn replay(
    time: TimeConfig,
    plugins: &PluginConfig,
    impressions: &Path,
    clicks: &Path,
    out: impl Write,
) -> anyhow::Result<Stats> {
    let topics = OutputTopics {
        late: "ad-events-late".into(),
        dead_letter: "ad-events-dlq".into(),
        plugin_errors: "adstream-plugin-errors".into(),
        prefix: String::new(),
    };
    let mut pipeline = Pipeline::new(time, plugins, topics)?;
    let mut sink = JsonlSink::new(std::io::BufWriter::new(out));
    let now = Instant::now();
    let mut inputs = Vec::new();
    for (kind, path) in [(Source::Impressions, impressions), (Source::Clicks, clicks)] {
        let id = pipeline.add_partition(kind, &path.display().to_string(), 0, now);
        inputs.push((id, JsonlFile::open(path)?));
    }
    let mut live: Vec<usize> = (0..inputs.len()).collect();
    while !live.is_empty() {
        let pick = *live
            .iter()
            .min_by_key(|&&i| pipeline.max_event_time(inputs[i].0).unwrap_or(i64::MIN))
            .expect("live is not empty");
        let (id, file) = &mut inputs[pick];
        let offset = file.offset + 1;
        match file.next_line()? {
            Some(line) => {
                let input = Input { partition: *id, offset, key: None, payload: line };
                pipeline.ingest(input, now, &mut sink)?;
            }
            None => {
                pipeline.finish_partition(*id);
                live.retain(|&i| i != pick);
            }
        }
    }
    pipeline.finish(&mut sink)?;
    sink.into_inner().flush().context("writing the output")?;
    Ok(pipeline.stats())
}
