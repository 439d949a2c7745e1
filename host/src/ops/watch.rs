//! `--watch-plugins`: swap a plugin when its `.wasm` file changes.
//!
//! The files are polled (every [`POLL`]) rather than watched with inotify, which does not see
//! changes made through a container's bind mount or by a network file system. A change is acted
//! on once the file has stopped changing for one poll, so a copy in progress is not loaded half
//! written; and only if its content hash differs from the last version tried, so touching the
//! file does nothing. A file that fails to load is reported once and left alone until it changes
//! again; the running version stays.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::Ops;

/// How often the files are looked at.
pub const POLL: Duration = Duration::from_secs(1);

/// What a file looked like at one poll.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &std::path::Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

struct Watched {
    plugin: String,
    path: PathBuf,
    /// At the last poll.
    seen: Stamp,
    /// When the content was last read.
    read: Stamp,
    /// The content last loaded or tried.
    hash: [u8; 32],
}

/// Starts watching `plugins` (name, path) on a thread of its own, until `shutdown`.
pub fn start(ops: Arc<Ops>, plugins: Vec<(String, PathBuf)>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut watched = Vec::new();
    for (plugin, path) in plugins {
        let bytes = std::fs::read(&path).with_context(|| format!("reading {} to watch it", path.display()))?;
        tracing::info!(plugin = %plugin, path = %path.display(), "watching the plugin file: a new version is swapped in when it changes");
        let now = stamp(&path);
        watched.push(Watched { plugin, seen: now, read: now, path, hash: Sha256::digest(&bytes).into() });
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("plugin-watch".into()).spawn(move || {
        runtime.block_on(async move {
            while !shutdown.is_cancelled() {
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = shutdown.cancelled() => break,
                }
                for w in &mut watched {
                    poll(&ops, w).await;
                }
            }
        });
    })?;
    Ok(())
}

async fn poll(ops: &Arc<Ops>, w: &mut Watched) {
    let now = stamp(&w.path);
    let settled = now.is_some() && now == w.seen;
    w.seen = now;
    if !settled || now == w.read {
        return;
    }
    // The previous swap is still finishing its windows: try again at the next poll.
    if ops.plugins().iter().any(|p| p.name == w.plugin && p.retiring.is_some()) {
        return;
    }
    let bytes = match std::fs::read(&w.path) {
        Ok(bytes) => bytes,
        Err(e) => {
            return tracing::warn!(plugin = %w.plugin, path = %w.path.display(), error = %e, "cannot read the watched plugin file");
        }
    };
    w.read = now;
    let hash: [u8; 32] = Sha256::digest(&bytes).into();
    if hash == w.hash {
        return;
    }
    w.hash = hash;
    tracing::info!(plugin = %w.plugin, path = %w.path.display(), "the plugin file changed: swapping in the new version");
    // Success and failure are both logged and recorded by `swap`.
    let _ = ops.swap(&w.plugin, bytes, "file watch", &w.path).await;
}
