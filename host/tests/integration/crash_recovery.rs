//! Exactly-once across crashes, on the real broker: the host is killed with SIGKILL at random
//! moments, again and again, and restarted each time; at the end, a `read_committed` consumer sees
//! every window's result exactly once, equal to the batch computation, and every dead letter
//! exactly once. `ADSTREAM_CRASH_KILLS=100 cargo test --release -p adstream --test integration crash_recovery::`
//! (or `just soak`) kills it more often.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use crate::common::expected::{self, Inputs, Late};
use crate::common::{
    Host, assert_accounted, await_completeness, await_input_handled, finish_and_check_exactly_once, fresh_prefix,
    generate_with, read_topics,
};
use rand::{Rng, SeedableRng};

#[test]
fn results_are_exactly_once_across_repeated_sigkills() {
    let kills: usize = std::env::var("ADSTREAM_CRASH_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(12);
    check_exactly_once_across_sigkills("crash", kills, "600000", &[], &[], |inputs| inputs);
}

/// The same with `--window 5m --slide 1m` over input with a producer's retried copies: a restart
/// finds panes closed at a task but still held by later windows, and puts back exactly the events
/// they held (the checkpoint's `cuts=`), and drops the same copies as the run it replaces.
#[test]
fn sliding_window_results_over_repeated_events_are_exactly_once_across_repeated_sigkills() {
    let kills: usize = std::env::var("ADSTREAM_CRASH_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(6);
    let (adgen, flags) = (["--duplicate-fraction", "0.02"], ["--window", "5m", "--slide", "1m"]);
    check_exactly_once_across_sigkills("crash-slide", kills, "300000", &adgen, &flags, |i| i.windows(300_000, 60_000));
}

/// Kills a host running ctr and engagement with `flags` over `events` generated messages (with
/// `adgen` flags) `kills` times, half of them while a window is half published, then lets a last
/// run finish and checks what a `read_committed` consumer sees against the batch computation over
/// `windows(inputs)`.
fn check_exactly_once_across_sigkills(
    test: &str,
    kills: usize,
    events: &str,
    adgen: &[&str],
    flags: &[&str],
    windows: impl Fn(Inputs) -> Inputs,
) {
    let dir = tempfile::tempdir().unwrap();
    let prefix = fresh_prefix(test);
    let inputs = windows(generate_with(&prefix, dir.path(), events, "5", "0", "0.002", adgen));
    assert!(adgen.is_empty() || inputs.duplicates > 100, "{} duplicates", inputs.duplicates);
    let group = format!("{prefix}g");
    kill_repeatedly(&prefix, &group, dir.path(), kills, flags);
    // The last run goes to the end.
    let host = Host::start(&prefix, &group, &["ctr", "engagement"], dir.path(), flags);
    finish_and_check_exactly_once(host, &prefix, &inputs);
}

/// Starts a host of `group` running ctr and engagement with `flags` on the topics of `prefix`, and
/// kills it with SIGKILL, `kills` times: half of them while a window is half published.
fn kill_repeatedly(prefix: &str, group: &str, dir: &Path, kills: usize, flags: &[&str]) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(kills as u64);
    let mut killed_mid_emission = 0;
    for kill in 0..kills {
        // Every other run pauses for 3 s in the middle of emitting each window (a test-only
        // failpoint), so that kills also land while a window is half published. The kill comes
        // within 0.8 s of the pause's start: the rest is margin for a loaded machine's wake-ups.
        let paused = kill % 2 == 1;
        let pause: &[(&str, &str)] = if paused { &[("ADSTREAM_FAILPOINT_EMIT_PAUSE_MS", "3000")] } else { &[] };
        let mut host = Host::start_with_env(prefix, group, &["ctr", "engagement"], dir, flags, pause);
        // Start-up (plugins from the cache, transactions, offsets) takes a few hundred ms; kill
        // anywhere from before it consumes anything to well into a run.
        if paused {
            // Wait for the host to start publishing a window, then kill it within its pause.
            let deadline = std::time::Instant::now() + Duration::from_secs(90);
            while !host.log().contains("failpoint: pausing") {
                assert!(std::time::Instant::now() < deadline, "no window emitted in 90 s:\n{}", host.log());
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(rng.random_range(0..800)));
        } else {
            std::thread::sleep(Duration::from_millis(rng.random_range(150..1500)));
        }
        let still_running = host.child.try_wait().unwrap().is_none();
        assert!(still_running, "host exited by itself before kill {kill}:\n{}", host.log());
        host.child.kill().unwrap(); // SIGKILL
        host.child.wait().unwrap();
        let log = host.log();
        let last = log.lines().rev().find(|l| l.contains("failpoint:"));
        killed_mid_emission += usize::from(last.is_some_and(|l| l.contains("pausing")));
    }
    assert_eq!(killed_mid_emission, kills / 2, "every other kill lands while a window is half published");
}

/// The windows' completeness records across SIGKILLs, over input with late events and retried
/// copies: a merge stage that takes over reads the records back and carries them on, so each
/// window's last record says what the run did: its counted events, the late topic's messages of
/// it (each copied once), the copies dropped and the clicks unattributed in it. The results are
/// exactly once too, with the events the host routed as late left out.
#[test]
fn completeness_records_are_exact_across_repeated_sigkills() {
    // Not ADSTREAM_CRASH_KILLS: each run publishes a window or two of the input's ten, so more
    // kills would leave a run nothing to publish (`just crash-soak` kills the other tests 100
    // times).
    let kills = 4;
    let dir = tempfile::tempdir().unwrap();
    let prefix = fresh_prefix("crash-complete");
    let adgen = ["--duplicate-fraction", "0.02"];
    let designated = generate_with(&prefix, dir.path(), "200000", "11", "0.01", "0.002", &adgen);
    let group = format!("{prefix}g");
    // Each run publishes a window or two (each publication paused for 300 ms) and is killed: the
    // next one gets late events of windows the one before published.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    // Each task's hand-over of each window (its counts and read positions) in the logs.
    let log = ("ADSTREAM_LOG", "info,adstream::engine::task=debug");
    let pause = [("ADSTREAM_FAILPOINT_EMIT_PAUSE_MS", "300"), log];
    let mut restored = 0;
    // Every run's log, printed before the checks (libtest shows it only if one fails).
    let mut logs = String::new();
    for kill in 0..kills {
        let mut host = Host::start_with_env(&prefix, &group, &["ctr", "engagement"], dir.path(), &[], &pause);
        // Kill within the pause of the second window this run publishes (the first one is then
        // published), not after a fixed time: on a loaded machine start-up alone can take
        // seconds. Each run publishes one or two of the input's ten windows.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while host.log().matches("failpoint: pausing").count() < 2 {
            assert!(std::time::Instant::now() < deadline, "no second window in 60 s:\n{}", host.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..300)));
        assert!(host.child.try_wait().unwrap().is_none(), "host exited by itself before kill {kill}:\n{}", host.log());
        host.child.kill().unwrap(); // SIGKILL
        host.child.wait().unwrap();
        let log = host.log();
        logs.push_str(&format!("--- run {kill}, killed:\n{log}"));
        if log.lines().any(|l| l.contains("completeness records restored") && !l.contains("records=0")) {
            restored += 1;
            // The reader stops at the topic's end, which librdkafka reports as an error event.
            assert!(!log.contains("PartitionEOF"), "the end of the completeness topic logged as an error:\n{log}");
        }
    }
    assert!(restored > 0, "a run took over records an earlier run published");
    let host = Host::start_with_env(&prefix, &group, &["ctr", "engagement"], dir.path(), &[], &[log]);
    // Every late copy of the last run is committed before the results are read.
    await_input_handled(&prefix, &group, Duration::from_secs(240), || {
        format!("{logs}--- the last run:\n{}", host.log())
    });

    let limit = Some(designated.emitted_by_idle_watermark());
    let topics =
        ["campaign-ctr-results", "device-engagement-results", "ad-events-late"].map(|t| format!("{prefix}{t}"));
    let (want_ctr, want_eng) = (designated.ctr(limit).len(), designated.engagement(limit).len());
    let records = read_topics(&topics, Duration::from_secs(240), Duration::from_secs(4), |r| {
        let n = |t: &str| r.iter().filter(|m| m.topic == t).count();
        n(&topics[0]) >= want_ctr && n(&topics[1]) >= want_eng
    });
    let of = |t: &str| records.iter().filter(|r| r.topic == t).collect::<Vec<_>>();
    eprintln!("{logs}--- the last run:\n{}--- {} late copies read", host.log(), of(&topics[2]).len());
    let late: Vec<Vec<u8>> = of(&topics[2]).iter().map(|r| r.value.clone()).collect();
    let routed: HashSet<Vec<u8>> = late.iter().cloned().collect();
    assert_eq!(routed.len(), late.len(), "a late event copied twice");
    let inputs = Inputs::load(&dir.path().join("events"), Late::Routed(&routed));
    let values = |t: &str| of(t).iter().map(|r| r.json()).collect::<Vec<_>>();
    // The completeness records first: where a result is wrong, they say how (events counted,
    // late, repeats dropped, clicks left unattributed).
    let want = inputs.completeness(limit, &late);
    assert!(want.values().any(|c| c.late > 0) && want.values().any(|c| c.duplicates > 0), "a run worth checking");
    await_completeness(&prefix, &want, limit, &["ctr", "engagement"], || host.log());
    expected::check_ctr(&values(&topics[0]), &inputs.ctr(limit));
    expected::check_engagement(&values(&topics[1]), &inputs.engagement(limit));
    assert_accounted(&host.stop());
}
