//! The broker goes away and comes back. Each test runs a broker of its own (`scripts/kafka.sh`
//! with its own `KAFKA_HOME` and free ports, sharing the jars), so that stopping it disturbs none
//! of the tests running beside it:
//!
//! - for 30 seconds in the middle of a run: the host waits, `/readyz` says it is not ready and
//!   `/healthz` that it is alive, and once the broker answers again the host is ready within the
//!   documented bound ([`RECOVERY_BOUND`]) and the committed results are exactly right;
//! - at start-up, for 20 seconds: the host does not exit, `/readyz` says it is waiting for
//!   Kafka, and once the broker is up it consumes and the results are exactly right.

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{
    Host, OnBroker, finish_and_check_exactly_once, fresh_prefix, generate, http, on_broker, read_topics, run_ok,
    workspace,
};

/// How soon after the broker answers again the host is consuming (README "Operating it"): a
/// transaction step gives up after 30 s, the next attempt starts within 5 s, and start-up takes
/// a few more. Usually it is a few seconds.
const RECOVERY_BOUND: Duration = Duration::from_secs(45);

/// A single-node broker of one test's own, stopped and its data deleted when dropped. The
/// helpers of the test's thread use it while `_on` lives.
struct OwnBroker {
    home: tempfile::TempDir,
    ports: [u16; 4],
    _on: OnBroker,
}

impl OwnBroker {
    fn start() -> OwnBroker {
        let ports = free_ports();
        let home = tempfile::tempdir().unwrap();
        let _on = on_broker(&format!("127.0.0.1:{}", ports[0]));
        let broker = OwnBroker { home, ports, _on };
        broker.kafka("up");
        broker
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.ports[0])
    }

    fn command(&self, cmd: &str) -> Command {
        let shared = crate::common::test_broker_home();
        let mut command = Command::new("bash");
        command
            .arg(workspace().join("scripts/kafka.sh"))
            .arg(cmd)
            .env("KAFKA_HOME", self.home.path())
            // The shared broker's jars.
            .env("KAFKA_LIB", shared.join("lib"))
            .env("KAFKA_PORT", self.ports[0].to_string())
            .env("KAFKA_CONTROLLER_PORT", self.ports[1].to_string())
            .env("KAFKA_SASL_SSL_PORT", self.ports[2].to_string())
            .env("KAFKA_SSL_PORT", self.ports[3].to_string())
            // It starts while the other tests keep the machine busy: more than the default 60 s.
            .env("KAFKA_START_TIMEOUT", "180");
        // And its certificates, when it has them all: making them takes a dozen JVMs (~10
        // CPU-seconds); this broker's `wipe` leaves them.
        if shared.join("tls/other-client-key.pem").is_file() {
            command.env("KAFKA_TLS", shared.join("tls"));
        }
        command
    }

    fn kafka(&self, cmd: &str) {
        run_ok(&mut self.command(cmd));
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.command("wipe").output();
    }
}

/// Four ports that are free now, for the broker to bind a few seconds later. They are taken
/// below the kernel's ephemeral range: a port from `bind(0)` is one the kernel hands out again,
/// as the source port of any connection the tests beside this one open in those seconds (a fresh
/// clone's CI failed that way: the broker could not bind). Below the range, only another process
/// that names the port itself can take it, and the start at a random point makes the other
/// outage test, the one such process here, pick different ones.
fn free_ports() -> [u16; 4] {
    let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let below = 10_000..ephemeral_from.saturating_sub(100);
    if below.len() < 1_000 {
        // A kernel set to hand out nearly every port: the race stays, the start fails loudly.
        let listeners: Vec<TcpListener> = (0..4).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        return [0, 1, 2, 3].map(|i| listeners[i].local_addr().unwrap().port());
    }
    let start = rand::random_range(below.clone());
    let mut free = below
        .clone()
        .cycle()
        .skip(usize::from(start - below.start))
        .take(below.len())
        .filter(|&port| TcpListener::bind(("127.0.0.1", port)).is_ok());
    [(); 4].map(|()| free.next().expect("four free ports below the ephemeral range"))
}

/// Waits for `/readyz` to answer 200; how long it took.
fn until_ready(url: &str, host: &Host, limit: Duration) -> Duration {
    let started = Instant::now();
    while http(&format!("{url}/readyz"), &[], None).0 != 200 {
        assert!(
            started.elapsed() < limit,
            "not ready within {limit:?}: {:?}; log:\n{}",
            http(&format!("{url}/readyz"), &[], None),
            host.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    started.elapsed()
}

#[test]
fn a_broker_outage_of_30_seconds_loses_and_doubles_nothing() {
    let broker = OwnBroker::start();
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
    // Ready before the outage (asked until it is: readiness also waits out a slow checkpoint).
    until_ready(&url, &host, Duration::from_secs(30));
    broker.kafka("down");
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
    broker.kafka("up");
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
    let broker = OwnBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let prefix = fresh_prefix("late-broker");
    let inputs = generate(&prefix, dir.path(), "40000", "10", "0", "0.002");
    broker.kafka("down");
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
        reasons.iter().any(|r| r.contains("waiting for Kafka") && r.contains(&broker.bootstrap())),
        "/readyz says why it waits: {reasons:?}"
    );
    broker.kafka("up");
    let took = until_ready(&url, &host, RECOVERY_BOUND);
    eprintln!("consuming {took:?} after the broker answered");
    let log = finish_and_check_exactly_once(host, &prefix, &inputs);
    assert!(log.contains("cannot start"), "the host said it was waiting:\n{log}");
}
