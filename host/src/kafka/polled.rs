//! The producer's events (delivery reports, errors, log lines) served on a thread that sleeps
//! while there are none.
//!
//! rust-rdkafka's `ThreadedProducer` serves them on a thread that calls `BaseProducer::poll`
//! with 100 ms timeouts, and `poll` loops until its deadline: the wait given to librdkafka is
//! whole milliseconds, rounded down, so the last millisecond of every round is spent calling
//! librdkafka with no wait at all, reading the clock in a loop. An idle host spent about 1% of a
//! core there, more than everything else it does while idle (BENCHMARKS.md "Idle").
//!
//! Here the thread parks. librdkafka calls [`wake`] when the client's main queue (where the
//! events go) goes from empty to not empty; the thread then serves events one at a time,
//! without waiting, until the queue is empty, and parks again. A wake-up that comes between the
//! look at the queue and the park is kept by the thread's park token, so none is lost; a park
//! also ends after [`SAFETY_NET`], in case one were.
//!
//! What keeps the unsafe code below sound:
//!
//! 1. **The queue handle dies before the client.** [`Polled`] holds the main queue's handle and
//!    its own reference to the producer; its drop destroys the handle before that reference is
//!    released, and the thread (which holds another) has ended by then.
//! 2. **The callback's opaque outlives the callback.** The callback gets a boxed [`Thread`],
//!    freed only after the callback is switched off; librdkafka calls the callback with the
//!    queue locked, and switching it off takes that lock, so none is running once that returns.
//!    The callback only unparks a thread: it calls nothing of librdkafka's, as librdkafka's
//!    header asks of event callbacks.

use std::ffi::c_void;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::bindings as rd;
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};

use super::fetched::QueuePtr;

/// The longest the thread sleeps without a wake-up: only a wake-up lost against the contract
/// above would make it matter.
const SAFETY_NET: Duration = Duration::from_secs(1);

/// The callback's opaque: the serving thread's handle, boxed (invariant 2).
struct Waker(*mut Thread);

// SAFETY: `Thread` is Send and Sync, and the box is only freed by [`Polled`]'s drop.
unsafe impl Send for Waker {}
// SAFETY: as above.
unsafe impl Sync for Waker {}

/// A producer whose events are served by a thread of its own, asleep while there are none.
/// Dereferences to the producer.
pub struct Polled<C: ProducerContext + 'static> {
    producer: Arc<BaseProducer<C>>,
    /// The client's main queue, where its events go.
    main: QueuePtr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    waker: Waker,
}

impl<C: ProducerContext + 'static> Polled<C> {
    /// Starts serving `producer`'s events on a thread named `name`.
    pub fn start(producer: BaseProducer<C>, name: &str) -> anyhow::Result<Self> {
        Self::start_with_net(producer, name, SAFETY_NET)
    }

    /// [`Polled::start`] with another safety net (a test's: none, so that only wake-ups count).
    fn start_with_net(producer: BaseProducer<C>, name: &str, net: Duration) -> anyhow::Result<Self> {
        let producer = Arc::new(producer);
        // SAFETY: a live client; the handle is destroyed before the client (invariant 1).
        let main = QueuePtr(unsafe { rd::rd_kafka_queue_get_main(producer.client().native_ptr()) });
        let stop = Arc::new(AtomicBool::new(false));
        let spawned = {
            let (producer, stop) = (producer.clone(), stop.clone());
            std::thread::Builder::new().name(name.to_owned()).spawn(move || serve(&producer, main, &stop, net))
        };
        let thread = match spawned {
            Ok(thread) => thread,
            Err(e) => {
                // SAFETY: the handle is ours and nothing else uses it; the client is alive.
                unsafe { rd::rd_kafka_queue_destroy(main.0) };
                return Err(e).context("starting the producer's event thread");
            }
        };
        let waker = Waker(Box::into_raw(Box::new(thread.thread().clone())));
        // SAFETY: the handle is alive; `waker` stays valid until the callback is switched off
        // (invariant 2).
        unsafe { rd::rd_kafka_queue_cb_event_enable(main.0, Some(wake), waker.0.cast()) };
        // An event queued before the callback was on may have come after the thread's first look
        // at the queue, and woke nobody (nor will the next: the queue is not empty): look again.
        thread.thread().unpark();
        Ok(Polled { producer, main, stop, thread: Some(thread), waker })
    }
}

/// The thread: serves every queued event, then sleeps until woken.
fn serve<C: ProducerContext + 'static>(producer: &BaseProducer<C>, main: QueuePtr, stop: &AtomicBool, net: Duration) {
    while !stop.load(Ordering::Acquire) {
        // SAFETY: the handle is alive while this thread runs (invariant 1); the length is read
        // under the queue's lock.
        while !stop.load(Ordering::Relaxed) && unsafe { rd::rd_kafka_queue_length(main.0) } > 0 {
            // One event, without waiting (a zero deadline makes rust-rdkafka's loop run once).
            producer.poll(Duration::ZERO);
        }
        std::thread::park_timeout(net);
    }
}

/// librdkafka's callback when the main queue gets its first event (on one of its threads, with
/// the queue locked): wakes the serving thread, `opaque`.
unsafe extern "C" fn wake(_client: *mut rd::rd_kafka_t, opaque: *mut c_void) {
    // SAFETY: `opaque` is the boxed thread handle, alive while the callback is on (invariant 2).
    unsafe { (*opaque.cast::<Thread>()).unpark() };
}

impl<C: ProducerContext + 'static> Deref for Polled<C> {
    type Target = BaseProducer<C>;

    fn deref(&self) -> &BaseProducer<C> {
        &self.producer
    }
}

impl<C: ProducerContext + 'static> Drop for Polled<C> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            if thread.join().is_err() {
                tracing::warn!("the producer's event thread panicked");
            }
        }
        // SAFETY: switching the callback off takes the queue's lock, under which the callback
        // runs: once it returns, none uses `waker`, which is then freed (invariant 2). The thread
        // has ended, so this is the handle's last user; the client is alive while `producer` is
        // (invariant 1). The producer's own drop then purges and flushes what is left.
        unsafe {
            rd::rd_kafka_queue_cb_event_enable(self.main.0, None, std::ptr::null_mut());
            drop(Box::from_raw(self.waker.0));
            rd::rd_kafka_queue_destroy(self.main.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use rdkafka::ClientConfig;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext};

    use super::*;

    /// Without the safety net, every delivery report is served only because the callback woke
    /// the thread: a lost wake-up would leave a record in flight forever (librdkafka counts an
    /// unserved report as in flight). On librdkafka's in-process mock cluster.
    #[test]
    fn every_delivery_report_is_served_on_a_wake_up() {
        let producer: BaseProducer<DefaultProducerContext> = ClientConfig::new()
            .set("test.mock.num.brokers", "1")
            .set("linger.ms", "0")
            .create()
            .expect("a producer on the mock cluster");
        let polled = Polled::start_with_net(producer, "test-producer-events", Duration::from_secs(3600)).unwrap();
        for round in 0..20 {
            let key = round.to_string();
            polled.send(BaseRecord::<str, str>::to("polled-test").key(&key).payload("x")).expect("queued");
            let deadline = Instant::now() + Duration::from_secs(30);
            while polled.in_flight_count() > 0 {
                assert!(Instant::now() < deadline, "round {round}: the delivery report was never served");
                std::thread::sleep(Duration::from_millis(1));
            }
            // Idle long enough for the thread to park before the next record.
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
