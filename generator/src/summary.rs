//! What a run wrote, counted as it was written: the one-line report on stderr and `--summary-json`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::malformed::MalformedKind;
use crate::model::Topic;
use crate::stream::{Message, MessageKind};
use crate::time::{EpochMillis, format_rfc3339};

/// Counts of what was written. Serialised as the `--summary-json` file.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub seed: u64,
    /// Messages written, of all kinds.
    pub messages: u64,
    /// Valid impressions, including late ones.
    pub impressions: u64,
    /// Valid clicks, including late ones.
    pub clicks: u64,
    /// Valid events emitted minutes after their event time.
    pub late: u64,
    pub malformed: u64,
    /// Second copies of on-time events (`--duplicate-fraction`), also counted as impressions or clicks.
    pub duplicates: u64,
    pub impressions_topic: TopicCounts,
    pub clicks_topic: TopicCounts,
    /// Malformed messages by kind, e.g. `"not_json": 12`.
    pub malformed_kinds: BTreeMap<MalformedKind, u64>,
    /// Earliest event time of a valid event, RFC 3339.
    pub event_time_min: Option<String>,
    /// Latest event time of a valid event, RFC 3339.
    pub event_time_max: Option<String>,
    pub elapsed_seconds: f64,
    /// The run was stopped (Ctrl-C) before it wrote everything.
    pub interrupted: bool,
    #[serde(skip)]
    event_times: Option<(EpochMillis, EpochMillis)>,
}

/// Counts of one topic.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TopicCounts {
    /// The Kafka topic name.
    pub topic: String,
    pub messages: u64,
    /// Valid events: impressions or clicks, late ones included.
    pub valid: u64,
    pub late: u64,
    pub malformed: u64,
    /// Second copies of on-time events, among the valid ones.
    pub duplicates: u64,
}

impl Summary {
    pub fn new(seed: u64, impressions_topic: &str, clicks_topic: &str) -> Summary {
        Summary {
            seed,
            impressions_topic: TopicCounts { topic: impressions_topic.to_owned(), ..TopicCounts::default() },
            clicks_topic: TopicCounts { topic: clicks_topic.to_owned(), ..TopicCounts::default() },
            ..Summary::default()
        }
    }

    /// Counts one written message.
    pub fn record(&mut self, message: &Message) {
        self.messages += 1;
        let topic = match message.topic {
            Topic::Impressions => &mut self.impressions_topic,
            Topic::Clicks => &mut self.clicks_topic,
        };
        topic.messages += 1;
        match message.kind {
            MessageKind::Malformed(kind) => {
                self.malformed += 1;
                topic.malformed += 1;
                *self.malformed_kinds.entry(kind).or_default() += 1;
                return;
            }
            MessageKind::Impression => self.impressions += 1,
            MessageKind::Click => self.clicks += 1,
        }
        topic.valid += 1;
        if message.late {
            self.late += 1;
            topic.late += 1;
        }
        if message.duplicate {
            self.duplicates += 1;
            topic.duplicates += 1;
        }
        let (min, max) = self.event_times.get_or_insert((message.event_time, message.event_time));
        *min = (*min).min(message.event_time);
        *max = (*max).max(message.event_time);
    }

    /// Fills in the elapsed time and the event-time range once the run is over.
    pub fn finish(&mut self, elapsed: Duration, interrupted: bool) {
        self.elapsed_seconds = elapsed.as_secs_f64();
        self.interrupted = interrupted;
        if let Some((min, max)) = self.event_times {
            self.event_time_min = Some(format_rfc3339(min));
            self.event_time_max = Some(format_rfc3339(max));
        }
    }

    pub fn write_json(&self, path: &Path) -> Result<()> {
        let mut json = serde_json::to_vec_pretty(self).context("serialising the summary")?;
        json.push(b'\n');
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(path, json).with_context(|| format!("writing the summary to {}", path.display()))
    }
}

impl fmt::Display for Summary {
    /// One line: what was written where, and how fast.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rate = self.messages as f64 / self.elapsed_seconds.max(1e-9);
        write!(
            f,
            "adgen: {}{} messages in {:.2}s ({:.0}/s): {} impressions and {} clicks, {} late, {} malformed, {} duplicates; ",
            if self.interrupted { "interrupted after " } else { "" },
            self.messages,
            self.elapsed_seconds,
            rate,
            self.impressions,
            self.clicks,
            self.late,
            self.malformed,
            self.duplicates,
        )?;
        for (topic, separator) in [(&self.impressions_topic, ", "), (&self.clicks_topic, "")] {
            write!(
                f,
                "{} {} ({} valid, {} late, {} malformed){separator}",
                topic.topic, topic.messages, topic.valid, topic.late, topic.malformed,
            )?;
        }
        Ok(())
    }
}
