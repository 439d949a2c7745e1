//! Exactly-once across crashes, on the real broker: the host is killed with SIGKILL at random
//! moments, again and again, and restarted each time; at the end, a `read_committed` consumer sees
//! every window's result exactly once, equal to the batch computation, and every dead letter
//! exactly once. `ADSTREAM_CRASH_KILLS=100 cargo test --release -p adstream --test crash_recovery`
//! (or `just soak`) kills it more often.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use common::expected::{self, Inputs, Late};
use common::{Host, adgen, brokers, fresh_prefix, read_topics, run_ok};
use rand::{Rng, SeedableRng};

#[test]
fn results_are_exactly_once_across_repeated_sigkills() {
    let kills: usize = std::env::var("ADSTREAM_CRASH_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(12);
    let dir = tempfile::tempdir().unwrap();
    let prefix = fresh_prefix("crash");
    run_ok(
        Command::new(adgen())
            .args(["--brokers", &brokers(), "--partitions", "3", "--events", "600000", "--seed", "5"])
            .args(["--impressions-topic", &format!("{prefix}ad-impressions")])
            .args(["--clicks-topic", &format!("{prefix}ad-clicks")])
            .args(["--malformed-fraction", "0.002", "--quiet", "--tee-jsonl"])
            .arg(dir.path().join("events")),
    );
    let inputs = Inputs::load(&dir.path().join("events"), Late::Designated);
    let group = format!("{prefix}g");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(kills as u64);
    for kill in 0..kills {
        let mut host = Host::start(&prefix, &group, &["ctr", "engagement"], dir.path(), &[]);
        // Start-up (plugins from the cache, transactions, offsets) takes a few hundred ms; kill
        // anywhere from before it consumes anything to well into a run.
        std::thread::sleep(Duration::from_millis(rng.random_range(150..1500)));
        let still_running = host.child.try_wait().unwrap().is_none();
        assert!(still_running, "host exited by itself before kill {kill}:\n{}", host.log());
        host.child.kill().unwrap(); // SIGKILL
        host.child.wait().unwrap();
    }
    // The last run goes to the end.
    let host = Host::start(&prefix, &group, &["ctr", "engagement"], dir.path(), &[]);
    let limit = Some(inputs.emitted_by_idle_watermark());
    let (want_ctr, want_eng) = (inputs.ctr(limit), inputs.engagement(limit));
    let topics: Vec<String> = ["campaign-ctr-results", "device-engagement-results", "ad-events-dlq", "ad-events-late"]
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
    assert!(!values(0).is_empty(), "no results; last host log:\n{log}");
    expected::check_ctr(&values(0), &want_ctr);
    expected::check_engagement(&values(1), &want_eng);
    let dead: Vec<&Vec<u8>> = records.iter().filter(|r| r.topic == topics[2]).map(|r| &r.value).collect();
    let offsets: HashSet<(String, String)> = records
        .iter()
        .filter(|r| r.topic == topics[2])
        .map(|r| {
            (r.headers["source-partition"].clone(), r.headers["source-offset"].clone() + &r.headers["source-topic"])
        })
        .collect();
    assert_eq!(dead.len(), inputs.malformed, "every dead letter exactly once");
    assert_eq!(offsets.len(), dead.len(), "no source message dead-lettered twice");
    assert_eq!(records.iter().filter(|r| r.topic == topics[3]).count(), 0, "nothing is late in this workload");
    common::assert_accounted(&stats);
}
