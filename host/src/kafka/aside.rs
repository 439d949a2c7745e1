//! Kafka clients closed on threads of their own, and the process's end waiting for them.
//!
//! Closing a client (`rd_kafka_destroy`) can wait on an absent broker, so a client given up
//! after a failure is dropped aside ([`drop_aside`]) and the pipeline goes on. But the process
//! must not end while one is still closing: `exit` runs OpenSSL's exit handler, which frees what
//! the closing client's threads still use over TLS, and the process then died of a signal after
//! printing its error (a CI run saw it, a TLS test's host stopping on a refused permission).
//! [`finish`] waits for them for a bounded time; if one is still closing then, the process ends
//! with `_exit`, without exit handlers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Clients being dropped aside, not yet closed.
static CLOSING: AtomicUsize = AtomicUsize::new(0);

/// Counts a client that may close on a thread of its own (one dropped aside, or one whose last
/// reference a thread of its own may hold) until this is dropped: the process's end waits for it.
#[must_use = "the count goes down when this is dropped"]
pub struct Closing(());

/// [`Closing`], counted from now: take it before the thread starts, so that the process's end
/// cannot miss it.
pub fn closing() -> Closing {
    CLOSING.fetch_add(1, Ordering::SeqCst);
    Closing(())
}

impl Drop for Closing {
    fn drop(&mut self) {
        CLOSING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Drops `client` on a thread named `name`, counted until it is closed.
pub fn drop_aside<T: Send + 'static>(name: &str, client: T) {
    let counted = closing();
    let spawned = std::thread::Builder::new().name(name.to_owned()).spawn(move || {
        drop(client);
        drop(counted);
    });
    if let Err(e) = spawned {
        // The client and the count went down with the closure: nothing left to wait for.
        tracing::warn!(error = %e, "could not start a thread to close a Kafka client");
    }
}

/// Whether every client dropped aside has closed, waiting up to `limit` for them.
pub fn settle(limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while CLOSING.load(Ordering::SeqCst) > 0 {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// How the process ends with `code` (0 or 1): at once if every client dropped aside has closed
/// within `limit` (the caller then returns from `main` as usual); otherwise standard output and
/// error are flushed and the process ends here, without exit handlers.
pub fn finish(code: u8, limit: Duration) {
    if settle(limit) {
        return;
    }
    let still = CLOSING.load(Ordering::SeqCst);
    tracing::warn!(clients = still, "ending without waiting longer for Kafka clients still closing");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: _exit(2) ends the process at once; nothing after it runs.
    unsafe { libc::_exit(i32::from(code)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_dropped_aside_is_waited_for() {
        struct Slow;
        impl Drop for Slow {
            fn drop(&mut self) {
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        drop_aside("test-slow-close", Slow);
        assert!(!settle(Duration::from_millis(50)), "still closing after 50 ms");
        assert!(settle(Duration::from_secs(10)), "closed within 10 s");
        assert_eq!(CLOSING.load(Ordering::SeqCst), 0);
    }
}
