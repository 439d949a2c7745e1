//! SIGTERM (what `timeout` and `docker stop` send) stops adgen as Ctrl-C does: it stops making
//! messages, flushes what it wrote, and its JSONL files hold exactly the messages its summary
//! counts, whole lines only.

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn sigterm_flushes_the_files_and_the_summary_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_adgen"))
        .args(["--events", "10M", "--rate", "20000", "--quiet", "--jsonl"])
        .arg(dir.path().join("out"))
        .arg("--summary-json")
        .arg(&summary)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "adgen did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(130), "an interrupted run says so in its exit code");
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(summary["interrupted"], true);
    for (file, topic) in [("ad-impressions.jsonl", "impressions_topic"), ("ad-clicks.jsonl", "clicks_topic")] {
        let bytes = std::fs::read(dir.path().join("out").join(file)).unwrap();
        let lines = bytes.iter().filter(|b| **b == b'\n').count() as u64;
        assert!(lines > 0, "{file} is empty");
        assert_eq!(bytes.last(), Some(&b'\n'), "{file} ends with a whole line");
        assert_eq!(Some(lines), summary[topic]["messages"].as_u64(), "{file} holds what the summary counts");
    }
}
