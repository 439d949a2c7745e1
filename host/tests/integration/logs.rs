//! `--log-format json`: every line the host logs is one JSON object, and the lines carry the
//! plugin and the window as fields an operator can filter on.

use std::process::Command;

use crate::common::{adgen, adstream, plugin, run_ok};
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

/// An error is the message and its causes, one per line, and exit code 1, even where
/// `RUST_BACKTRACE=1` is set (as on many developer machines); the stack trace inside the host
/// only with `ADSTREAM_BACKTRACE=1`; with `--log-format json`, one JSON line.
#[test]
fn an_error_is_its_message_and_causes_and_a_backtrace_only_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("adstream.toml");
    std::fs::write(&config, "[kafka.consumer-properties]\n\"fetch.max.byts\" = 1\n").unwrap();
    let run = |env: &[(&str, &str)], json: bool| {
        let mut cmd = Command::new(adstream());
        if json {
            cmd.args(["--log-format", "json"]);
        }
        let out = cmd
            .args(["run", "--http-addr", "off", "--config"])
            .arg(&config)
            .arg("--plugin")
            .arg(plugin("ctr"))
            .env_remove("ADSTREAM_BACKTRACE")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        String::from_utf8(out.stderr).unwrap()
    };
    let plain = run(&[("RUST_BACKTRACE", "1")], false);
    assert!(
        plain.starts_with("error: [kafka.consumer-properties] fetch.max.byts: No such configuration property"),
        "{plain}"
    );
    assert!(!plain.contains("stack backtrace") && !plain.contains("      at "), "no backtrace:\n{plain}");
    let traced = run(&[("ADSTREAM_BACKTRACE", "1")], false);
    assert!(traced.contains("adstream::"), "a backtrace through the host's frames on request:\n{traced}");
    let json = run(&[("RUST_BACKTRACE", "1")], true);
    let last: Value = serde_json::from_str(json.lines().last().unwrap()).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(last["level"], "ERROR", "{json}");
    assert!(last["fields"]["error"].as_str().unwrap().contains("fetch.max.byts"), "{json}");
}
