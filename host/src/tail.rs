//! `adstream tail`: the result topics as a live, readable table, one block per window.
//!
//! Results of one window arrive together; a block is printed once its window has been quiet
//! for a moment. Columns come from the JSON fields of the records, so a new plugin's results
//! show up without any change here.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Where a row remembers the order of its fields.
const ORDER_KEY: &str = "\u{0}order";

/// How long a window's block waits for more of its records before it is printed.
const QUIET: Duration = Duration::from_millis(700);

/// `tail` takes the Kafka settings of `run` (the same flags, variables and `[kafka]` table), so
/// that it reaches the same cluster the same way and finds the topics under the same prefix.
#[derive(Clone, Debug, clap::Args)]
pub struct TailArgs {
    /// A result topic to show, as the plugin names it (the output prefix is added); repeat for
    /// several
    #[arg(long = "topic", default_values = ["campaign-ctr-results", "device-engagement-results"])]
    pub topics: Vec<String>,
    /// A TOML file with a [kafka] table, as `run --config` reads
    #[arg(long, env = "ADSTREAM_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub kafka: crate::config::KafkaArgs,
    /// Rows shown per window (the largest by the first count column); a total row follows
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Start from the oldest results kept by Kafka instead of only new ones
    #[arg(long)]
    pub from_beginning: bool,
    /// Exit after printing this many window blocks
    #[arg(long)]
    pub max_windows: Option<usize>,
}

/// The records of one (topic, window) seen so far.
struct Block {
    plugin: String,
    rows: Vec<serde_json::Map<String, Value>>,
    last_seen: Instant,
}

/// Consumes the result topics and prints blocks until cancelled or `--max-windows` is reached.
pub fn tail(args: &TailArgs, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let kafka = crate::config::Config::load_kafka(args.config.as_deref(), args.kafka.clone())?;
    let group = format!("adstream-tail-{}", std::process::id());
    let defaults = [
        ("group.id", group.as_str()),
        ("enable.auto.commit", "false"),
        ("isolation.level", "read_committed"),
        ("auto.offset.reset", if args.from_beginning { "earliest" } else { "latest" }),
    ];
    let health = crate::kafka::Health::default();
    let context = crate::kafka::HostContext::new(crate::kafka::Role::Consumer, kafka.client.clone(), health.clone());
    let consumer: BaseConsumer<crate::kafka::HostContext> = kafka
        .client
        .client_config(crate::kafka::Role::Consumer, &defaults)
        .create_with_context(context)
        .map_err(|e| kafka.client.explain(crate::kafka::Role::Consumer, e))?;
    let topics: Vec<String> = args.topics.iter().map(|t| format!("{}{t}", kafka.outputs.prefix)).collect();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names).with_context(|| format!("subscribing to {}", names.join(", ")))?;
    eprintln!("tail: waiting for results on {} at {} (Ctrl-C to stop)", names.join(", "), kafka.client.describe());
    let mut blocks: BTreeMap<(String, String), Block> = BTreeMap::new();
    let mut printed = 0;
    while !shutdown.is_cancelled() && args.max_windows.is_none_or(|m| printed < m) {
        health.fatal.check()?;
        if let Some(Ok(msg)) = consumer.poll(Duration::from_millis(200)) {
            let payload = msg.payload().unwrap_or_default();
            let Ok(Value::Object(mut row)) = serde_json::from_slice::<Value>(payload) else { continue };
            // Keep the producer's field order for the columns (serde_json's map sorts keys).
            let text = String::from_utf8_lossy(payload);
            let mut order: Vec<(usize, String)> =
                row.keys().map(|k| (text.find(&format!("\"{k}\"")).unwrap_or(usize::MAX), k.clone())).collect();
            order.sort();
            row.insert(ORDER_KEY.into(), Value::Array(order.into_iter().map(|(_, k)| Value::String(k)).collect()));
            let window = row.get("window_start").and_then(Value::as_str).unwrap_or("?").to_owned();
            let plugin = header(&msg, "plugin")
                .zip(header(&msg, "plugin-version"))
                .map(|(n, v)| format!("{n}@{v}"))
                .unwrap_or_default();
            let block = blocks.entry((msg.topic().to_owned(), window)).or_insert_with(|| Block {
                plugin,
                rows: Vec::new(),
                last_seen: Instant::now(),
            });
            block.rows.push(row);
            block.last_seen = Instant::now();
        }
        let ready: Vec<_> =
            blocks.iter().filter(|(_, b)| b.last_seen.elapsed() >= QUIET).map(|(k, _)| k.clone()).collect();
        // No more than --max-windows in all, though several blocks may turn quiet at once.
        let room = args.max_windows.map_or(usize::MAX, |m| m.saturating_sub(printed));
        for key in ready.into_iter().take(room) {
            if let Some(block) = blocks.remove(&key) {
                print!("{}", render(&key.0, &block, args.top));
                printed += 1;
            }
        }
    }
    Ok(())
}

fn header(msg: &rdkafka::message::BorrowedMessage<'_>, name: &str) -> Option<String> {
    let headers = msg.headers()?;
    headers.iter().find(|h| h.key == name).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned())
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "–".into(),
        Some(Value::Number(n)) if n.is_f64() => format!("{:.4}", n.as_f64().unwrap_or(f64::NAN)),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// One block: a title line, a header, the top rows by the first integer column, a total row.
fn render(topic: &str, block: &Block, top: usize) -> String {
    let first = &block.rows[0];
    let time = |k: &str| {
        first
            .get(k)
            .and_then(Value::as_str)
            .map(|s| s.replace('T', " ").trim_end_matches(".000Z").to_owned())
            .unwrap_or_default()
    };
    let columns: Vec<&str> = match first.get(ORDER_KEY) {
        Some(Value::Array(keys)) => keys.iter().filter_map(Value::as_str).collect(),
        _ => first.keys().map(String::as_str).collect(),
    };
    let columns: Vec<&str> = columns.into_iter().filter(|k| !k.starts_with("window_") && *k != ORDER_KEY).collect();
    let count_col = columns.iter().find(|c| first.get(**c).is_some_and(Value::is_u64)).copied();
    let mut rows: Vec<&serde_json::Map<String, Value>> = block.rows.iter().collect();
    if let Some(c) = count_col {
        rows.sort_by_key(|r| std::cmp::Reverse(r.get(c).and_then(Value::as_u64).unwrap_or(0)));
    }
    let mut table: Vec<Vec<String>> = vec![columns.iter().map(|c| c.to_string()).collect()];
    for r in rows.iter().take(top) {
        table.push(columns.iter().map(|c| cell(r.get(*c))).collect());
    }
    let mut totals: Vec<String> = columns
        .iter()
        .map(|c| {
            let sum: Option<u64> = rows.iter().map(|r| r.get(*c).and_then(Value::as_u64)).sum();
            sum.map(|s| s.to_string()).unwrap_or_default()
        })
        .collect();
    totals[0] = format!("total ({})", rows.len());
    table.push(totals);
    let widths: Vec<usize> =
        (0..columns.len()).map(|i| table.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n── {topic} · {} → {} UTC · {} · {} rows",
        time("window_start"),
        time("window_end"),
        block.plugin,
        rows.len()
    );
    let hidden = rows.len().saturating_sub(top);
    for (n, row) in table.iter().enumerate() {
        if n == table.len() - 1 && hidden > 0 {
            let _ = writeln!(out, "  … {hidden} more");
        }
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, v)| if i == 0 { format!("{v:<w$}", w = widths[i]) } else { format!("{v:>w$}", w = widths[i]) })
            .collect();
        let _ = writeln!(out, "  {}", line.join("  "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_top_rows_and_totals() {
        let rows = [
            r#"{"campaign_id":"c1","window_start":"2026-11-29T10:00:00.000Z","window_end":"2026-11-29T10:01:00.000Z","impressions":10,"clicks":1,"ctr":0.1}"#,
            r#"{"campaign_id":"c2","window_start":"2026-11-29T10:00:00.000Z","window_end":"2026-11-29T10:01:00.000Z","impressions":30,"clicks":0,"ctr":0}"#,
            r#"{"campaign_id":"c3","window_start":"2026-11-29T10:00:00.000Z","window_end":"2026-11-29T10:01:00.000Z","impressions":0,"clicks":2,"ctr":null}"#,
        ];
        let block = Block {
            plugin: "ctr@0.1.0".into(),
            rows: rows
                .iter()
                .map(|r| {
                    let mut m: serde_json::Map<String, Value> = serde_json::from_str(r).unwrap();
                    let order = ["campaign_id", "window_start", "window_end", "impressions", "clicks", "ctr"];
                    m.insert(ORDER_KEY.into(), order.iter().map(|k| Value::String(k.to_string())).collect());
                    m
                })
                .collect(),
            last_seen: Instant::now(),
        };
        let text = render("campaign-ctr-results", &block, 2);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1],
            "── campaign-ctr-results · 2026-11-29 10:00:00 → 2026-11-29 10:01:00 UTC · ctr@0.1.0 · 3 rows"
        );
        assert_eq!(lines[2].split_whitespace().collect::<Vec<_>>(), ["campaign_id", "impressions", "clicks", "ctr"]);
        assert_eq!(lines[3].split_whitespace().collect::<Vec<_>>(), ["c2", "30", "0", "0"], "largest first: {text}");
        assert_eq!(lines[5].trim(), "… 1 more");
        assert_eq!(lines[6].split_whitespace().collect::<Vec<_>>(), ["total", "(3)", "40", "3"]);
    }
}
