//! `--log-format json`: every line the host logs is one JSON object, and the lines carry the
//! plugin and the window as fields an operator can filter on.

mod common;

use std::process::Command;

use common::{adgen, adstream, plugin, run_ok};
use serde_json::Value;

#[test]
fn json_logs_carry_plugin_and_window_fields() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events");
    run_ok(Command::new(adgen()).args(["--events", "20000", "--seed", "3", "--quiet", "--jsonl"]).arg(&events));
    let out = run_ok(
        Command::new(adstream())
            .args(["--log-format", "json", "replay", "--input"])
            .arg(&events)
            .arg("--out")
            .arg(dir.path().join("out.jsonl"))
            .arg("--plugin-cache")
            .arg(dir.path().join("cache"))
            .arg("--plugin")
            .arg(plugin("ctr"))
            .arg("--plugin")
            .arg(plugin("engagement"))
            .env("ADSTREAM_LOG", "info"),
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let logs: Vec<&Value> = lines.iter().filter(|l| l.get("fields").is_some()).collect();
    let with = |message: &str| logs.iter().filter(move |l| l["fields"]["message"] == message).collect::<Vec<_>>();
    let loaded: Vec<&str> = with("loaded plugin").iter().map(|l| l["fields"]["plugin"].as_str().unwrap()).collect();
    assert_eq!(loaded, ["ctr", "engagement"], "{stderr}");
    let windows = with("window emitted");
    assert!(windows.len() >= 2, "a line per emitted window: {stderr}");
    for w in windows {
        let f = &w["fields"];
        assert!(f["window"].as_str().is_some_and(|s| s.ends_with(":00.000Z")), "{w}");
        assert!(f["events"].as_u64().is_some_and(|n| n > 0), "{w}");
        let records = f["records"].as_str().unwrap();
        assert!(records.starts_with("ctr=") && records.contains(" engagement="), "{w}");
        assert_eq!(w["level"], "INFO");
    }
}
