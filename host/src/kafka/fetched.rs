//! The consumer's fetched messages, taken from librdkafka many at a time
//! (`rd_kafka_consume_batch_queue`, which rust-rdkafka does not expose).
//!
//! `BaseConsumer::poll` hands over one message per call: a locked dequeue, an event set up, an
//! `Arc` allocated, the clock read twice for `max.poll.interval.ms`, and the wake-up of a waiting
//! thread. Here every assigned partition's fetch queue is forwarded to one of two queues of the
//! host's own, [`Fetched`], drained up to [`BATCH`] messages per call: the input partitions' and,
//! apart, the partials partition's ([`Lane`]). The consumer's queue keeps the group's events
//! (rebalances, errors, commits), served by `BaseConsumer::poll` as before.
//!
//! Why the partials have a queue of their own: librdkafka stops fetching a partition while the
//! queue its messages go to holds `queued.max.messages.kbytes`, and it measures the queue a
//! partition is forwarded to. In one queue shared with the inputs, a task's partials record (the
//! merge stage's input) waited behind every input message fetched before it, and in catch-up its
//! partition was not even fetched until the inputs' backlog drained (one of the waits in the
//! catch-up result latency, BENCHMARKS.md "Result latency: three waits"). Apart, it is fetched
//! as soon as it is committed and taken first.
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
//!    are taken (the version moves on before `unassign` returns). Only the order within a
//!    partition is kept: which partition's messages come first, librdkafka's fetches decide
//!    anyway, and [`Fetched::take`] puts the partials ahead.
//! 3. **The queues die before the client.** A queue handle refers to its `rd_kafka_t` (the handle
//!    of the consumer's own queue, whose length [`Fetched::group_events`] reads, too); the owner
//!    ([`crate::source::kafka::KafkaSource`]) declares its `Fetched` before its consumer, so that
//!    it is dropped first ([`Fetched::new`] is `unsafe` for this: the caller promises it).
//!    Taken messages are destroyed (their buffers given back) when the next batch is taken and
//!    when the queues are dropped, never later: [`Message`]s borrow them.
//! 4. **Waking is safe after the queues are gone.** A [`Fetched::take`] waits on the input queue
//!    alone. Two things wake it: an event on the consumer's queue ([`Fetched::waker`],
//!    librdkafka's non-empty callback, on one of its threads), which reaches the input queue
//!    through a lock that the drop empties before destroying the handle; and a message on the
//!    partials queue, whose event callback ([`wake_inputs`]) is given the input queue's handle and
//!    is switched off, under the partials queue's lock, before either queue is destroyed. That
//!    callback runs with the partials queue locked and locks the input queue: nothing locks them
//!    the other way round (the input queue has no callback and forwards nowhere), so the input
//!    queue's lock is a leaf. (librdkafka's header asks event callbacks not to call librdkafka
//!    for the same handle; `rd_kafka_queue_yield` on another queue only takes that queue's lock
//!    in librdkafka 2.12, through every path the callback runs on: a fetched batch, the barrier
//!    of a fetch's start, stop or seek, and the concatenation inside `forward`. The consumer's
//!    waker does the same. Look again when rdkafka-sys is upgraded.)

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

/// A queue of librdkafka's, thread-safe by librdkafka's contract (also the producer's main
/// queue in [`super::polled`]).
#[derive(Clone, Copy)]
pub(super) struct QueuePtr(pub(super) *mut rd::rd_kafka_queue_t);

// SAFETY: librdkafka's queue functions lock the queue; a handle may be used from any thread.
unsafe impl Send for QueuePtr {}
// SAFETY: as above: every use through a shared handle is one of those functions.
unsafe impl Sync for QueuePtr {}

/// The handle the waker uses: `None` once the queue is destroyed (invariant 4).
type WakeSlot = Arc<Mutex<Option<QueuePtr>>>;

/// Which of the host's queues a partition's messages go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// The input topics' partitions.
    Input,
    /// The partials topic's partition (the merge stage's input): taken ahead of the inputs.
    Partials,
}

/// The host's queues of fetched messages, and the messages taken from them last.
pub struct Fetched {
    /// The consumer's client, alive as long as this (invariant 3).
    client: *mut rd::rd_kafka_t,
    inputs: *mut rd::rd_kafka_queue_t,
    partials: *mut rd::rd_kafka_queue_t,
    /// The consumer's own queue (the group's events, errors, log lines), asked only its length;
    /// null without a consumer group.
    group: *mut rd::rd_kafka_queue_t,
    wake: WakeSlot,
    /// Taken by the last [`Fetched::take`], owned here until the next one (invariant 3).
    taken: Vec<*mut rd::rd_kafka_message_t>,
}

// SAFETY: the client and queue handles and the taken messages are only used through `&mut self`
// or `&self` of the one owner; librdkafka allows both on any thread.
unsafe impl Send for Fetched {}

impl Fetched {
    /// The queues of `consumer`'s client.
    ///
    /// # Safety
    ///
    /// `consumer` must outlive the returned value (invariant 3): its queues and messages refer
    /// to the client.
    pub unsafe fn new<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> Self {
        let client = consumer.client().native_ptr();
        // SAFETY: the client pointer is valid for the consumer's lifetime, which outlasts these
        // queues (the caller's promise). rd_kafka_queue_new never returns null (it aborts on no
        // memory).
        // The callback's handle stays valid until the callback is switched off (invariant 4).
        let (inputs, partials, group) = unsafe {
            let inputs = rd::rd_kafka_queue_new(client);
            let partials = rd::rd_kafka_queue_new(client);
            rd::rd_kafka_queue_cb_event_enable(partials, Some(wake_inputs), inputs.cast());
            (inputs, partials, rd::rd_kafka_queue_get_consumer(client))
        };
        Fetched {
            client,
            inputs,
            partials,
            group,
            wake: Arc::new(Mutex::new(Some(QueuePtr(inputs)))),
            taken: Vec::with_capacity(BATCH),
        }
    }

    /// How many events the consumer's own queue holds (rebalances, errors, commits, and
    /// librdkafka's log lines): `BaseConsumer::poll` says `None` after serving a log line as when
    /// the queue is empty, so this, not a `None`, says when the queue is served.
    pub fn group_events(&self) -> usize {
        if self.group.is_null() {
            return 0;
        }
        // SAFETY: the handle is valid until the drop (invariant 3); the length is read under the
        // queue's lock.
        unsafe { rd::rd_kafka_queue_length(self.group) }
    }

    /// Sends the fetched messages of `partition` of `topic` to the queue of `lane` from now on.
    /// Call before assigning it, at every assignment (invariant 2).
    pub fn forward(&self, topic: &str, partition: i32, lane: Lane) -> Result<(), KafkaError> {
        let name = CString::new(topic).map_err(|_| KafkaError::Subscription(format!("topic name {topic:?}")))?;
        // SAFETY: a live client (invariant 3) and a C string; the partition queue handle returned is
        // ours to destroy, and forwarding keeps its own reference to our queue.
        unsafe {
            let partition_queue = rd::rd_kafka_queue_get_partition(self.client, name.as_ptr(), partition);
            if partition_queue.is_null() {
                return Err(KafkaError::Subscription(format!("no fetch queue for {topic} [{partition}]")));
            }
            rd::rd_kafka_queue_forward(partition_queue, self.queue(lane));
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

    fn queue(&self, lane: Lane) -> *mut rd::rd_kafka_queue_t {
        match lane {
            Lane::Input => self.inputs,
            Lane::Partials => self.partials,
        }
    }

    /// How many operations wait in the queue of `lane`: its messages not taken yet, and
    /// librdkafka's control operations among them (a barrier per partition at each fetch start,
    /// messages of an older fetch not dropped yet).
    pub fn waiting(&self, lane: Lane) -> usize {
        // SAFETY: the queue is alive (invariant 3); librdkafka reads its length under its lock.
        unsafe { rd::rd_kafka_queue_length(self.queue(lane)) }
    }

    /// Gives back the last batch, then takes up to [`BATCH`] messages, the partials first: those
    /// already fetched, without waiting; if there are none, waits up to `wait` for the first
    /// input message and takes what came with it. Returns how many were taken
    /// ([`Fetched::message`] reads them). Returns early, possibly with none, when woken.
    pub fn take(&mut self, wait: Duration) -> usize {
        self.give_back();
        self.take_more(Lane::Partials);
        self.take_more(Lane::Input);
        if self.taken.is_empty() {
            // A partials record that came after its queue was looked at woke the input queue,
            // and the look at the input queue may have taken that wake-up: look again, before
            // waiting. One that comes later wakes the wait.
            self.take_more(Lane::Partials);
        }
        if self.taken.is_empty() {
            let wait_ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
            self.take_one(wait_ms);
            let waited = self.taken.len();
            self.take_more(Lane::Partials);
            // The partials ahead of the input message the wait came back with, as above.
            self.taken.rotate_left(waited);
            self.take_more(Lane::Input);
        }
        self.taken.len()
    }

    /// Appends what the queue of `lane` holds now, up to [`BATCH`] messages in all.
    fn take_more(&mut self, lane: Lane) {
        self.take_from(self.queue(lane), 0, BATCH - self.taken.len());
    }

    /// Waits up to `wait_ms` for one input message (or a wake-up).
    fn take_one(&mut self, wait_ms: i32) {
        self.take_from(self.inputs, wait_ms, 1);
    }

    fn take_from(&mut self, queue: *mut rd::rd_kafka_queue_t, wait_ms: i32, most: usize) {
        let have = self.taken.len();
        if most == 0 {
            return;
        }
        debug_assert!(have + most <= self.taken.capacity());
        // SAFETY: `queue` is one of ours, alive (invariant 3); the array has room for `most`
        // more pointers past `have` (capacity BATCH, and callers never ask beyond it);
        // librdkafka writes at most `most` of them and returns how many (or -1, writing none),
        // which become the vector's length: each one a message owned here until `give_back`.
        unsafe {
            let n = rd::rd_kafka_consume_batch_queue(queue, wait_ms, self.taken.as_mut_ptr().add(have), most);
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
        // SAFETY: switching the callback off takes the partials queue's lock, under which the
        // callback runs: once it returns, no callback holds the input queue's handle. Then no
        // waker can reach either handle, no message is outstanding, and the client is still
        // alive (invariants 3 and 4).
        unsafe {
            rd::rd_kafka_queue_cb_event_enable(self.partials, None, std::ptr::null_mut());
            rd::rd_kafka_queue_destroy(self.partials);
            rd::rd_kafka_queue_destroy(self.inputs);
            if !self.group.is_null() {
                rd::rd_kafka_queue_destroy(self.group);
            }
        }
    }
}

/// The partials queue's event callback (librdkafka calls it, on one of its threads, when a
/// message arrives there): wakes a [`Fetched::take`] waiting on the input queue, `opaque`.
unsafe extern "C" fn wake_inputs(_client: *mut rd::rd_kafka_t, opaque: *mut std::ffi::c_void) {
    // SAFETY: `opaque` is the input queue's handle, alive while the callback is switched on
    // (invariant 4).
    unsafe { rd::rd_kafka_queue_yield(opaque.cast()) };
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
        self.run_key() == other.run_key()
    }

    /// The topic handle's address and the partition: equal for two messages of one batch if and
    /// only if they are of the same partition ([`Message::same_partition`] for a message no
    /// longer borrowed). Only within a batch: a topic handle freed after its messages were given
    /// back may have its address reused.
    pub fn run_key(&self) -> (usize, i32) {
        (self.raw.rkt as usize, self.raw.partition)
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
