//! The wasmtime engine shared by every plugin, the on-disk cache of compiled plugins, and the
//! epoch ticker behind call deadlines.
//!
//! The ticker advances the epoch every [`EPOCH_TICK`] while guest code runs, and sleeps while none
//! does: an idle host's ticker woke 200 times a second for nothing, more CPU than anything else
//! the host did while idle (BENCHMARKS.md "Idle"). So every entry into guest code (instantiation,
//! which runs the component's start function, and every call) holds a [`Runtime::enter`] guard;
//! the first one wakes the ticker. While it sleeps the epoch stands still, so a deadline set
//! before the entry still gives the call its ticks, counted from the entry.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::Thread;
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
    ticker: Arc<Ticker>,
    ticker_thread: Thread,
}

/// What the ticker thread and the guards share.
#[derive(Default)]
struct Ticker {
    /// Guest code running now, on any thread: the [`Entered`] guards alive.
    entered: AtomicUsize,
    /// Set on drop to stop the ticker thread.
    stop: AtomicBool,
    /// The epoch's advances so far.
    ticks: AtomicU64,
}

/// Guest code may run while this lives ([`Runtime::enter`]): the epoch advances.
#[must_use = "the epoch advances only while the guard lives"]
pub struct Entered<'a> {
    runtime: &'a Runtime,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        self.runtime.ticker.entered.fetch_sub(1, Ordering::AcqRel);
    }
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
        let ticker = Arc::new(Ticker::default());
        let (weak, shared) = (engine.weak(), ticker.clone());
        let ticker_thread = std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while !shared.stop.load(Ordering::Acquire) {
                    if shared.entered.load(Ordering::Acquire) == 0 {
                        // Woken by the next entry (a wake-up that comes before the park is
                        // kept by the park token), or by the drop.
                        std::thread::park();
                        continue;
                    }
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                    shared.ticks.fetch_add(1, Ordering::Relaxed);
                }
            })
            .context("starting the epoch ticker thread")?
            .thread()
            .clone();
        Ok(Arc::new(Runtime { engine, cache_dir: cache_dir.to_owned(), ticker, ticker_thread }))
    }

    /// Hold this while guest code may run (instantiating a component, calling a plugin): the
    /// epoch, and so the call's deadline, advances only then.
    pub fn enter(&self) -> Entered<'_> {
        if self.ticker.entered.fetch_add(1, Ordering::AcqRel) == 0 {
            self.ticker_thread.unpark();
        }
        Entered { runtime: self }
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
        self.ticker.stop.store(true, Ordering::Release);
        self.ticker_thread.unpark();
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn ticks(runtime: &Runtime) -> u64 {
        runtime.ticker.ticks.load(Ordering::Relaxed)
    }

    /// Waits up to 5 s for the epoch to pass `from`: a loaded machine may run the ticker late,
    /// never not at all.
    fn advances_past(runtime: &Runtime, from: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if ticks(runtime) > from {
                return true;
            }
            std::thread::sleep(EPOCH_TICK);
        }
        false
    }

    /// Waits up to 5 s for the epoch to stand still for 20 ticks' time; where it stands then.
    fn settles(runtime: &Runtime) -> Option<u64> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let before = ticks(runtime);
            std::thread::sleep(EPOCH_TICK * 20);
            if ticks(runtime) == before {
                return Some(before);
            }
        }
        None
    }

    #[test]
    fn the_epoch_advances_while_guest_code_may_run_and_stands_still_otherwise() {
        let cache = tempfile::tempdir().unwrap();
        let runtime = Runtime::new(cache.path()).unwrap();
        std::thread::sleep(EPOCH_TICK * 10);
        assert_eq!(ticks(&runtime), 0, "no guest code has run: the ticker must not have ticked");

        let entered = runtime.enter();
        assert!(advances_past(&runtime, 0), "entered, the epoch must advance");
        let nested = runtime.enter();
        drop(entered);
        // One guard of two left: still entered.
        assert!(advances_past(&runtime, ticks(&runtime)), "still entered, the epoch must advance");
        drop(nested);

        // The tick under way when the last guard went may still come; then none.
        let settled = settles(&runtime).expect("nothing entered: the ticker must sleep");

        // And it wakes again for the next entry.
        let _again = runtime.enter();
        assert!(advances_past(&runtime, settled), "entered again, the epoch must advance");
    }
}
