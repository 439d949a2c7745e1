//! Typed configuration: command-line flags, environment variables and a TOML file, resolved
//! into one [`Config`] with named defaults and validation that rejects nonsense with a message
//! saying what to fix.
//!
//! Precedence, highest first: a flag, its `ADSTREAM_*` environment variable, the `--config`
//! file, the default. The file has one table per flag group, with the flags' long names
//! (the librdkafka pass-through properties are tables of their own, see [`kafka`]):
//!
//! ```toml
//! [kafka]
//! brokers = "broker-1.example.com:9093"
//! security-protocol = "sasl_ssl"
//! sasl-mechanism = "SCRAM-SHA-512"
//! sasl-username = "adstream"
//! sasl-password-file = "/run/secrets/kafka-password"
//! group-id = "adstream"
//! [kafka.producer-properties]
//! "linger.ms" = 5
//! [time]
//! window = "1m"
//! out-of-orderness = "5s"
//! [plugins]
//! plugin = ["plugins/ctr.wasm", "plugins/engagement.wasm"]
//! ```
//!
//! - [`kafka`]: `[kafka]`, the cluster, its security, the topics and the delivery guarantee.
//! - [`plugins`]: `[plugins]`, which plugins run and their limits.
//! - here: `[time]` and `[http]`, and loading the whole.

pub mod kafka;
pub mod plugins;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, ensure};
use serde::Deserialize;

pub use kafka::{KafkaArgs, KafkaConfig};
pub use plugins::{Grants, PluginArgs, PluginConfig, PluginLimit, PluginSetting};

fn duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

/// Event time: windows, watermarks, lateness and the click-to-impression join.
#[derive(Clone, Debug, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[command(next_help_heading = "Event time")]
pub struct TimeArgs {
    /// Size of the event-time windows, aligned to the epoch [default: 1m]
    #[arg(long, env = "ADSTREAM_WINDOW", value_parser = duration)]
    #[serde(default, with = "humantime_serde")]
    pub window: Option<Duration>,
    /// How far apart windows start: less than --window makes them sliding (hopping), e.g.
    /// `--window 5m --slide 1m` is "the last 5 minutes, every minute". It must divide --window.
    /// Each event is folded once, into its slide-sized pane; a window's result is the merge of
    /// its panes. An event is late once the first window that holds it is closed, and is then
    /// in none of its windows [default: --window, tumbling]
    #[arg(long, env = "ADSTREAM_SLIDE", value_parser = duration)]
    #[serde(default, with = "humantime_serde")]
    pub slide: Option<Duration>,
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
    /// Count every copy of a repeated event. By default an on-time impression with the
    /// impression_id and event_timestamp of one its task still holds for the join (for the
    /// horizon after its event time), or a click with the click_id and event_timestamp of one it
    /// has seen in that time, is a producer's retried copy: dropped, counted as a duplicate, the
    /// first arrival kept whatever the copy's other fields. An id at another event time is
    /// another event, counted [default: false]
    #[arg(long, env = "ADSTREAM_KEEP_DUPLICATES", num_args = 0..=1, default_missing_value = "true")]
    #[serde(default)]
    pub keep_duplicates: Option<bool>,
}

/// The console, `/metrics` and the admin API of `run`.
#[derive(Clone, Debug, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[command(next_help_heading = "Console and API")]
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

/// Time settings, resolved, in milliseconds where the pipeline computes with them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeConfig {
    pub window_ms: i64,
    /// How far apart windows start (= `window_ms`: tumbling windows).
    pub slide_ms: i64,
    pub out_of_orderness_ms: i64,
    pub idle_timeout: Duration,
    pub allowed_lateness_ms: i64,
    pub join_horizon_ms: i64,
    /// Count repeated ids instead of dropping them (`--keep-duplicates`).
    pub keep_duplicates: bool,
}

impl Default for TimeConfig {
    fn default() -> Self {
        TimeConfig {
            window_ms: 60_000,
            slide_ms: 60_000,
            out_of_orderness_ms: 5_000,
            idle_timeout: Duration::from_secs(30),
            allowed_lateness_ms: 0,
            join_horizon_ms: 600_000,
            keep_duplicates: false,
        }
    }
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

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl TimeArgs {
    /// Flag or environment first, then the file, then the default.
    pub fn resolve(self, file: TimeArgs) -> anyhow::Result<TimeConfig> {
        let d = TimeConfig::default();
        let window_ms = self.window.or(file.window).map_or(d.window_ms, ms);
        let c = TimeConfig {
            window_ms,
            slide_ms: self.slide.or(file.slide).map_or(window_ms, ms),
            out_of_orderness_ms: self.out_of_orderness.or(file.out_of_orderness).map_or(d.out_of_orderness_ms, ms),
            idle_timeout: self.idle_timeout.or(file.idle_timeout).unwrap_or(d.idle_timeout),
            allowed_lateness_ms: self.allowed_lateness.or(file.allowed_lateness).map_or(d.allowed_lateness_ms, ms),
            join_horizon_ms: self.join_horizon.or(file.join_horizon).map_or(d.join_horizon_ms, ms),
            keep_duplicates: self.keep_duplicates.or(file.keep_duplicates).unwrap_or(d.keep_duplicates),
        };
        c.validate()?;
        Ok(c)
    }
}

/// The most panes (`--window / --slide`) a window may have.
pub const MAX_PANES: i64 = 60;

impl TimeConfig {
    /// Whether windows overlap (`--slide` below `--window`).
    pub fn sliding(&self) -> bool {
        self.slide_ms < self.window_ms
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(self.window_ms >= 1000, "--window must be at least 1s (got {} ms)", self.window_ms);
        ensure!(self.window_ms <= 86_400_000 * 7, "--window must be at most 7 days");
        ensure!(
            self.slide_ms > 0 && self.slide_ms <= self.window_ms && self.window_ms % self.slide_ms == 0,
            "--slide must divide --window (got --window {} ms, --slide {} ms): a window is made of whole slide-sized panes",
            self.window_ms,
            self.slide_ms
        );
        ensure!(
            self.window_ms / self.slide_ms <= MAX_PANES,
            "--window is {} times --slide; at most {MAX_PANES} panes per window are supported (each window's result merges them)",
            self.window_ms / self.slide_ms
        );
        ensure!(self.idle_timeout >= Duration::from_millis(100), "--idle-timeout must be at least 100ms");
        ensure!(
            self.join_horizon_ms <= 86_400_000,
            "--join-horizon must be at most 24h: the join keeps every impression that long"
        );
        Ok(())
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

    /// Resolves only the Kafka group (for `tail`).
    pub fn load_kafka(config_file: Option<&Path>, kafka: KafkaArgs) -> anyhow::Result<KafkaConfig> {
        kafka.resolve(read_file(config_file)?.kafka)
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
        let slide = |window: u64, slide: u64| TimeArgs {
            window: Some(Duration::from_secs(window)),
            slide: Some(Duration::from_secs(slide)),
            ..Default::default()
        };
        let t = slide(300, 60).resolve(TimeArgs::default()).unwrap();
        assert!(t.sliding() && t.slide_ms == 60_000);
        let err = slide(300, 120).resolve(TimeArgs::default()).unwrap_err().to_string();
        assert!(err.contains("--slide must divide --window"), "{err}");
        assert!(slide(3600, 1).resolve(TimeArgs::default()).unwrap_err().to_string().contains("panes"));
        assert!(!TimeArgs::default().resolve(TimeArgs::default()).unwrap().sliding(), "tumbling by default");
        let none = PluginArgs::default().resolve(PluginArgs::default()).unwrap_err().to_string();
        assert!(none.contains("--plugin"), "{none}");
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
}
