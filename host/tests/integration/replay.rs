//! `adstream replay` over generated JSONL files, against the independent batch computation:
//! the same checks as the Kafka end-to-end test, without a broker, on a larger workload.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::common::expected::{self, Inputs, Late};
use crate::common::{adgen, adstream, generate_jsonl, plugin, run_ok};
use serde_json::Value;

/// `adstream replay` of `events` with `plugins` (built ones, by name), writing `out`; `extra`
/// flags go before the input. Returns the run's output (its stderr has the log and the stats).
fn replay(events: &Path, out: &Path, plugins: &[&str], extra: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(adstream());
    cmd.arg("replay").args(extra).arg("--input").arg(events).arg("--out").arg(out);
    cmd.arg("--plugin-cache").arg(crate::common::plugin_cache());
    for p in plugins {
        cmd.arg("--plugin").arg(plugin(p));
    }
    run_ok(&mut cmd)
}

#[test]
fn replay_matches_the_batch_computation() {
    let dir = tempfile::tempdir().unwrap();
    let events = generate_jsonl(dir.path(), "300000", "11", "0.01", "0.01");
    check_replay(&events, &Inputs::load(&events, Late::Designated), &[]);
}

/// `--window 5m --slide 1m`: every event in each of its five windows, a window's result the merge
/// of its panes, also across tasks (`--tasks 3`: panes merged at each task, then partials at the
/// merge stage), late events in none of their windows.
#[test]
fn sliding_windows_match_the_batch_computation() {
    let dir = tempfile::tempdir().unwrap();
    let events = generate_jsonl(dir.path(), "150000", "11", "0.01", "0.01");
    let inputs = Inputs::load(&events, Late::Designated).windows(300_000, 60_000);
    check_replay(&events, &inputs, &["--window", "5m", "--slide", "1m", "--tasks", "3"]);
}

/// `--threads`: the tasks on several threads, fed their lines by one more that reads the input,
/// the windows merged from their partials on another (as on Kafka): every output equals
/// the batch computation, as on one thread, tumbling (4 tasks on 2 threads) and sliding (3 tasks
/// on 3 threads).
#[test]
fn tasks_on_several_threads_match_the_batch_computation() {
    let dir = tempfile::tempdir().unwrap();
    let events = generate_jsonl(dir.path(), "200000", "12", "0.01", "0.01");
    let inputs = Inputs::load(&events, Late::Designated);
    check_replay(&events, &inputs, &["--tasks", "4", "--threads", "2"]);
    let sliding = inputs.windows(300_000, 60_000);
    check_replay(&events, &sliding, &["--window", "5m", "--slide", "1m", "--tasks", "3", "--threads", "3"]);
}

/// A producer's retried copies (`adgen --duplicate-fraction`): every id counts once, over 3 tasks,
/// the copies are counted as duplicates, exactly as many as the generator wrote; with
/// `--keep-duplicates` every copy counts, as before.
#[test]
fn repeated_ids_count_once_and_the_copies_as_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let (events, summary) = (dir.path().join("events"), dir.path().join("summary.json"));
    run_ok(
        Command::new(adgen())
            .args(["--events", "200000", "--seed", "13", "--late-fraction", "0.01", "--malformed-fraction", "0.01"])
            .args(["--duplicate-fraction", "0.03", "--quiet", "--summary-json"])
            .arg(&summary)
            .arg("--jsonl")
            .arg(&events),
    );
    let written: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let inputs = Inputs::load(&events, Late::Designated);
    assert!(inputs.duplicates > 1000, "{} duplicates", inputs.duplicates);
    assert_eq!(written["duplicates"].as_u64(), Some(inputs.duplicates as u64), "the copies the generator wrote");
    let stats = check_replay(&events, &inputs, &["--tasks", "3"]);
    assert_eq!(stats["duplicates"].as_u64(), Some(inputs.duplicates as u64), "{stats}");

    let out = dir.path().join("kept.jsonl");
    let run = replay(&events, &out, &["ctr"], &["--keep-duplicates"]);
    let kept = last_line_json(&run.stderr);
    assert_eq!(kept["duplicates"].as_u64(), Some(0), "{kept}");
    let counted =
        |s: &Value| ["impressions", "clicks_attributed", "clicks_unattributed"].map(|k| s[k].as_u64().unwrap());
    let copies_counted = counted(&kept).iter().sum::<u64>() - counted(&stats).iter().sum::<u64>();
    assert_eq!(copies_counted, inputs.duplicates as u64, "--keep-duplicates counts every copy: {kept}");
}

/// The stats a command printed last on stderr.
fn last_line_json(stderr: &[u8]) -> Value {
    serde_json::from_slice(stderr.rsplit(|&b| b == b'\n').nth(1).unwrap()).unwrap()
}

/// Replays `events` with ctr, engagement, spend and `flags`, checks every output against the
/// batch computation over `inputs`, and returns the run's stats.
fn check_replay(events: &Path, inputs: &Inputs, flags: &[&str]) -> Value {
    let out = events.with_file_name("out.jsonl");
    let run = replay(events, &out, &["ctr", "engagement", "spend"], flags);
    let stats = last_line_json(&run.stderr);
    let mut by_topic: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for line in std::fs::read_to_string(&out).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        by_topic.entry(v["topic"].as_str().unwrap().to_owned()).or_default().push(v);
    }
    let values =
        |t: &str| by_topic.get(t).map(|v| v.iter().map(|r| r["value"].clone()).collect::<Vec<_>>()).unwrap_or_default();
    expected::check_ctr(&values("campaign-ctr-results"), &inputs.ctr(None));
    expected::check_engagement(&values("device-engagement-results"), &inputs.engagement(None));
    expected::check_spend(&values("campaign-spend-results"), &inputs.spend(None));
    assert_eq!(by_topic.get("ad-events-late").map_or(0, Vec::len), inputs.late);
    assert_eq!(by_topic.get("ad-events-dlq").map_or(0, Vec::len), inputs.malformed);
    // Each window's completeness record: its figures, the late topic's messages of it, the
    // plugin files' hashes.
    let late: Vec<Vec<u8>> = values("ad-events-late").iter().map(|v| v.to_string().into_bytes()).collect();
    let want = inputs.completeness(None, &late);
    assert!(want.values().any(|c| c.late > 0) && want.values().any(|c| c.unattributed > 0), "a run worth checking");
    let hashes = crate::common::plugin_hashes(&["ctr", "engagement", "spend"]);
    let records = values("adstream-window-completeness");
    if let Err(e) = expected::check_completeness(&records, &want, None, &hashes) {
        panic!("{e}");
    }
    assert_eq!(stats["consumed"].as_u64(), Some(inputs.messages as u64));
    assert_eq!(stats["clicks_unattributed"].as_u64(), Some(inputs.unattributed_clicks() as u64));
    stats
}

/// The Python engagement plugin (`plugins/engagement-py/app.py`, built by componentize-py with
/// the Python SDK) publishes, window for window and device for device, what the Rust plugin
/// publishes, in one replay with both loaded, and both equal the batch computation.
#[test]
fn the_python_engagement_plugin_publishes_what_the_rust_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let events = generate_jsonl(dir.path(), "60000", "12", "0.01", "0.01");
    let inputs = Inputs::load(&events, Late::Designated);
    let out = dir.path().join("out.jsonl");
    let log =
        String::from_utf8_lossy(&replay(&events, &out, &["engagement", "engagement-py"], &[]).stderr).into_owned();
    // Both write device-engagement-results: the host says so.
    assert!(log.contains("several plugins publish to this topic") && log.contains("engagement-py"), "{log}");
    let mut by_plugin: BTreeMap<String, BTreeMap<(String, String), Value>> = BTreeMap::new();
    for line in std::fs::read_to_string(&out).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if v["topic"] != "device-engagement-results" {
            continue;
        }
        let key = (v["value"]["window_start"].as_str().unwrap().to_owned(), v["key"].as_str().unwrap().to_owned());
        let previous = by_plugin
            .entry(v["headers"]["plugin"].as_str().unwrap().to_owned())
            .or_default()
            .insert(key, v["value"].clone());
        assert!(previous.is_none(), "a window's device published twice: {line}");
    }
    let rust = &by_plugin["engagement"];
    let python = &by_plugin["engagement-py"];
    assert!(rust.len() >= 20, "{} records", rust.len());
    assert_eq!(python, rust, "the Python plugin and the Rust plugin published different records");
    expected::check_engagement(&python.values().cloned().collect::<Vec<_>>(), &inputs.engagement(None));
}

/// `engagement_hll` (HyperLogLog++ at precision 14, a standard error of 0.81%) against the exact
/// `engagement` on a run of a million users (19k to 110k distinct per device and window): every
/// window's estimate within 2.5% (about 3 standard errors), the same impressions, and each
/// record saying that it is an estimate.
#[test]
fn the_approximate_engagement_plugin_is_within_its_stated_error_on_every_window() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events");
    let args = ["--events", "2M", "--users", "1000000", "--seed", "21", "--quiet", "--jsonl"];
    run_ok(Command::new(adgen()).args(args).arg(&events));
    let out = dir.path().join("out.jsonl");
    replay(&events, &out, &["engagement", "engagement_hll"], &["--tasks", "3"]);
    let mut by_plugin: BTreeMap<String, BTreeMap<(String, String), Value>> = BTreeMap::new();
    for line in std::fs::read_to_string(&out).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if v["topic"] == "adstream-window-completeness" {
            continue;
        }
        assert_eq!(v["topic"], "device-engagement-results", "{line}");
        let key = (v["value"]["window_start"].as_str().unwrap().to_owned(), v["key"].as_str().unwrap().to_owned());
        by_plugin
            .entry(v["headers"]["plugin"].as_str().unwrap().to_owned())
            .or_default()
            .insert(key, v["value"].clone());
    }
    let (exact, approximate) = (&by_plugin["engagement"], &by_plugin["engagement_hll"]);
    assert_eq!(
        exact.keys().collect::<Vec<_>>(),
        approximate.keys().collect::<Vec<_>>(),
        "the same windows and devices"
    );
    assert!(exact.len() >= 30, "{} records", exact.len());
    let mut errors = Vec::new();
    for (key, e) in exact {
        let a = &approximate[key];
        assert_eq!(a["impressions"], e["impressions"], "{key:?}");
        assert_eq!(a["unique_users_approximate"], true, "{a}");
        assert_eq!(a["unique_users_relative_error"], 0.0081, "{a}");
        let (truth, estimate) = (e["unique_users"].as_f64().unwrap(), a["unique_users"].as_f64().unwrap());
        assert!(truth > 10_000.0, "a window of many users: {e}");
        let error = (estimate - truth).abs() / truth;
        assert!(error <= 0.025, "{key:?}: {estimate} estimated, {truth} exact ({:.2}%)", error * 100.0);
        errors.push(error);
    }
    errors.sort_by(f64::total_cmp);
    let (median, worst) = (errors[errors.len() / 2], errors[errors.len() - 1]);
    eprintln!(
        "engagement_hll over {} windows: relative error {:.2}% median, {:.2}% largest",
        errors.len(),
        median * 100.0,
        worst * 100.0
    );
}

/// `replay --tasks N` splits the input by impression_id over N tasks, whose partials every
/// window is merged from: each plugin's export-window, restore-window and merge-window run. The
/// records are the same with 1 task and with 3, for every plugin here (Rust and Python): the
/// check a plugin author runs on their own plugin (README "Writing a plugin").
#[test]
fn records_do_not_depend_on_how_many_tasks_the_input_is_split_over() {
    let dir = tempfile::tempdir().unwrap();
    let events = generate_jsonl(dir.path(), "80000", "13", "0", "0.01");
    let results = |tasks: &str| {
        let out = dir.path().join(format!("out-{tasks}.jsonl"));
        replay(&events, &out, &["ctr", "engagement", "spend", "engagement-py", "engagement_hll"], &["--tasks", tasks]);
        let mut records: BTreeMap<(String, String, String), Value> = BTreeMap::new();
        for line in std::fs::read_to_string(&out).unwrap().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            if v["topic"].as_str().unwrap().ends_with("-results") {
                let window = v["value"]["window_start"].as_str().unwrap().to_owned();
                let key = (
                    v["headers"]["plugin"].as_str().unwrap().to_owned(),
                    window,
                    v["key"].as_str().unwrap().to_owned(),
                );
                records.insert(key, v["value"].clone());
            }
        }
        records
    };
    let one = results("1");
    let plugins: std::collections::BTreeSet<&str> = one.keys().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(plugins.len(), 5, "{plugins:?}");
    let three = results("3");
    for (key, value) in &one {
        assert_eq!(three.get(key), Some(value), "{key:?}: 1 task and 3 tasks differ");
    }
    assert_eq!(one.len(), three.len());
}

/// `adstream check-plugin` does that comparison for a plugin author: it passes a plugin whose
/// merge is exact, and fails one whose merge loses counts, naming the records that differ.
#[test]
fn check_plugin_passes_an_exact_merge_and_catches_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let events = generate_jsonl(dir.path(), "30000", "17", "0", "0");
    let check = |input: &Path, wasm: &Path| {
        Command::new(adstream())
            .args(["check-plugin", "--input"])
            .arg(input)
            .arg("--plugin")
            .arg(wasm)
            .arg("--plugin-cache")
            .arg(crate::common::plugin_cache())
            .output()
            .unwrap()
    };
    let good = check(&events, &plugin("ctr"));
    let said = String::from_utf8_lossy(&good.stdout);
    assert!(
        good.status.success() && said.contains("the same with 1 task and 3 tasks"),
        "{said}\n{}",
        String::from_utf8_lossy(&good.stderr)
    );

    // Impressions of campaign evil-merge in one window, spread over the tasks by their ids:
    // misbehave-py's merge drops the other instance's count of that campaign.
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    let lines: Vec<String> = (0..30)
        .map(|i| format!(r#"{{"impression_id":"i{i}","user_id":"u{i}","campaign_id":"evil-merge","ad_id":"a1","device_type":"mobile","browser":"chrome","event_timestamp":"2026-11-29T10:00:{:02}.000Z","cost":0.001}}"#, i))
        .collect();
    std::fs::write(broken.join("ad-impressions.jsonl"), lines.join("\n") + "\n").unwrap();
    std::fs::write(broken.join("ad-clicks.jsonl"), "").unwrap();
    let misbehave = crate::common::workspace().join("target/test-plugins/misbehave-py.wasm");
    let bad = check(&broken, &misbehave);
    let said = String::from_utf8_lossy(&bad.stdout);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "a broken merge passed: {said}");
    // The standard error beside every failure: a check that fails before it compares says why there.
    assert!(said.contains("only with 1 task") && said.contains(r#""impressions":30"#), "{said}\n{err}");
    assert!(said.contains("only with several tasks"), "{said}\n{err}");
    assert!(err.contains("records differ between 1 task and 3 tasks"), "{err}");
}
