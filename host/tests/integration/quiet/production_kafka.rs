//! The host against Kafka as companies run it, on the real test broker (`scripts/kafka.sh`):
//!
//! - the whole pipeline through the SASL_SSL listener (SCRAM-SHA-512 over TLS, and OAUTHBEARER),
//!   with results equal to the batch computation, and no secret in the log or the console's API;
//! - a wrong password, an untrusted certificate and a missing permission each end the host within
//!   seconds, with a message that names the cause; so do a missing input topic, input topics
//!   with different partition counts, and output topics missing under `--no-create-topics`;
//! - input written with each of gzip, snappy, lz4 and zstd, read exactly;
//! - messages of 2 MiB and 6 MiB on input topics that accept them, dead-lettered whole (the host
//!   creates its output topics large enough) or truncated with the original's size and hash (an
//!   existing dead-letter topic that takes less), and a plugin record larger than its topic
//!   takes, withheld and reported: the host never stops, every message is accounted for, and a
//!   restart reads none of them again.
//!
//! They share the one broker; each test has topics of its own.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::expected::{self, Inputs, Late};
use crate::common::{
    Host, Record, adstream, brokers, finish_and_check_exactly_once, fresh_prefix, plugin, read_topics, sha256_hex,
};
use adstream::kafka::admin::Admin;
use adstream::kafka::{ClientSettings, Health};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

fn admin() -> Admin {
    Admin::new(&Arc::new(ClientSettings::plaintext(&brokers())), &Health::default()).expect("admin client")
}

#[test]
fn the_pipeline_runs_through_a_sasl_ssl_listener_and_keeps_its_secrets() {
    let sasl = crate::common::sasl_ssl();
    let dir = tempfile::tempdir().unwrap();
    let prefix = fresh_prefix("sasl");
    let inputs = crate::common::generate(&prefix, dir.path(), "60000", "21", "0", "0.002");
    let flags = sasl.flags(&sasl.ca);
    let extra: Vec<&str> = flags.iter().map(String::as_str).collect();
    let host = Host::start_with_env(
        &prefix,
        &format!("{prefix}g"),
        &["ctr", "engagement"],
        dir.path(),
        &extra,
        &[("ADSTREAM_SASL_PASSWORD", sasl.password)],
    );
    let status = crate::common::get_json(&format!("{}/api/status", host.http_url()));
    let log = finish_and_check_exactly_once(host, &prefix, &inputs);
    assert!(log.contains("over sasl_ssl, SASL SCRAM-SHA-512 as adstream"), "the log says how it connected:\n{log}");
    assert!(!log.contains(sasl.password), "the password is in the log:\n{log}");
    assert!(!status.to_string().contains(sasl.password), "the password is in /api/status: {status}");
}

/// Mutual TLS: the broker's SSL listener asks for a client certificate signed by its CA. Without
/// one, or with one signed by another CA, the host stops within seconds, saying which flags give
/// it (librdkafka reports the broker's refusal as a lost connection and retries it forever: the
/// host waited, saying the broker was down); with one the pipeline runs exactly-once, and the
/// log names the certificate it connected with. The same key encrypted: refused without its
/// password and with a wrong one, each named; read with it (`adstream tail`).
#[test]
fn the_pipeline_runs_through_a_mutual_tls_listener_and_stops_without_a_client_certificate() {
    let mtls = crate::common::mtls();
    let dir = tempfile::tempdir().unwrap();
    let prefix = fresh_prefix("mtls");
    let inputs = crate::common::generate(&prefix, dir.path(), "40000", "24", "0", "0.002");
    let group = ["--topic-prefix".to_owned(), prefix.clone(), "--group-id".to_owned(), format!("{prefix}g")];
    for (case, certificate) in [("no client certificate", None), ("a certificate of another CA", Some("other-client"))]
    {
        let (status, stderr, took) =
            run_until_exit(&[mtls.flags(certificate), group.to_vec()].concat(), &[], Duration::from_secs(30));
        assert_eq!(status.code(), Some(1), "{case}: exit status {status}; stderr:\n{stderr}");
        // 1.2-1.3 s here; 3 and 10 s while the host served one queued event per second as it
        // connected (the refusal waited behind the connection's log lines).
        assert!(took < Duration::from_secs(8), "{case}: stopped only after {took:?}:\n{stderr}");
        let last = final_error(&stderr);
        assert!(
            last.contains("refused the host's TLS client certificate") && last.contains("--ssl-certificate-location"),
            "{case}: the final message should say the certificate was refused and how to give one:\n{stderr}"
        );
        eprintln!("{case}: stopped in {took:?}: {}", last.lines().next().unwrap_or_default());
    }

    let flags = mtls.flags(Some("client"));
    let extra: Vec<&str> = flags.iter().map(String::as_str).collect();
    let host = Host::start(&prefix, &format!("{prefix}g"), &["ctr", "engagement"], dir.path(), &extra);
    let log = finish_and_check_exactly_once(host, &prefix, &inputs);
    let connected = format!("over ssl, client certificate {}", mtls.tls.join("client.pem").display());
    assert!(log.contains(&connected), "the log says how it connected ({connected}):\n{log}");

    // The same key encrypted (PKCS#8, AES-256), as key files often are: without its password, or
    // with a wrong one, the host says so; with it, `adstream tail` reads the results over the
    // same listener.
    let encrypted = dir.path().join("client-key-encrypted.pem");
    let password = dir.path().join("key-password");
    std::fs::write(&password, "adstream-key-secret\n").unwrap();
    let wrong = dir.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    crate::common::run_ok(
        Command::new("openssl")
            .args(["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-passout", "pass:adstream-key-secret", "-in"])
            .arg(mtls.tls.join("client-key.pem"))
            .arg("-out")
            .arg(&encrypted),
    );
    let with_key = |password_file: Option<&Path>| -> Vec<String> {
        let mut flags = flags.clone();
        let at = flags.iter().position(|f| f == "--ssl-key-location").unwrap() + 1;
        flags[at] = encrypted.display().to_string();
        if let Some(file) = password_file {
            flags.extend(["--ssl-key-password-file".to_owned(), file.display().to_string()]);
        }
        flags
    };
    for (case, password_file, says) in [
        ("no password", None, "the key is encrypted: give its password with --ssl-key-password-file"),
        ("a wrong password", Some(wrong.as_path()), "could not be decrypted with the password given"),
    ] {
        let (status, stderr, _) =
            run_until_exit(&[with_key(password_file), group.to_vec()].concat(), &[], Duration::from_secs(30));
        assert_eq!(status.code(), Some(1), "{case}: exit status {status}; stderr:\n{stderr}");
        let last = final_error(&stderr);
        assert!(last.contains("--ssl-key-location") && last.contains(says), "{case}: {says:?} expected:\n{stderr}");
        assert!(!stderr.contains("not-the-password"), "{case}: the password shows in the output:\n{stderr}");
    }
    let shown = dir.path().join("tail.out");
    let mut tail = Command::new(adstream());
    tail.args(["tail", "--topic", "campaign-ctr-results", "--from-beginning", "--max-windows", "1"])
        .args(["--topic-prefix", &prefix])
        .args(with_key(Some(&password)))
        .stdout(std::fs::File::create(&shown).unwrap());
    let (status, stderr, _) = until_exit(&mut tail, &[], Duration::from_secs(60));
    assert!(status.success(), "tail with the encrypted key: {status}\n{stderr}");
    let shown = std::fs::read_to_string(&shown).unwrap();
    let block = format!("── {prefix}campaign-ctr-results · ");
    assert!(shown.contains(&block) && shown.contains("campaign_id"), "tail showed no window of ctr:\n{shown}");
    // Every window is there at once when read from the beginning: --max-windows 1 shows one.
    assert_eq!(shown.matches("── ").count(), 1, "--max-windows 1:\n{shown}");
}

#[test]
fn oauthbearer_tokens_come_from_a_file_and_outputs_go_where_they_are_named() {
    let sasl = crate::common::sasl_ssl();
    let dir = tempfile::tempdir().unwrap();
    let prefix = fresh_prefix("oauth");
    let inputs = crate::common::generate(&prefix, dir.path(), "20000", "22", "0", "0");
    let token = dir.path().join("token");
    // Kafka's default OAUTHBEARER validator takes unsigned tokens: the test broker's is for tests.
    std::fs::write(&token, adstream::kafka::context::unsecured_token(sasl.user, 3600)).unwrap();
    let ca = sasl.ca.display().to_string();
    let token_path = token.display().to_string();
    // The outputs elsewhere than the input: under an output prefix, and ctr's under a name of its own.
    let (staging, ctr_topic) = (format!("{prefix}staging."), format!("{prefix}ctr-v2"));
    let ctr_override = format!("ctr={ctr_topic}");
    let extra = [
        "--brokers",
        &sasl.brokers,
        "--sasl-mechanism",
        "OAUTHBEARER",
        "--sasl-oauthbearer-token-file",
        &token_path,
        "--ssl-ca-location",
        &ca,
        "--output-topic-prefix",
        &staging,
        "--plugin-topic",
        &ctr_override,
    ];
    let host = Host::start(&prefix, &format!("{prefix}g"), &["ctr", "engagement"], dir.path(), &extra);
    let topics = [
        ctr_topic,
        format!("{staging}device-engagement-results"),
        format!("{staging}ad-events-dlq"),
        format!("{staging}ad-events-late"),
    ];
    let log = crate::common::finish_and_check_exactly_once_in(host, &topics, &inputs);
    assert!(log.contains("SASL OAUTHBEARER"), "{log}");
}

/// librdkafka's debug logs, as an operator turns them on to look into a cluster
/// (`--consumer-property debug=...`), come through the consumer's queue with the group's events:
/// the host serves them as they come, and a rebalance does not wait behind them. (It served one
/// log line a round, ten a second while idle: the assignment came 29 s after joining here.)
#[test]
fn librdkafka_debug_logs_do_not_hold_up_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = fresh_prefix("debuglogs");
    crate::common::generate(&prefix, dir.path(), "2000", "26", "0", "0");
    let debug = ["--consumer-property", "debug=cgrp,fetch,topic,broker"];
    let env = [("ADSTREAM_LOG", "info,librdkafka=debug")];
    let host = Host::start_with_env(&prefix, &format!("{prefix}g"), &["ctr"], dir.path(), &debug, &env);
    let started = Instant::now();
    while !host.log().contains("rebalance: consuming") {
        assert!(started.elapsed() < Duration::from_secs(15), "no assignment within 15 s:\n{}", host.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = started.elapsed();
    // And it reads: the first messages come some time after the assignment (on a loaded
    // machine, more than the moment a stop right after it would leave).
    let status = format!("{}/api/status", host.http_url());
    while crate::common::get_json(&status)["stats"]["consumed"].as_u64() == Some(0) {
        assert!(started.elapsed() < Duration::from_secs(30), "nothing consumed within 30 s:\n{}", host.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = host.log();
    assert!(log.contains("DEBUG librdkafka"), "librdkafka's debug lines reach the log:\n{log}");
    let stats = host.stop();
    assert!(stats["consumed"].as_u64().is_some_and(|n| n > 0), "{stats}");
    eprintln!("assigned {took:?} after the start, with librdkafka's debug logs on");
}

/// PLAIN and SCRAM-SHA-256 reach the listener too (SCRAM-SHA-512 and OAUTHBEARER run whole
/// pipelines above): the host connects, consumes, and stops cleanly.
#[test]
fn every_password_mechanism_authenticates() {
    let sasl = crate::common::sasl_ssl();
    let dir = tempfile::tempdir().unwrap();
    let prefix = fresh_prefix("mechanisms");
    crate::common::generate(&prefix, dir.path(), "2000", "25", "0", "0");
    for mechanism in ["PLAIN", "SCRAM-SHA-256"] {
        let flags: Vec<String> = sasl
            .flags(&sasl.ca)
            .into_iter()
            .map(|f| if f == "SCRAM-SHA-512" { mechanism.to_owned() } else { f })
            .collect();
        let extra: Vec<&str> = flags.iter().map(String::as_str).collect();
        let group = format!("{prefix}{mechanism}");
        let host = Host::start_with_env(
            &prefix,
            &group,
            &["ctr"],
            dir.path(),
            &extra,
            &[("ADSTREAM_SASL_PASSWORD", sasl.password)],
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while !host.log().contains("\"consuming\"") && !host.log().contains(" consuming ") {
            assert!(Instant::now() < deadline, "{mechanism}: never consuming:\n{}", host.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        let stats = host.stop();
        assert!(stats["consumed"].as_u64().is_some(), "{mechanism}: {stats}");
    }
}

/// Runs `adstream run` with `flags` until it exits (at most `limit`): its exit status, stderr
/// and how long it ran.
fn run_until_exit(
    flags: &[String],
    env: &[(&str, &str)],
    limit: Duration,
) -> (std::process::ExitStatus, String, Duration) {
    let mut run = Command::new(adstream());
    run.arg("run")
        .args(flags)
        .args(["--http-addr", "off", "--plugin"])
        .arg(plugin("ctr"))
        // The shared cache: a compile of ctr would otherwise count in the refusals' times.
        .arg("--plugin-cache")
        .arg(crate::common::plugin_cache())
        .stdout(Stdio::null());
    until_exit(&mut run, env, limit)
}

/// Runs `cmd` (an `adstream` command, without the secrets of this machine's environment: only
/// `env` and its flags give them) until it exits, at most `limit`: its exit status, stderr and
/// how long it ran.
fn until_exit(
    cmd: &mut Command,
    env: &[(&str, &str)],
    limit: Duration,
) -> (std::process::ExitStatus, String, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let stderr = dir.path().join("stderr");
    let started = Instant::now();
    let mut child = cmd
        .env_remove("ADSTREAM_SASL_PASSWORD")
        .env_remove("ADSTREAM_SSL_KEY_PASSWORD")
        .env_remove("ADSTREAM_SSL_KEY_PASSWORD_FILE")
        .envs(env.iter().copied())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("starting adstream");
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("adstream was still running after {limit:?}:\n{}", std::fs::read_to_string(&stderr).unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, std::fs::read_to_string(&stderr).unwrap(), started.elapsed())
}

/// What the host said last on `stderr`: its final `error: ...` message and what follows it.
fn final_error(stderr: &str) -> String {
    stderr.lines().skip_while(|l| !l.starts_with("error: ")).collect::<Vec<_>>().join("\n")
}

/// Creates the input topics under `prefix` with these partition counts.
fn create_inputs(prefix: &str, impressions: &str, clicks: &str) {
    for (topic, partitions) in [("ad-impressions", impressions), ("ad-clicks", clicks)] {
        crate::common::run_ok(Command::new("bash").arg(crate::common::workspace().join("scripts/kafka.sh")).args([
            "create-topic",
            &format!("{prefix}{topic}"),
            partitions,
        ]));
    }
    crate::common::await_topics(prefix);
}

/// Runs the host on the plaintext listener over the topics under `prefix` (and `extra` flags)
/// and returns its stderr, once it has stopped with status 1 within 15 s.
fn refused_within_seconds(prefix: &str, extra: &[&str]) -> String {
    let flags: Vec<String> =
        ["--brokers", &brokers(), "--topic-prefix", prefix].iter().chain(extra).map(|s| s.to_string()).collect();
    let (status, stderr, took) = run_until_exit(&flags, &[], Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "exit status {status}; stderr:\n{stderr}");
    assert!(took < Duration::from_secs(15), "{took:?}: {stderr}");
    stderr
}

#[test]
fn a_wrong_password_an_untrusted_certificate_and_a_missing_permission_stop_the_host_within_seconds() {
    let sasl = crate::common::sasl_ssl();
    let dir = tempfile::tempdir().unwrap();
    let prefix = fresh_prefix("refused");
    crate::common::generate(&prefix, dir.path(), "1000", "23", "0", "0");
    let topics = |mut flags: Vec<String>| {
        flags.extend(["--topic-prefix".to_owned(), prefix.clone(), "--group-id".to_owned(), format!("{prefix}g")]);
        flags
    };
    let wrong = "not-the-password-3141";
    let cases: [(&str, Vec<String>, &str, &str); 3] = [
        ("a wrong password", topics(sasl.flags(&sasl.ca)), wrong, "the broker refused the SASL credentials"),
        (
            "an untrusted certificate",
            topics(sasl.flags(&sasl.other_ca)),
            sasl.password,
            "TLS certificate is not trusted",
        ),
        (
            "a user without permissions",
            topics(sasl.flags(&sasl.ca))
                .into_iter()
                .map(|f| if f == sasl.user { sasl.denied_user.to_owned() } else { f })
                .collect(),
            sasl.denied_password,
            "is not allowed to use",
        ),
    ];
    for (case, flags, password, says) in cases {
        let (status, stderr, took) =
            run_until_exit(&flags, &[("ADSTREAM_SASL_PASSWORD", password)], Duration::from_secs(30));
        assert_eq!(status.code(), Some(1), "{case}: exit status {status}; stderr:\n{stderr}");
        assert!(took < Duration::from_secs(15), "{case}: stopped only after {took:?}:\n{stderr}");
        let last = final_error(&stderr);
        assert!(last.contains(says), "{case}: the final message should say {says:?}:\n{stderr}");
        assert!(!stderr.contains(password), "{case}: the password is on stderr:\n{stderr}");
        eprintln!("{case}: stopped in {took:?}: {}", last.lines().next().unwrap_or_default());
    }
    // A missing input topic, on the plaintext listener: what to do, with this project's broker too.
    let stderr = refused_within_seconds(&format!("{prefix}absent."), &[]);
    assert!(
        stderr.contains(&format!("input topic {prefix}absent.ad-impressions does not exist"))
            && stderr.contains("scripts/kafka.sh create-topic"),
        "{stderr}"
    );
    // Input topics that are not co-partitioned (3 and 2 partitions): refused, saying what to fix.
    let uneven = format!("{prefix}uneven.");
    create_inputs(&uneven, "3", "2");
    let stderr = refused_within_seconds(&uneven, &[]);
    assert!(
        stderr.contains(&format!("input topic {uneven}ad-impressions has 3 partitions and {uneven}ad-clicks has 2"))
            && stderr.contains(&format!("scripts/kafka.sh add-partitions {uneven}ad-clicks 3")),
        "{stderr}"
    );
    // Output topics missing under --no-create-topics: refused, naming them (the host finds them
    // missing from its one look at every topic's limits).
    let bare = format!("{prefix}bare.");
    create_inputs(&bare, "2", "2");
    let stderr = refused_within_seconds(&bare, &["--no-create-topics"]);
    assert!(
        stderr.contains("do not exist and --no-create-topics is set")
            && stderr.contains(&format!("{bare}campaign-ctr-results"))
            && !stderr.contains(&format!("{bare}ad-clicks\"")),
        "{stderr}"
    );
}

/// Grants `nobody` what `operations` say on the test broker (through its PLAINTEXT listener).
fn grant(args: &[&str]) {
    crate::common::run_ok(
        Command::new("bash")
            .arg(crate::common::workspace().join("scripts/kafka.sh"))
            .args(["tool", "kafka.admin.AclCommand", "--bootstrap-server", &brokers(), "--add"])
            .args(["--allow-principal", "User:nobody"])
            .args(args),
    );
}

/// A principal that may read the input but not write one output topic: the broker refuses the
/// first window's records, and the host stops saying what to grant instead of starting again
/// from its checkpoint forever.
#[test]
fn a_missing_write_permission_on_an_output_topic_stops_the_host() {
    let sasl = crate::common::sasl_ssl();
    let dir = tempfile::tempdir().unwrap();
    let prefix = fresh_prefix("no-write");
    crate::common::generate(&prefix, dir.path(), "5000", "26", "0", "0");
    let t = |name: &str| format!("{prefix}{name}");
    let outputs = [
        t("ad-events-late"),
        t("ad-events-dlq"),
        t("adstream-plugin-errors"),
        t("adstream-window-completeness"),
        t("campaign-ctr-results"),
    ];
    admin().create(&outputs, 3, 1_048_588).unwrap();
    let group = t("g");
    let partials = format!("{group}-partials");
    admin().create(std::slice::from_ref(&partials), 1, 8 << 20).unwrap();
    let txn = format!("{group}.h1");
    grant(&["--operation", "Read", "--operation", "Write", "--operation", "Describe", "--topic", &partials]);
    grant(&[
        "--operation",
        "Read",
        "--operation",
        "Describe",
        "--topic",
        &t("ad-impressions"),
        "--topic",
        &t("ad-clicks"),
        "--group",
        &group,
    ]);
    let mut describe = vec!["--operation", "Describe"];
    for o in &outputs {
        describe.extend(["--topic", o.as_str()]);
    }
    grant(&describe);
    grant(&["--operation", "Write", "--operation", "Describe", "--transactional-id", &txn]);
    let flags: Vec<String> = sasl
        .flags(&sasl.ca)
        .into_iter()
        .map(|f| if f == sasl.user { sasl.denied_user.to_owned() } else { f })
        .chain(["--topic-prefix".to_owned(), prefix.clone(), "--group-id".to_owned(), group.clone()])
        .chain(["--host-id".to_owned(), "h1".to_owned()])
        .collect();
    let (status, stderr, took) =
        run_until_exit(&flags, &[("ADSTREAM_SASL_PASSWORD", sasl.denied_password)], Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "exit status {status}; stderr:\n{stderr}");
    assert!(took < Duration::from_secs(30), "stopped only after {took:?}:\n{stderr}");
    let last = final_error(&stderr);
    assert!(last.contains("is not allowed to use a topic"), "{stderr}");
    assert!(!stderr.contains("starting again"), "a refused permission is not retried:\n{stderr}");
    eprintln!("no write permission: stopped in {took:?}: {}", last.lines().next().unwrap_or_default());
}

#[test]
fn input_in_every_compression_codec_is_read_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let runs: Vec<(String, Inputs, Host)> = ["gzip", "snappy", "lz4", "zstd"]
        .iter()
        .enumerate()
        .map(|(i, codec)| {
            let prefix = fresh_prefix(&format!("codec-{codec}"));
            let sub = dir.path().join(codec);
            std::fs::create_dir_all(&sub).unwrap();
            let seed = (30 + i).to_string();
            let inputs =
                crate::common::generate_with(&prefix, &sub, "25000", &seed, "0", "0.002", &["--compression", codec]);
            let host = Host::start(&prefix, &format!("{prefix}g"), &["ctr", "engagement"], &sub, &[]);
            (prefix, inputs, host)
        })
        .collect();
    for (prefix, inputs, host) in runs {
        let log = finish_and_check_exactly_once(host, &prefix, &inputs);
        assert!(!log.contains("Decompression"), "{prefix}: {log}");
    }
}

/// A JSON impression padded to `bytes` with text that does not compress, so that the broker and
/// the host see its real size.
fn padded_impression(bytes: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut pad = String::with_capacity(bytes);
    while pad.len() < bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        pad.push(char::from(b'a' + (x % 26) as u8));
    }
    format!(
        r#"{{"impression_id":"big-{seed}","user_id":"u1","campaign_id":"c1","ad_id":"a1","device_type":"mobile","browser":"b","event_timestamp":"2026-11-29T10:00:00.000Z","cost":0.1,"padding":"{pad}"}}"#
    )
    .into_bytes()
}

/// What the oversized-message test produces by itself, before the generator's events.
struct Oversized {
    /// The 2 MiB and 6 MiB messages, by partition.
    messages: Vec<(i32, Vec<u8>)>,
}

fn produce_oversized(prefix: &str, events: &Path) -> Oversized {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("message.max.bytes", "10000000")
        .set("compression.type", "lz4")
        .create()
        .unwrap();
    let topic = format!("{prefix}ad-impressions");
    // An impression of a campaign the misbehave plugin answers with a record larger than any
    // topic takes; first in its partition, at the start of the generated event time, so on time.
    let evil = br#"{"impression_id":"evil-1","user_id":"u-evil","campaign_id":"evil-huge","ad_id":"a1","device_type":"mobile","browser":"b","event_timestamp":"2026-11-29T10:00:00.000Z","cost":0.5}"#;
    producer.send(BaseRecord::to(&topic).partition(0).key("evil-1").payload(&evil[..])).unwrap();
    let messages = vec![(1, padded_impression(2 << 20, 1)), (2, padded_impression(6 << 20, 2))];
    for (partition, m) in &messages {
        producer.send(BaseRecord::to(&topic).partition(*partition).key("big").payload(m)).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    // The batch computation reads the same valid input: the evil impression first.
    let path = events.join("ad-impressions.jsonl");
    std::fs::create_dir_all(events).unwrap();
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(evil).unwrap();
    file.write_all(b"\n").unwrap();
    Oversized { messages }
}

fn by_topic<'a>(records: &'a [Record], topic: &str) -> Vec<&'a Record> {
    records.iter().filter(|r| r.topic == topic).collect()
}

/// Input topics that take 8 MiB messages, the test's own oversized and evil messages, then the
/// generator's events; returns the inputs as the batch computation reads them.
fn oversized_input(prefix: &str, dir: &Path) -> (Inputs, Oversized) {
    let topics = [format!("{prefix}ad-impressions"), format!("{prefix}ad-clicks")];
    admin().create(&topics, 3, 8 << 20).unwrap();
    let oversized = produce_oversized(prefix, &dir.join("own"));
    crate::common::generate(prefix, dir, "20000", "24", "0", "0.002");
    // The generator's tee file, after the test's own evil impression.
    let own = std::fs::read(dir.join("own/ad-impressions.jsonl")).unwrap();
    let generated = std::fs::read(dir.join("events/ad-impressions.jsonl")).unwrap();
    std::fs::write(dir.join("events/ad-impressions.jsonl"), [own, generated].concat()).unwrap();
    (Inputs::load(&dir.join("events"), Late::Designated), oversized)
}

/// Runs a host over `prefix` with ctr, engagement and misbehave until every expected result, dead
/// letter and plugin-error record is in; checks the results and returns the records and stats.
fn run_over_oversized(prefix: &str, dir: &Path, inputs: &Inputs) -> (Vec<Record>, serde_json::Value, String) {
    let group = format!("{prefix}g");
    let misbehave = crate::common::workspace().join("target/test-plugins/misbehave.wasm");
    let misbehave = misbehave.display().to_string();
    let mut host = Host::start(prefix, &group, &["ctr", "engagement"], dir, &["--plugin", &misbehave]);
    let limit = Some(inputs.emitted_by_idle_watermark());
    let (want_ctr, want_eng) = (inputs.ctr(limit), inputs.engagement(limit));
    let names = [
        "campaign-ctr-results",
        "device-engagement-results",
        "ad-events-dlq",
        "adstream-plugin-errors",
        "misbehave-results",
    ];
    let topics: Vec<String> = names.iter().map(|t| format!("{prefix}{t}")).collect();
    let records = read_topics(&topics, Duration::from_secs(180), Duration::from_secs(4), |r| {
        let n = |t: usize| r.iter().filter(|m| m.topic == topics[t]).count();
        n(0) >= want_ctr.len() && n(1) >= want_eng.len() && n(2) >= inputs.malformed + 2 && n(3) >= 1
    });
    let log = host.log();
    assert!(host.child.try_wait().unwrap().is_none(), "the host stopped by itself:\n{log}");
    let stats = host.stop();
    let values = |t: usize| by_topic(&records, &topics[t]).iter().map(|r| r.json()).collect::<Vec<_>>();
    expected::check_ctr(&values(0), &want_ctr);
    expected::check_engagement(&values(1), &want_eng);
    crate::common::assert_accounted(&stats);
    (records, stats, log)
}

#[test]
fn oversized_messages_and_records_never_stop_the_host_and_are_all_accounted_for() {
    // 1. The host creates its output topics: they take what the inputs take, so the copies are whole.
    let dir = tempfile::tempdir().unwrap();
    let prefix = fresh_prefix("big");
    let (inputs, oversized) = oversized_input(&prefix, dir.path());
    let (records, stats, log) = run_over_oversized(&prefix, dir.path(), &inputs);
    let dlq = by_topic(&records, &format!("{prefix}ad-events-dlq"));
    assert_eq!(dlq.len(), inputs.malformed + 2, "every invalid message dead-lettered once");
    for (partition, original) in &oversized.messages {
        let copy = dlq
            .iter()
            .find(|r| r.headers["source-partition"] == partition.to_string() && r.value.len() > 1 << 20)
            .unwrap_or_else(|| panic!("no dead letter of the {} B message; log:\n{log}", original.len()));
        assert_eq!(copy.value, *original, "copied whole");
        assert_eq!(copy.headers["reason"], "too-long");
        assert!(!copy.headers.contains_key("truncated"));
    }
    assert_eq!(stats["dead_lettered"].as_u64(), Some(inputs.malformed as u64 + 2), "{stats}");
    assert_eq!(stats["truncated"].as_u64(), Some(0), "{stats}");
    check_withheld_record(&records, &prefix, &stats);

    // A restart starts from the committed offsets, past the oversized messages: once it has read
    // every input partition to its end, nothing new has been routed.
    let group = format!("{prefix}g");
    let again = Host::start(&prefix, &group, &["ctr", "engagement"], dir.path(), &[]);
    crate::common::await_status(&again.http_url(), Duration::from_secs(60), "the restart reads to the end", |s| {
        let inputs = s["partitions"].as_array().into_iter().flatten().filter(|p| {
            let topic = p["topic"].as_str().unwrap_or_default();
            topic.ends_with("ad-impressions") || topic.ends_with("ad-clicks")
        });
        let caught_up: Vec<bool> = inputs.map(|p| p["lag"].as_i64() == Some(0)).collect();
        caught_up.len() == 6 && caught_up.iter().all(|&c| c)
    });
    let stats = again.stop();
    assert_eq!(stats["dead_lettered"].as_u64(), Some(0), "a restart dead-letters nothing again: {stats}");
    crate::common::assert_accounted(&stats);
    let dlq_after =
        read_topics(&[format!("{prefix}ad-events-dlq")], Duration::from_secs(30), Duration::from_secs(3), |r| {
            r.len() >= inputs.malformed + 2
        });
    assert_eq!(dlq_after.len(), inputs.malformed + 2, "no message dead-lettered twice");

    // 2. A dead-letter topic that already exists with Kafka's default limit (1 MiB): truncated
    // copies, with the original's size and hash.
    let dir = tempfile::tempdir().unwrap();
    let prefix = fresh_prefix("big-truncated");
    admin().create(&[format!("{prefix}ad-events-dlq")], 3, 1_048_588).unwrap();
    let (inputs, oversized) = oversized_input(&prefix, dir.path());
    let (records, stats, log) = run_over_oversized(&prefix, dir.path(), &inputs);
    assert!(log.contains("copies of larger messages will be truncated"), "the host warns at start-up:\n{log}");
    let dlq = by_topic(&records, &format!("{prefix}ad-events-dlq"));
    assert_eq!(dlq.len(), inputs.malformed + 2, "every invalid message dead-lettered once");
    for (partition, original) in &oversized.messages {
        let copy = dlq
            .iter()
            .find(|r| r.headers["source-partition"] == partition.to_string() && r.headers.contains_key("truncated"))
            .unwrap_or_else(|| panic!("no truncated copy of the {} B message", original.len()));
        let h: &HashMap<String, String> = &copy.headers;
        assert_eq!(h["truncated"], "true");
        assert_eq!(h["original-size"], original.len().to_string());
        assert_eq!(h["original-sha256"], sha256_hex(original));
        assert_eq!(h["reason"], "too-long");
        assert_eq!(h["source-topic"], format!("{prefix}ad-impressions"));
        assert!(h["source-offset"].parse::<i64>().is_ok());
        assert!(!copy.value.is_empty() && original.starts_with(&copy.value), "a prefix of the original");
        assert!(copy.value.len() < 1_048_588, "fits the topic: {} B", copy.value.len());
    }
    assert_eq!(stats["truncated"].as_u64(), Some(2), "{stats}");
    check_withheld_record(&records, &prefix, &stats);
}

/// The misbehave plugin's record for `evil-huge` is larger than any topic takes: it is withheld,
/// reported on the plugin-errors topic, and the plugin's other records of that window published.
fn check_withheld_record(records: &[Record], prefix: &str, stats: &serde_json::Value) {
    assert_eq!(stats["records_withheld"].as_u64(), Some(1), "{stats}");
    let errors = by_topic(records, &format!("{prefix}adstream-plugin-errors"));
    assert_eq!(errors.len(), 1, "one plugin-error record");
    let e = errors[0].json();
    assert_eq!(e["plugin"], "misbehave");
    assert_eq!(e["key"], "evil-huge");
    assert_eq!(e["window_start"], "2026-11-29T10:00:00.000Z");
    assert!(e["bytes"].as_u64().unwrap() > e["limit"].as_u64().unwrap(), "{e}");
    assert!(e["reason"].as_str().unwrap().contains("max.message.bytes"), "{e}");
    let first_window: Vec<serde_json::Value> = by_topic(records, &format!("{prefix}misbehave-results"))
        .iter()
        .map(|r| r.json())
        .filter(|v| v["window_start"] == "2026-11-29T10:00:00.000Z")
        .collect();
    assert!(first_window.len() > 1, "the window's other records are published: {first_window:?}");
    assert!(first_window.iter().all(|v| v["campaign_id"] != "evil-huge"));
}
