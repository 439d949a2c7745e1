//! Exactly-once across crashes, on the real broker: the host is killed with SIGKILL at random
//! moments, again and again, and restarted each time; at the end, a `read_committed` consumer sees
//! every window's result exactly once, equal to the batch computation, and every dead letter
//! exactly once. `ADSTREAM_CRASH_KILLS=100 cargo test --release -p adstream --test crash_recovery`
//! (or `just soak`) kills it more often.

mod common;

use std::time::Duration;

use common::expected::Inputs;
use common::{Host, finish_and_check_exactly_once, fresh_prefix, generate_with};
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
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(kills as u64);
    let mut killed_mid_emission = 0;
    for kill in 0..kills {
        // Every other run pauses for a second in the middle of emitting each window (a test-only
        // failpoint), so that kills also land while a window is half published.
        let paused = kill % 2 == 1;
        let pause: &[(&str, &str)] = if paused { &[("ADSTREAM_FAILPOINT_EMIT_PAUSE_MS", "1000")] } else { &[] };
        let mut host = Host::start_with_env(&prefix, &group, &["ctr", "engagement"], dir.path(), flags, pause);
        // Start-up (plugins from the cache, transactions, offsets) takes a few hundred ms; kill
        // anywhere from before it consumes anything to well into a run.
        if paused {
            // Wait for the host to start publishing a window, then kill it within its pause.
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while !host.log().contains("failpoint: pausing") {
                assert!(std::time::Instant::now() < deadline, "no window emitted in 30 s:\n{}", host.log());
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
    // The last run goes to the end.
    let host = Host::start(&prefix, &group, &["ctr", "engagement"], dir.path(), flags);
    finish_and_check_exactly_once(host, &prefix, &inputs);
}
