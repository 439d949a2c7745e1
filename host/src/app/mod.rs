//! Wires sources, the pipeline and sinks together: [`run`] over Kafka, [`replay`] over files.
//!
//! Delivery guarantee of `run` (exactly-once by default): every output record — window results,
//! the tasks' partials, late and dead-lettered messages, plugin error records — is produced in a
//! Kafka transaction, and each checkpoint commits that transaction together with the input
//! offsets it covers, with the consumer group's metadata, and the watermark through which each
//! task handed its windows over (see `sink/kafka.rs`, `source/kafka.rs`). Offsets are committed
//! only for messages nothing needs any more (`engine/offsets.rs`). Whoever takes a task over (the
//! same host restarted, or another after a rebalance) resumes from the last committed
//! transaction: it re-reads from the committed offsets, rebuilds the open windows and the join
//! state, and hands over no window at or below the committed watermark again, while whatever the
//! previous owner produced after that checkpoint was aborted and is never seen by
//! `read_committed` consumers. So each window's result appears exactly once, with the numbers of
//! an uninterrupted run. Cost: a transaction commit per checkpoint (every `--commit-interval`,
//! and after each emitted window), and a replay on restart of at most the join horizon plus the
//! open windows. With `--delivery at-least-once` the same checkpoints commit offsets after the
//! output is acknowledged, without transactions; a crash can then publish a window twice.
//!
//! Failures (the restart policy of `run`, as Flink's restart strategy): an error that retrying
//! cannot heal (refused credentials, an untrusted certificate, a missing topic or permission, a
//! plugin that does not load) stops the host with a message that says what to fix. Any other
//! failure of Kafka — a broker down at start-up, an outage, a transaction step that does not
//! finish within its deadline — ends the current [`attempt`], which gives its clients up, and a
//! new attempt starts from the last checkpoint, exactly as a restarted process would: that path
//! is the one the crash tests prove exactly-once. Attempts are spaced by a backoff of 1 s doubling
//! to at most [`MAX_BACKOFF`], so a host is consuming again at most about [`MAX_BACKOFF`] plus a
//! start-up after the broker answers; a transaction step waits at most
//! [`crate::sink::kafka::STEP_DEADLINE`], which bounds how long a host that was mid-commit when
//! the broker went away can take. `/readyz` says why while the host waits.

mod attempt;
pub mod check;
mod replay;

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::Engine;
use crate::metrics::Stats;
use crate::ops::{Ops, PluginStatus};
use crate::plugin::Loader;

use attempt::{Attempt, Env};
pub use replay::replay;

/// The first wait before a new attempt; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between attempts: what bounds the time from a broker's return to the host
/// consuming again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// An attempt that ran this long resets the backoff.
const BACKOFF_RESET: Duration = Duration::from_secs(60);

/// Runs the pipeline over Kafka on `--threads` pipeline threads until `shutdown` is cancelled or
/// a failure that retrying cannot heal. Blocking: call it from a thread of its own.
///
/// Each pipeline thread is a member of the consumer group of its own (see
/// [`crate::config::KafkaConfig::thread`]) and runs the tasks the group gives it, with its own
/// attempts and restarts; the host shares the console, the plugin loader and the clients'
/// health between them. A failure that retrying cannot heal on one thread stops them all (each
/// other thread commits what it did first), and is the run's error.
pub fn run(config: &Config, shutdown: &CancellationToken) -> anyhow::Result<Stats> {
    let loader = Loader::new(&config.plugins)?;
    let threads = config.kafka.threads;
    // Plugins are loaded before anything touches Kafka: one that does not load is a mistake in
    // the command, to be told at once. Each attempt loads them again (from the compile cache).
    let first = Engine::new(config.time, &loader, config.kafka.outputs.clone())?;
    let rule = crate::engine::time::WindowRule::of(&config.time);
    if rule.joinable_panes() > crate::engine::task::MAX_CUTS {
        tracing::warn!(
            join_horizon_ms = rule.join_horizon_ms,
            slide_ms = rule.slide_ms,
            "the join horizon and a window together span more than {} slides: checkpoints cannot say which impressions of the windows closed within the horizon were late, so after a restart such an impression re-read may be joined by a later click that an uninterrupted run leaves unattributed",
            crate::engine::task::MAX_CUTS
        );
    }
    let admin_open = config.http.addr.is_some_and(|a| a.ip().is_loopback());
    let (ops, inboxes) = Ops::new(Some(loader.clone()), config.http.admin_token.clone(), admin_open, threads);
    // The server outlives the attempts: it reports "waiting" between them and "stopping" while
    // the last transaction commits.
    let server_stop = CancellationToken::new();
    let _stop_server = server_stop.clone().drop_guard();
    if let Some(addr) = config.http.addr {
        let bound = crate::ops::http::serve(addr, ops.clone(), server_stop.clone())?;
        tracing::info!(url = %format!("http://{bound}/"), "console, /metrics, /healthz, /readyz and /api/ listening");
        if !admin_open && config.http.admin_token.is_none() {
            tracing::warn!(
                "plugin swaps through the API are disabled: the console listens beyond loopback and no --admin-token is set"
            );
        }
    }
    for thread in 0..threads {
        ops.publish(thread, first.stats(), Vec::new(), PluginStatus::of(&first), None);
    }
    if config.plugins.watch {
        let files = first.plugins().filter(|m| m.path.is_file()).map(|m| (m.name.clone(), m.path.clone())).collect();
        crate::ops::watch::start(ops.clone(), files, server_stop.clone())?;
    }
    if threads > 1 {
        tracing::info!(threads, "starting the pipeline threads, each a member of the consumer group");
    }
    // One health for every thread and attempt: an error that never heals, reported by any
    // client even as it is given up, stops every thread's next attempt at once.
    let health = crate::kafka::Health::default();
    let stop = shutdown.child_token();
    let mut inboxes = inboxes.into_iter();
    let inbox = inboxes.next().expect("one inbox per thread, and at least one thread");
    let results = std::thread::scope(|scope| {
        let (ops, loader, health, stop) = (&ops, &loader, &health, &stop);
        let others: Vec<_> = inboxes
            .enumerate()
            .map(|(i, inbox)| {
                let thread = i + 1;
                std::thread::Builder::new()
                    .name(format!("pipeline-{thread}"))
                    .spawn_scoped(scope, move || {
                        let _stop_on_panic = StopOnPanic(stop);
                        let _span = tracing::info_span!("pipeline", thread).entered();
                        let config = Config { kafka: config.kafka.thread(thread), ..config.clone() };
                        let env = Env { config: &config, loader, ops, swaps: &inbox, shutdown: stop, health, thread };
                        stop_all_on_error(run_thread(&env, None), stop)
                    })
                    .map_err(|e| anyhow::anyhow!("starting pipeline thread {thread}: {e}"))
            })
            .collect();
        // Thread 0 is this one: its engine is the one just loaded.
        let _stop_on_panic = StopOnPanic(stop);
        let span = (threads > 1).then(|| tracing::info_span!("pipeline", thread = 0).entered());
        let env = Env { config, loader, ops, swaps: &inbox, shutdown: stop, health, thread: 0 };
        let mut results = vec![stop_all_on_error(run_thread(&env, Some(first)), stop)];
        drop(span);
        for handle in others {
            let joined = handle.and_then(|h| h.join().map_err(|_| anyhow::anyhow!("a pipeline thread panicked")));
            results.push(joined.and_then(|r| r));
        }
        results
    });
    let mut all = Vec::new();
    for result in results {
        all.push(result?);
    }
    Ok(Stats::host(&all))
}

/// Stops the host's other pipeline threads when the thread holding it panics, so that the
/// panic ends the run (once they have committed) and is seen, rather than the host running on a
/// thread short (the panicked thread's tasks would move to another member only at its session
/// timeout).
struct StopOnPanic<'a>(&'a CancellationToken);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.cancel();
        }
    }
}

/// A thread's result, after stopping the host's other threads if it failed.
fn stop_all_on_error(result: anyhow::Result<Stats>, stop: &CancellationToken) -> anyhow::Result<Stats> {
    if result.is_err() {
        stop.cancel();
    }
    result
}

/// One pipeline thread: its attempts, spaced by the backoff, until `env.shutdown` or a failure
/// that retrying cannot heal. `first` is the engine to start with (loaded already), if any.
fn run_thread(env: &Env, first: Option<Engine>) -> anyhow::Result<Stats> {
    let (ops, thread, shutdown) = (env.ops, env.thread, env.shutdown);
    let mut first = first;
    let mut carried = Stats::default();
    let mut refused: Vec<(String, usize)> = Vec::new();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        let (failure, consumed) = match Attempt::start(env, first.take(), carried.clone(), &refused) {
            Ok(attempt) => {
                let ended = attempt.run();
                carried = ended.stats;
                refused.extend(ended.refused);
                match ended.failure {
                    None => return Ok(carried),
                    Some(failure) => (failure, true),
                }
            }
            Err(failure) => (failure, false),
        };
        if failure.is_fatal() {
            ops.stopped(thread, &failure.to_string());
            return Err(failure.into_error());
        }
        if shutdown.is_cancelled() {
            tracing::warn!(error = %failure, "stopping without the last commit: the next start redoes what followed the last checkpoint");
            return Ok(carried);
        }
        if started.elapsed() >= BACKOFF_RESET {
            backoff = FIRST_BACKOFF;
        }
        let what = if consumed { "the pipeline stopped" } else { "cannot start" };
        tracing::warn!(error = %failure, retry_in_s = backoff.as_secs_f32(), "{what}; starting again from the last checkpoint (output after it was never committed, so nothing is lost or doubled)");
        carried.restarts += u64::from(consumed);
        ops.waiting(thread, &format!("{what}: {failure}; next attempt in {} s", backoff.as_secs()), &carried);
        let until = Instant::now() + backoff;
        while Instant::now() < until && !shutdown.is_cancelled() {
            std::thread::sleep(Duration::from_millis(100));
            ops.heartbeat(thread);
        }
        if shutdown.is_cancelled() {
            return Ok(carried);
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

pub(crate) fn log_progress(s: &Stats) {
    tracing::info!(
        consumed = s.consumed,
        impressions = s.impressions,
        clicks = s.clicks_attributed,
        unattributed = s.clicks_unattributed,
        late = s.late,
        dead_lettered = s.dead_lettered,
        duplicates = s.duplicates,
        windows = s.windows_emitted,
        watermark = %adstream_abi::time::format_rfc3339_millis(s.watermark_ms.max(0)),
        "progress"
    );
}
