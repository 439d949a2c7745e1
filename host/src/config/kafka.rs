//! `[kafka]`: the cluster and how to reach it (TLS, SASL, librdkafka properties), the topics,
//! and the delivery guarantee.
//!
//! In the config file the pass-through properties are tables of their own, one property per
//! key, e.g. `[kafka.consumer-properties]` then `"fetch.max.bytes" = 10485760`; every other
//! setting is a key of `[kafka]` named as its flag.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use serde::{Deserialize, Deserializer};

use super::duration;
use crate::kafka::settings::{
    ClientSettings, Property, Sasl, SaslMechanism, Secret, SecurityProtocol, Tls, parse_property,
};
use crate::sink::topics::{OutputTopics, PluginTopic};

/// Default of `--brokers`.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";
/// Default of `--commit-interval`.
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// How long a silent member stays in the group (librdkafka's default is 45 s): with the
/// transaction timeout, it bounds how long a crashed host's tasks produce no output.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Default of `--threads`: half the cores, at least one. Each pipeline thread comes with its own
/// consumer and producer, whose librdkafka threads (fetching, decompressing, handing messages
/// over, compressing, sending) take about as much CPU again as the pipeline thread
/// (BENCHMARKS.md: ~1.4 µs per message in librdkafka, ~1.2 µs in the pipeline).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// The most `--threads` a host runs: each is a group member with two Kafka clients.
pub const MAX_THREADS: usize = 64;

/// The machine's hostname (`HOSTNAME`, then `/etc/hostname`), else `host`.
fn default_host_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned())
}

const CONNECTION: &str = "Kafka connection and security";
const TOPICS: &str = "Topics";
const DELIVERY: &str = "Consumer group and delivery";

/// A pass-through flag's value, `KEY=VALUE`.
type KeyValue = (String, String);

/// Where to read and write Kafka, how to authenticate, and the delivery guarantee.
#[derive(Clone, Debug, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, comma-separated host:port [default: 127.0.0.1:9092]
    #[arg(long, env = "ADSTREAM_BROKERS", help_heading = CONNECTION)]
    pub brokers: Option<String>,
    /// How to talk to the brokers: plaintext, ssl (TLS), sasl_plaintext, sasl_ssl (SASL over TLS,
    /// what managed clusters require) [default: sasl_ssl with --sasl-mechanism, ssl with
    /// --ssl-ca-location or a client certificate, else plaintext]
    #[arg(long, env = "ADSTREAM_SECURITY_PROTOCOL", value_enum, hide_possible_values = true, help_heading = CONNECTION)]
    pub security_protocol: Option<SecurityProtocol>,
    /// TLS: the CA certificate(s), PEM, that signed the brokers' certificates [default: the
    /// system's trust store]
    #[arg(long, env = "ADSTREAM_SSL_CA_LOCATION", value_name = "PEM", help_heading = CONNECTION)]
    pub ssl_ca_location: Option<PathBuf>,
    /// TLS client authentication (mTLS): this client's certificate, PEM
    #[arg(long, env = "ADSTREAM_SSL_CERTIFICATE_LOCATION", value_name = "PEM", help_heading = CONNECTION)]
    pub ssl_certificate_location: Option<PathBuf>,
    /// TLS client authentication: this client's private key, PEM
    #[arg(long, env = "ADSTREAM_SSL_KEY_LOCATION", value_name = "PEM", help_heading = CONNECTION)]
    pub ssl_key_location: Option<PathBuf>,
    /// The private key's password, if it is encrypted (prefer the variable or the -file flag:
    /// a flag is visible to other users in `ps`)
    #[arg(long, env = "ADSTREAM_SSL_KEY_PASSWORD", hide_env_values = true, help_heading = CONNECTION)]
    pub ssl_key_password: Option<String>,
    /// A file holding the private key's password
    #[arg(long, env = "ADSTREAM_SSL_KEY_PASSWORD_FILE", help_heading = CONNECTION)]
    pub ssl_key_password_file: Option<PathBuf>,
    /// `https`: check that each broker's certificate names the host connected to; `none`: do
    /// not (for test clusters only) [default: https]
    #[arg(long, env = "ADSTREAM_SSL_ENDPOINT_IDENTIFICATION", value_parser = ["https", "none"], help_heading = CONNECTION)]
    pub ssl_endpoint_identification: Option<String>,
    /// SASL authentication: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (with --sasl-username and a
    /// password), or OAUTHBEARER (with --sasl-oauthbearer-token-file)
    #[arg(long, env = "ADSTREAM_SASL_MECHANISM", value_enum, hide_possible_values = true, help_heading = CONNECTION)]
    pub sasl_mechanism: Option<SaslMechanism>,
    /// SASL user name
    #[arg(long, env = "ADSTREAM_SASL_USERNAME", help_heading = CONNECTION)]
    pub sasl_username: Option<String>,
    /// SASL password (prefer the variable ADSTREAM_SASL_PASSWORD or --sasl-password-file: a flag
    /// is visible to other users in `ps`)
    #[arg(long, env = "ADSTREAM_SASL_PASSWORD", hide_env_values = true, help_heading = CONNECTION)]
    pub sasl_password: Option<String>,
    /// A file holding the SASL password (a trailing newline is ignored), e.g. a mounted secret
    #[arg(long, env = "ADSTREAM_SASL_PASSWORD_FILE", help_heading = CONNECTION)]
    pub sasl_password_file: Option<PathBuf>,
    /// OAUTHBEARER: a file holding the current token (a JWT); it is read again before each token
    /// expires, so whatever renews the file renews the host's credentials
    #[arg(long, env = "ADSTREAM_SASL_OAUTHBEARER_TOKEN_FILE", help_heading = CONNECTION)]
    pub sasl_oauthbearer_token_file: Option<PathBuf>,
    /// Any librdkafka property, for every client (consumer, producer, admin): KEY=VALUE, e.g.
    /// client.id=adstream-eu-1 or socket.keepalive.enable=true. Repeat for several; checked by
    /// librdkafka at start-up. See
    /// https://github.com/confluentinc/librdkafka/blob/master/CONFIGURATION.md
    #[arg(long = "kafka-property", env = "ADSTREAM_KAFKA_PROPERTIES", value_delimiter = ';', value_parser = parse_property, value_name = "KEY=VALUE", help_heading = CONNECTION)]
    #[serde(default, rename = "properties", deserialize_with = "properties_table")]
    pub kafka_properties: Vec<KeyValue>,
    /// A librdkafka property for the consumer alone (e.g. fetch.max.bytes=10485760)
    #[arg(long = "consumer-property", env = "ADSTREAM_CONSUMER_PROPERTIES", value_delimiter = ';', value_parser = parse_property, value_name = "KEY=VALUE", help_heading = CONNECTION)]
    #[serde(default, rename = "consumer-properties", deserialize_with = "properties_table")]
    pub consumer_properties: Vec<KeyValue>,
    /// A librdkafka property for the producer alone (e.g. linger.ms=5)
    #[arg(long = "producer-property", env = "ADSTREAM_PRODUCER_PROPERTIES", value_delimiter = ';', value_parser = parse_property, value_name = "KEY=VALUE", help_heading = CONNECTION)]
    #[serde(default, rename = "producer-properties", deserialize_with = "properties_table")]
    pub producer_properties: Vec<KeyValue>,
    /// A librdkafka property for the admin client alone (it creates topics and reads their limits)
    #[arg(long = "admin-property", env = "ADSTREAM_ADMIN_PROPERTIES", value_delimiter = ';', value_parser = parse_property, value_name = "KEY=VALUE", help_heading = CONNECTION)]
    #[serde(default, rename = "admin-properties", deserialize_with = "properties_table")]
    pub admin_properties: Vec<KeyValue>,

    /// Topic of ad impressions [default: ad-impressions]
    #[arg(long, env = "ADSTREAM_IMPRESSIONS_TOPIC", help_heading = TOPICS)]
    pub impressions_topic: Option<String>,
    /// Topic of ad clicks [default: ad-clicks]
    #[arg(long, env = "ADSTREAM_CLICKS_TOPIC", help_heading = TOPICS)]
    pub clicks_topic: Option<String>,
    /// Where late events go, with headers saying why [default: ad-events-late]
    #[arg(long, env = "ADSTREAM_LATE_TOPIC", help_heading = TOPICS)]
    pub late_topic: Option<String>,
    /// Where invalid messages go, unchanged, with the reason in headers [default: ad-events-dlq]
    #[arg(long, env = "ADSTREAM_DLQ_TOPIC", help_heading = TOPICS)]
    pub dlq_topic: Option<String>,
    /// Where a record goes in place of a plugin's window result that is withheld (the plugin
    /// failed while holding that window, or returned a record its topic cannot take)
    /// [default: adstream-plugin-errors]
    #[arg(long, env = "ADSTREAM_PLUGIN_ERRORS_TOPIC", help_heading = TOPICS)]
    pub plugin_errors_topic: Option<String>,
    /// Where each published window's completeness record goes (what its numbers rest on: events
    /// counted, late events so far, duplicates, unattributed clicks, plugins, tasks), keyed by the
    /// window's start; created compacted, and updated when late events come after publication
    /// [default: adstream-window-completeness]
    #[arg(long, env = "ADSTREAM_COMPLETENESS_TOPIC", help_heading = TOPICS)]
    pub completeness_topic: Option<String>,
    /// Prefix added to every topic name, input and output (e.g. `test-42.`), so that several
    /// pipelines can share a cluster [default: none]
    #[arg(long, env = "ADSTREAM_TOPIC_PREFIX", help_heading = TOPICS)]
    pub topic_prefix: Option<String>,
    /// Prefix added to the output topics instead of --topic-prefix (the late, dead-letter and
    /// plugin-error topics, and the plugins' own): e.g. a second host reading the production
    /// input and writing to `staging.*` [default: --topic-prefix]
    #[arg(long, env = "ADSTREAM_OUTPUT_TOPIC_PREFIX", help_heading = TOPICS)]
    pub output_topic_prefix: Option<String>,
    /// Send a plugin's records to a topic named as is (no prefix): `PLUGIN=TOPIC`, or
    /// `PLUGIN:DECLARED=TOPIC` for a plugin with several output topics. Repeat for several
    #[arg(long = "plugin-topic", env = "ADSTREAM_PLUGIN_TOPICS", value_delimiter = ';', value_parser = PluginTopic::parse, help_heading = TOPICS)]
    #[serde(default, rename = "plugin-topic")]
    pub plugin_topics: Vec<PluginTopic>,
    /// Do not create missing output topics at start-up (by default they are created with as
    /// many partitions as the impressions topic, able to hold the largest input message)
    #[arg(long, env = "ADSTREAM_NO_CREATE_TOPICS", help_heading = TOPICS)]
    #[serde(default)]
    pub no_create_topics: bool,

    /// Consumer group id; committed input offsets and checkpoints live under it [default: adstream]
    #[arg(long, env = "ADSTREAM_GROUP_ID", help_heading = DELIVERY)]
    pub group_id: Option<String>,
    /// `exactly-once`: output and input offsets are committed together in Kafka transactions, so
    /// a `read_committed` consumer sees every window's result exactly once, across crashes.
    /// `at-least-once`: no transactions; after a crash a window's result may appear twice
    /// [default: exactly-once]
    #[arg(long, env = "ADSTREAM_DELIVERY", value_parser = ["exactly-once", "at-least-once"], help_heading = DELIVERY)]
    pub delivery: Option<String>,
    /// This host's name in the group, unique among the hosts that share a --group-id and the
    /// same after a restart (a StatefulSet pod name, a VM's hostname): its transactional id is
    /// `<group-id>.<host-id>`, so that a restarted host aborts what it left open at once
    /// [default: the machine's hostname]
    #[arg(long, env = "ADSTREAM_HOST_ID", help_heading = DELIVERY)]
    pub host_id: Option<String>,
    /// The producer's transactional id, instead of `<group-id>.<host-id>`. Two hosts with the
    /// same id fence each other: the second one to start stops the first
    #[arg(long, env = "ADSTREAM_TRANSACTIONAL_ID", help_heading = DELIVERY)]
    pub transactional_id: Option<String>,
    /// Pipeline threads on this host. Each thread is a member of the group of its own, with its
    /// own consumer and transactional producer, and runs the tasks the group gives it: thread 0
    /// is <host-id>, thread n is <host-id>.<n> (transactional id <group-id>.<host-id>.<n>).
    /// More threads than input partitions leave some idle [default: half the cores, at least 1:
    /// each thread's Kafka clients take about as much CPU again as the thread]
    #[arg(long, env = "ADSTREAM_THREADS", help_heading = DELIVERY)]
    pub threads: Option<usize>,
    /// How long a host may go without a heartbeat before the group gives its tasks to the
    /// others: the failover time after a crash is about this plus the transaction timeout (10 s)
    /// [default: 10s]
    #[arg(long, env = "ADSTREAM_SESSION_TIMEOUT", value_parser = duration, help_heading = DELIVERY)]
    #[serde(default, with = "humantime_serde")]
    pub session_timeout: Option<Duration>,
    /// The topic through which tasks hand their windows to the merge stage (one partition; the
    /// host creates it) [default: <group-id>-partials]
    #[arg(long, env = "ADSTREAM_PARTIALS_TOPIC", help_heading = TOPICS)]
    pub partials_topic: Option<String>,
    /// Where detectors keep what they remember, in the transaction of each checkpoint (one
    /// partition, compacted, keyed by detector; the host creates it when a detector is loaded)
    /// [default: <group-id>-state]
    #[arg(long, env = "ADSTREAM_STATE_TOPIC", help_heading = TOPICS)]
    pub state_topic: Option<String>,
    /// How often output and input offsets are committed together (also after every emitted
    /// window); results become visible to read_committed consumers at commits [default: 1s]
    #[arg(long, env = "ADSTREAM_COMMIT_INTERVAL", value_parser = duration, help_heading = DELIVERY)]
    #[serde(default, with = "humantime_serde")]
    pub commit_interval: Option<Duration>,
    /// Compression of everything the host writes: none, gzip, snappy, lz4, zstd. Input is read
    /// whatever its codec [default: lz4, the cheapest in CPU for the results' JSON; see README]
    #[arg(long, env = "ADSTREAM_OUTPUT_COMPRESSION", value_parser = ["none", "gzip", "snappy", "lz4", "zstd"], help_heading = DELIVERY)]
    pub output_compression: Option<String>,
}

/// A TOML table of librdkafka properties; numbers and booleans are written as librdkafka
/// expects them, as text.
fn properties_table<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<KeyValue>, D::Error> {
    let table = BTreeMap::<String, toml::Value>::deserialize(d)?;
    table
        .into_iter()
        .map(|(key, value)| {
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(serde::de::Error::custom(format!(
                        "property {key}: expected a string, number or boolean, not {other}"
                    )));
                }
            };
            Ok((key, text))
        })
        .collect()
}

/// Kafka settings, resolved.
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// How every client connects and authenticates.
    pub client: Arc<ClientSettings>,
    pub group_id: String,
    pub impressions_topic: String,
    pub clicks_topic: String,
    pub outputs: OutputTopics,
    pub commit_interval: Duration,
    /// Create missing output topics at start-up.
    pub create_topics: bool,
    /// The transactional id, for exactly-once delivery; `None` for at-least-once.
    pub transactional_id: Option<String>,
    /// This host's name in the group (of its pipeline thread 0; see [`KafkaConfig::thread`]).
    pub host_id: String,
    /// Pipeline threads, each a member of the group.
    pub threads: usize,
    pub session_timeout: Duration,
    /// Where tasks hand their windows to the merge stage.
    pub partials_topic: String,
    /// Where detectors keep their state.
    pub state_topic: String,
    /// librdkafka's `compression.type` for everything produced.
    pub output_compression: String,
}

/// Flag (or its variable) first, then the file.
fn pick<T>(flag: Option<T>, file: Option<T>) -> Option<T> {
    flag.or(file)
}

/// The file's properties, then the flags' (a flag's value wins for the same key).
fn merge(
    file: Vec<KeyValue>,
    flags: Vec<KeyValue>,
    file_origin: &'static str,
    flag_origin: &'static str,
) -> Vec<Property> {
    let tag = |origin: &'static str| move |(key, value): KeyValue| Property { key, value, origin };
    file.into_iter().map(tag(file_origin)).chain(flags.into_iter().map(tag(flag_origin))).collect()
}

impl KafkaArgs {
    pub fn resolve(self, file: KafkaArgs) -> anyhow::Result<KafkaConfig> {
        let client = self.resolve_client(&file)?;
        let prefix = pick(self.topic_prefix, file.topic_prefix).unwrap_or_default();
        let output_prefix = pick(self.output_topic_prefix, file.output_topic_prefix).unwrap_or_else(|| prefix.clone());
        let name = |flag: Option<String>, from_file: Option<String>, default: &str, prefix: &str| {
            format!("{prefix}{}", pick(flag, from_file).unwrap_or_else(|| default.to_owned()))
        };
        let group_id = pick(self.group_id, file.group_id).unwrap_or_else(|| "adstream".to_owned());
        let exactly_once = pick(self.delivery, file.delivery).is_none_or(|d| d == "exactly-once");
        let host_id = pick(self.host_id, file.host_id).unwrap_or_else(default_host_id);
        ensure!(!host_id.trim().is_empty(), "--host-id must not be empty");
        let transactional_id = exactly_once.then(|| {
            pick(self.transactional_id, file.transactional_id).unwrap_or_else(|| format!("{group_id}.{host_id}"))
        });
        let threads = pick(self.threads, file.threads).unwrap_or_else(default_threads);
        ensure!((1..=MAX_THREADS).contains(&threads), "--threads must be between 1 and {MAX_THREADS}");
        let partials_topic =
            pick(self.partials_topic, file.partials_topic).unwrap_or_else(|| format!("{group_id}-partials"));
        let state_topic = pick(self.state_topic, file.state_topic).unwrap_or_else(|| format!("{group_id}-state"));
        let session_timeout = pick(self.session_timeout, file.session_timeout).unwrap_or(DEFAULT_SESSION_TIMEOUT);
        ensure!(
            (Duration::from_secs(3)..=Duration::from_secs(300)).contains(&session_timeout),
            "--session-timeout must be between 3s and 5m (Kafka's group.min/max.session.timeout.ms defaults bound it)"
        );
        let outputs = OutputTopics {
            late: name(self.late_topic, file.late_topic, "ad-events-late", &output_prefix),
            dead_letter: name(self.dlq_topic, file.dlq_topic, "ad-events-dlq", &output_prefix),
            plugin_errors: name(
                self.plugin_errors_topic,
                file.plugin_errors_topic,
                "adstream-plugin-errors",
                &output_prefix,
            ),
            completeness: name(
                self.completeness_topic,
                file.completeness_topic,
                "adstream-window-completeness",
                &output_prefix,
            ),
            prefix: output_prefix,
            overrides: if self.plugin_topics.is_empty() { file.plugin_topics } else { self.plugin_topics },
        };
        let c = KafkaConfig {
            client: Arc::new(client),
            impressions_topic: name(self.impressions_topic, file.impressions_topic, "ad-impressions", &prefix),
            clicks_topic: name(self.clicks_topic, file.clicks_topic, "ad-clicks", &prefix),
            outputs,
            group_id,
            transactional_id,
            host_id,
            threads,
            session_timeout,
            partials_topic,
            state_topic,
            commit_interval: pick(self.commit_interval, file.commit_interval).unwrap_or(DEFAULT_COMMIT_INTERVAL),
            create_topics: !(self.no_create_topics || file.no_create_topics),
            output_compression: pick(self.output_compression, file.output_compression).unwrap_or_else(|| "lz4".into()),
        };
        ensure!(c.impressions_topic != c.clicks_topic, "--impressions-topic and --clicks-topic must differ");
        let inputs = [&c.impressions_topic, &c.clicks_topic];
        for (flag, topic) in [("--partials-topic", &c.partials_topic), ("--state-topic", &c.state_topic)] {
            ensure!(
                !inputs.contains(&topic) && !c.outputs.host_topics().contains(topic),
                "{flag} {topic} is also an input or output topic"
            );
        }
        ensure!(c.partials_topic != c.state_topic, "--partials-topic and --state-topic must differ");
        for output in c.outputs.host_topics() {
            ensure!(
                !inputs.contains(&&output),
                "output topic {output} is also an input topic: the host would read what it writes (check --output-topic-prefix and the topic flags)"
            );
        }
        ensure!(c.commit_interval >= Duration::from_millis(10), "--commit-interval must be at least 10ms");
        Ok(c)
    }

    /// The connection and security settings, with the protocol implied by the other settings
    /// when it is not given.
    fn resolve_client(&self, file: &KafkaArgs) -> anyhow::Result<ClientSettings> {
        let brokers = pick(self.brokers.clone(), file.brokers.clone()).unwrap_or_else(|| DEFAULT_BROKERS.to_owned());
        ensure!(!brokers.trim().is_empty(), "--brokers must name at least one broker");
        let mechanism = pick(self.sasl_mechanism, file.sasl_mechanism);
        let password_file = pick(self.sasl_password_file.clone(), file.sasl_password_file.clone());
        let password = Secret::resolve(
            pick(self.sasl_password.clone(), file.sasl_password.clone()),
            password_file.as_deref(),
            "--sasl-password",
        )?;
        let key_password_file = pick(self.ssl_key_password_file.clone(), file.ssl_key_password_file.clone());
        let key_password = Secret::resolve(
            pick(self.ssl_key_password.clone(), file.ssl_key_password.clone()),
            key_password_file.as_deref(),
            "--ssl-key-password",
        )?;
        let tls = Tls {
            ca_location: pick(self.ssl_ca_location.clone(), file.ssl_ca_location.clone()),
            certificate_location: pick(self.ssl_certificate_location.clone(), file.ssl_certificate_location.clone()),
            key_location: pick(self.ssl_key_location.clone(), file.ssl_key_location.clone()),
            key_password,
            verify_hostname: pick(self.ssl_endpoint_identification.clone(), file.ssl_endpoint_identification.clone())
                .is_none_or(|v| v == "https"),
        };
        let uses_tls = tls.ca_location.is_some() || tls.certificate_location.is_some();
        let protocol = pick(self.security_protocol, file.security_protocol).unwrap_or(match (mechanism, uses_tls) {
            (Some(_), _) => SecurityProtocol::SaslSsl,
            (None, true) => SecurityProtocol::Ssl,
            (None, false) => SecurityProtocol::Plaintext,
        });
        let sasl = mechanism.map(|mechanism| Sasl {
            mechanism,
            username: pick(self.sasl_username.clone(), file.sasl_username.clone()),
            password,
            token_file: pick(self.sasl_oauthbearer_token_file.clone(), file.sasl_oauthbearer_token_file.clone()),
        });
        let settings = ClientSettings {
            brokers,
            protocol,
            tls,
            sasl,
            properties: merge(
                file.kafka_properties.clone(),
                self.kafka_properties.clone(),
                "[kafka.properties]",
                "--kafka-property",
            ),
            consumer_properties: merge(
                file.consumer_properties.clone(),
                self.consumer_properties.clone(),
                "[kafka.consumer-properties]",
                "--consumer-property",
            ),
            producer_properties: merge(
                file.producer_properties.clone(),
                self.producer_properties.clone(),
                "[kafka.producer-properties]",
                "--producer-property",
            ),
            admin_properties: merge(
                file.admin_properties.clone(),
                self.admin_properties.clone(),
                "[kafka.admin-properties]",
                "--admin-property",
            ),
        };
        settings.validate()?;
        Ok(settings)
    }
}

impl KafkaConfig {
    /// The settings of pipeline thread `n`, a member of the group of its own: thread 0 is the
    /// host (`<host-id>`, its transactional id), thread n is `<host-id>.<n>` with transactional id
    /// `<id>.<n>`. So a host that goes from 1 thread to more keeps thread 0's identity, and each
    /// thread restarted takes its own tasks back and aborts what it left open.
    pub fn thread(&self, n: usize) -> KafkaConfig {
        if n == 0 {
            return self.clone();
        }
        KafkaConfig {
            host_id: format!("{}.{n}", self.host_id),
            transactional_id: self.transactional_id.as_ref().map(|id| format!("{id}.{n}")),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(flags: KafkaArgs, file: &str) -> anyhow::Result<KafkaConfig> {
        let file: super::super::FileConfig = toml::from_str(file)?;
        flags.resolve(file.kafka)
    }

    #[test]
    fn topic_prefix_applies_to_every_topic_and_the_output_prefix_to_the_outputs() {
        let k = resolve(KafkaArgs { topic_prefix: Some("t1.".into()), ..Default::default() }, "").unwrap();
        assert_eq!(
            (k.impressions_topic.as_str(), k.outputs.dead_letter.as_str()),
            ("t1.ad-impressions", "t1.ad-events-dlq")
        );
        let k = resolve(
            KafkaArgs {
                topic_prefix: Some("prod.".into()),
                output_topic_prefix: Some("staging.".into()),
                ..Default::default()
            },
            "",
        )
        .unwrap();
        assert_eq!(k.impressions_topic, "prod.ad-impressions");
        assert_eq!((k.outputs.late.as_str(), k.outputs.prefix.as_str()), ("staging.ad-events-late", "staging."));
        let e = resolve(KafkaArgs { late_topic: Some("ad-impressions".into()), ..Default::default() }, "").unwrap_err();
        assert!(e.to_string().contains("also an input topic"), "{e}");
    }

    #[test]
    fn security_settings_come_from_flags_files_and_the_environment_and_imply_the_protocol() {
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("password");
        std::fs::write(&password, "from-a-file\n").unwrap();
        let file = format!(
            "[kafka]\nbrokers = \"b1:9093\"\nsasl-mechanism = \"SCRAM-SHA-512\"\nsasl-username = \"adstream\"\nsasl-password-file = {password:?}\n[kafka.producer-properties]\n\"linger.ms\" = 5\n\"enable.gapless.guarantee\" = false\n"
        );
        let k = resolve(KafkaArgs::default(), &file).unwrap();
        let c = &k.client;
        assert_eq!(c.protocol, SecurityProtocol::SaslSsl, "a SASL mechanism implies sasl_ssl");
        assert_eq!(c.sasl.as_ref().unwrap().password.as_ref().unwrap().expose(), "from-a-file");
        let producer = c.client_config(crate::kafka::Role::Producer, &[]);
        assert_eq!(producer.get("linger.ms"), Some("5"));
        assert_eq!(producer.get("enable.gapless.guarantee"), Some("false"));
        assert_eq!(producer.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(producer.get("security.protocol"), Some("sasl_ssl"));
        // A flag beats the file, for a property too.
        let flags = KafkaArgs {
            producer_properties: vec![("linger.ms".into(), "9".into())],
            sasl_password: Some("from-a-flag".into()),
            sasl_password_file: None,
            ..Default::default()
        };
        let e = resolve(flags.clone(), &file).unwrap_err().to_string();
        assert!(e.contains("either --sasl-password or --sasl-password-file"), "{e}");
        let no_file = file.replace(&format!("sasl-password-file = {password:?}\n"), "");
        let k = resolve(flags, &no_file).unwrap();
        assert_eq!(k.client.client_config(crate::kafka::Role::Producer, &[]).get("linger.ms"), Some("9"));
        assert!(!format!("{k:?}").contains("from-a-flag"), "secrets stay out of Debug output");
    }

    #[test]
    fn a_bad_property_is_refused_with_librdkafka_s_words_and_its_origin() {
        let e = resolve(KafkaArgs::default(), "[kafka.consumer-properties]\n\"fetch.max.byts\" = 1\n").unwrap_err();
        let e = e.to_string();
        assert!(
            e.contains("[kafka.consumer-properties] fetch.max.byts") && e.contains("No such configuration property"),
            "{e}"
        );
        let e = resolve(
            KafkaArgs { kafka_properties: vec![("bootstrap.servers".into(), "x:1".into())], ..Default::default() },
            "",
        )
        .unwrap_err();
        assert!(e.to_string().contains("--brokers"), "{e}");
    }

    #[test]
    fn each_pipeline_thread_has_a_member_name_and_transactional_id_of_its_own() {
        let flags = KafkaArgs { host_id: Some("h1".into()), threads: Some(3), ..Default::default() };
        let k = resolve(flags, "[kafka]\ngroup-id = \"g\"\n").unwrap();
        let ids: Vec<_> =
            (0..k.threads).map(|n| (k.thread(n).host_id, k.thread(n).transactional_id.unwrap())).collect();
        let expected = [("h1", "g.h1"), ("h1.1", "g.h1.1"), ("h1.2", "g.h1.2")];
        assert_eq!(ids, expected.map(|(h, t)| (h.to_owned(), t.to_owned())));
        let none = KafkaArgs { threads: Some(0), ..Default::default() };
        assert!(resolve(none, "").unwrap_err().to_string().contains("--threads"));
        assert!(default_threads() >= 1);
    }
}
