//! The wasmtime engine shared by every plugin, the on-disk cache of compiled plugins, and the
//! epoch ticker behind call deadlines.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

/// How often the engine's epoch advances: the resolution of plugin deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The engine, its cache directory and its ticker thread.
pub struct Runtime {
    engine: Engine,
    cache_dir: PathBuf,
    /// Set on drop to stop the ticker thread.
    stop: Arc<AtomicBool>,
}

impl Runtime {
    pub fn new(cache_dir: &Path) -> anyhow::Result<Arc<Self>> {
        let mut config = Config::new();
        // Deadlines by epoch interruption: far cheaper than fuel (see the README's figures).
        config.epoch_interruption(true);
        // Plugins are called synchronously, one call at a time: the component model's
        // concurrency machinery would only add per-call cost.
        config.concurrency_support(false);
        // For profiling (BENCHMARKS.md): name the compiled plugin functions in
        // /tmp/perf-<pid>.map, where `perf report` finds them.
        if std::env::var_os("ADSTREAM_PERF_MAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(anyhow::Error::from).context("creating the wasmtime engine")?;
        let stop = Arc::new(AtomicBool::new(false));
        let (ticker, stop_ticker) = (engine.weak(), stop.clone());
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while !stop_ticker.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match ticker.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .context("starting the epoch ticker thread")?;
        Ok(Arc::new(Runtime { engine, cache_dir: cache_dir.to_owned(), stop }))
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles a component, or loads it from the cache when this exact `.wasm` was compiled
    /// before by an engine with the same settings. Returns the component and the SHA-256 of the
    /// `.wasm` (hex). `path` says where the bytes came from, for logs and errors.
    pub fn load(&self, wasm: &[u8], path: &Path) -> anyhow::Result<(Component, String)> {
        let hash = crate::bytes::hex(&Sha256::digest(wasm));
        let mut engine_hash = std::hash::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut engine_hash);
        let cached = self.cache_dir.join(format!("{}-{:016x}.cwasm", &hash[..32], engine_hash.finish()));
        if cached.is_file() {
            // SAFETY: the file was written by `precompile_component` of an engine with the same
            // compatibility hash (it is in the name), into a cache directory that only this
            // program writes. A damaged file is rejected by wasmtime's own checks and recompiled.
            match unsafe { Component::deserialize_file(&self.engine, &cached) } {
                Ok(component) => {
                    tracing::debug!(plugin = %path.display(), cache = %cached.display(), "loaded compiled plugin from cache");
                    return Ok((component, hash));
                }
                Err(e) => {
                    tracing::warn!(cache = %cached.display(), error = %e, "ignoring unusable cached plugin")
                }
            }
        }
        // The preamble of a core module (version 1, layer 0), which is what wasm32-wasip1 and
        // wasm32-unknown-unknown builds make: say what to build instead.
        if wasm.starts_with(b"\0asm\x01\0\0\0") {
            anyhow::bail!(
                "{} is not a valid WebAssembly component: it is a core WebAssembly module. Build the plugin for wasm32-wasip2 (`cargo build --target wasm32-wasip2` makes a component; wasm32-wasip1 and wasm32-unknown-unknown make core modules), or a Python plugin with `bash scripts/build-plugins.sh`",
                path.display()
            );
        }
        let started = std::time::Instant::now();
        let compiled = self
            .engine
            .precompile_component(wasm)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("{} is not a valid WebAssembly component", path.display()))?;
        tracing::info!(plugin = %path.display(), ms = started.elapsed().as_millis() as u64, "compiled plugin");
        if let Err(e) = write_atomically(&cached, &compiled) {
            tracing::warn!(cache = %cached.display(), error = %e, "could not cache the compiled plugin; start-up will compile it again");
        }
        // SAFETY: `compiled` was produced just above by this engine.
        let component = unsafe { Component::deserialize(&self.engine, &compiled) }?;
        Ok((component, hash))
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Writes `path` through a file of its own (the process and a count in its name), then renames
/// it: a reader sees the whole file or none, whichever processes and threads compile the same
/// plugin into one cache at once.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
