//! The `anomaly` detector (plugins/anomaly, Python) over the results of `ctr` and `engagement`:
//! it alerts on the anomalies `adgen --anomaly` injects, where they start, and on nothing in
//! the same stream without them (replay); and its alerts are exactly-once across SIGKILLs on the
//! real broker, since what it remembers is restored from the state topic.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{Host, adgen, adstream, fresh_prefix, generate_with, plugin, read_topics, run_ok};
use rand::{Rng, SeedableRng};
use serde_json::Value;

/// 40 one-minute windows of 10 campaigns (~2,900 impressions each per window, CTR 2–5%) and 3
/// device types, from 2026-11-29T10:00Z.
const STREAM: &[&str] = &["--span", "40m", "--campaigns", "10", "--ctr-min", "0.02", "--ctr-max", "0.05"];
const EVENTS: &str = "1200000";
const START_MS: i64 = 1_795_946_400_000;
const SPAN_END_MS: i64 = START_MS + 40 * 60_000;

/// Each injection, and the alert it must raise: key, kind, and the minute it starts.
const INJECTED: &[(&str, &str, &str, i64)] = &[
    ("ctr-zero:c7@20m", "c7", "ctr-collapse", 20),
    ("click-burst:c3@25m+3m", "c3", "ctr-spike", 25),
    ("traffic-halving:tablet@30m", "tablet", "traffic-drop", 30),
    ("bots:mobile@35m", "mobile", "unique-users-low", 35),
];

fn injections() -> Vec<&'static str> {
    INJECTED.iter().flat_map(|(flag, ..)| ["--anomaly", flag]).collect()
}

/// The alerts of a replay of `input` through ctr, engagement and anomaly: (window start, value).
fn replay_alerts(input: &Path, cache: &Path) -> Vec<(i64, Value)> {
    let out = input.with_extension("out.jsonl");
    run_ok(
        Command::new(adstream())
            .arg("replay")
            .arg("--input")
            .arg(input)
            .args(
                ["ctr", "engagement", "anomaly"]
                    .iter()
                    .flat_map(|p| [std::ffi::OsString::from("--plugin"), plugin(p).into()]),
            )
            .arg("--plugin-cache")
            .arg(cache)
            .arg("--out")
            .arg(&out),
    );
    let text = std::fs::read_to_string(&out).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["topic"] == "ad-anomalies")
        .map(|r| (window_ms(&r["value"]), r["value"].clone()))
        .collect()
}

fn window_ms(alert: &Value) -> i64 {
    START_MS + minute_of(alert) * 60_000
}

/// The minute of the hour an alert's window starts at: "2026-11-29T10:MM:00.000Z" (the test's
/// windows are all within that hour).
fn minute_of(alert: &Value) -> i64 {
    let start = alert["window_start"].as_str().expect("window_start");
    assert!(start.starts_with("2026-11-29T10:"), "{start}");
    start[14..16].parse().unwrap()
}

fn generate_jsonl(dir: &Path, extra: &[&str]) -> std::path::PathBuf {
    run_ok(
        Command::new(adgen())
            .args(["--events", EVENTS, "--seed", "11", "--quiet"])
            .args(STREAM)
            .args(extra)
            .arg("--jsonl")
            .arg(dir),
    );
    dir.to_owned()
}

#[test]
fn injected_anomalies_are_alerted_where_they_start_and_a_plain_stream_raises_none() {
    let dir = tempfile::tempdir().unwrap();
    let cache = crate::common::plugin_cache();
    let injected = replay_alerts(&generate_jsonl(&dir.path().join("injected"), &injections()), &cache);
    let plain = replay_alerts(&generate_jsonl(&dir.path().join("plain"), &[]), &cache);

    // The window after the span holds only the last clicks: every campaign's traffic drops
    // there, rightly. The 40 windows of the span are judged.
    let within = |alerts: &[(i64, Value)]| -> Vec<(i64, Value)> {
        alerts.iter().filter(|(w, _)| *w < SPAN_END_MS).cloned().collect()
    };
    let plain_within = within(&plain);
    assert!(
        plain_within.is_empty(),
        "alerts on a stream without anomalies (30 windows after the 10 of warm-up): {plain_within:#?}"
    );
    assert!(
        plain.iter().any(|(w, _)| *w == SPAN_END_MS),
        "the drop after the end of the stream is seen: the detector is not mute"
    );

    let injected = within(&injected);
    for (flag, key, kind, minute) in INJECTED {
        let start = START_MS + minute * 60_000;
        let found = injected
            .iter()
            .find(|(w, a)| a["key"] == *key && a["kind"] == *kind && (start..=start + 60_000).contains(w));
        let (_, alert) = found.unwrap_or_else(|| {
            panic!("--anomaly {flag}: no {kind} alert for {key} in minute {minute} or the next; alerts: {injected:#?}")
        });
        assert!(alert["score"].as_f64().unwrap().abs() >= 5.0, "{alert}");
        assert!(alert["baseline_windows"].as_u64().unwrap() >= 10, "judged after the warm-up: {alert}");
        for field in ["observed", "expected"] {
            assert!(alert[field].is_number(), "{field}: {alert}");
        }
        assert_eq!(
            alert["window_end"].as_str().unwrap()[14..16].parse::<i64>().unwrap(),
            minute_of(alert) + 1,
            "{alert}"
        );
    }
    // Nothing else is out of line: every alert names an injected key, from its minute on.
    for (w, alert) in &injected {
        let cause =
            INJECTED.iter().find(|(_, key, _, minute)| alert["key"] == *key && *w >= START_MS + minute * 60_000);
        assert!(cause.is_some(), "an alert no injection explains: {alert}");
    }
}

#[test]
fn anomaly_alerts_are_exactly_once_across_repeated_sigkills() {
    let kills = 6;
    let dir = tempfile::tempdir().unwrap();
    let prefix = fresh_prefix("anomaly");
    let extra: Vec<&str> = STREAM.iter().copied().chain(injections()).collect();
    let inputs = generate_with(&prefix, dir.path(), EVENTS, "11", "0", "0", &extra);
    // The uninterrupted run: a replay of the same messages.
    let limit = inputs.emitted_by_idle_watermark();
    let want: Vec<(i64, Value)> = replay_alerts(&dir.path().join("events"), &crate::common::plugin_cache())
        .into_iter()
        .filter(|(w, _)| w + 60_000 <= limit)
        .collect();
    assert!(want.len() >= INJECTED.len(), "the stream raises alerts: {want:?}");

    let group = format!("{prefix}g");
    let plugins = ["ctr", "engagement", "anomaly"];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
    let mut restored = 0;
    let mut runs = Vec::new();
    for kill in 0..kills {
        // Every other run pauses in the middle of publishing each window (after the first
        // plugin's records, before the detector's), and is killed within that pause.
        let paused = kill % 2 == 1;
        let pause: &[(&str, &str)] = if paused { &[("ADSTREAM_FAILPOINT_EMIT_PAUSE_MS", "1000")] } else { &[] };
        let mut host = Host::start_with_env(&prefix, &group, &plugins, dir.path(), &[], pause);
        // Loading the 18 MB Python component takes a moment: kill only once the host consumes.
        // A run killed before it published a window leaves no state to restore: the unpaused
        // ones wait for their first window (on a loaded machine that can take seconds).
        let awaited = if paused { "failpoint: pausing" } else { "window emitted" };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        // Unless it has none left to publish: then once it consumes, after 15 s.
        let enough = std::time::Instant::now() + Duration::from_secs(15);
        while !host.log().contains(awaited)
            && !(std::time::Instant::now() > enough && host.log().contains("rebalance: consuming"))
        {
            assert!(std::time::Instant::now() < deadline, "not {awaited:?} within 60 s:\n{}", host.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..if paused { 800 } else { 2500 })));
        assert!(host.child.try_wait().unwrap().is_none(), "host exited by itself before kill {kill}:\n{}", host.log());
        host.child.kill().unwrap(); // SIGKILL
        host.child.wait().unwrap();
        let log = host.log();
        restored += usize::from(log.contains("detector state restored"));
        let said = |what: &str| log.lines().filter(|l| l.contains(what)).count();
        runs.push(format!("run {kill}: {} windows emitted", said("window emitted")));
    }
    eprintln!("{restored} restored: {runs:?}");
    assert!(
        restored >= 2,
        "later runs restored the detector's state from the state topic ({restored} of {kills}): {runs:#?}"
    );
    let host = Host::start(&prefix, &group, &plugins, dir.path(), &[]);
    let topic = format!("{prefix}ad-anomalies");
    let records = read_topics(std::slice::from_ref(&topic), Duration::from_secs(240), Duration::from_secs(5), |r| {
        r.len() >= want.len()
    });
    let log = host.log();
    host.stop();
    let got: Vec<(i64, Value)> = records.iter().map(|r| (window_ms(&r.json()), r.json())).collect();
    let as_set = |alerts: &[(i64, Value)]| -> BTreeSet<String> { alerts.iter().map(|(_, a)| a.to_string()).collect() };
    assert_eq!(got.len(), as_set(&got).len(), "an alert published twice");
    assert_eq!(
        as_set(&got),
        as_set(&want),
        "the alerts of an uninterrupted run, no more, no less; log of the last run:\n{log}"
    );
    for r in &records {
        assert_eq!(r.key.as_deref(), Some(r.json()["key"].as_str().unwrap().as_bytes()), "keyed by campaign or device");
        assert_eq!(r.headers["plugin"], "anomaly");
    }
}

/// A detector that raises in one window and runs past its deadline in the next: both windows are
/// skipped, each with a plugin-errors record saying why, and the detector goes on from the state
/// it saved after the window before (its count of observed windows does not include them).
#[test]
fn a_failing_detector_skips_the_window_and_goes_on_from_its_saved_state() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events");
    std::fs::create_dir_all(&input).unwrap();
    let mut lines = Vec::new();
    for minute in 0..5 {
        let mut campaigns = vec!["c1"; 10];
        campaigns.extend(match minute {
            2 => Some("evil-raise"),
            3 => Some("evil-loop"),
            _ => None,
        });
        for (i, campaign) in campaigns.into_iter().enumerate() {
            lines.push(format!(
                r#"{{"impression_id":"i{minute}-{i}","user_id":"u{i}","campaign_id":"{campaign}","ad_id":"a1","device_type":"mobile","browser":"chrome","event_timestamp":"2026-11-29T10:{minute:02}:{:02}.000Z","cost":0.001}}"#,
                i * 2
            ));
        }
    }
    std::fs::write(input.join("ad-impressions.jsonl"), lines.join("\n") + "\n").unwrap();
    std::fs::write(input.join("ad-clicks.jsonl"), "").unwrap();
    let misdetect = crate::common::workspace().join("target/test-plugins/misdetect.wasm");
    assert!(misdetect.is_file(), "run `bash scripts/build-plugins.sh` first");
    let out = run_ok(
        Command::new(adstream())
            .args(["replay", "--input"])
            .arg(&input)
            .arg("--plugin")
            .arg(plugin("ctr"))
            .arg("--plugin")
            .arg(&misdetect)
            .args(["--plugin-limit", "misdetect:timeout=2s", "--plugin-cache"])
            .arg(crate::common::plugin_cache()),
    );
    let records: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let counts: Vec<(i64, u64)> = records
        .iter()
        .filter(|r| r["topic"] == "misdetect-results")
        .map(|r| {
            (
                (r["value"]["window_start_ms"].as_i64().unwrap() - START_MS) / 60_000,
                r["value"]["windows_seen"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(counts, [(0, 1), (1, 2), (4, 3)], "windows 2 and 3 are skipped, and not counted in its state");
    let errors: Vec<&Value> = records
        .iter()
        .filter(|r| r["topic"] == "adstream-plugin-errors" && r["value"]["plugin"] == "misdetect")
        .map(|r| &r["value"])
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    let reason = |i: usize| errors[i]["reason"].as_str().unwrap();
    assert_eq!(minute_of(errors[0]), 2);
    assert!(
        reason(0).contains("skipped this window")
            && reason(0).contains("RuntimeError: misdetect: a deliberate exception"),
        "{}",
        reason(0)
    );
    assert_eq!(minute_of(errors[1]), 3);
    assert!(reason(1).contains("2000 ms deadline"), "{}", reason(1));
    // ctr is not affected.
    assert_eq!(records.iter().filter(|r| r["topic"] == "campaign-ctr-results").count(), 5 + 2);
    let stats: Value = serde_json::from_str(String::from_utf8(out.stderr).unwrap().lines().last().unwrap()).unwrap();
    assert_eq!(stats["plugin_errors"], 2, "{stats}");
}
