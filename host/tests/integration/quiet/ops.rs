//! Operating a running host, on the real Kafka broker: `/metrics` against what the run did, the
//! probes, the admin token, and live plugin swaps (through the API and by file watch) with every
//! window's results equal to the batch computation and attributed to the version that produced
//! it. The browser test of the console is `console_browser.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::expected::{self, Inputs, Late};
use crate::common::{
    Host, LIVE_IDLE, Record, adgen, await_status, await_topics, brokers, fresh_prefix, generate, http, parse_metrics,
    plugin, plugin_cache, read_topics, sha256_hex, workspace,
};

fn test_plugin(name: &str) -> std::path::PathBuf {
    let path = workspace().join("target/test-plugins").join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} is missing: run `bash scripts/build-plugins.sh` first", path.display());
    path
}

fn n(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"))
}

fn windows_of(records: &[&Record]) -> BTreeSet<String> {
    records.iter().map(|r| r.headers["window-start"].clone()).collect()
}

/// `/metrics` scraped during a run (once the host has handled every message) says what the run
/// did: the messages consumed, the windows in the result topic, the late and dead-lettered
/// messages in their topics, and the same as the host's final counters. Also: the probes, every
/// metric name the host documents, and the admin token.
#[test]
fn metrics_count_what_the_run_did() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = fresh_prefix("metrics");
    // Written before the host starts; late events are routed by the watermark at read time.
    let inputs = generate(&prefix, dir.path(), "60000", "7", "0.002", "0.01");
    let token = "metrics-test-token-0123456789";
    let host =
        Host::start(&prefix, &format!("{prefix}g"), &["ctr", "engagement"], dir.path(), &["--admin-token", token]);
    let base = host.http_url();
    // Once the partitions go idle, every window but the last is emitted.
    let limit = Some(inputs.emitted_by_idle_watermark());
    let want_windows = inputs.ctr(limit).keys().map(|(_, w)| *w).collect::<BTreeSet<_>>().len() as u64;
    let status = await_status(&base, Duration::from_secs(120), "every message consumed and windows emitted", |s| {
        n(&s["stats"], "consumed") == inputs.messages as u64 && n(&s["stats"], "windows_emitted") == want_windows
    });
    assert_eq!(status["ready"], true, "{status}");
    assert_eq!(http(&format!("{base}/healthz"), &[], None).0, 200);
    let (ready, why) = http(&format!("{base}/readyz"), &[], None);
    assert_eq!(ready, 200, "{why}");

    // The admin token: refused without it or with a wrong one; with the right one the call goes
    // through (the same version again: nothing to swap, and no result changes).
    let url = format!("{base}/api/plugins/ctr");
    let wasm = std::fs::read(plugin("ctr")).unwrap();
    let (code, body) = http(&url, &[], Some(&wasm));
    assert_eq!(code, 401, "no token: {body}");
    assert_eq!(http(&url, &[("Authorization", "Bearer wrong-token-0123456789")], Some(&wasm)).0, 401);
    let (code, body) = http(&url, &[("Authorization", &format!("Bearer {token}"))], Some(&wasm));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"mode\":\"unchanged\""), "{body}");

    let (code, text) = http(&format!("{base}/metrics"), &[], None);
    assert_eq!(code, 200);
    let m = parse_metrics(&text);
    let metric = |k: &str| *m.get(k).unwrap_or_else(|| panic!("/metrics has no {k}:\n{text}"));
    let stats = &status["stats"];

    // What the run did, read back from Kafka.
    let topics: Vec<String> =
        ["campaign-ctr-results", "ad-events-late", "ad-events-dlq"].iter().map(|t| format!("{prefix}{t}")).collect();
    let windows = n(stats, "windows_emitted") as usize;
    let records = read_topics(&topics, Duration::from_secs(60), Duration::from_secs(3), |r| {
        let ctr: Vec<&Record> = r.iter().filter(|r| r.topic == topics[0]).collect();
        windows_of(&ctr).len() >= windows && r.iter().filter(|r| r.topic == topics[2]).count() >= inputs.malformed
    });
    let of = |t: usize| records.iter().filter(|r| r.topic == topics[t]).collect::<Vec<_>>();
    assert_eq!(metric("adstream_messages_consumed_total") as usize, inputs.messages);
    assert_eq!(
        metric("adstream_windows_emitted_total") as usize,
        windows_of(&of(0)).len(),
        "windows in the result topic"
    );
    assert!(windows >= 5, "the workload spans ten windows: {windows} emitted");
    assert_eq!(metric("adstream_late_events_total") as usize, of(1).len(), "messages in the late topic");
    assert!(!of(1).is_empty(), "the workload has late events");
    assert_eq!(metric("adstream_dead_lettered_total") as usize, of(2).len(), "messages in the dead-letter topic");
    assert_eq!(metric("adstream_dead_lettered_total") as usize, inputs.malformed);
    assert_eq!(metric("adstream_result_records_total") as usize, n(stats, "results") as usize);
    assert_eq!(metric("adstream_ready"), 1.0);
    assert_eq!(metric("adstream_plugin_swaps_total{plugin=\"ctr\",outcome=\"unchanged\"}"), 1.0);
    assert_eq!(metric("adstream_plugin_errors_total{plugin=\"ctr\"}"), 0.0, "plugin errors:\n{}", host.log());
    assert_eq!(metric("adstream_open_windows"), n(stats, "open_windows") as f64);
    assert!(metric("adstream_window_result_latency_seconds_count") >= windows as f64);
    // The latest CTR of a campaign, as the result topic has it.
    let last = of(0).into_iter().max_by_key(|r| r.headers["window-start"].clone()).unwrap();
    let v = last.json();
    let key = v["campaign_id"].as_str().unwrap();
    let gauge = metric(&format!("adstream_result_value{{plugin=\"ctr\",key=\"{key}\",field=\"impressions\"}}"));
    assert_eq!(gauge, v["impressions"].as_f64().unwrap(), "{v}");
    let lag: f64 = m.iter().filter(|(k, _)| k.starts_with("adstream_partition_lag_messages{")).map(|(_, v)| v).sum();
    assert_eq!(lag, 0.0, "every partition read to its end");
    assert_eq!(m.keys().filter(|k| k.starts_with("adstream_partition_offset{")).count(), 6, "3 + 3 partitions");

    // Every family the host documents is exported, and nothing else.
    let families: BTreeSet<&str> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect();
    let documented: BTreeSet<&str> = adstream::ops::metrics::NAMES
        .iter()
        .map(|n| {
            n.trim_end_matches("_total").trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count")
        })
        .collect();
    assert_eq!(families, documented, "metric families exported vs adstream::ops::metrics::NAMES");

    let final_stats = host.stop();
    for (k, name) in [
        ("consumed", "messages_consumed"),
        ("late", "late_events"),
        ("dead_lettered", "dead_lettered"),
        ("windows_emitted", "windows_emitted"),
    ] {
        assert_eq!(
            n(&final_stats, k) as f64,
            metric(&format!("adstream_{name}_total")),
            "{k}: /metrics vs final counters"
        );
    }
    crate::common::assert_accounted(&final_stats);
}

/// adgen writing `events` at `rate` per second into fresh topics, teeing to `dir/events`.
fn start_generator(prefix: &str, dir: &Path, events: &str, rate: &str) -> Child {
    Command::new(adgen())
        .args(["--brokers", &brokers(), "--partitions", "3", "--events", events, "--seed", "11", "--rate", rate])
        .args(["--impressions-topic", &format!("{prefix}ad-impressions")])
        .args(["--clicks-topic", &format!("{prefix}ad-clicks")])
        .args(["--late-fraction", "0", "--malformed-fraction", "0.005", "--quiet"])
        .arg("--tee-jsonl")
        .arg(dir.join("events"))
        .stdout(Stdio::null())
        .spawn()
        .expect("starting adgen")
}

/// A live run on the real broker in which `ctr` is replaced twice while events stream in: by a
/// new version through the admin API, then back to the first version by replacing the watched
/// file. Broken uploads (not WebAssembly; another plugin; a half-written file) are rejected and
/// the run goes on. Every window's results equal the batch computation; every window is
/// published by exactly one version, and the versions follow the order of the swaps. The host
/// runs two pipeline threads (two members of the group, each with tasks of its own): every swap
/// reaches both, and is answered once both have taken it.
#[test]
fn live_swap_keeps_every_window_exact() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = fresh_prefix("swap");
    let watched = dir.path().join("ctr.wasm");
    std::fs::copy(plugin("ctr"), &watched).unwrap();
    // 120k messages over about 24 s of wall time and 10 minutes of event time: ten windows,
    // each closing about 2.4 s after the previous one.
    let mut generator = start_generator(&prefix, dir.path(), "120000", "5000");
    await_topics(&prefix);
    let mut cmd_plugins = [LIVE_IDLE, &["--threads", "2", "--watch-plugins", "--plugin"]].concat();
    let watched_arg = watched.to_str().unwrap().to_owned();
    cmd_plugins.push(&watched_arg);
    let host = Host::start(&prefix, &format!("{prefix}g"), &["engagement"], dir.path(), &cmd_plugins);
    let base = host.http_url();
    let api = format!("{base}/api/plugins/ctr");
    let windows = |s: &serde_json::Value| n(&s["stats"], "windows_emitted");
    let ctr_version = |s: &serde_json::Value| {
        s["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "ctr").unwrap()["version"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    // 1. Through the API, after two windows: the next version.
    let s = await_status(&base, Duration::from_secs(120), "two windows", |s| windows(s) >= 2);
    assert_eq!(ctr_version(&s), "0.1.0");
    let (code, body) = http(&api, &[], Some(&std::fs::read(test_plugin("ctr_next")).unwrap()));
    assert_eq!(code, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((report["from_version"].as_str(), report["to_version"].as_str()), (Some("0.1.0"), Some("0.2.0-next")));
    assert!(["carried-over", "immediate"].contains(&report["mode"].as_str().unwrap()), "same state version: {report}");
    let s = await_status(&base, Duration::from_secs(5), "the swap", |s| ctr_version(s) == "0.2.0-next");
    let swapped_at = windows(&s);
    assert_eq!(s["threads"], 2);
    let ctr_status = s["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "ctr").unwrap()["status"].clone();
    assert_ne!(ctr_status, "versions-differ-between-threads", "both threads took the swap: {s}");

    // The same file again: nothing to do, and not counted as a swap.
    let (code, body) = http(&api, &[], Some(&std::fs::read(test_plugin("ctr_next")).unwrap()));
    assert_eq!(code, 200, "{body}");
    let again: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(again["mode"], "unchanged", "{again}");

    // 2. Rejected: not WebAssembly; another plugin's component. The new version stays.
    let (code, body) = http(&api, &[], Some(b"definitely not wasm"));
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("not a valid WebAssembly component"), "{body}");
    let (code, body) = http(&api, &[], Some(&std::fs::read(plugin("engagement")).unwrap()));
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("describes itself as \"engagement\""), "{body}");

    // 3. By file watch, once the new version has published a window of its own: first a broken
    // file (rejected), then the first version again.
    await_status(&base, Duration::from_secs(120), "a window of the new version", |s| windows(s) >= swapped_at + 2);
    std::fs::write(&watched, b"\0asm but truncated").unwrap();
    await_status(&base, Duration::from_secs(30), "the broken file rejected", |s| {
        s["swaps"].as_array().unwrap().iter().any(|w| w["origin"] == "file watch" && w["applied"] == false)
    });
    let tmp = dir.path().join("ctr.wasm.tmp");
    std::fs::copy(plugin("ctr"), &tmp).unwrap();
    std::fs::rename(&tmp, &watched).unwrap();
    let s = await_status(&base, Duration::from_secs(30), "the file-watch swap", |s| ctr_version(s) == "0.1.0");
    assert_eq!(ctr_version(&s), "0.1.0");
    assert!(windows(&s) < 9, "the last swap came too late to be seen in a window: {}", windows(&s));

    // The run goes on to the end.
    assert!(generator.wait().unwrap().success(), "adgen failed");
    let inputs = Inputs::load(&dir.path().join("events"), Late::Designated);
    assert_eq!(inputs.late, 0);
    let limit = Some(inputs.emitted_by_idle_watermark());
    let (want_ctr, want_eng) = (inputs.ctr(limit), inputs.engagement(limit));
    let topics: Vec<String> =
        ["campaign-ctr-results", "device-engagement-results"].iter().map(|t| format!("{prefix}{t}")).collect();
    let records = read_topics(&topics, Duration::from_secs(180), Duration::from_secs(3), |r| {
        r.len() >= want_ctr.len() + want_eng.len()
    });
    // Every input message read: the partitions' next offsets (the counters count twice what a
    // rebalance between the threads had a task's new owner read again).
    let status = await_status(&base, Duration::from_secs(30), "the final counters", |s| {
        let next = s["partitions"].as_array().unwrap().iter().map(|p| p["next_offset"].as_u64().unwrap_or(0));
        next.sum::<u64>() == inputs.messages as u64
    });
    let (_, metrics) = http(&format!("{base}/metrics"), &[], None);
    let log = host.log();
    let stats = host.stop();
    crate::common::assert_accounted(&stats);
    assert_eq!(n(&stats, "plugin_errors"), 0, "{log}");

    let ctr: Vec<&Record> = records.iter().filter(|r| r.topic == topics[0]).collect();
    let values = |rs: &[&Record]| rs.iter().map(|r| r.json()).collect::<Vec<_>>();
    expected::check_ctr(&values(&ctr), &want_ctr);
    let eng: Vec<&Record> = records.iter().filter(|r| r.topic == topics[1]).collect();
    expected::check_engagement(&values(&eng), &want_eng);

    // One version per window; in window order, the versions follow the swaps.
    let mut by_window: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    for r in &ctr {
        by_window.entry(expected::window_of(&r.json())).or_default().insert(r.headers["plugin-version"].clone());
    }
    let mut sequence: Vec<&str> = Vec::new();
    for (window, versions) in &by_window {
        assert_eq!(versions.len(), 1, "window {window} published by {versions:?}");
        let v = versions.first().unwrap().as_str();
        if sequence.last() != Some(&v) {
            sequence.push(v);
        }
    }
    assert_eq!(sequence, ["0.1.0", "0.2.0-next", "0.1.0"], "versions by window: {by_window:?}");
    assert!(eng.iter().all(|r| r.headers["plugin-version"] == "0.1.0"), "engagement was never swapped");

    // The swaps as the host recorded them.
    let swaps = status["swaps"].as_array().unwrap();
    let outcomes: Vec<(bool, &str)> =
        swaps.iter().map(|s| (s["applied"].as_bool().unwrap(), s["origin"].as_str().unwrap())).collect();
    assert_eq!(
        outcomes,
        [
            (true, "admin API"),
            (true, "admin API"),
            (false, "admin API"),
            (false, "admin API"),
            (false, "file watch"),
            (true, "file watch")
        ],
        "{swaps:?}"
    );
    let m = parse_metrics(&metrics);
    assert_eq!(m["adstream_plugin_swaps_total{plugin=\"ctr\",outcome=\"applied\"}"], 2.0);
    assert_eq!(m["adstream_plugin_swaps_total{plugin=\"ctr\",outcome=\"rejected\"}"], 3.0);
    assert_eq!(m["adstream_plugin_swaps_total{plugin=\"ctr\",outcome=\"unchanged\"}"], 1.0);
}

/// A Python plugin (an 18 MB component, ~11 s to compile here) swapped in while events stream
/// in: the compile runs off the pipeline thread, so windows keep being published while the
/// swap is in flight, and every window's results stay exact. The upload is `engagement-py` with
/// a custom section appended: the same plugin, but a file the compile cache has never seen.
#[test]
fn a_python_plugin_compiles_off_the_pipeline_during_a_live_swap() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = fresh_prefix("pyswap");
    // 150k messages over about 30 s of wall time: ten windows, one every ~3 s.
    let mut generator = start_generator(&prefix, dir.path(), "150000", "5000");
    await_topics(&prefix);
    let host = Host::start(&prefix, &format!("{prefix}g"), &["ctr", "engagement-py"], dir.path(), LIVE_IDLE);
    let base = host.http_url();
    let windows = |s: &serde_json::Value| n(&s["stats"], "windows_emitted");
    await_status(&base, Duration::from_secs(120), "a window", |s| windows(s) >= 1);

    let mut upload = std::fs::read(plugin("engagement-py")).unwrap();
    // A custom section (id 0): its size, then its name's length and name, then its bytes. The
    // bytes name this run, so that the compile cache the tests share (it outlives a run in
    // `target/`) has never seen the file.
    let (name, payload) = (b"adstream-test", format!("never compiled before: {prefix}"));
    let size = 1 + name.len() + payload.len();
    assert!(size < 128, "the sizes are one-byte LEB128s");
    upload.extend([0, size as u8, name.len() as u8]);
    upload.extend(name);
    upload.extend(payload.as_bytes());
    let _forget = ForgetCompiled(sha256_hex(&upload));
    let api = format!("{base}/api/plugins/engagement-py");
    let swap = std::thread::spawn(move || http(&api, &[], Some(&upload)));
    let before = windows(&await_status(&base, Duration::from_secs(5), "status", |_| true));
    let mut published_during_swap = 0;
    while !swap.is_finished() {
        std::thread::sleep(Duration::from_millis(200));
        published_during_swap = windows(&await_status(&base, Duration::from_secs(5), "status", |_| true)) - before;
    }
    let (code, body) = swap.join().unwrap();
    assert_eq!(code, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_ne!(report["mode"], "unchanged", "a new file is a swap: {report}");
    assert!(
        published_during_swap >= 1,
        "no window was published while the swap compiled: the pipeline waited ({report})"
    );
    let log = host.log();
    let compiled = log.lines().find(|l| l.contains("compiled plugin") && l.contains("upload")).unwrap_or_default();
    assert!(!compiled.is_empty(), "the upload was compiled, not taken from the cache:\n{log}");
    eprintln!("{published_during_swap} windows published while the swap compiled ({compiled})");

    assert!(generator.wait().unwrap().success());
    let inputs = Inputs::load(&dir.path().join("events"), Late::Designated);
    crate::common::finish_and_check_exactly_once(host, &prefix, &inputs);
}

/// When dropped (the test passed or not), removes the shared compile cache's entries for the
/// `.wasm` of this SHA-256 (hex): a file made for one run would otherwise stay there, ~35 MB each.
/// Entries are named by the hash's first 32 digits (`plugin::runtime::Runtime::load`).
struct ForgetCompiled(String);

impl Drop for ForgetCompiled {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(plugin_cache()) else { return };
        for path in entries.filter_map(|e| Some(e.ok()?.path())) {
            if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&self.0[..32])) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}
