//! One run: check the options, prepare the destination, then write the stream at the requested pace.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{Config, Destination};
use crate::sink::jsonl::JsonlSink;
use crate::sink::kafka::{self, KafkaSettings, KafkaSink};
use crate::sink::{Sink, Tee};
use crate::stream::MessageStream;
use crate::summary::Summary;

/// Asks a run to stop early: it stops making messages, flushes what it wrote and reports it as interrupted.
#[derive(Clone, Debug, Default)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    pub fn trigger(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_triggered(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Pacing is only worth a sleep once the writer is this far ahead.
const SLEEP_GRANULARITY: Duration = Duration::from_millis(1);

/// How often (in messages) the progress bar and the shutdown flag are looked at when not pacing.
const CHECK_EVERY: u64 = 4096;

/// Writes every message of the run to its destination; then writes `--summary-json`, if asked, and returns
/// the counts. Fails on any error of the destination (a message Kafka did not acknowledge included).
pub async fn run(config: Config, shutdown: Shutdown) -> Result<Summary> {
    let stream = MessageStream::new(config.stream_params()?)?;
    let sink: Box<dyn Sink> = match config.destination() {
        Destination::Jsonl(dir) => Box::new(JsonlSink::create(&dir)?),
        Destination::Kafka { tee_jsonl } => {
            let settings = KafkaSettings {
                brokers: config.brokers.clone(),
                topics: config.topics(),
                partitions: config.partitions,
                compression: config.compression.clone(),
                overrides: config.producer_config.clone(),
            };
            kafka::ensure_topics(&settings).await?;
            let producer = KafkaSink::connect(&settings)?;
            match tee_jsonl {
                Some(dir) => Box::new(Tee(producer, JsonlSink::create(&dir)?)),
                None => Box::new(producer),
            }
        }
    };
    let progress = progress_bar(config.quiet, stream.total());
    let [impressions_topic, clicks_topic] = config.topics();
    let summary = Summary::new(config.seed, &impressions_topic, &clicks_topic);
    let pace = config.pace();
    // Making and writing messages is CPU-bound and the producer API blocks: keep it off the async workers.
    let summary = tokio::task::spawn_blocking(move || write_all(stream, sink, pace, &progress, &shutdown, summary))
        .await
        .context("the writer thread panicked")??;
    if let Some(path) = &config.summary_json {
        summary.write_json(path)?;
    }
    Ok(summary)
}

fn write_all(
    stream: MessageStream,
    mut sink: Box<dyn Sink>,
    pace: Option<u64>,
    progress: &ProgressBar,
    shutdown: &Shutdown,
    mut summary: Summary,
) -> Result<Summary> {
    let started = Instant::now();
    let mut interrupted = false;
    for (written, message) in (0_u64..).zip(stream) {
        if let Some(rate) = pace {
            let due = started + Duration::from_nanos((u128::from(written) * 1_000_000_000 / u128::from(rate)) as u64);
            let ahead = due.saturating_duration_since(Instant::now());
            if ahead >= SLEEP_GRANULARITY {
                progress.set_position(written);
                sink.idle(ahead)?;
                interrupted = shutdown.is_triggered();
            }
        }
        if written.is_multiple_of(CHECK_EVERY) {
            progress.set_position(written);
            interrupted = interrupted || shutdown.is_triggered();
        }
        if interrupted {
            break;
        }
        sink.write(message.topic, message.key.as_bytes(), &message.payload)?;
        summary.record(&message);
    }
    progress.set_position(summary.messages);
    progress.set_message("flushing");
    sink.finish()?;
    progress.finish_and_clear();
    summary.finish(started.elapsed(), interrupted);
    Ok(summary)
}

fn progress_bar(quiet: bool, total: u64) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(
        "{spinner} {elapsed_precise} [{wide_bar}] {human_pos}/{human_len} messages, {per_sec}, eta {eta} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(total).with_style(style)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::model::Topic;

    async fn run_into(dir: &std::path::Path) -> Summary {
        let summary_path = dir.join("summary.json");
        let args = ["adgen", "--quiet", "--events", "50k", "--seed", "9", "--late-fraction", "0.02"];
        let config = Config::try_parse_from(args.iter().map(|arg| arg.to_string()).chain([
            "--malformed-fraction=0.02".to_owned(),
            format!("--jsonl={}", dir.display()),
            format!("--summary-json={}", summary_path.display()),
        ]))
        .unwrap();
        let summary = run(config, Shutdown::default()).await.unwrap();
        let written: serde_json::Value = serde_json::from_slice(&std::fs::read(summary_path).unwrap()).unwrap();
        assert_eq!(written["messages"], 50_000);
        assert_eq!(written["impressions_topic"]["malformed"], summary.impressions_topic.malformed);
        summary
    }

    #[tokio::test]
    async fn jsonl_runs_are_byte_identical_and_counted() {
        let base = std::env::temp_dir().join(format!("adgen-app-test-{}", std::process::id()));
        let (first, second) = (base.join("first"), base.join("second"));
        let summary = run_into(&first).await;
        assert_eq!(run_into(&second).await.messages, summary.messages);
        for (topic, counts) in
            [(Topic::Impressions, &summary.impressions_topic), (Topic::Clicks, &summary.clicks_topic)]
        {
            let bytes = std::fs::read(first.join(topic.jsonl_file_name())).unwrap();
            assert_eq!(bytes, std::fs::read(second.join(topic.jsonl_file_name())).unwrap());
            assert_eq!(bytes.iter().filter(|byte| **byte == b'\n').count() as u64, counts.messages);
        }
        assert_eq!(summary.impressions + summary.clicks + summary.malformed, 50_000);
        assert!(!summary.interrupted);
        std::fs::remove_dir_all(base).unwrap();
    }

    #[tokio::test]
    async fn a_triggered_shutdown_stops_early_and_says_so() {
        let dir = std::env::temp_dir().join(format!("adgen-app-stop-{}", std::process::id()));
        let config =
            Config::try_parse_from(["adgen", "-q", "--events", "1M", "--jsonl", dir.to_str().unwrap()]).unwrap();
        let shutdown = Shutdown::default();
        shutdown.trigger();
        let summary = run(config, shutdown).await.unwrap();
        assert!(summary.interrupted);
        assert_eq!(summary.messages, 0);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
