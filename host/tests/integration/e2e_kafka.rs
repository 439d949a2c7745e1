//! End to end on the real Kafka broker (started by `scripts/kafka.sh up`; see the README):
//! generator → Kafka → `adstream run` with WebAssembly plugins → result topics, checked
//! against an independent batch computation, against `adstream replay` over the same events,
//! and for conservation (every message consumed is counted, late or dead-lettered).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::expected::{self, Inputs, Late};
use crate::common::{
    Host, Record, adstream, await_input_handled, fresh_prefix, generate, generate_with, plugin, read_topics, run_ok,
    sha256_hex,
};
use serde_json::Value;

fn by_topic<'a>(records: &'a [Record], topic: &str) -> Vec<&'a Record> {
    records.iter().filter(|r| r.topic == topic).collect()
}

fn values(records: &[&Record]) -> Vec<Value> {
    records.iter().map(|r| r.json()).collect()
}

/// Every dead letter and late event carries its reason and where it came from.
fn check_rejects(records: &[Record], prefix: &str, inputs: &Inputs) {
    let dlq = by_topic(records, &format!("{prefix}ad-events-dlq"));
    let late = by_topic(records, &format!("{prefix}ad-events-late"));
    assert_eq!(dlq.len(), inputs.malformed, "dead letters");
    assert_eq!(late.len(), inputs.late, "late events");
    for r in dlq.iter().chain(&late) {
        for h in ["reason", "reason-detail", "source-topic", "source-partition", "source-offset"] {
            assert!(
                r.headers.get(h).is_some_and(|v| !v.is_empty()),
                "{} message without {h}: {:?}",
                r.topic,
                r.headers
            );
        }
        assert!(r.headers["source-topic"].starts_with(prefix), "{:?}", r.headers);
    }
    assert!(late.iter().all(|r| r.headers["reason"] == "late"));
    let reasons: std::collections::BTreeSet<&str> = dlq.iter().map(|r| r.headers["reason"].as_str()).collect();
    assert!(reasons.len() >= 5, "the generator's malformed kinds map to several reasons: {reasons:?}");
}

/// consumed = impressions + clicks (attributed + unattributed) + late + dead-lettered + duplicates.
fn check_conservation(stats: &Value, inputs: &Inputs) {
    let n = |k: &str| stats[k].as_u64().unwrap_or_else(|| panic!("stats has no {k}: {stats}"));
    assert_eq!(n("consumed") as usize, inputs.messages, "consumed: {stats}");
    crate::common::assert_accounted(stats);
    assert_eq!(n("late") as usize, inputs.late, "{stats}");
    assert_eq!(n("dead_lettered") as usize, inputs.malformed, "{stats}");
    assert_eq!(n("duplicates") as usize, inputs.duplicates, "{stats}");
    assert_eq!(n("impressions") as usize, inputs.impressions.len(), "{stats}");
    assert_eq!((n("clicks_unattributed") + n("pending_clicks")) as usize, inputs.unattributed_clicks(), "{stats}");
}

/// Result records of `replay`, by topic.
fn replay(dir: &Path, plugins: &[&str]) -> BTreeMap<String, Vec<Value>> {
    let out = dir.join("replay.jsonl");
    let mut cmd = Command::new(adstream());
    cmd.args(["replay", "--input"]).arg(dir.join("events")).arg("--out").arg(&out);
    cmd.arg("--plugin-cache").arg(crate::common::plugin_cache());
    for p in plugins {
        cmd.arg("--plugin").arg(plugin(p));
    }
    run_ok(&mut cmd);
    let mut by_topic: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for line in std::fs::read_to_string(&out).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let topic = v["topic"].as_str().unwrap().to_owned();
        by_topic.entry(topic).or_default().push(v);
    }
    by_topic
}

fn sorted_values(mut v: Vec<Value>) -> Vec<String> {
    let mut s: Vec<String> = v.drain(..).map(|v| v.to_string()).collect();
    s.sort();
    s
}

#[test]
fn kafka_run_matches_the_batch_computation() {
    check_kafka_run_against_the_batch_computation("e2e", "150000", &[], &[], |inputs| inputs);
}

/// `--window 5m --slide 1m` on the broker, over input with a producer's retried copies: every
/// window equal to the batch computation over the input without them, each event in its five
/// windows or, late, in none; the host counts as many duplicates as the generator wrote.
#[test]
fn sliding_windows_over_repeated_events_on_kafka_match_the_batch_computation() {
    let (adgen, flags) = (["--duplicate-fraction", "0.02"], ["--window", "5m", "--slide", "1m"]);
    check_kafka_run_against_the_batch_computation("slide", "60000", &adgen, &flags, |i| i.windows(300_000, 60_000));
}

/// Generates `events` messages (late and malformed ones among them, and `adgen` flags) into fresh
/// topics, runs a host with ctr and engagement and `flags` over them, and checks its results
/// against the batch computation over `windows(inputs)`, its late and dead-lettered copies and
/// its counters.
fn check_kafka_run_against_the_batch_computation(
    test: &str,
    events: &str,
    adgen: &[&str],
    flags: &[&str],
    windows: impl Fn(Inputs) -> Inputs,
) {
    let dir = tempfile::tempdir().unwrap();
    let prefix = fresh_prefix(test);
    let designated = windows(generate_with(&prefix, dir.path(), events, "42", "0.005", "0.005", adgen));
    assert!(
        designated.late > 0 && designated.malformed > 0 && designated.clicks.len() > 300,
        "a workload worth testing"
    );

    let group = format!("{prefix}g");
    let host = Host::start(&prefix, &group, &["ctr", "engagement"], dir.path(), flags);
    // Every late copy is committed before the results are read.
    await_input_handled(&prefix, &group, Duration::from_secs(240), || host.log());
    let limit = Some(designated.emitted_by_idle_watermark());
    let ctr_topic = format!("{prefix}campaign-ctr-results");
    let eng_topic = format!("{prefix}device-engagement-results");
    let (late_topic, dlq_topic) = (format!("{prefix}ad-events-late"), format!("{prefix}ad-events-dlq"));
    let topics = vec![ctr_topic.clone(), eng_topic.clone(), late_topic.clone(), dlq_topic.clone()];
    let (want_ctr, want_eng) = (designated.ctr(limit).len(), designated.engagement(limit).len());
    let records = read_topics(&topics, Duration::from_secs(240), Duration::from_secs(4), |r| {
        let n = |t: &str| r.iter().filter(|m| m.topic == t).count();
        n(&ctr_topic) >= want_ctr && n(&eng_topic) >= want_eng && n(&dlq_topic) >= designated.malformed
    });

    // Which events were late is the host's call (it depends on how the consumer interleaved
    // the partitions); `Late::Routed` checks that each was one the generator made late, and the
    // results must then equal the batch computation over every other valid event.
    let routed: HashSet<Vec<u8>> = by_topic(&records, &late_topic).iter().map(|r| r.value.clone()).collect();
    assert_eq!(routed.len(), by_topic(&records, &late_topic).len(), "a late event appeared twice");
    let inputs = windows(Inputs::load(&dir.path().join("events"), Late::Routed(&routed)));

    // Each window's completeness record, once the late events' counts have reached the merge
    // (with the tasks' next checkpoint): the window's counted events, the late topic's messages
    // of it, the duplicates and unattributed clicks of the batch computation, the plugin files.
    let late: Vec<Vec<u8>> = by_topic(&records, &late_topic).iter().map(|r| r.value.clone()).collect();
    let want = inputs.completeness(limit, &late);
    assert!(want.values().any(|c| c.late > 0), "late events in windows of the run");
    crate::common::await_completeness(&prefix, &want, limit, &["ctr", "engagement"], || host.log());
    let log = host.log();
    let stats = host.stop();
    let ctr = values(&by_topic(&records, &ctr_topic));
    assert!(!ctr.is_empty(), "no ctr results at all; host log:\n{log}");
    expected::check_ctr(&ctr, &inputs.ctr(limit));
    expected::check_engagement(&values(&by_topic(&records, &eng_topic)), &inputs.engagement(limit));
    check_rejects(&records, &prefix, &inputs);
    check_conservation(&stats, &inputs);
    for r in by_topic(&records, &ctr_topic) {
        assert_eq!(r.headers.get("plugin").map(String::as_str), Some("ctr"));
        let key = String::from_utf8(r.key.clone().unwrap()).unwrap();
        assert_eq!(r.json()["campaign_id"], Value::String(key), "keyed by campaign_id");
    }
}

/// The `spend` plugin is added by `--plugin` alone: the host binary is the one already built.
/// Without late events (whose lateness depends on partition interleaving), the Kafka run and
/// `replay` over the same events agree record for record.
#[test]
fn a_new_plugin_runs_on_the_unchanged_host_and_kafka_equals_replay() {
    let hash = || sha256_hex(&std::fs::read(adstream()).unwrap());
    let before = hash();
    let dir = tempfile::tempdir().unwrap();
    let prefix = fresh_prefix("swap");
    let inputs = generate(&prefix, dir.path(), "40000", "7", "0", "0.005");
    let plugins = ["ctr", "engagement", "spend"];
    let host = Host::start(&prefix, &format!("{prefix}g"), &plugins, dir.path(), &[]);
    let limit = Some(inputs.emitted_by_idle_watermark());
    let (want_ctr, want_eng, want_spend) = (inputs.ctr(limit), inputs.engagement(limit), inputs.spend(limit));
    let result_topics = ["campaign-ctr-results", "device-engagement-results", "campaign-spend-results"];
    let topics: Vec<String> = result_topics.iter().map(|t| format!("{prefix}{t}")).collect();
    let records = read_topics(&topics, Duration::from_secs(180), Duration::from_secs(3), |r| {
        r.len() >= want_ctr.len() + want_eng.len() + want_spend.len()
    });
    let stats = host.stop();
    let kafka = |t: &str| values(&by_topic(&records, &format!("{prefix}{t}")));
    expected::check_ctr(&kafka("campaign-ctr-results"), &want_ctr);
    expected::check_engagement(&kafka("device-engagement-results"), &want_eng);
    expected::check_spend(&kafka("campaign-spend-results"), &want_spend);
    assert!(by_topic(&records, &topics[2]).iter().all(|r| r.headers["plugin"] == "spend"));
    check_conservation(&stats, &inputs);
    assert_eq!(hash(), before, "the host binary was not rebuilt or changed");

    // replay: every window (end of input closes them all); the Kafka run's windows identical.
    let replayed = replay(dir.path(), &plugins);
    let replay_values = |topic: &str| -> Vec<Value> {
        replayed.get(topic).map(|v| v.iter().map(|l| l["value"].clone()).collect()).unwrap_or_default()
    };
    expected::check_ctr(&replay_values("campaign-ctr-results"), &inputs.ctr(None));
    expected::check_spend(&replay_values("campaign-spend-results"), &inputs.spend(None));
    // Integer results agree to the byte. (Spend sums floats, whose last bits depend on the order
    // the partitions were read in; check_spend compares those with a tolerance above.)
    let closed = |v: &Value| expected::window_of(v) + expected::WINDOW_MS <= inputs.emitted_by_idle_watermark();
    for topic in &result_topics[..2] {
        let from_replay = sorted_values(replay_values(topic).into_iter().filter(closed).collect());
        let from_kafka = sorted_values(kafka(topic));
        let differ: Vec<_> = from_kafka.iter().zip(&from_replay).filter(|(a, b)| a != b).take(3).collect();
        assert!(
            from_kafka.len() == from_replay.len() && differ.is_empty(),
            "{topic}: Kafka run ({}) vs replay ({}) differ: {differ:?}",
            from_kafka.len(),
            from_replay.len()
        );
    }
    assert_eq!(replayed.get("ad-events-dlq").map_or(0, Vec::len), inputs.malformed);
}
