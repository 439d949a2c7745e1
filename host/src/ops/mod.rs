//! Operating a running host: what it shows and how it is changed while it runs.
//!
//! - [`http`]: the web console (`/`), `/metrics`, `/healthz`, `/readyz` and the JSON API under
//!   `/api/` that the console itself uses, including the admin call that swaps a plugin.
//! - [`metrics`]: the Prometheus metrics.
//! - [`watch`]: swaps a plugin when its `.wasm` file changes (`--watch-plugins`).
//!
//! Each pipeline thread owns everything that changes per event in its tasks. It publishes a
//! snapshot here a few times a second ([`Ops::publish`]); the host's view, which the HTTP server
//! reads, puts the threads' snapshots together. Each thread takes swap requests from its own
//! [`SwapInbox`] between messages, so that a swap happens between two events, never during one;
//! a swap is asked of every thread, and answered once all have answered.

pub mod http;
pub mod metrics;
pub mod watch;

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::engine::complete::Record;
use crate::engine::peek::OpenWindows;
use crate::engine::{Engine, WindowResults};
use crate::metrics::Stats;
use crate::plugin::{Aggregator, Loader, Plugin, PluginMeta, SwapReport};

/// Windows of results kept per plugin for the console's charts.
pub const RESULT_WINDOWS_KEPT: usize = 30;

/// How long after the last request for them the open windows' live figures are still computed.
const OPEN_WANTED_FOR: Duration = Duration::from_secs(10);

/// Completeness records in `/api/status` (the console's table), newest first.
const COMPLETENESS_SHOWN: usize = 10;
/// Swap attempts kept for the console.
const SWAPS_KEPT: usize = 50;

/// Wall-clock time, Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// One input partition, as the console shows it.
#[derive(Clone, Debug, Serialize)]
pub struct PartitionStatus {
    pub topic: String,
    pub partition: i32,
    /// The next offset to read (one past the last one handled).
    pub next_offset: Option<i64>,
    /// The partition's end, as last seen in a fetch response.
    pub high_watermark: Option<i64>,
    /// Messages not read yet.
    pub lag: Option<i64>,
    /// Largest event time seen minus the allowed out-of-orderness, Unix ms.
    pub watermark_ms: Option<i64>,
    /// With no message for the idle timeout, the partition no longer holds the watermark back.
    pub idle: bool,
}

/// A version of a plugin.
#[derive(Clone, Debug, Serialize)]
pub struct VersionStatus {
    pub version: String,
    pub hash: String,
    pub path: String,
    pub state_version: u32,
}

impl From<&PluginMeta> for VersionStatus {
    fn from(m: &PluginMeta) -> Self {
        VersionStatus {
            version: m.version.clone(),
            hash: m.hash.clone(),
            path: m.path.display().to_string(),
            state_version: m.state_version,
        }
    }
}

/// One loaded plugin, as the console shows it.
#[derive(Clone, Debug, Serialize)]
pub struct PluginStatus {
    pub name: String,
    pub description: String,
    pub version: String,
    pub hash: String,
    pub path: String,
    pub state_version: u32,
    pub output_topics: Vec<String>,
    /// `running`, or `finishing-windows` while its previous version finishes the windows that
    /// were open at a swap.
    pub status: &'static str,
    /// During an incompatible swap: the previous version, finishing windows through
    /// `retiring_through_ms`.
    pub retiring: Option<VersionStatus>,
    pub retiring_through_ms: Option<i64>,
    pub errors: u64,
    pub last_error: Option<String>,
    /// Windows whose result will be withheld (a failure lost their state).
    pub withheld_windows: usize,
    pub swaps: u64,
}

impl PluginStatus {
    pub fn of(engine: &Engine) -> Vec<PluginStatus> {
        engine
            .plugin_summaries()
            .into_iter()
            .map(|p| {
                let m = p.meta;
                PluginStatus {
                    name: m.name.clone(),
                    description: m.description.clone(),
                    version: m.version.clone(),
                    hash: m.hash.clone(),
                    path: m.path.display().to_string(),
                    state_version: m.state_version,
                    output_topics: m.output_topics.clone(),
                    status: if p.retiring.is_some() { "finishing-windows" } else { "running" },
                    retiring: p.retiring.map(|(m, _)| m.into()),
                    retiring_through_ms: p.retiring.map(|(_, w)| w),
                    errors: p.errors,
                    last_error: p.last_error,
                    withheld_windows: p.withheld_windows,
                    swaps: p.swaps,
                }
            })
            .collect()
    }
}

/// One swap attempt, applied or rejected.
#[derive(Clone, Debug, Serialize)]
pub struct SwapEvent {
    pub at_ms: i64,
    pub plugin: String,
    /// `admin API` or `file watch`.
    pub origin: String,
    pub applied: bool,
    /// On success, what the swap did.
    pub report: Option<SwapReport>,
    /// On rejection, why.
    pub error: Option<String>,
}

/// A request to the pipeline thread to put `plugin` in charge, answered on `reply`.
pub struct SwapRequest {
    pub plugin: Plugin,
    pub origin: &'static str,
    pub reply: tokio::sync::oneshot::Sender<Result<SwapReport, String>>,
}

/// Where the pipeline thread picks up swap requests.
pub struct SwapInbox(mpsc::Receiver<SwapRequest>);

impl SwapInbox {
    pub fn try_recv(&self) -> Option<SwapRequest> {
        self.0.try_recv().ok()
    }
}

/// The lifecycle of `run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Starting,
    Running,
    /// Kafka failed the last attempt (or the first could not start): waiting to start again
    /// from the last checkpoint; `kafka_error` says why.
    Waiting,
    Stopping,
}

/// What one pipeline thread last reported, or the host's view of them all
/// ([`Snapshot::combine`]).
#[derive(Debug)]
struct Snapshot {
    phase: Phase,
    heartbeat: Instant,
    /// The Kafka client's last error, until a message is read again.
    kafka_error: Option<String>,
    stats: Stats,
    partitions: Vec<PartitionStatus>,
    plugins: Vec<PluginStatus>,
}

impl Snapshot {
    fn new() -> Self {
        Snapshot {
            phase: Phase::Starting,
            heartbeat: Instant::now(),
            kafka_error: None,
            stats: Stats::default(),
            partitions: Vec::new(),
            plugins: Vec::new(),
        }
    }
}

/// Each thread's snapshot and the host's, the results and the swaps.
#[derive(Debug)]
struct State {
    threads: Vec<Snapshot>,
    /// The threads' snapshots together, as of the last report.
    host: Snapshot,
    /// Per plugin, its latest windows' results, oldest first.
    results: BTreeMap<String, VecDeque<WindowResults>>,
    /// The latest windows' completeness records (each window's last), by window start.
    completeness: BTreeMap<i64, Record>,
    /// Each pipeline thread's live figures of its open windows, as last taken.
    open: Vec<OpenWindows>,
    swaps: VecDeque<SwapEvent>,
}

impl Snapshot {
    /// The host's view from its threads': the least advanced phase (a host is ready when every
    /// thread is), the oldest heartbeat (a stuck thread shows), the first error, the counters
    /// added up, every thread's partitions, and each plugin with its errors added up.
    fn combine(threads: &[Snapshot]) -> Snapshot {
        let phase_of = |p: Phase| threads.iter().any(|t| t.phase == p).then_some(p);
        let phase = phase_of(Phase::Stopping)
            .or_else(|| phase_of(Phase::Starting))
            .or_else(|| phase_of(Phase::Waiting))
            .unwrap_or(Phase::Running);
        let heartbeat = threads.iter().map(|t| t.heartbeat).min().unwrap_or_else(Instant::now);
        let several = threads.len() > 1;
        let kafka_error = threads.iter().enumerate().find_map(|(n, t)| {
            let e = t.kafka_error.as_ref()?;
            Some(if several { format!("pipeline thread {n}: {e}") } else { e.clone() })
        });
        let stats = Stats::host(threads.iter().map(|t| &t.stats));
        let mut partitions: Vec<PartitionStatus> = threads.iter().flat_map(|t| t.partitions.iter().cloned()).collect();
        partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        let mut plugins: Vec<PluginStatus> = threads.first().map(|t| t.plugins.clone()).unwrap_or_default();
        for other in threads.iter().skip(1) {
            for theirs in &other.plugins {
                let Some(p) = plugins.iter_mut().find(|p| p.name == theirs.name) else {
                    continue;
                };
                p.errors += theirs.errors;
                p.withheld_windows += theirs.withheld_windows;
                p.last_error = p.last_error.take().or_else(|| theirs.last_error.clone());
                if theirs.hash != p.hash
                    || theirs.retiring.as_ref().map(|r| &r.hash) != p.retiring.as_ref().map(|r| &r.hash)
                {
                    // A swap applied on some threads only (another refused it): the merge
                    // withholds the windows whose partials differ in state version.
                    p.status = "versions-differ-between-threads";
                }
            }
        }
        Snapshot { phase, heartbeat, kafka_error, stats, partitions, plugins }
    }
}

/// Shared between the pipeline threads, the HTTP server and the plugin watcher.
pub struct Ops {
    state: Mutex<State>,
    metrics: metrics::Metrics,
    /// One inbox per pipeline thread.
    swaps: Mutex<Vec<mpsc::Sender<SwapRequest>>>,
    loader: Option<Loader>,
    started_ms: i64,
    /// `--admin-token`: required by admin calls when set.
    admin_token: Option<String>,
    /// Whether admin calls are allowed without a token (the server listens on loopback only).
    admin_open: bool,
    /// Until when (ms since the epoch) someone is looking at the open windows' live figures: the
    /// pipeline computes them only then.
    open_wanted_until: AtomicI64,
}

/// The pipeline thread publishes every 250 ms; a heartbeat older than this makes `/readyz` fail:
/// the thread is waiting on Kafka (a transaction that cannot commit while the broker is away).
pub const READY_STALE: Duration = Duration::from_secs(5);

/// The pipeline thread's heartbeat older than this makes `/healthz` fail: well beyond any wait
/// on Kafka the host makes (a transaction step gives up after
/// [`crate::sink::kafka::STEP_DEADLINE`], 30 s, and the attempt starts again).
pub const HEARTBEAT_LIMIT: Duration = Duration::from_secs(90);

impl Ops {
    /// For a host of `threads` pipeline threads, each with its inbox. `loader` loads
    /// swapped-in plugins (none: swaps are refused). `admin_open` allows admin calls without a
    /// token.
    pub fn new(
        loader: Option<Loader>,
        admin_token: Option<String>,
        admin_open: bool,
        threads: usize,
    ) -> (Arc<Ops>, Vec<SwapInbox>) {
        let (senders, inboxes): (Vec<_>, Vec<_>) = (0..threads.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel();
                (tx, SwapInbox(rx))
            })
            .unzip();
        let state = State {
            threads: (0..senders.len()).map(|_| Snapshot::new()).collect(),
            host: Snapshot::new(),
            results: BTreeMap::new(),
            completeness: BTreeMap::new(),
            open: vec![OpenWindows::default(); senders.len()],
            swaps: VecDeque::new(),
        };
        let metrics = metrics::Metrics::default();
        metrics.threads(senders.len());
        let ops = Ops {
            state: Mutex::new(state),
            metrics,
            swaps: Mutex::new(senders),
            loader,
            started_ms: now_ms(),
            admin_token,
            admin_open,
            open_wanted_until: AtomicI64::new(0),
        };
        (Arc::new(ops), inboxes)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the snapshot half-written in a way that
        // matters: it is replaced wholesale on the next publish.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes what pipeline thread `thread` reported, then the host's view and the metrics.
    fn report(&self, thread: usize, change: impl FnOnce(&mut Snapshot)) {
        let mut s = self.state();
        let Some(t) = s.threads.get_mut(thread) else {
            return;
        };
        change(t);
        t.heartbeat = Instant::now();
        s.host = Snapshot::combine(&s.threads);
        let host = &s.host;
        self.metrics.update(&host.stats, &host.partitions, &host.plugins, Self::ready(host).is_ok(), now_ms());
    }

    pub fn set_phase(&self, thread: usize, phase: Phase) {
        self.report(thread, |t| t.phase = phase);
    }

    /// Pipeline thread `thread` is alive (between attempts, when it publishes nothing else).
    pub fn heartbeat(&self, thread: usize) {
        self.report(thread, |_| {});
    }

    /// Between attempts of `thread`: why, and its counters so far.
    pub fn waiting(&self, thread: usize, reason: &str, stats: &Stats) {
        self.report(thread, |t| {
            t.phase = Phase::Waiting;
            t.kafka_error = Some(reason.to_owned());
            t.stats = Stats { result_latencies_us: Vec::new(), ..stats.clone() };
        });
    }

    /// The run ends on a failure retrying cannot heal.
    pub fn stopped(&self, thread: usize, reason: &str) {
        self.report(thread, |t| {
            t.phase = Phase::Stopping;
            t.kafka_error = Some(reason.to_owned());
        });
    }

    /// Pipeline thread `thread`'s current figures (it calls this a few times a second).
    pub fn publish(
        &self,
        thread: usize,
        stats: Stats,
        partitions: Vec<PartitionStatus>,
        plugins: Vec<PluginStatus>,
        kafka_error: Option<String>,
    ) {
        self.report(thread, |t| {
            t.kafka_error = kafka_error;
            t.stats = Stats { result_latencies_us: Vec::new(), ..stats };
            t.partitions = partitions;
            t.plugins = plugins;
        });
    }

    /// Windows just published.
    pub fn add_results(&self, results: Vec<WindowResults>) {
        if results.is_empty() {
            return;
        }
        let mut s = self.state();
        for r in results {
            let kept = s.results.entry(r.plugin.clone()).or_default();
            kept.push_back(r);
            if kept.len() > RESULT_WINDOWS_KEPT {
                kept.pop_front();
            }
        }
        let latest: Vec<&WindowResults> = s.results.values().filter_map(|w| w.back()).collect();
        self.metrics.results(&latest);
    }

    /// Completeness records just published: a window's first, or an update that supersedes it.
    pub fn add_completeness(&self, records: Vec<Record>) {
        if records.is_empty() {
            return;
        }
        let mut s = self.state();
        for r in records {
            s.completeness.insert(r.window_start_ms, r);
        }
        while s.completeness.len() > RESULT_WINDOWS_KEPT {
            s.completeness.pop_first();
        }
    }

    /// The completeness records of the last `windows` windows published here, newest first.
    pub fn completeness(&self, windows: usize) -> Vec<Record> {
        self.state().completeness.values().rev().take(windows).cloned().collect()
    }

    /// Whether someone asked for the open windows' live figures lately (the console, or
    /// `GET /api/windows/open`): computing them takes plugin calls, so only then.
    pub fn open_wanted(&self) -> bool {
        now_ms() < self.open_wanted_until.load(Ordering::Relaxed)
    }

    /// Pipeline thread `thread`'s live figures of its open windows.
    pub fn set_open(&self, thread: usize, open: OpenWindows) {
        if let Some(slot) = self.state().open.get_mut(thread) {
            *slot = open;
        }
    }

    /// The live figures of the windows not published yet, one entry per pipeline thread (each
    /// runs its own tasks); asking keeps them computed for [`OPEN_WANTED_FOR`].
    pub fn open_windows(&self) -> Vec<OpenWindows> {
        self.open_wanted_until.store(now_ms() + OPEN_WANTED_FOR.as_millis() as i64, Ordering::Relaxed);
        self.state().open.clone()
    }

    /// A window's results were acknowledged by Kafka this long after the watermark passed its end.
    pub fn result_latency(&self, latency: Duration) {
        self.metrics.latency(latency.as_secs_f64());
    }

    /// Records a swap attempt.
    pub fn swapped(&self, plugin: &str, origin: &str, result: &Result<SwapReport, String>) {
        let outcome = match result {
            Ok(r) if r.mode == crate::plugin::SwapMode::Unchanged => "unchanged",
            Ok(_) => "applied",
            Err(_) => "rejected",
        };
        self.metrics.swap(plugin, outcome);
        let event = SwapEvent {
            at_ms: now_ms(),
            plugin: plugin.to_owned(),
            origin: origin.to_owned(),
            applied: result.is_ok(),
            report: result.as_ref().ok().cloned(),
            error: result.as_ref().err().cloned(),
        };
        let mut s = self.state();
        s.swaps.push_back(event);
        if s.swaps.len() > SWAPS_KEPT {
            s.swaps.pop_front();
        }
    }

    /// Loads `wasm` (off the pipeline thread: compiling takes a while) and asks the pipeline to
    /// put it in charge of `plugin`, which it must describe itself as. Every attempt is recorded;
    /// a failure leaves the running version in place.
    pub async fn swap(
        self: &Arc<Self>,
        plugin: &str,
        wasm: Vec<u8>,
        origin: &'static str,
        source: &Path,
    ) -> Result<SwapReport, String> {
        let result = self.load_and_swap(plugin, wasm, origin, source).await;
        if let Err(e) = &result {
            tracing::warn!(plugin, origin, error = %e, "plugin swap rejected; the running version stays");
        }
        self.swapped(plugin, origin, &result);
        result
    }

    async fn load_and_swap(
        &self,
        expected: &str,
        wasm: Vec<u8>,
        origin: &'static str,
        source: &Path,
    ) -> Result<SwapReport, String> {
        let loader = self.loader.clone().ok_or("this host cannot swap plugins")?;
        let source = source.to_owned();
        let threads = self.swaps.lock().unwrap_or_else(|e| e.into_inner()).len();
        // An instance per pipeline thread; the compile cache makes all but the first cheap.
        let plugins = tokio::task::spawn_blocking(move || {
            (0..threads).map(|_| loader.load_bytes(&wasm, &source)).collect::<anyhow::Result<Vec<Plugin>>>()
        })
        .await
        .map_err(|e| format!("loading the plugin panicked: {e}"))?
        .map_err(|e| format!("{e:#}"))?;
        let name = &plugins[0].meta().name;
        if name != expected {
            return Err(format!(
                "the new .wasm describes itself as {name:?}, not {expected:?}: a swap replaces a plugin with another version of itself"
            ));
        }
        let mut answers = Vec::new();
        {
            let senders = self.swaps.lock().unwrap_or_else(|e| e.into_inner());
            for (plugin, inbox) in plugins.into_iter().zip(senders.iter()) {
                let (reply, answer) = tokio::sync::oneshot::channel();
                inbox.send(SwapRequest { plugin, origin, reply }).map_err(|_| "the pipeline has stopped")?;
                answers.push(answer);
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut results = Vec::new();
        for mut answer in answers {
            results.push(match tokio::time::timeout_at(deadline, &mut answer).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err("the pipeline stopped before taking the new version".to_owned()),
                Err(_) => {
                    // Closing first settles a race with the pipeline answering just now: after
                    // it, either the answer is here or the pipeline will see the request
                    // abandoned.
                    answer.close();
                    answer.try_recv().unwrap_or_else(|_| {
                        Err("the pipeline did not take the new version within 60 s (it may be waiting on Kafka); the swap is abandoned, try again".to_owned())
                    })
                }
            });
        }
        combine_swaps(results)
    }
}

/// One answer from the answers of every pipeline thread: the swap is applied when every thread
/// applied it. A thread that refused it while others applied it leaves the threads on different
/// versions until the next swap, which the answer says (the merge stage withholds, rather than
/// merges, partials of one window whose state versions differ).
fn combine_swaps(results: Vec<Result<SwapReport, String>>) -> Result<SwapReport, String> {
    let several = results.len() > 1;
    let mut applied = Vec::new();
    let mut refused = Vec::new();
    for (n, result) in results.into_iter().enumerate() {
        match result {
            Ok(report) => applied.push((n, report)),
            Err(e) if several => refused.push(format!("pipeline thread {n}: {e}")),
            Err(e) => refused.push(e),
        }
    }
    if refused.is_empty() {
        let mut reports = applied.into_iter().map(|(_, r)| r);
        let first = reports.next().ok_or("the host has no pipeline thread")?;
        return Ok(reports.fold(first, SwapReport::and));
    }
    let mut error = refused.join("; ");
    if !applied.is_empty() {
        let threads: Vec<String> = applied.iter().map(|(n, _)| n.to_string()).collect();
        error.push_str(&format!(
            " (pipeline threads {} took the new version: the threads now run different versions; swap again)",
            threads.join(", ")
        ));
    }
    Err(error)
}

/// What the HTTP server reads.
impl Ops {
    /// Live: the pipeline thread has reported recently.
    pub fn health(&self) -> Result<String, String> {
        let age = self.state().host.heartbeat.elapsed();
        if age > HEARTBEAT_LIMIT {
            return Err(format!("the pipeline thread has not reported for {} s", age.as_secs()));
        }
        Ok(format!("ok: the pipeline thread reported {} ms ago\n", age.as_millis()))
    }

    /// Ready: consuming, Kafka answers, and the pipeline thread is not stuck waiting on it.
    pub fn readiness(&self) -> Result<String, String> {
        Self::ready(&self.state().host)
    }

    fn ready(s: &Snapshot) -> Result<String, String> {
        let age = s.heartbeat.elapsed();
        match (s.phase, &s.kafka_error) {
            (Phase::Starting, _) => Err("starting: loading plugins and connecting to Kafka".to_owned()),
            (Phase::Waiting, e) => Err(format!("waiting for Kafka: {}", e.as_deref().unwrap_or("starting again"))),
            (Phase::Stopping, _) => Err("stopping: committing the last transaction".to_owned()),
            (Phase::Running, Some(e)) => Err(format!("Kafka error: {e}")),
            (Phase::Running, None) if age > READY_STALE => Err(format!(
                "the pipeline has not reported for {} s: it is waiting on Kafka (a commit), or stuck",
                age.as_secs()
            )),
            (Phase::Running, None) => Ok("ready: consuming\n".to_owned()),
        }
    }

    /// Everything the console shows, but the result history.
    pub fn status(&self) -> serde_json::Value {
        let s = self.state();
        let latest: BTreeMap<&str, &WindowResults> =
            s.results.iter().filter_map(|(name, w)| Some((name.as_str(), w.back()?))).collect();
        serde_json::json!({
            "started_ms": self.started_ms,
            "now_ms": now_ms(),
            "phase": s.host.phase,
            "threads": s.threads.len(),
            "ready": Self::ready(&s.host).is_ok(),
            "kafka_error": s.host.kafka_error,
            "stats": s.host.stats,
            "partitions": s.host.partitions,
            "plugins": s.host.plugins,
            "swaps": s.swaps,
            "latest_results": latest,
            "completeness": s.completeness.values().rev().take(COMPLETENESS_SHOWN).collect::<Vec<_>>(),
        })
    }

    /// The last `windows` windows of `plugin`'s results, oldest first.
    pub fn results(&self, plugin: &str, windows: usize) -> Option<Vec<WindowResults>> {
        let s = self.state();
        let kept = s.results.get(plugin)?;
        Some(kept.iter().skip(kept.len().saturating_sub(windows)).cloned().collect())
    }

    pub fn plugins(&self) -> Vec<PluginStatus> {
        self.state().host.plugins.clone()
    }

    pub fn render_metrics(&self) -> String {
        // Under the state lock, so that a scrape never sees half of an update.
        let s = self.state();
        // Readiness as of now: a stuck pipeline thread publishes nothing.
        self.metrics.ready(Self::ready(&s.host).is_ok());
        self.metrics.render()
    }

    /// Whether an admin call with this `Authorization` header may proceed.
    pub fn authorize(&self, authorization: Option<&str>) -> Result<(), String> {
        match &self.admin_token {
            Some(token) => {
                let given = authorization.and_then(|h| h.strip_prefix("Bearer "));
                // Compared in full whatever the first difference, so timing reveals nothing.
                let same = given.is_some_and(|g| {
                    g.len() == token.len() && g.bytes().zip(token.bytes()).fold(0, |acc, (a, b)| acc | (a ^ b)) == 0
                });
                if same {
                    Ok(())
                } else {
                    Err("admin calls need the header `Authorization: Bearer <--admin-token>`".to_owned())
                }
            }
            None if self.admin_open => Ok(()),
            None => {
                Err("admin calls are disabled: the console listens beyond loopback and no --admin-token is set"
                    .to_owned())
            }
        }
    }
}
