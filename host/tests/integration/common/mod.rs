//! Shared helpers of the integration tests: the local broker, fresh topic names, running the
//! binaries, reading topics, and an independent batch computation of the expected results.

pub mod expected;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{Message, Offset, TopicPartitionList};

use expected::{Inputs, Late};

/// The broker the tests use: `ADSTREAM_TEST_BROKERS`, or the one `scripts/kafka.sh up` starts;
/// on a test thread that holds an [`OnBroker`], that test's own broker.
pub fn brokers() -> String {
    OWN_BROKER
        .with_borrow(Clone::clone)
        .unwrap_or_else(|| std::env::var("ADSTREAM_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned()))
}

thread_local! {
    static OWN_BROKER: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// While it lives, the helpers called on this thread ([`Host::start`], [`generate`],
/// [`read_topics`]...) use `bootstrap` instead of the shared broker: for a test that stops its
/// broker, which the tests running beside it must not notice. Each test runs on a thread of its
/// own, so no other test is affected.
pub struct OnBroker(());

pub fn on_broker(bootstrap: &str) -> OnBroker {
    OWN_BROKER.set(Some(bootstrap.to_owned()));
    OnBroker(())
}

impl Drop for OnBroker {
    fn drop(&mut self) {
        OWN_BROKER.set(None);
    }
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ has a parent").to_owned()
}

/// A built plugin, with a clear failure if `scripts/build-plugins.sh` was not run.
pub fn plugin(name: &str) -> PathBuf {
    let path = workspace().join("target/plugins").join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} is missing: run `bash scripts/build-plugins.sh` first", path.display());
    path
}

/// The compiled-plugin cache the tests share. Entries are named by the component's hash and the
/// engine's settings and written whole (a rename), so any number of hosts and tests can use it
/// at once; compiling a Python component takes ~11 CPU-seconds here, and each test compiling its
/// own cost CI about a minute and a half of CPU. Tests about the cache itself use their own.
pub fn plugin_cache() -> PathBuf {
    workspace().join("target/test-plugin-cache")
}

/// The SHA-256 of `bytes`, in hex: how the host names a plugin's file.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 (hex) of each built plugin's file, by name: what completeness records name.
pub fn plugin_hashes(names: &[&str]) -> std::collections::BTreeMap<String, String> {
    names
        .iter()
        .map(|&name| (name.to_owned(), sha256_hex(&std::fs::read(plugin(name)).expect("plugin file"))))
        .collect()
}

/// The generator binary, built by `cargo build --release -p adgen`.
pub fn adgen() -> PathBuf {
    let path = workspace().join("target/release/adgen");
    assert!(path.is_file(), "{} is missing: run `cargo build --release -p adgen` first", path.display());
    path
}

pub fn adstream() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_adstream"))
}

/// The test broker's SASL_SSL listener (`scripts/kafka.sh`) and its test credentials.
pub struct SaslSsl {
    pub brokers: String,
    /// The CA that signed the broker's certificate.
    pub ca: PathBuf,
    /// A CA that did not.
    pub other_ca: PathBuf,
    pub user: &'static str,
    pub password: &'static str,
    /// A user the broker's ACLs allow nothing.
    pub denied_user: &'static str,
    pub denied_password: &'static str,
}

impl SaslSsl {
    /// `adstream run` flags for SCRAM-SHA-512 over TLS (the password goes in the environment).
    pub fn flags(&self, ca: &Path) -> Vec<String> {
        [
            "--brokers",
            &self.brokers,
            "--security-protocol",
            "sasl_ssl",
            "--sasl-mechanism",
            "SCRAM-SHA-512",
            "--sasl-username",
            self.user,
            "--ssl-ca-location",
            &ca.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

/// Where the shared test broker lives (`KAFKA_HOME` of `scripts/kafka.sh`): its jars, data and
/// TLS material.
pub fn test_broker_home() -> PathBuf {
    std::env::var_os("KAFKA_HOME").map(PathBuf::from).unwrap_or_else(|| workspace().join(".kafka"))
}

/// The test broker's TLS material (`scripts/kafka.sh` makes it in `$KAFKA_HOME/tls`), checked
/// to hold `file`: a broker started by an older script lacks what newer listeners need.
fn test_broker_tls(file: &str, listener: &str) -> PathBuf {
    let tls = test_broker_home().join("tls");
    assert!(
        tls.join(file).is_file(),
        "{} is missing: the test broker was started without its {listener} listener; restart it with `bash scripts/kafka.sh down && bash scripts/kafka.sh up`",
        tls.join(file).display()
    );
    tls
}

pub fn sasl_ssl() -> SaslSsl {
    let tls = test_broker_tls("ca.pem", "SASL_SSL");
    SaslSsl {
        brokers: std::env::var("ADSTREAM_TEST_SASL_BROKERS").unwrap_or_else(|_| "127.0.0.1:9094".to_owned()),
        other_ca: tls.join("other-ca.pem"),
        ca: tls.join("ca.pem"),
        user: "adstream",
        password: "adstream-secret",
        denied_user: "nobody",
        denied_password: "nobody-secret",
    }
}

/// The test broker's mutual-TLS listener (`scripts/kafka.sh`): it asks every client for a
/// certificate signed by its CA. `client` is one; `other-client` is signed by another CA.
pub struct Mtls {
    pub brokers: String,
    pub tls: PathBuf,
}

impl Mtls {
    /// `adstream run` flags for this listener, with the certificate `name` (`client.pem` and
    /// `client-key.pem` for "client") or without one.
    pub fn flags(&self, certificate: Option<&str>) -> Vec<String> {
        let file = |name: String| self.tls.join(name).display().to_string();
        let mut flags = vec![
            "--brokers".to_owned(),
            self.brokers.clone(),
            "--security-protocol".to_owned(),
            "ssl".to_owned(),
            "--ssl-ca-location".to_owned(),
            file("ca.pem".to_owned()),
        ];
        if let Some(name) = certificate {
            flags.extend(["--ssl-certificate-location".to_owned(), file(format!("{name}.pem"))]);
            flags.extend(["--ssl-key-location".to_owned(), file(format!("{name}-key.pem"))]);
        }
        flags
    }
}

pub fn mtls() -> Mtls {
    Mtls {
        brokers: std::env::var("ADSTREAM_TEST_MTLS_BROKERS").unwrap_or_else(|_| "127.0.0.1:9095".to_owned()),
        tls: test_broker_tls("other-client-key.pem", "mutual-TLS"),
    }
}

/// A topic prefix no other test run uses, so tests never see each other's data.
pub fn fresh_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("t{}-{}-{}.", std::process::id(), nanos % 1_000_000_000, test)
}

/// Runs a command to completion and fails the test with its output if it fails.
pub fn run_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The idle timeout for hosts that consume while adgen writes live: well above the stalls a
/// loaded machine gives adgen. adgen writes 20 to 30 s of event time per second in these tests,
/// so a stall of one partition longer than the idle timeout makes its on-time events late by the
/// SPEC's idle rule, which the tests' expectations do not allow (seen with the default 3 s
/// while the test broker was fenced). Tests over input written beforehand keep the 3 s default.
pub const LIVE_IDLE: &[&str] = &["--idle-timeout", "10s"];

/// A running `adstream run`, stopped with SIGTERM (and its counters read) by [`Host::stop`],
/// killed if the test panics first.
pub struct Host {
    pub child: Child,
    pub stats_file: PathBuf,
    pub log: PathBuf,
}

impl Host {
    pub fn start(prefix: &str, group: &str, plugins: &[&str], dir: &Path, extra: &[&str]) -> Host {
        Self::start_with_env(prefix, group, plugins, dir, extra, &[])
    }

    pub fn start_with_env(
        prefix: &str,
        group: &str,
        plugins: &[&str],
        dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Host {
        let stats_file = dir.join(format!("{group}-stats.json"));
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = dir.join(format!("{group}-{n}.log"));
        let mut cmd = Command::new(adstream());
        cmd.arg("run")
            .args(if extra.contains(&"--brokers") { vec![] } else { vec!["--brokers".to_owned(), brokers()] })
            .args(["--topic-prefix", prefix, "--group-id", group])
            .args(if extra.contains(&"--idle-timeout") { &[][..] } else { &["--idle-timeout", "3s"][..] })
            .args(["--commit-interval", "500ms"])
            // Any free port: tests run hosts side by side. `Host::http_url` finds it in the log.
            .args(if extra.contains(&"--http-addr") { &[][..] } else { &["--http-addr", "127.0.0.1:0"][..] })
            .arg("--plugin-cache")
            .arg(plugin_cache())
            .arg("--stats-file")
            .arg(&stats_file)
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for p in plugins {
            cmd.arg("--plugin").arg(plugin(p));
        }
        let child = cmd.spawn().expect("starting adstream run");
        Host { child, stats_file, log }
    }

    /// SIGTERM, wait for a clean exit, return the final counters.
    pub fn stop(mut self) -> serde_json::Value {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "host did not stop within 60 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(status.success(), "host exited with {status}; log:\n{log}");
        let text =
            std::fs::read_to_string(&self.stats_file).unwrap_or_else(|e| panic!("no stats file ({e}); log:\n{log}"));
        serde_json::from_str(&text).expect("stats JSON")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The console's base URL (`http://127.0.0.1:PORT`), from the host's log line saying where
    /// it listens; waits up to 60 s for it.
    pub fn http_url(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = self.log();
            if let Some(url) = log.lines().find(|l| l.contains("/metrics")).and_then(|l| l.split("url=").nth(1)) {
                return url.split_whitespace().next().unwrap_or_default().trim_end_matches('/').to_owned();
            }
            assert!(Instant::now() < deadline, "the host never said where its console listens; log:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// `DELETE url`; its status.
pub fn http_delete(url: &str) -> u16 {
    agent().delete(url).call().map_or(0, |r| r.status().as_u16())
}

/// One HTTP call: (status, body). `body` is sent with a POST; without one it is a GET.
pub fn http(url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> (u16, String) {
    let agent = agent();
    let result = match body {
        Some(body) => {
            let mut req = agent.post(url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.send(body)
        }
        None => {
            let mut req = agent.get(url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.call()
        }
    };
    let mut response = result.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status().as_u16();
    let text =
        response.body_mut().with_config().limit(64 << 20).read_to_string().unwrap_or_else(|e| panic!("{url}: {e}"));
    (status, text)
}

/// `GET url` that must answer 200; its body as JSON.
pub fn get_json(url: &str) -> serde_json::Value {
    let (status, body) = http(url, &[], None);
    assert_eq!(status, 200, "{url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {body}"))
}

/// Polls the host's `/api/status` until `done` holds (fails after `timeout`); returns the
/// status that satisfied it.
pub fn await_status(
    base: &str,
    timeout: Duration,
    what: &str,
    mut done: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let status = get_json(&format!("{base}/api/status"));
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; last status: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The samples of a Prometheus text exposition: `name{labels}` → value.
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {l:?}"));
            (series.to_owned(), value.parse().unwrap_or_else(|e| panic!("{l:?}: {e}")))
        })
        .collect()
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One message read back from a topic.
#[derive(Clone, Debug)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: HashMap<String, String>,
}

impl Record {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.value).unwrap_or_else(|e| panic!("{}: not JSON ({e})", self.topic))
    }
}

/// Reads every committed message of `topics` from the beginning until `done` says enough (or
/// the timeout passes), then keeps reading for `settle` to catch any extra message.
pub fn read_topics(
    topics: &[String],
    timeout: Duration,
    settle: Duration,
    mut done: impl FnMut(&[Record]) -> bool,
) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", "adstream-tests-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        // The host creates its output topics at start-up: wait for them to exist.
        let wait_until = Instant::now() + Duration::from_secs(60);
        let partitions = loop {
            let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
            let ids: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
            if !ids.is_empty() {
                break ids;
            }
            assert!(Instant::now() < wait_until, "topic {topic} was never created");
            std::thread::sleep(Duration::from_millis(200));
        };
        for p in partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning).expect("tpl");
        }
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut settle_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if settle_until.is_some_and(|s| now >= s) || now >= deadline {
            break;
        }
        if settle_until.is_none() && done(&out) {
            settle_until = Some(now + settle);
        }
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                        .collect()
                })
                .unwrap_or_default();
            out.push(Record {
                topic: m.topic().to_owned(),
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().unwrap_or_default().to_vec(),
                headers,
            });
        }
    }
    out
}

/// Waits until both input topics under `prefix` exist as this client sees them: a topic just
/// created (by adgen, or `scripts/kafka.sh create-topic`) reaches the broker's metadata a moment
/// later, and a host started before that finds it missing.
pub fn await_topics(prefix: &str) {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers()).create().expect("consumer");
    let deadline = Instant::now() + Duration::from_secs(60);
    for topic in ["ad-impressions", "ad-clicks"] {
        let topic = format!("{prefix}{topic}");
        while consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .map_or(true, |m| m.topics()[0].partitions().is_empty())
        {
            assert!(Instant::now() < deadline, "{topic} never appeared");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Waits, for at most `timeout`, until the checkpoints of `group` cover every message now in the
/// input topics of `prefix`: each input partition's `next=` (one past the last offset the host
/// has handled) at the partition's end. A copy of an event late at once (its window already
/// published) is committed with the checkpoint that passes it, and one of an event late at its
/// task with its window's results: from then on, a `read_committed` reader that waits for every
/// window's results gets every late copy too, not only those committed when the results were
/// (the last run's stragglers can come a checkpoint or more after them). Panics with `context`
/// (a host's log) if they never do.
pub fn await_input_handled(prefix: &str, group: &str, timeout: Duration, context: impl Fn() -> String) {
    // The host's group id, to read its commits: this consumer never joins the group.
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", brokers()).set("group.id", group).create().expect("consumer");
    let mut ends = Vec::new();
    for topic in ["ad-impressions", "ad-clicks"].map(|t| format!("{prefix}{t}")) {
        let md = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10)).expect("metadata");
        for p in md.topics()[0].partitions() {
            let (_, high) = consumer.fetch_watermarks(&topic, p.id(), Duration::from_secs(10)).expect("watermarks");
            ends.push((topic.clone(), p.id(), high));
        }
    }
    assert!(!ends.is_empty(), "no input partitions under {prefix}");
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, _) in &ends {
        tpl.add_partition(topic, *partition);
    }
    let deadline = Instant::now() + timeout;
    loop {
        let committed = consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)).expect("committed offsets");
        let behind: Vec<String> = ends
            .iter()
            .filter_map(|(topic, partition, end)| {
                let elem = committed.find_partition(topic, *partition)?;
                let next = adstream::engine::checkpoint::Checkpoint::decode(elem.metadata()).map(|c| c.next);
                next.is_none_or(|n| n < *end).then(|| format!("{topic}/{partition}: next={next:?}, end {end}"))
            })
            .collect();
        if behind.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "the host's checkpoints never covered the input: {behind:?}\n{}", context());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Reads the completeness topic of `prefix` until its records match `want` of a run bounded by
/// `limit` (see [`expected::check_completeness`]; `plugins` by name, as loaded from [`plugin`]), for at most a
/// minute: late events reach a window's record with their task's next checkpoint. Panics with
/// the difference, and `context` (a host's log), if they never do.
pub fn await_completeness(
    prefix: &str,
    want: &std::collections::BTreeMap<i64, expected::Completeness>,
    limit: Option<i64>,
    plugins: &[&str],
    context: impl Fn() -> String,
) {
    // Hashed once: `check` runs on every message read.
    let hashes = plugin_hashes(plugins);
    let check = |r: &[Record]| {
        let values: Vec<serde_json::Value> = r.iter().map(Record::json).collect();
        expected::check_completeness(&values, want, limit, &hashes)
    };
    let topic = format!("{prefix}adstream-window-completeness");
    // Once they match, a while more: a later record must not spoil them.
    let records = read_topics(&[topic], Duration::from_secs(60), Duration::from_secs(2), |r| check(r).is_ok());
    if let Err(e) = check(&records) {
        panic!("{e}\n{}", context());
    }
}

/// Every message the host consumed is accounted for:
/// consumed = impressions + clicks (attributed, unattributed, pending) + late + dead-lettered +
/// duplicates + replayed.
pub fn assert_accounted(stats: &serde_json::Value) {
    let n = |k: &str| stats[k].as_u64().unwrap_or_else(|| panic!("stats has no {k}: {stats}"));
    let accounted = n("impressions")
        + n("clicks_attributed")
        + n("clicks_unattributed")
        + n("pending_clicks")
        + n("late")
        + n("dead_lettered")
        + n("duplicates")
        + n("replayed");
    assert_eq!(accounted, n("consumed"), "conservation: {stats}");
}

/// Writes `events` messages with `seed` to fresh topics named with `prefix` (3 partitions each),
/// with the given fractions of late and malformed messages, and the same bytes to
/// `dir/events/*.jsonl`; returns them as read back from those files.
pub fn generate(prefix: &str, dir: &Path, events: &str, seed: &str, late: &str, malformed: &str) -> Inputs {
    generate_with(prefix, dir, events, seed, late, malformed, &[])
}

/// Writes `events` messages with `seed`, and the given fractions of late and malformed ones, to
/// `dir/events/*.jsonl` (no Kafka); returns that directory.
pub fn generate_jsonl(dir: &Path, events: &str, seed: &str, late: &str, malformed: &str) -> PathBuf {
    let out = dir.join("events");
    run_ok(
        Command::new(adgen())
            .args(["--events", events, "--seed", seed, "--late-fraction", late, "--malformed-fraction", malformed])
            .args(["--quiet", "--jsonl"])
            .arg(&out),
    );
    out
}

/// As [`generate`], with more `adgen` flags (e.g. `--compression zstd`).
pub fn generate_with(
    prefix: &str,
    dir: &Path,
    events: &str,
    seed: &str,
    late: &str,
    malformed: &str,
    extra: &[&str],
) -> Inputs {
    run_ok(
        Command::new(adgen())
            .args(["--brokers", &brokers(), "--partitions", "3", "--events", events, "--seed", seed])
            .args(["--topic-prefix", prefix])
            .args(["--late-fraction", late, "--malformed-fraction", malformed, "--quiet"])
            .args(extra)
            .arg("--tee-jsonl")
            .arg(dir.join("events")),
    );
    Inputs::load(&dir.join("events"), Late::Designated)
}

/// Lets `host` finish a workload without late events, stops it, and checks what a
/// `read_committed` consumer sees: every ctr and engagement window once with the batch
/// computation's numbers, every dead letter once, nothing late, and the host's counters
/// balanced. Returns the host's log.
pub fn finish_and_check_exactly_once(host: Host, prefix: &str, inputs: &Inputs) -> String {
    let topics = ["campaign-ctr-results", "device-engagement-results", "ad-events-dlq", "ad-events-late"]
        .map(|t| format!("{prefix}{t}"));
    finish_and_check_exactly_once_in(host, &topics, inputs)
}

/// As [`finish_and_check_exactly_once`], with the output topics named: ctr, engagement,
/// dead letters, late.
pub fn finish_and_check_exactly_once_in(host: Host, topics: &[String; 4], inputs: &Inputs) -> String {
    read_and_check_exactly_once(topics, inputs, Duration::from_secs(240), || host.log());
    let log = host.log();
    let stats = host.stop();
    assert_accounted(&stats);
    log
}

/// Reads what a `read_committed` consumer sees of `topics` (ctr, engagement, dead letters,
/// late) until every expected window is there, and checks it: every ctr and engagement window
/// once with the batch computation's numbers, every dead letter once, nothing late. `context`
/// (a host's log) goes with a failure to find any result.
pub fn read_and_check_exactly_once(
    topics: &[String; 4],
    inputs: &Inputs,
    timeout: Duration,
    context: impl Fn() -> String,
) -> Vec<Record> {
    let limit = Some(inputs.emitted_by_idle_watermark());
    let (want_ctr, want_eng) = (inputs.ctr(limit), inputs.engagement(limit));
    let records = read_topics(topics, timeout, Duration::from_secs(5), |r| {
        r.len() >= want_ctr.len() + want_eng.len() + inputs.malformed
    });
    let of = |t: usize| records.iter().filter(|r| r.topic == topics[t]).collect::<Vec<_>>();
    let values = |t: usize| of(t).iter().map(|r| r.json()).collect::<Vec<_>>();
    assert!(!values(0).is_empty(), "no results:\n{}", context());
    expected::check_ctr(&values(0), &want_ctr);
    expected::check_engagement(&values(1), &want_eng);
    let sources: std::collections::HashSet<String> = of(2)
        .iter()
        .map(|r| {
            format!("{}/{}/{}", r.headers["source-topic"], r.headers["source-partition"], r.headers["source-offset"])
        })
        .collect();
    assert_eq!(of(2).len(), inputs.malformed, "every dead letter, once");
    assert_eq!(sources.len(), of(2).len(), "no source message dead-lettered twice");
    assert!(of(3).is_empty(), "nothing is late in this workload");
    records
}
