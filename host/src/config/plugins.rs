//! `[plugins]`: which aggregation plugins run, and the limits they run under.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, ensure};
use serde::Deserialize;

use super::duration;

/// Which aggregation plugins run, and the limits they run under.
#[derive(Clone, Debug, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[command(next_help_heading = "Plugins")]
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
    /// A setting for one plugin, by the name it describes itself with: `NAME:KEY=VALUE`, e.g.
    /// `anomaly:ctr-threshold=6` (a detector's thresholds; each plugin documents its keys, and
    /// refuses unknown ones at start-up). Repeat for several settings
    #[arg(long = "plugin-setting", env = "ADSTREAM_PLUGIN_SETTINGS", value_delimiter = ';', value_parser = PluginSetting::parse)]
    #[serde(default, rename = "plugin-setting")]
    pub plugin_settings: Vec<PluginSetting>,
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
    /// Settings for particular plugins (detectors), by name.
    pub settings: Vec<PluginSetting>,
    /// Aggregations compiled into this binary (`--plugin native:NAME`); none in `adstream`.
    pub natives: crate::plugin::native::Natives,
    /// Swap a plugin when its file changes (`run` only).
    pub watch: bool,
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

/// One setting for one plugin (`--plugin-setting anomaly:ctr-threshold=6`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginSetting {
    pub plugin: String,
    pub key: String,
    pub value: String,
}

impl PluginSetting {
    pub fn parse(s: &str) -> Result<Self, String> {
        let usage = || format!("{s:?}: expected NAME:KEY=VALUE (e.g. anomaly:ctr-threshold=6)");
        let (plugin, setting) = s.split_once(':').ok_or_else(usage)?;
        let (key, value) = setting.split_once('=').ok_or_else(usage)?;
        let (plugin, key) = (plugin.trim(), key.trim());
        if plugin.is_empty() || key.is_empty() {
            return Err(usage());
        }
        Ok(PluginSetting { plugin: plugin.to_owned(), key: key.to_owned(), value: value.trim().to_owned() })
    }
}

impl<'de> Deserialize<'de> for PluginSetting {
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

fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("adstream")
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
            settings: if self.plugin_settings.is_empty() { file.plugin_settings } else { self.plugin_settings },
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
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_limits_parse_and_refuse_nonsense() {
        let l = PluginLimit::parse("ctr:timeout=500ms,memory-mib=64").unwrap();
        assert_eq!((l.plugin.as_str(), l.timeout, l.memory_mib), ("ctr", Some(Duration::from_millis(500)), Some(64)));
        assert_eq!(PluginLimit::parse("spend:memory-mib=32").unwrap().timeout, None);
        for bad in ["ctr", ":timeout=1s", "ctr:speed=3", "ctr:timeout=soon", "ctr:memory-mib=-1"] {
            assert!(PluginLimit::parse(bad).is_err(), "{bad}");
        }
        let s = PluginSetting::parse("anomaly:ctr-threshold = 6").unwrap();
        assert_eq!((s.plugin.as_str(), s.key.as_str(), s.value.as_str()), ("anomaly", "ctr-threshold", "6"));
        for bad in ["anomaly", "anomaly:x", ":x=1", "anomaly:=1"] {
            assert!(PluginSetting::parse(bad).is_err(), "{bad}");
        }
        let file: super::super::FileConfig =
            toml::from_str("[plugins]\nplugin-limit = [\"ctr:timeout=1s\"]\n").unwrap();
        assert_eq!(file.plugins.plugin_limits[0].timeout, Some(Duration::from_secs(1)));
    }
}
