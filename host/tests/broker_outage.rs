//! The broker goes away for 30 seconds in the middle of a run and comes back: the host waits,
//! reconnects, and the committed results are still exactly right, nothing lost or doubled.
//! (A test binary of its own: it stops the broker every other test uses.)

mod common;

use std::process::Command;
use std::time::Duration;

use common::expected::{self, Inputs, Late};
use common::{Host, adgen, brokers, fresh_prefix, read_topics, run_ok, workspace};

fn kafka(cmd: &str) {
    run_ok(Command::new("bash").arg(workspace().join("scripts/kafka.sh")).arg(cmd));
}

#[test]
fn a_broker_outage_of_30_seconds_loses_and_doubles_nothing() {
    if brokers() != "127.0.0.1:9092" {
        eprintln!("skipped: ADSTREAM_TEST_BROKERS points at a broker this test cannot stop");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let prefix = fresh_prefix("outage");
    run_ok(
        Command::new(adgen())
            .args(["--brokers", &brokers(), "--partitions", "3", "--events", "1M", "--seed", "9"])
            .args(["--impressions-topic", &format!("{prefix}ad-impressions")])
            .args(["--clicks-topic", &format!("{prefix}ad-clicks")])
            .args(["--malformed-fraction", "0.001", "--quiet", "--tee-jsonl"])
            .arg(dir.path().join("events")),
    );
    let inputs = Inputs::load(&dir.path().join("events"), Late::Designated);
    let host = Host::start(&prefix, &format!("{prefix}g"), &["ctr", "engagement"], dir.path(), &[]);
    // Let it get going (windows emitted, transactions committed), then take the broker away.
    std::thread::sleep(Duration::from_millis(1500));
    kafka("down");
    std::thread::sleep(Duration::from_secs(30));
    assert!(host_is_running(&host), "the host gave up during the outage:\n{}", host.log());
    kafka("up");

    let limit = Some(inputs.emitted_by_idle_watermark());
    let (want_ctr, want_eng) = (inputs.ctr(limit), inputs.engagement(limit));
    let topics: Vec<String> = ["campaign-ctr-results", "device-engagement-results", "ad-events-dlq"]
        .iter()
        .map(|t| format!("{prefix}{t}"))
        .collect();
    let records = read_topics(&topics, Duration::from_secs(240), Duration::from_secs(5), |r| {
        r.len() >= want_ctr.len() + want_eng.len() + inputs.malformed
    });
    let log = host.log();
    let stats = host.stop();
    let values = |t: usize| -> Vec<serde_json::Value> {
        records.iter().filter(|r| r.topic == topics[t]).map(|r| r.json()).collect()
    };
    assert!(!values(0).is_empty(), "no results; host log:\n{log}");
    assert!(log.contains("retrying"), "the host never noticed the outage:\n{log}");
    expected::check_ctr(&values(0), &want_ctr);
    expected::check_engagement(&values(1), &want_eng);
    assert_eq!(records.iter().filter(|r| r.topic == topics[2]).count(), inputs.malformed);
    assert_eq!(stats["consumed"].as_u64(), Some(inputs.messages as u64), "{stats}");
    common::assert_accounted(&stats);
}

fn host_is_running(host: &Host) -> bool {
    Command::new("kill").args(["-0", &host.child.id().to_string()]).status().is_ok_and(|s| s.success())
}
