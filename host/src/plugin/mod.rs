//! Aggregation plugins: WebAssembly components implementing `wit/aggregation.wit`.
//!
//! - [`runtime`]: the shared wasmtime engine, the compiled-plugin cache, the epoch ticker that
//!   enforces call deadlines.
//! - [`instance`]: one loaded plugin: its store, limits and typed calls.
//! - [`detector`]: a plugin of the `detector` world, which reads other plugins' results.
//! - [`native`]: the same aggregations compiled into the host, for tests and for measuring what
//!   WebAssembly costs.
//! - [`slot`]: a plugin's place in the pipeline, and how a new version takes it (live swap).
//! - [`stderr`]: the end of what a plugin wrote to an ungranted stderr, to explain its traps.
//!
//! This is the only place that runs `bindgen!` for the host side of the WIT.

pub mod detector;
pub mod instance;
pub mod native;
pub mod runtime;
pub mod slot;
pub mod stderr;

use std::path::Path;

use anyhow::Context;
use std::sync::Arc;

pub use detector::Detector;
pub use instance::{Plugin, PluginMeta};
pub use native::NativeAggregator;
pub use runtime::Runtime;
pub use slot::{Slot, SwapMode, SwapRefused, SwapReport};

use crate::config::PluginConfig;

wasmtime::component::bindgen!({
    world: "aggregation",
    path: "../wit",
});

/// The host side of the `detector` world, sharing the aggregation world's types.
pub mod world {
    wasmtime::component::bindgen!({
        world: "detector",
        path: "../wit",
        with: { "adstream:aggregation/types": crate::plugin::adstream::aggregation::types },
    });
}

/// What a `--plugin` file is.
pub enum Loaded {
    Aggregation(Box<dyn Aggregator>),
    Detector(Box<Detector>),
}

/// Why a plugin call failed. The host logs and counts every one and goes on.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The guest trapped (a panic, `unreachable`, an out-of-bounds access...).
    #[error("plugin {plugin} trapped in {call}: {detail}")]
    Trap { plugin: String, call: &'static str, detail: String },
    /// The call ran past its deadline and was interrupted.
    #[error("plugin {plugin} exceeded its {timeout_ms} ms deadline in {call}")]
    Deadline { plugin: String, call: &'static str, timeout_ms: u128 },
    /// The guest tried to grow its memory past its limit.
    #[error("plugin {plugin} hit its memory limit in {call}: {detail}")]
    OutOfMemory { plugin: String, call: &'static str, detail: String },
    /// The guest returned an error, or output the host cannot use.
    #[error("plugin {plugin} returned an error from {call}: {detail}")]
    BadOutput { plugin: String, call: &'static str, detail: String },
}

impl PluginError {
    /// Short stable name, for metrics and headers.
    pub fn kind(&self) -> &'static str {
        match self {
            PluginError::Trap { .. } => "trap",
            PluginError::Deadline { .. } => "deadline",
            PluginError::OutOfMemory { .. } => "out-of-memory",
            PluginError::BadOutput { .. } => "bad-output",
        }
    }
}

/// An aggregation the pipeline drives: a WebAssembly [`Plugin`], or a [`NativeAggregator`].
pub trait Aggregator {
    fn meta(&self) -> &PluginMeta;

    /// Folds a batch (batch encoding v1) into the aggregation's windows.
    fn process(&mut self, batch: &[u8]) -> Result<(), PluginError>;

    /// Closes a window and returns its records, each with its topic filled in.
    fn close_window(&mut self, window: Window) -> Result<Vec<OutputRecord>, PluginError>;

    /// Drops every window's state and starts afresh (after a failure).
    fn reset(&mut self) -> anyhow::Result<()>;

    /// The accumulator of `window` as bytes (in the format its `state_version` names), or `None`
    /// if it holds no state for it. The state stays in place. Used by a live swap.
    fn export_window(&mut self, window: Window) -> Result<Option<Vec<u8>>, PluginError>;

    /// Replaces the accumulator of `window` with bytes another instance exported.
    fn restore_window(&mut self, window: Window, state: &[u8]) -> Result<(), PluginError>;

    /// Merges bytes another instance exported into the accumulator of `window` (associative and
    /// commutative). Used by the merge stage.
    fn merge_window(&mut self, window: Window, state: &[u8]) -> Result<(), PluginError>;

    /// Another instance of the same plugin and version, with no state: one per task.
    fn fresh(&self) -> anyhow::Result<Box<dyn Aggregator>>;
}

/// Loads plugins with the settings the host started with: at start-up, and for live swaps (off
/// the pipeline's thread; cloning it is cheap, and every clone shares one engine and cache).
#[derive(Clone)]
pub struct Loader {
    runtime: Arc<Runtime>,
    config: PluginConfig,
}

impl Loader {
    pub fn new(config: &PluginConfig) -> anyhow::Result<Self> {
        Ok(Loader { runtime: Runtime::new(&config.cache_dir)?, config: config.clone() })
    }

    /// The settings plugins are loaded with (the `--plugin` files among them).
    pub fn config(&self) -> &PluginConfig {
        &self.config
    }

    /// What a `--plugin` names: a `.wasm` file, or `native:NAME` for an aggregation compiled into
    /// this binary.
    pub fn load(&self, path: &Path) -> anyhow::Result<Box<dyn Aggregator>> {
        let Some(name) = native::native_name(path) else {
            return Ok(Box::new(Plugin::load(&self.runtime, path, &self.config)?));
        };
        let Some((_, make)) = self.config.natives.iter().find(|(n, _)| *n == name) else {
            anyhow::bail!(
                "--plugin {}: this binary has no compiled-in aggregation {name:?} (only the benchmark build adstream-native has: ctr, engagement)",
                path.display()
            );
        };
        Ok(make())
    }

    /// [`Loader::load`] of a file that may also be a detector.
    pub fn load_any(&self, path: &Path) -> anyhow::Result<Loaded> {
        if native::native_name(path).is_some() {
            return self.load(path).map(Loaded::Aggregation);
        }
        let wasm = std::fs::read(path).with_context(|| format!("reading plugin {}", path.display()))?;
        let (component, hash) = self.runtime.load(&wasm, path)?;
        if detector::is_detector(&self.runtime, &component) {
            Detector::new(&self.runtime, &component, hash, path, &self.config).map(|d| Loaded::Detector(Box::new(d)))
        } else {
            Plugin::from_component(&self.runtime, &component, hash, path, &self.config)
                .map(|p| Loaded::Aggregation(Box::new(p)))
        }
    }

    /// A `.wasm` already in memory (an upload to the admin API); `origin` says where it came
    /// from.
    pub fn load_bytes(&self, wasm: &[u8], origin: &Path) -> anyhow::Result<Plugin> {
        Plugin::from_bytes(&self.runtime, wasm, origin, &self.config)
    }
}
