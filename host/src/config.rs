//! Typed configuration: command-line flags, environment variables and a TOML file, resolved
//! into one [`Config`] with named defaults and a [`Config::validate`] that rejects nonsense.
//!
//! Precedence, highest first: a flag, its `ADSTREAM_*` environment variable, the `--config`
//! file, the default. The file has one table per flag group, with the flags' long names:
//!
//! ```toml
//! [kafka]
//! brokers = "127.0.0.1:9092"
//! group-id = "adstream"
//! [time]
//! window = "1m"
//! out-of-orderness = "5s"
//! [plugins]
//! plugin = ["plugins/ctr.wasm", "plugins/engagement.wasm"]
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use serde::Deserialize;

fn duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

/// Where to read and write Kafka, and under which consumer group.
#[derive(Clone, Debug, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, comma-separated [default: 127.0.0.1:9092]
    #[arg(long, env = "ADSTREAM_BROKERS")]
    pub brokers: Option<String>,
    /// Consumer group id; committed input offsets live under it [default: adstream]
    #[arg(long, env = "ADSTREAM_GROUP_ID")]
    pub group_id: Option<String>,
    /// Topic of ad impressions [default: ad-impressions]
    #[arg(long, env = "ADSTREAM_IMPRESSIONS_TOPIC")]
    pub impressions_topic: Option<String>,
    /// Topic of ad clicks [default: ad-clicks]
    #[arg(long, env = "ADSTREAM_CLICKS_TOPIC")]
    pub clicks_topic: Option<String>,
    /// Where late events go, with headers saying why [default: ad-events-late]
    #[arg(long, env = "ADSTREAM_LATE_TOPIC")]
    pub late_topic: Option<String>,
    /// Where invalid messages go, unchanged, with the reason in headers [default: ad-events-dlq]
    #[arg(long, env = "ADSTREAM_DLQ_TOPIC")]
    pub dlq_topic: Option<String>,
    /// Where a record goes in place of a plugin's window result that is withheld because the plugin
    /// failed while holding that window [default: adstream-plugin-errors]
    #[arg(long, env = "ADSTREAM_PLUGIN_ERRORS_TOPIC")]
    pub plugin_errors_topic: Option<String>,
    /// Prefix added to every topic name above and to the plugins' output topics (e.g. `test-42.`),
    /// so that several pipelines can share a cluster [default: none]
    #[arg(long, env = "ADSTREAM_TOPIC_PREFIX")]
    pub topic_prefix: Option<String>,
    /// How often input offsets are committed (after the output covering them is acknowledged)
    /// [default: 1s]
    #[arg(long, env = "ADSTREAM_COMMIT_INTERVAL", value_parser = duration)]
    #[serde(default, with = "humantime_serde")]
    pub commit_interval: Option<Duration>,
    /// `exactly-once`: output and input offsets are committed together in Kafka transactions, so a
    /// `read_committed` consumer sees every window's result exactly once, across crashes.
    /// `at-least-once`: no transactions; after a crash a window's result may appear twice
    /// [default: exactly-once]
    #[arg(long, env = "ADSTREAM_DELIVERY", value_parser = ["exactly-once", "at-least-once"])]
    pub delivery: Option<String>,
    /// The producer's transactional id. A host that starts with the id of one still running
    /// fences it: give each host (each set of input partitions) its own [default: <group-id>.host]
    #[arg(long, env = "ADSTREAM_TRANSACTIONAL_ID")]
    pub transactional_id: Option<String>,
    /// Do not create missing output topics at start-up (by default they are created with as
    /// many partitions as the impressions topic)
    #[arg(long, env = "ADSTREAM_NO_CREATE_TOPICS")]
    #[serde(default)]
    pub no_create_topics: bool,
}

/// Event time: windows, watermarks, lateness and the click-to-impression join.
#[derive(Clone, Debug, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TimeArgs {
    /// Size of the tumbling event-time windows, aligned to the epoch [default: 1m]
    #[arg(long, env = "ADSTREAM_WINDOW", value_parser = duration)]
    #[serde(default, with = "humantime_serde")]
    pub window: Option<Duration>,
    /// How far out of order events may arrive: the watermark trails the largest event time seen
    /// on each partition by this much [default: 5s]
    #[arg(long, env = "ADSTREAM_OUT_OF_ORDERNESS", value_parser = duration)]
    #[serde(default, with = "humantime_serde")]
    pub out_of_orderness: Option<Duration>,
    /// A partition with no message for this long stops holding the watermark back until it
    /// has data again [default: 30s]
    #[arg(long, env = "ADSTREAM_IDLE_TIMEOUT", value_parser = duration)]
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    /// How long after the watermark passes a window's end its result waits for stragglers;
    /// events arriving later still are late [default: 0s]
    #[arg(long, env = "ADSTREAM_ALLOWED_LATENESS", value_parser = duration)]
    #[serde(default, with = "humantime_serde")]
    pub allowed_lateness: Option<Duration>,
    /// A click is attributed to an impression with the same impression_id whose event time is
    /// at most the click's and at least the click's minus this horizon [default: 10m]
    #[arg(long, env = "ADSTREAM_JOIN_HORIZON", value_parser = duration)]
    #[serde(default, with = "humantime_serde")]
    pub join_horizon: Option<Duration>,
}

/// Which aggregation plugins run, and the limits they run under.
#[derive(Clone, Debug, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PluginArgs {
    /// An aggregation plugin: a WebAssembly component (`.wasm`) implementing
    /// `wit/aggregation.wit`. Repeat for several plugins, or separate paths with commas
    #[arg(long = "plugin", env = "ADSTREAM_PLUGINS", value_delimiter = ',')]
    #[serde(default, rename = "plugin")]
    pub plugins: Vec<PathBuf>,
    /// Where compiled plugins are cached, keyed by the hash of the `.wasm` and the engine
    /// settings [default: $XDG_CACHE_HOME/adstream or ~/.cache/adstream]
    #[arg(long, env = "ADSTREAM_PLUGIN_CACHE")]
    pub plugin_cache: Option<PathBuf>,
    /// Events handed to the plugins per call [default: 4096]
    #[arg(long, env = "ADSTREAM_BATCH_SIZE")]
    pub batch_size: Option<usize>,
    /// A plugin call running longer than this is interrupted [default: 2s]
    #[arg(long, env = "ADSTREAM_PLUGIN_TIMEOUT", value_parser = duration)]
    #[serde(default, with = "humantime_serde")]
    pub plugin_timeout: Option<Duration>,
    /// Most linear memory one plugin instance may use, in MiB [default: 512]
    #[arg(long, env = "ADSTREAM_PLUGIN_MEMORY_MIB")]
    pub plugin_memory_mib: Option<u64>,
    /// Limits for one plugin, by the name it describes itself with, replacing --plugin-timeout and
    /// --plugin-memory-mib for it: `NAME:timeout=500ms,memory-mib=128` (either part may be left
    /// out). Repeat for several plugins
    #[arg(long = "plugin-limit", env = "ADSTREAM_PLUGIN_LIMITS", value_delimiter = ';', value_parser = PluginLimit::parse)]
    #[serde(default, rename = "plugin-limit")]
    pub plugin_limits: Vec<PluginLimit>,
    /// A WASI capability to grant every plugin (repeat, or separate with commas): `stderr` (what a
    /// plugin prints appears in the host's stderr, for debugging), `clock` (the real wall and
    /// monotonic clocks instead of clocks frozen at the epoch), `random` (real randomness instead of
    /// a fixed seed). Files, network and environment are never granted [default: none]
    #[arg(long = "plugin-grant", env = "ADSTREAM_PLUGIN_GRANTS", value_delimiter = ',', value_parser = ["stderr", "clock", "random"])]
    #[serde(default, rename = "plugin-grant")]
    pub plugin_grants: Vec<String>,
    /// `run`: watch the --plugin files and swap in a new version when one changes, without a
    /// restart (windows open at the swap finish with the old version, or carry over when the new
    /// one keeps the same state-version). A file that fails to load is rejected and logged; the
    /// running version stays
    #[arg(long, env = "ADSTREAM_WATCH_PLUGINS")]
    #[serde(default)]
    pub watch_plugins: bool,
}

/// The console, `/metrics` and the admin API of `run`.
#[derive(Clone, Debug, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HttpArgs {
    /// Where the web console, /metrics (Prometheus), /healthz, /readyz and the JSON API listen, or
    /// `off`. On an address beyond loopback (e.g. 0.0.0.0:8081), plugin swaps through the API need
    /// --admin-token [default: 127.0.0.1:8081]
    #[arg(long, env = "ADSTREAM_HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// A secret that admin calls (swapping a plugin) must send as `Authorization: Bearer TOKEN`.
    /// Without it, admin calls are only accepted when --http-addr is a loopback address
    #[arg(long, env = "ADSTREAM_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

/// The parts of a config file; each table holds the flags of one group.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    kafka: KafkaArgs,
    #[serde(default)]
    time: TimeArgs,
    #[serde(default)]
    plugins: PluginArgs,
    #[serde(default)]
    http: HttpArgs,
}

/// Reads a config file, if one is named.
fn read_file(path: Option<&Path>) -> anyhow::Result<FileConfig> {
    let Some(path) = path else {
        return Ok(FileConfig::default());
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

/// Kafka settings, resolved.
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    pub brokers: String,
    pub group_id: String,
    pub impressions_topic: String,
    pub clicks_topic: String,
    pub late_topic: String,
    pub dlq_topic: String,
    pub plugin_errors_topic: String,
    /// Prepended to the plugins' output topics.
    pub topic_prefix: String,
    pub commit_interval: Duration,
    /// Create missing output topics at start-up.
    pub create_topics: bool,
    /// The transactional id, for exactly-once delivery; `None` for at-least-once.
    pub transactional_id: Option<String>,
}

/// Time settings, resolved, in milliseconds where the pipeline computes with them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeConfig {
    pub window_ms: i64,
    pub out_of_orderness_ms: i64,
    pub idle_timeout: Duration,
    pub allowed_lateness_ms: i64,
    pub join_horizon_ms: i64,
}

impl Default for TimeConfig {
    fn default() -> Self {
        TimeConfig {
            window_ms: 60_000,
            out_of_orderness_ms: 5_000,
            idle_timeout: Duration::from_secs(30),
            allowed_lateness_ms: 0,
            join_horizon_ms: 600_000,
        }
    }
}

/// Plugin settings, resolved.
#[derive(Clone, Debug)]
pub struct PluginConfig {
    pub plugins: Vec<PathBuf>,
    pub cache_dir: PathBuf,
    pub batch_size: usize,
    pub timeout: Duration,
    pub memory_bytes: u64,
    /// WASI capabilities granted to every plugin.
    pub grants: Grants,
    /// Limits for particular plugins, by name.
    pub limits: Vec<PluginLimit>,
    /// Aggregations compiled into this binary (`--plugin native:NAME`); none in `adstream`.
    pub natives: crate::plugin::native::Natives,
    /// Swap a plugin when its file changes (`run` only).
    pub watch: bool,
}

/// The HTTP server's settings, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    /// `None`: no server.
    pub addr: Option<std::net::SocketAddr>,
    pub admin_token: Option<String>,
}

impl HttpArgs {
    pub fn resolve(self, file: HttpArgs) -> anyhow::Result<HttpConfig> {
        let addr = self.http_addr.or(file.http_addr).unwrap_or_else(|| "127.0.0.1:8081".to_owned());
        let addr = match addr.trim() {
            "off" | "none" | "" => None,
            a => Some(a.parse().with_context(|| {
                format!("--http-addr {a:?}: expected IP:PORT (e.g. 127.0.0.1:8081, 0.0.0.0:8081) or `off`")
            })?),
        };
        let admin_token = self.admin_token.or(file.admin_token).filter(|t| !t.is_empty());
        if let Some(t) = &admin_token {
            ensure!(t.len() >= 16, "--admin-token must be at least 16 characters");
        }
        Ok(HttpConfig { addr, admin_token })
    }
}

/// Limits for one plugin, by name (`--plugin-limit ctr:timeout=500ms,memory-mib=128`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginLimit {
    pub plugin: String,
    pub timeout: Option<Duration>,
    pub memory_mib: Option<u64>,
}

impl PluginLimit {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (plugin, settings) =
            s.split_once(':').ok_or_else(|| format!("{s:?}: expected NAME:timeout=..,memory-mib=.."))?;
        let mut limit = PluginLimit { plugin: plugin.trim().to_owned(), timeout: None, memory_mib: None };
        for setting in settings.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match setting.split_once('=') {
                Some(("timeout", v)) => {
                    limit.timeout = Some(duration(v).map_err(|e| format!("{s:?}: timeout {v:?}: {e}"))?)
                }
                Some(("memory-mib", v)) => {
                    limit.memory_mib = Some(v.parse().map_err(|e| format!("{s:?}: memory-mib {v:?}: {e}"))?)
                }
                _ => return Err(format!("{s:?}: unknown setting {setting:?} (timeout=.., memory-mib=..)")),
            }
        }
        if limit.plugin.is_empty() {
            return Err(format!("{s:?}: no plugin name before ':'"));
        }
        Ok(limit)
    }
}

impl<'de> Deserialize<'de> for PluginLimit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The WASI capabilities an operator granted the plugins; by default none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    pub stderr: bool,
    pub clock: bool,
    pub random: bool,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("adstream")
}

impl TimeArgs {
    /// Flag or environment first, then the file, then the default.
    pub fn resolve(self, file: TimeArgs) -> anyhow::Result<TimeConfig> {
        let d = TimeConfig::default();
        let c = TimeConfig {
            window_ms: self.window.or(file.window).map_or(d.window_ms, ms),
            out_of_orderness_ms: self.out_of_orderness.or(file.out_of_orderness).map_or(d.out_of_orderness_ms, ms),
            idle_timeout: self.idle_timeout.or(file.idle_timeout).unwrap_or(d.idle_timeout),
            allowed_lateness_ms: self.allowed_lateness.or(file.allowed_lateness).map_or(d.allowed_lateness_ms, ms),
            join_horizon_ms: self.join_horizon.or(file.join_horizon).map_or(d.join_horizon_ms, ms),
        };
        c.validate()?;
        Ok(c)
    }
}

impl TimeConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(self.window_ms >= 1000, "--window must be at least 1s (got {} ms)", self.window_ms);
        ensure!(self.window_ms <= 86_400_000 * 7, "--window must be at most 7 days");
        ensure!(self.idle_timeout >= Duration::from_millis(100), "--idle-timeout must be at least 100ms");
        ensure!(
            self.join_horizon_ms <= 86_400_000,
            "--join-horizon must be at most 24h: the join keeps every impression that long"
        );
        Ok(())
    }
}

impl PluginArgs {
    pub fn resolve(self, file: PluginArgs) -> anyhow::Result<PluginConfig> {
        let plugins = if self.plugins.is_empty() { file.plugins } else { self.plugins };
        let c = PluginConfig {
            plugins,
            cache_dir: self.plugin_cache.or(file.plugin_cache).unwrap_or_else(default_cache_dir),
            batch_size: self.batch_size.or(file.batch_size).unwrap_or(4096),
            timeout: self.plugin_timeout.or(file.plugin_timeout).unwrap_or(Duration::from_secs(2)),
            memory_bytes: self.plugin_memory_mib.or(file.plugin_memory_mib).unwrap_or(512) << 20,
            limits: if self.plugin_limits.is_empty() { file.plugin_limits } else { self.plugin_limits },
            grants: {
                let names = if self.plugin_grants.is_empty() { file.plugin_grants } else { self.plugin_grants };
                let has = |g: &str| names.iter().any(|n| n == g);
                Grants { stderr: has("stderr"), clock: has("clock"), random: has("random") }
            },
            natives: &[],
            watch: self.watch_plugins || file.watch_plugins,
        };
        if c.plugins.is_empty() {
            bail!(
                "no plugin given: name at least one aggregation with --plugin PATH.wasm (`just build-plugins` builds ours into target/plugins/)"
            );
        }
        for p in c.plugins.iter().filter(|p| crate::plugin::native::native_name(p).is_none()) {
            ensure!(p.is_file(), "plugin {} does not exist (build ours with `just build-plugins`)", p.display());
        }
        ensure!((1..=1_000_000).contains(&c.batch_size), "--batch-size must be between 1 and 1000000");
        ensure!(c.timeout >= Duration::from_millis(10), "--plugin-timeout must be at least 10ms");
        ensure!(c.memory_bytes >= 16 << 20, "--plugin-memory-mib must be at least 16");
        for l in &c.limits {
            ensure!(
                l.timeout.is_none_or(|t| t >= Duration::from_millis(10)),
                "--plugin-limit {}: timeout must be at least 10ms",
                l.plugin
            );
            ensure!(
                l.memory_mib.is_none_or(|m| m >= 16),
                "--plugin-limit {}: memory-mib must be at least 16",
                l.plugin
            );
        }
        Ok(c)
    }
}

impl KafkaArgs {
    pub fn resolve(self, file: KafkaArgs) -> anyhow::Result<KafkaConfig> {
        let prefix = self.topic_prefix.or(file.topic_prefix).unwrap_or_default();
        let topic = |name: Option<String>, file_name: Option<String>, default: &str| {
            format!("{prefix}{}", name.or(file_name).unwrap_or_else(|| default.to_owned()))
        };
        let group_id = self.group_id.or(file.group_id).unwrap_or_else(|| "adstream".to_owned());
        let exactly_once = self.delivery.or(file.delivery).is_none_or(|d| d == "exactly-once");
        let transactional_id = exactly_once
            .then(|| self.transactional_id.or(file.transactional_id).unwrap_or_else(|| format!("{group_id}.host")));
        let c = KafkaConfig {
            transactional_id,
            brokers: self.brokers.or(file.brokers).unwrap_or_else(|| "127.0.0.1:9092".to_owned()),
            group_id,
            impressions_topic: topic(self.impressions_topic, file.impressions_topic, "ad-impressions"),
            clicks_topic: topic(self.clicks_topic, file.clicks_topic, "ad-clicks"),
            late_topic: topic(self.late_topic, file.late_topic, "ad-events-late"),
            dlq_topic: topic(self.dlq_topic, file.dlq_topic, "ad-events-dlq"),
            plugin_errors_topic: topic(self.plugin_errors_topic, file.plugin_errors_topic, "adstream-plugin-errors"),
            commit_interval: self.commit_interval.or(file.commit_interval).unwrap_or(Duration::from_secs(1)),
            topic_prefix: prefix,
            create_topics: !(self.no_create_topics || file.no_create_topics),
        };
        ensure!(!c.brokers.trim().is_empty(), "--brokers must name at least one broker");
        ensure!(c.impressions_topic != c.clicks_topic, "--impressions-topic and --clicks-topic must differ");
        ensure!(c.commit_interval >= Duration::from_millis(10), "--commit-interval must be at least 10ms");
        Ok(c)
    }
}

/// Everything `run` needs.
#[derive(Clone, Debug)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub time: TimeConfig,
    pub plugins: PluginConfig,
    pub http: HttpConfig,
}

impl Config {
    /// Resolves the three flag groups against an optional config file.
    pub fn load(
        config_file: Option<&Path>,
        kafka: KafkaArgs,
        time: TimeArgs,
        plugins: PluginArgs,
        http: HttpArgs,
    ) -> anyhow::Result<Self> {
        let file = read_file(config_file)?;
        Ok(Config {
            kafka: kafka.resolve(file.kafka)?,
            time: time.resolve(file.time)?,
            plugins: plugins.resolve(file.plugins)?,
            http: http.resolve(file.http)?,
        })
    }

    /// Resolves only the time and plugin groups (for `replay`).
    pub fn load_offline(
        config_file: Option<&Path>,
        time: TimeArgs,
        plugins: PluginArgs,
    ) -> anyhow::Result<(TimeConfig, PluginConfig)> {
        let file = read_file(config_file)?;
        Ok((time.resolve(file.time)?, plugins.resolve(file.plugins)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_defaults_fill_the_rest() {
        let file: FileConfig = toml::from_str("[time]\nwindow = \"2m\"\nout-of-orderness = \"1s\"\n").unwrap();
        let flags = TimeArgs { out_of_orderness: Some(Duration::from_secs(3)), ..Default::default() };
        let t = flags.resolve(file.time).unwrap();
        assert_eq!((t.window_ms, t.out_of_orderness_ms, t.join_horizon_ms), (120_000, 3_000, 600_000));
    }

    #[test]
    fn rejects_unknown_keys_and_nonsense() {
        let err = toml::from_str::<FileConfig>("[time]\nwindw = \"2m\"\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `windw`"), "{err}");
        let tiny = TimeArgs { window: Some(Duration::from_millis(10)), ..Default::default() };
        assert!(tiny.resolve(TimeArgs::default()).is_err());
        let none = PluginArgs::default().resolve(PluginArgs::default()).unwrap_err().to_string();
        assert!(none.contains("--plugin"), "{none}");
    }

    #[test]
    fn plugin_limits_parse_and_refuse_nonsense() {
        let l = PluginLimit::parse("ctr:timeout=500ms,memory-mib=64").unwrap();
        assert_eq!((l.plugin.as_str(), l.timeout, l.memory_mib), ("ctr", Some(Duration::from_millis(500)), Some(64)));
        assert_eq!(PluginLimit::parse("spend:memory-mib=32").unwrap().timeout, None);
        for bad in ["ctr", ":timeout=1s", "ctr:speed=3", "ctr:timeout=soon", "ctr:memory-mib=-1"] {
            assert!(PluginLimit::parse(bad).is_err(), "{bad}");
        }
        let file: FileConfig = toml::from_str("[plugins]\nplugin-limit = [\"ctr:timeout=1s\"]\n").unwrap();
        assert_eq!(file.plugins.plugin_limits[0].timeout, Some(Duration::from_secs(1)));
    }

    #[test]
    fn http_address_parses_or_turns_off() {
        let resolve =
            |addr: &str| HttpArgs { http_addr: Some(addr.into()), admin_token: None }.resolve(HttpArgs::default());
        assert_eq!(
            HttpArgs::default().resolve(HttpArgs::default()).unwrap().addr,
            Some("127.0.0.1:8081".parse().unwrap())
        );
        assert_eq!(resolve("0.0.0.0:9000").unwrap().addr, Some("0.0.0.0:9000".parse().unwrap()));
        assert_eq!(resolve("off").unwrap().addr, None);
        let err = resolve("localhost").unwrap_err().to_string();
        assert!(err.contains("IP:PORT"), "{err}");
        let short = HttpArgs { admin_token: Some("abc".into()), ..Default::default() }.resolve(HttpArgs::default());
        assert!(short.is_err(), "a 3-character token is refused");
    }

    #[test]
    fn topic_prefix_applies_to_every_topic() {
        let k =
            KafkaArgs { topic_prefix: Some("t1.".into()), ..Default::default() }.resolve(KafkaArgs::default()).unwrap();
        assert_eq!((k.impressions_topic.as_str(), k.dlq_topic.as_str()), ("t1.ad-impressions", "t1.ad-events-dlq"));
    }
}
