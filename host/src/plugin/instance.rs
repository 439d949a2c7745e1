//! One loaded plugin: its wasmtime store, its limits and typed calls into it.
//!
//! Limits: every call has a deadline (epoch interruption) and the instance a memory cap
//! (growing past it traps). A plugin gets a WASI context with no capabilities: no files, no
//! network, no environment, no arguments, no stdio; its clocks are frozen at the epoch and its
//! random numbers come from a fixed seed. An aggregation is a function of its events: the same
//! input gives the same output, on every host, after every restart. The operator may grant
//! stderr, the real clocks or real randomness (`--plugin-grant`); never files or the network.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, ensure};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::runtime::{EPOCH_TICK, Runtime};
use super::stderr::StderrTail;
use super::{Aggregation, AggregationPre, Aggregator, EventKind, OutputRecord, PluginError, Window};
use crate::config::{Grants, PluginConfig};

/// What a plugin said about itself, plus where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginMeta {
    pub name: String,
    pub version: String,
    pub description: String,
    pub wants_impressions: bool,
    pub wants_clicks: bool,
    /// The first one receives records whose topic is empty.
    pub output_topics: Vec<String>,
    pub state_version: u32,
    /// SHA-256 of the `.wasm` file, hex.
    pub hash: String,
    pub path: PathBuf,
}

impl PluginMeta {
    /// What a plugin's `describe()` said, checked (a name, an output topic), with the hash and
    /// path of its `.wasm`.
    pub(super) fn described(info: super::PluginInfo, hash: String, path: &Path) -> anyhow::Result<Self> {
        ensure!(!info.name.is_empty(), "plugin {} describes itself with an empty name", path.display());
        ensure!(!info.output_topics.is_empty(), "plugin {} ({}) names no output topic", path.display(), info.name);
        Ok(PluginMeta {
            wants_impressions: info.wants.contains(&EventKind::Impression),
            wants_clicks: info.wants.contains(&EventKind::Click),
            name: info.name,
            version: info.version,
            description: info.description,
            output_topics: info.output_topics,
            state_version: info.state_version,
            hash,
            path: path.to_owned(),
        })
    }
}

/// The data of a plugin's store.
pub struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    /// Without the `stderr` grant, the end of what the plugin wrote there.
    stderr: Option<StderrTail>,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// A loaded, instantiated plugin.
pub struct Plugin {
    meta: PluginMeta,
    /// Keeps the engine and its epoch ticker alive as long as the plugin.
    runtime: Arc<Runtime>,
    pre: AggregationPre<PluginState>,
    /// The live instance's store; replaced wholesale by [`Plugin::reset`] after a fault, since
    /// an instance that trapped cannot be entered again.
    store: Store<PluginState>,
    bindings: Aggregation,
    deadline_ticks: u64,
    timeout_ms: u128,
    memory_bytes: usize,
    grants: Grants,
}

/// The limits a plugin runs under: the defaults, or those `--plugin-limit` sets for its name.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    pub timeout_ms: u128,
    pub deadline_ticks: u64,
    pub memory_bytes: usize,
}

impl Limits {
    /// Before `describe`, the name is not known: the defaults apply.
    pub fn defaults(config: &PluginConfig) -> Self {
        Limits {
            timeout_ms: config.timeout.as_millis(),
            deadline_ticks: ticks(config.timeout),
            memory_bytes: usize::try_from(config.memory_bytes).unwrap_or(usize::MAX),
        }
    }

    pub fn of(config: &PluginConfig, name: &str) -> Self {
        let mut limits = Self::defaults(config);
        if let Some(limit) = config.limits.iter().find(|l| l.plugin == name) {
            if let Some(timeout) = limit.timeout {
                limits.timeout_ms = timeout.as_millis();
                limits.deadline_ticks = ticks(timeout);
            }
            if let Some(mib) = limit.memory_mib {
                limits.memory_bytes = usize::try_from(mib << 20).unwrap_or(usize::MAX);
            }
        }
        limits
    }

    /// Puts a store made with the defaults under these limits.
    pub fn apply(&self, store: &mut Store<PluginState>) {
        store.data_mut().limits =
            StoreLimitsBuilder::new().memory_size(self.memory_bytes).trap_on_grow_failure(true).build();
        store.set_epoch_deadline(self.deadline_ticks);
    }
}

/// The epoch ticks a call may run for. The first tick after a deadline is set comes anywhere
/// within one tick, so one more tick than the timeout holds makes a call get at least its
/// timeout, and at most one tick more.
fn ticks(timeout: std::time::Duration) -> u64 {
    timeout.as_millis().div_ceil(EPOCH_TICK.as_millis()) as u64 + 1
}

/// The only time a plugin sees: the epoch, forever. Windows come with their own bounds.
struct FrozenClock;

impl wasmtime_wasi::HostWallClock for FrozenClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_secs(1)
    }
    fn now(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

pub(super) fn new_store(
    runtime: &Runtime,
    memory_bytes: usize,
    deadline_ticks: u64,
    grants: Grants,
) -> Store<PluginState> {
    let limits = StoreLimitsBuilder::new().memory_size(memory_bytes).trap_on_grow_failure(true).build();
    let mut wasi = WasiCtx::builder();
    wasi.allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
    if !grants.clock {
        wasi.wall_clock(FrozenClock).monotonic_clock(FrozenClock);
    }
    if !grants.random {
        wasi.secure_random(<plugin_rand::rngs::StdRng as plugin_rand::SeedableRng>::seed_from_u64(0))
            .insecure_random(<plugin_rand::rngs::StdRng as plugin_rand::SeedableRng>::seed_from_u64(0))
            .insecure_random_seed(0);
    }
    let stderr = if grants.stderr {
        wasi.inherit_stderr();
        None
    } else {
        let tail = StderrTail::default();
        wasi.stderr(tail.clone());
        Some(tail)
    };
    let wasi = wasi.build();
    let state = PluginState { wasi, table: ResourceTable::new(), limits, stderr };
    let mut store = Store::new(runtime.engine(), state);
    store.limiter(|s| &mut s.limits);
    store.epoch_deadline_trap();
    // Instantiation runs guest code too (its start function): it gets the same deadline.
    store.set_epoch_deadline(deadline_ticks);
    store
}

impl Plugin {
    /// Loads, instantiates and describes the plugin at `path`.
    pub fn load(runtime: &Arc<Runtime>, path: &Path, config: &PluginConfig) -> anyhow::Result<Self> {
        let wasm = std::fs::read(path).with_context(|| format!("reading plugin {}", path.display()))?;
        Self::from_bytes(runtime, &wasm, path, config)
    }

    /// [`Plugin::load`] of a `.wasm` already in memory; `path` says where it came from.
    pub fn from_bytes(runtime: &Arc<Runtime>, wasm: &[u8], path: &Path, config: &PluginConfig) -> anyhow::Result<Self> {
        let (component, hash) = runtime.load(wasm, path)?;
        Self::from_component(runtime, &component, hash, path, config)
    }

    /// [`Plugin::load`] of a compiled component whose `.wasm` has SHA-256 `hash`.
    pub fn from_component(
        runtime: &Arc<Runtime>,
        component: &Component,
        hash: String,
        path: &Path,
        config: &PluginConfig,
    ) -> anyhow::Result<Self> {
        let pre = prepare(runtime, component).with_context(|| format!("linking plugin {}", path.display()))?;
        let _entered = runtime.enter();
        let Limits { memory_bytes, deadline_ticks, .. } = Limits::defaults(config);
        let mut store = new_store(runtime, memory_bytes, deadline_ticks, config.grants);
        let bindings = pre
            .instantiate(&mut store)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("instantiating plugin {}", path.display()))?;
        store.set_epoch_deadline(deadline_ticks);
        let info = bindings
            .call_describe(&mut store)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("calling describe() of plugin {}", path.display()))?;
        let meta = PluginMeta::described(info, hash, path)?;
        let limits = Limits::of(config, &meta.name);
        limits.apply(&mut store);
        Ok(Plugin {
            meta,
            runtime: runtime.clone(),
            pre,
            store,
            bindings,
            deadline_ticks: limits.deadline_ticks,
            timeout_ms: limits.timeout_ms,
            memory_bytes: limits.memory_bytes,
            grants: config.grants,
        })
    }

    fn classify(&self, call: &'static str, e: wasmtime::Error) -> PluginError {
        classify(&self.store, &self.meta.name, self.timeout_ms, call, e)
    }

    /// Runs one call under the deadline, and maps failures to [`PluginError`].
    fn call<T>(
        &mut self,
        call: &'static str,
        f: impl FnOnce(&Aggregation, &mut Store<PluginState>) -> wasmtime::Result<Result<T, String>>,
    ) -> Result<T, PluginError> {
        let _entered = self.runtime.enter();
        self.store.set_epoch_deadline(self.deadline_ticks);
        match f(&self.bindings, &mut self.store) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(detail)) => Err(PluginError::BadOutput { plugin: self.meta.name.clone(), call, detail }),
            Err(e) => Err(self.classify(call, e)),
        }
    }
}

impl Aggregator for Plugin {
    fn meta(&self) -> &PluginMeta {
        &self.meta
    }

    /// Folds a batch (batch encoding v1) into the plugin's windows.
    fn process(&mut self, batch: &[u8]) -> Result<(), PluginError> {
        self.call("process", |b, s| b.call_process(s, batch))
    }

    /// Closes a window and returns its records, each with its topic filled in.
    fn close_window(&mut self, window: Window) -> Result<Vec<OutputRecord>, PluginError> {
        let mut records = self.call("close-window", |b, s| b.call_close_window(s, window))?;
        for r in &mut records {
            if r.topic.is_empty() {
                r.topic.clone_from(&self.meta.output_topics[0]);
            }
        }
        Ok(records)
    }

    fn export_window(&mut self, window: Window) -> Result<Option<Vec<u8>>, PluginError> {
        self.call("export-window", |b, s| b.call_export_window(s, window).map(Ok))
    }

    fn restore_window(&mut self, window: Window, state: &[u8]) -> Result<(), PluginError> {
        self.call("restore-window", |b, s| b.call_restore_window(s, window, state))
    }

    fn merge_window(&mut self, window: Window, state: &[u8]) -> Result<(), PluginError> {
        self.call("merge-window", |b, s| b.call_merge_window(s, window, state))
    }

    /// A new store and instance of the same compiled component, with the same limits.
    fn fresh(&self) -> anyhow::Result<Box<dyn Aggregator>> {
        let _entered = self.runtime.enter();
        let mut store = new_store(&self.runtime, self.memory_bytes, self.deadline_ticks, self.grants);
        let bindings = self
            .pre
            .instantiate(&mut store)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("instantiating another instance of plugin {}", self.meta.name))?;
        Ok(Box::new(Plugin {
            meta: self.meta.clone(),
            runtime: self.runtime.clone(),
            pre: self.pre.clone(),
            store,
            bindings,
            deadline_ticks: self.deadline_ticks,
            timeout_ms: self.timeout_ms,
            memory_bytes: self.memory_bytes,
            grants: self.grants,
        }))
    }

    /// Replaces the instance with a fresh one (all window state is lost). Needed after a
    /// trap: an instance that trapped cannot be entered again.
    fn reset(&mut self) -> anyhow::Result<()> {
        let _entered = self.runtime.enter();
        let mut store = new_store(&self.runtime, self.memory_bytes, self.deadline_ticks, self.grants);
        self.bindings = self
            .pre
            .instantiate(&mut store)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("re-instantiating plugin {}", self.meta.name))?;
        self.store = store;
        Ok(())
    }
}

/// What a failed call of plugin `plugin` was: a deadline, a memory limit or a trap, with what
/// the plugin wrote to an ungranted stderr just before.
pub(super) fn classify(
    store: &Store<PluginState>,
    plugin: &str,
    timeout_ms: u128,
    call: &'static str,
    e: wasmtime::Error,
) -> PluginError {
    let plugin = plugin.to_owned();
    if let Some(Trap::Interrupt) = e.downcast_ref::<Trap>() {
        return PluginError::Deadline { plugin, call, timeout_ms };
    }
    // The trap's first line says what trapped; the frames (`<unknown>` without debug
    // information) say nothing to the plugin's author. What the plugin wrote to stderr just
    // before (a Rust panic's message and location, a Python traceback) does.
    let full = format!("{e:#}");
    let detail = match store.data().stderr.as_ref().and_then(StderrTail::take) {
        Some(said) => format!("{}; the plugin wrote to stderr: {said}", e.root_cause()),
        None => full.clone(),
    };
    if full.contains("forcing trap when growing memory") {
        PluginError::OutOfMemory { plugin, call, detail }
    } else {
        PluginError::Trap { plugin, call, detail }
    }
}

/// A linker with the WASI imports every guest may need (granting nothing by itself).
pub(super) fn linker(runtime: &Runtime) -> anyhow::Result<Linker<PluginState>> {
    let mut linker = Linker::new(runtime.engine());
    // Guests built with Rust's std, and CPython, import WASI even when they do no I/O; the
    // context they get grants nothing.
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    Ok(linker)
}

fn prepare(runtime: &Runtime, component: &Component) -> anyhow::Result<AggregationPre<PluginState>> {
    if super::detector::is_detector(runtime, component) {
        anyhow::bail!(
            "it is a detector (world `detector`), not an aggregation: load it at start-up with --plugin; a detector cannot be swapped in while the host runs"
        );
    }
    let pre = linker(runtime)?.instantiate_pre(component)?;
    Ok(AggregationPre::new(pre)?)
}
