//! The consumer's fetched messages, taken from librdkafka many at a time
//! (`rd_kafka_consume_batch_queue`, which rust-rdkafka does not expose).
//!
//! `BaseConsumer::poll` hands over one message per call: a locked dequeue, an event set up, an
//! `Arc` allocated, the clock read twice for `max.poll.interval.ms`, and the wake-up of a waiting
//! thread. Here every assigned partition's fetch queue is forwarded to one queue of the host's
//! own, [`Fetched`], drained up to [`BATCH`] messages per call. The consumer's queue keeps the
//! group's events (rebalances, errors, commits), served by `BaseConsumer::poll` as before.
//!
//! What keeps the unsafe code below sound, and the messages in order:
//!
//! 1. **Only fetched messages and fetch errors come here.** `rd_kafka_q_serve_rkmessages` serves
//!    any other operation by callback, and with rust-rdkafka's event API a rebalance served that
//!    way becomes librdkafka's dummy unassign: the consumer's queue must never be forwarded here.
//!    Partition fetch queues hold fetched messages, fetch errors, and the version barriers that
//!    librdkafka uses to drop messages of an older fetch (after a seek or an unassign).
//! 2. **Forward before assign** ([`Fetched::forward`]). librdkafka keeps an application's
//!    forwarding when the fetch starts (the queue's `FWD_APP` flag) but clears it when the fetch
//!    stops (unassign), so every assignment forwards again, before `assign`: then a partition's
//!    messages come out of one queue, in offset order. The flag stays once set, so a fetch start
//!    never forwards to the consumer's queue again: a partition not forwarded here would keep its
//!    messages in its own queue, unread (its task would hold the merge back; no number would be
//!    wrong). Messages of an older assignment are dropped by librdkafka's version check as they
//!    are taken (the version moves on before `unassign` returns).
//! 3. **The queue dies before the client.** A queue handle refers to its `rd_kafka_t`; the owner
//!    ([`crate::source::kafka::KafkaSource`]) declares its `Fetched` before its consumer, so that
//!    it is dropped first. Taken messages are destroyed (their buffers given back) when the next
//!    batch is taken and when the queue is dropped, never later: [`Message`]s borrow the queue.
//! 4. **Waking is safe after the queue is gone.** The consumer's queue wakes a waiting
//!    [`Fetched::take`] when an event arrives ([`Fetched::waker`], librdkafka's non-empty
//!    callback, on one of its threads). The callback reaches the queue through a lock that the
//!    drop empties before destroying the handle.

use std::ffi::{CStr, CString};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// The most messages taken per call: large enough that the hand-over's fixed costs vanish, small
/// enough that the periodic work between batches (checkpoints, watermarks) is not held up (a
/// batch is about a millisecond of pipeline work).
pub const BATCH: usize = 1024;

/// A queue of librdkafka's, thread-safe by librdkafka's contract.
struct QueuePtr(*mut rd::rd_kafka_queue_t);

// SAFETY: librdkafka's queue functions lock the queue; a handle may be used from any thread.
unsafe impl Send for QueuePtr {}

/// The handle the waker uses: `None` once the queue is destroyed (invariant 4).
type WakeSlot = Arc<Mutex<Option<QueuePtr>>>;

/// The host's queue of fetched messages, and the messages taken from it last.
pub struct Fetched {
    queue: *mut rd::rd_kafka_queue_t,
    wake: WakeSlot,
    /// Taken by the last [`Fetched::take`], owned here until the next one (invariant 3).
    taken: Vec<*mut rd::rd_kafka_message_t>,
}

// SAFETY: the queue handle and the taken messages are only used through `&mut self` or `&self`
// of the one owner; librdkafka allows both on any thread.
unsafe impl Send for Fetched {}

impl Fetched {
    pub fn new<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> Self {
        // SAFETY: the client pointer is valid for the consumer's lifetime, which outlasts this
        // queue (invariant 3). rd_kafka_queue_new never returns null (it aborts on no memory).
        let queue = unsafe { rd::rd_kafka_queue_new(consumer.client().native_ptr()) };
        Fetched { queue, wake: Arc::new(Mutex::new(Some(QueuePtr(queue)))), taken: Vec::with_capacity(BATCH) }
    }

    /// Sends the fetched messages of `partition` of `topic` here from now on. Call before
    /// assigning it, at every assignment (invariant 2).
    pub fn forward<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        topic: &str,
        partition: i32,
    ) -> Result<(), KafkaError> {
        let name = CString::new(topic).map_err(|_| KafkaError::Subscription(format!("topic name {topic:?}")))?;
        // SAFETY: valid client pointer and C string; the partition queue handle returned is
        // ours to destroy, and forwarding keeps its own reference to our queue.
        unsafe {
            let partition_queue =
                rd::rd_kafka_queue_get_partition(consumer.client().native_ptr(), name.as_ptr(), partition);
            if partition_queue.is_null() {
                return Err(KafkaError::Subscription(format!("no fetch queue for {topic} [{partition}]")));
            }
            rd::rd_kafka_queue_forward(partition_queue, self.queue);
            rd::rd_kafka_queue_destroy(partition_queue);
        }
        Ok(())
    }

    /// Wakes a [`Fetched::take`] waiting now (or makes the next one return at once): for the
    /// consumer's non-empty callback, so that a rebalance is not left waiting on messages.
    pub fn waker(&self) -> impl Fn() + Send + Sync + 'static {
        let slot = self.wake.clone();
        move || {
            let queue = slot.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(queue) = queue.as_ref() {
                // SAFETY: the handle is alive while it is in the slot (invariant 4).
                unsafe { rd::rd_kafka_queue_yield(queue.0) };
            }
        }
    }

    /// Gives back the last batch, then takes up to [`BATCH`] messages: those already fetched,
    /// without waiting; if there are none, waits up to `wait` for the first and takes what came
    /// with it. Returns how many were taken ([`Fetched::message`] reads them). Returns early,
    /// possibly with none, when woken.
    pub fn take(&mut self, wait: Duration) -> usize {
        self.give_back();
        self.take_more(0, BATCH);
        if self.taken.is_empty() {
            let wait_ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
            self.take_more(wait_ms, 1);
            if !self.taken.is_empty() {
                self.take_more(0, BATCH - 1);
            }
        }
        self.taken.len()
    }

    /// Appends up to `most` messages, waiting up to `wait_ms` (0: not at all) for the first.
    fn take_more(&mut self, wait_ms: i32, most: usize) {
        let have = self.taken.len();
        debug_assert!(have + most <= self.taken.capacity());
        // SAFETY: the array has room for `most` more pointers past `have` (capacity BATCH, and
        // callers never ask beyond it); librdkafka writes at most `most` of them and returns how
        // many (or -1, writing none), which become the vector's length: each one a message
        // owned here until `give_back`.
        unsafe {
            let n = rd::rd_kafka_consume_batch_queue(self.queue, wait_ms, self.taken.as_mut_ptr().add(have), most);
            if n > 0 {
                self.taken.set_len(have + n as usize);
            }
        }
    }

    /// The `i`-th message of the last batch (`i` below what [`Fetched::take`] returned).
    pub fn message(&self, i: usize) -> Message<'_> {
        // SAFETY: a pointer librdkafka returned, to a message alive until `give_back`, which
        // needs `&mut self` and so cannot run while this borrow lives.
        Message { raw: unsafe { &*self.taken[i] } }
    }

    fn give_back(&mut self) {
        for message in self.taken.drain(..) {
            // SAFETY: each pointer is a message taken from the queue and destroyed once.
            unsafe { rd::rd_kafka_message_destroy(message) };
        }
    }
}

impl Drop for Fetched {
    fn drop(&mut self) {
        self.give_back();
        self.wake.lock().unwrap_or_else(|e| e.into_inner()).take();
        // SAFETY: no waker can reach the handle any more, no message is outstanding, and the
        // client is still alive (invariant 3).
        unsafe { rd::rd_kafka_queue_destroy(self.queue) };
    }
}

/// One message of a batch, borrowed from it.
pub struct Message<'a> {
    raw: &'a rd::rd_kafka_message_t,
}

impl<'a> Message<'a> {
    /// A fetch error for this partition (the message carries no record then).
    pub fn error(&self) -> Option<KafkaError> {
        (self.raw.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR)
            .then(|| KafkaError::MessageConsumption(RDKafkaErrorCode::from(self.raw.err)))
    }

    /// The topic's name (empty for an error without one).
    pub fn topic(&self) -> &'a str {
        if self.raw.rkt.is_null() {
            return "";
        }
        // SAFETY: a message's topic handle and its name live as long as the message.
        unsafe { CStr::from_ptr(rd::rd_kafka_topic_name(self.raw.rkt)) }.to_str().unwrap_or("")
    }

    pub fn partition(&self) -> i32 {
        self.raw.partition
    }

    /// Whether `other` is of the same topic and partition (the topic handles compared, not
    /// their names).
    pub fn same_partition(&self, other: &Message<'_>) -> bool {
        self.raw.rkt == other.raw.rkt && self.raw.partition == other.raw.partition
    }

    pub fn offset(&self) -> i64 {
        self.raw.offset
    }

    pub fn key(&self) -> Option<&'a [u8]> {
        // SAFETY: librdkafka's key pointer and length describe a buffer alive with the message.
        (!self.raw.key.is_null()).then(|| unsafe { std::slice::from_raw_parts(self.raw.key.cast(), self.raw.key_len) })
    }

    pub fn payload(&self) -> &'a [u8] {
        if self.raw.payload.is_null() {
            return &[];
        }
        // SAFETY: as for the key.
        unsafe { std::slice::from_raw_parts(self.raw.payload.cast(), self.raw.len) }
    }
}
