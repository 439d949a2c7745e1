//! The broker goes away and comes back (a test binary of its own: it stops the broker every other
//! test uses, and its two tests take turns):
//!
//! - for 30 seconds in the middle of a run: the host waits, `/readyz` says it is not ready and
//!   `/healthz` that it is alive, and once the broker answers again the host is ready within the
//!   documented bound ([`RECOVERY_BOUND`]) and the committed results are exactly right;
//! - at start-up, for 20 seconds: the host does not exit, `/readyz` says it is waiting for
//!   Kafka, and once the broker is up it consumes and the results are exactly right.

mod common;

use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{
    Host, brokers, finish_and_check_exactly_once, fresh_prefix, generate, http, read_topics, run_ok, workspace,
};

/// How soon after the broker answers again the host is consuming (README "Operating it"): a
/// transaction step gives up after 30 s, the next attempt starts within 5 s, and start-up takes
/// a few more. Usually it is a few seconds.
const RECOVERY_BOUND: Duration = Duration::from_secs(45);

/// The tests stop and start the one broker: one at a time.
static BROKER: Mutex<()> = Mutex::new(());

fn kafka(cmd: &str) {
    run_ok(Command::new("bash").arg(workspace().join("scripts/kafka.sh")).arg(cmd));
}

fn our_broker() -> bool {
    if brokers() != "127.0.0.1:9092" {
        eprintln!("skipped: ADSTREAM_TEST_BROKERS points at a broker this test cannot stop");
        return false;
    }
    true
}

/// Waits for `/readyz` to answer 200; how long it took.
fn until_ready(url: &str, host: &Host, limit: Duration) -> Duration {
    let started = Instant::now();
    while http(&format!("{url}/readyz"), &[], None).0 != 200 {
        assert!(
            started.elapsed() < limit,
            "not ready {limit:?} after the broker came back: {:?}; log:\n{}",
            http(&format!("{url}/readyz"), &[], None),
            host.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    started.elapsed()
}

#[test]
fn a_broker_outage_of_30_seconds_loses_and_doubles_nothing() {
    if !our_broker() {
        return;
    }
    let _turn = BROKER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let prefix = fresh_prefix("outage");
    let inputs = generate(&prefix, dir.path(), "1M", "9", "0", "0.001");
    let mut host = Host::start(&prefix, &format!("{prefix}g"), &["ctr", "engagement"], dir.path(), &[]);
    // Let it get going (a first window emitted and committed), then take the broker away while it
    // still has most of the input to go.
    let first =
        read_topics(&[format!("{prefix}campaign-ctr-results")], Duration::from_secs(120), Duration::ZERO, |r| {
            !r.is_empty()
        });
    assert!(!first.is_empty(), "no result before the outage:\n{}", host.log());
    let url = host.http_url();
    let probe = |path: &str| http(&format!("{url}{path}"), &[], None);
    assert_eq!(probe("/readyz").0, 200, "ready before the outage");
    kafka("down");
    // The probes, every half second for 30 s.
    let mut seen = Vec::new();
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(30) {
        seen.push((probe("/readyz"), probe("/healthz").0));
        std::thread::sleep(Duration::from_millis(500));
    }
    let exited = host.child.try_wait().unwrap();
    assert!(exited.is_none(), "the host gave up during the outage ({exited:?}):\n{}", host.log());
    let not_ready: Vec<&String> = seen.iter().filter(|((code, _), _)| *code == 503).map(|((_, why), _)| why).collect();
    assert!(not_ready.len() >= 10, "/readyz should fail while the broker is away: {seen:?}");
    assert!(seen.iter().all(|(_, health)| *health == 200), "/healthz stays live through 30 s: {seen:?}");
    kafka("up");
    let took = until_ready(&url, &host, RECOVERY_BOUND);
    eprintln!("ready again {took:?} after the broker answered");
    let log = finish_and_check_exactly_once(host, &prefix, &inputs);
    assert!(
        log.contains("retries by itself") || log.contains("starting again"),
        "the host never noticed the outage:\n{log}"
    );
}

#[test]
fn a_host_started_while_the_broker_is_down_waits_for_it() {
    if !our_broker() {
        return;
    }
    let _turn = BROKER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let prefix = fresh_prefix("late-broker");
    let inputs = generate(&prefix, dir.path(), "40000", "10", "0", "0.002");
    kafka("down");
    let mut host = Host::start(&prefix, &format!("{prefix}g"), &["ctr", "engagement"], dir.path(), &[]);
    let url = host.http_url();
    let mut reasons = Vec::new();
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(20) {
        let (code, why) = http(&format!("{url}/readyz"), &[], None);
        assert_eq!(code, 503, "not ready without a broker: {why}");
        reasons.push(why);
        assert!(host.child.try_wait().unwrap().is_none(), "the host exited without a broker:\n{}", host.log());
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        reasons.iter().any(|r| r.contains("waiting for Kafka") && r.contains("127.0.0.1:9092")),
        "/readyz says why it waits: {reasons:?}"
    );
    kafka("up");
    let took = until_ready(&url, &host, RECOVERY_BOUND);
    eprintln!("consuming {took:?} after the broker answered");
    let log = finish_and_check_exactly_once(host, &prefix, &inputs);
    assert!(log.contains("cannot start"), "the host said it was waiting:\n{log}");
}
