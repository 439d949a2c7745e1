//! The message stream: events made in event-time order, emitted in a bounded, seeded disorder.
//!
//! **Making.** A clock advances by `span / messages` per message made (so message `i` is made at
//! `start + i·span/messages`). At each step the generator makes either one malformed message or one impression
//! at the clock's time; a clicked impression also makes its click, `uniform[0, click_delay_max]` later in event
//! time. Either way every message counts once towards `messages`, so a run makes exactly that many.
//!
//! **Emitting.** Each message gets an emission key, and messages leave in key order across both topics (ties in
//! the order they were made):
//! - on time: `event_time + uniform[0, jitter]`. Hence if a message is emitted after another, its event time is
//!   at most `jitter` smaller; with `jitter` below the host's allowed out-of-orderness no on-time event is late.
//! - late (a `late_fraction` of valid events): `event_time + uniform[3 min, 5 min]`, so the host has seen at
//!   least 3 min − jitter of newer event time on the same topic first and the event's 1-minute window has
//!   closed. Only events at least 3 minutes before the end of the span can be late — later ones would be
//!   followed by too little newer data to close their window — and their probability is raised to make up.
//! - malformed: the clock's time `+ uniform[0, jitter]`.
//! - a copy of an on-time event (a `duplicate_fraction` of them, as a producer retrying without
//!   idempotence writes): the same key and bytes, `event_time + uniform[0, jitter]` drawn anew, so
//!   it stays on time and may leave before its original. Copies count towards `messages`.
//!
//! Every key is at least the clock's time when the message was made, and the clock never goes back, so a
//! pending message whose key is at most the clock is final: nothing made later can sort before it. The queue of
//! pending messages therefore only holds what falls within `click_delay_max + jitter` (5 minutes for late
//! events) of the clock — memory stays bounded however many messages a run makes.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::anomaly::{Active, AnomalyKind, BOT_USERS, BURST_CLICK_THROUGH};
use crate::malformed::MalformedKind;
use crate::model::{Topic, World, WorldParams};
use crate::time::EpochMillis;

/// How long after its event time a late event is emitted, in milliseconds.
pub const LATE_DELAY_MS: std::ops::RangeInclusive<i64> = 180_000..=300_000;

/// What to make; built and checked by [`crate::Config::stream_params`].
#[derive(Clone, Debug, PartialEq)]
pub struct StreamParams {
    pub seed: u64,
    /// Messages to make: impressions, clicks and malformed together.
    pub messages: u64,
    /// Event time of the first message.
    pub start: EpochMillis,
    /// Event time covered by the run: message `i` is made at `start + i·span/messages`.
    pub span_ms: i64,
    pub world: WorldParams,
    pub click_delay_max_ms: i64,
    /// Largest extra emission delay of an on-time message, in microseconds.
    pub jitter_us: i64,
    pub late_fraction: f64,
    pub malformed_fraction: f64,
    /// Share of on-time valid events written a second time (a retrying producer's duplicate).
    pub duplicate_fraction: f64,
    /// Anomalies injected, with their event-time ranges.
    pub anomalies: Vec<Active>,
}

impl StreamParams {
    /// The probability that a valid event made early enough is late, so that about `late_fraction` of all
    /// events are. `None` when the span is too short to hold that many.
    pub fn late_probability(&self) -> Option<f64> {
        if self.late_fraction == 0.0 {
            return Some(0.0);
        }
        let eligible_ms = self.span_ms - LATE_DELAY_MS.start();
        if eligible_ms <= 0 {
            return None;
        }
        let probability = self.late_fraction * self.span_ms as f64 / eligible_ms as f64;
        (probability <= 1.0).then_some(probability)
    }
}

/// What a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    Impression,
    Click,
    Malformed(MalformedKind),
}

/// One message, ready to write.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub topic: Topic,
    /// The impression id, for a malformed message too.
    pub key: String,
    pub payload: Vec<u8>,
    pub kind: MessageKind,
    /// The event's time; for a malformed message, the time it was made.
    pub event_time: EpochMillis,
    /// Emitted minutes after its event time, to be late at the host.
    pub late: bool,
    /// A second copy of an on-time event (same key and bytes), as a retrying producer writes.
    pub duplicate: bool,
}

/// A made message waiting for its turn.
struct Pending {
    /// Emission key, in microseconds since the epoch.
    emit_at_us: i64,
    /// Order of making; breaks ties between equal keys.
    seq: u64,
    /// Boxed to keep heap entries small: sifting moves them, and the queue can be tens of thousands deep.
    message: Box<Message>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.emit_at_us, self.seq).cmp(&(other.emit_at_us, other.seq))
    }
}

/// The messages of a run in emission order. Deterministic: the same params give the same messages in the
/// same order.
pub struct MessageStream {
    params: StreamParams,
    rng: ChaCha8Rng,
    world: World,
    /// Probability that an eligible valid event is late; see [`StreamParams::late_probability`].
    late_probability: f64,
    /// Made but not yet emitted, smallest key first. Only keys above the clock's current time are here.
    pending: BinaryHeap<Reverse<Pending>>,
    /// Messages made so far; also drives the clock.
    made: u64,
    next_impression: u64,
    next_click: u64,
    malformed_made: u64,
}

impl MessageStream {
    /// Draws the world from the seed and gets ready to make messages. Fails when the late fraction cannot be met.
    pub fn new(params: StreamParams) -> anyhow::Result<MessageStream> {
        let late_probability = params.late_probability().ok_or_else(|| {
            anyhow::anyhow!(
                "a late fraction of {} needs a longer span: only events at least {} min before its end can be late",
                params.late_fraction,
                LATE_DELAY_MS.start() / 60_000,
            )
        })?;
        let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
        let world = World::new(params.world.clone(), &mut rng);
        Ok(MessageStream {
            params,
            rng,
            world,
            late_probability,
            pending: BinaryHeap::new(),
            made: 0,
            next_impression: 0,
            next_click: 0,
            malformed_made: 0,
        })
    }

    /// Messages the whole run makes.
    pub fn total(&self) -> u64 {
        self.params.messages
    }

    /// Messages made but not yet emitted (the bounded buffer).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The clock's time when message `made` is made.
    fn clock(&self, made: u64) -> EpochMillis {
        let offset = u128::from(made) * self.params.span_ms as u128 / u128::from(self.params.messages.max(1));
        self.params.start + offset as i64
    }

    fn jitter(&mut self) -> i64 {
        self.rng.random_range(0..=self.params.jitter_us)
    }

    /// Makes the next one or two messages at the clock's time.
    fn make(&mut self) {
        let now = self.clock(self.made);
        if self.rng.random_bool(self.params.malformed_fraction) {
            let kind = MalformedKind::nth(self.malformed_made);
            self.malformed_made += 1;
            let drawn = if self.rng.random_bool(0.5) { Topic::Impressions } else { Topic::Clicks };
            let topic = kind.topic(drawn);
            let impression = self.world.impression(&mut self.rng, self.next_impression, now);
            self.next_impression += 1;
            let (key, valid) = match topic {
                Topic::Impressions => (impression.key(), impression.encode()),
                Topic::Clicks => {
                    let click = self.world.click(&mut self.rng, self.next_click, impression.id, impression.user, now);
                    self.next_click += 1;
                    (click.key(), click.encode())
                }
            };
            let payload = kind.corrupt(&valid, topic, &mut self.rng);
            let emit_at_us = now * 1000 + self.jitter();
            let message = Message {
                topic,
                key,
                payload,
                kind: MessageKind::Malformed(kind),
                event_time: now,
                late: false,
                duplicate: false,
            };
            self.push(emit_at_us, message);
            return;
        }

        let mut impression = self.world.impression(&mut self.rng, self.next_impression, now);
        self.next_impression += 1;
        let mut click_through = self.world.click_through(impression.campaign);
        for i in 0..self.params.anomalies.len() {
            let anomaly = self.params.anomalies[i];
            if anomaly.holds_at(now) {
                self.inject(anomaly.kind, &mut impression, &mut click_through);
            }
        }
        // The last message of a run cannot be an impression and its click; that impression stays unclicked.
        let clicked = self.rng.random_bool(click_through) && self.made + 2 <= self.params.messages;
        let click = clicked.then(|| {
            let delay = self.rng.random_range(0..=self.params.click_delay_max_ms);
            let click = self.world.click(&mut self.rng, self.next_click, impression.id, impression.user, now + delay);
            self.next_click += 1;
            click
        });
        let impression = (Topic::Impressions, impression.key(), impression.encode(), MessageKind::Impression, now);
        let click = click.map(|c| (Topic::Clicks, c.key(), c.encode(), MessageKind::Click, c.event_time));
        // Copies come after both originals, so that an impression and its click always fit in --events.
        let copies: Vec<_> = [Some(impression), click]
            .into_iter()
            .flatten()
            .filter_map(|(topic, key, payload, kind, event_time)| {
                let copy = (self.params.duplicate_fraction > 0.0).then(|| (key.clone(), payload.clone()));
                let on_time = self.push_event(topic, key, payload, kind, event_time);
                copy.filter(|_| on_time).map(|(key, payload)| (topic, key, payload, kind, event_time))
            })
            .collect();
        for (topic, key, payload, kind, event_time) in copies {
            if self.made < self.params.messages && self.rng.random_bool(self.params.duplicate_fraction) {
                // Within --jitter of its event time like the original, so both stay on time.
                let emit_at_us = event_time * 1000 + self.jitter();
                let message = Message { topic, key, payload, kind, event_time, late: false, duplicate: true };
                self.push(emit_at_us, message);
            }
        }
    }

    /// Changes an impression (and its click probability) as `kind` says, if it is one it touches.
    fn inject(&mut self, kind: AnomalyKind, impression: &mut crate::model::Impression, click_through: &mut f64) {
        match kind {
            AnomalyKind::CtrZero(c) if impression.campaign == c => *click_through = 0.0,
            AnomalyKind::ClickBurst(c) if impression.campaign == c => {
                impression.user = self.rng.random_range(0..BOT_USERS);
                *click_through = BURST_CLICK_THROUGH;
            }
            AnomalyKind::TrafficHalving(d) if impression.device == d && self.rng.random_bool(0.5) => {
                impression.device = d.other();
            }
            AnomalyKind::Bots(d) if impression.device == d && self.rng.random_bool(0.5) => {
                impression.user = self.rng.random_range(0..BOT_USERS);
            }
            _ => {}
        }
    }

    /// Queues a valid event, on time or late; returns whether it is on time.
    fn push_event(
        &mut self,
        topic: Topic,
        key: String,
        payload: Vec<u8>,
        kind: MessageKind,
        event_time: EpochMillis,
    ) -> bool {
        let eligible = event_time + LATE_DELAY_MS.start() <= self.params.start + self.params.span_ms;
        let late = eligible && self.rng.random_bool(self.late_probability);
        let emit_at_us = if late {
            (event_time + self.rng.random_range(LATE_DELAY_MS)) * 1000
        } else {
            event_time * 1000 + self.jitter()
        };
        self.push(emit_at_us, Message { topic, key, payload, kind, event_time, late, duplicate: false });
        !late
    }

    fn push(&mut self, emit_at_us: i64, message: Message) {
        self.pending.push(Reverse(Pending { emit_at_us, seq: self.made, message: Box::new(message) }));
        self.made += 1;
    }
}

impl Iterator for MessageStream {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        while self.made < self.params.messages {
            let now_us = self.clock(self.made) * 1000;
            if self.pending.peek().is_some_and(|Reverse(first)| first.emit_at_us <= now_us) {
                break;
            }
            self.make();
        }
        self.pending.pop().map(|Reverse(pending)| *pending.message)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.params.messages - self.made) as usize + self.pending.len();
        (left, Some(left))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::Parser as _;

    use super::*;
    use crate::Config;
    use crate::spec_check::{Valid, check};

    fn stream(args: &[&str]) -> MessageStream {
        let config = Config::try_parse_from(["adgen", "--jsonl", "unused"].iter().chain(args)).unwrap();
        MessageStream::new(config.stream_params().unwrap()).unwrap()
    }

    const FAULTY: &[&str] =
        &["--events", "200000", "--seed", "7", "--late-fraction", "0.01", "--malformed-fraction", "0.01"];

    #[test]
    fn same_seed_same_bytes_in_the_same_order() {
        let first: Vec<Message> = stream(FAULTY).collect();
        let second: Vec<Message> = stream(FAULTY).collect();
        assert_eq!(first.len(), 200_000);
        assert!(first == second);
        let other_seed: Vec<Message> =
            stream(&["--events", "200000", "--seed", "8", "--late-fraction", "0.01", "--malformed-fraction", "0.01"])
                .collect();
        assert!(first != other_seed);
    }

    #[test]
    fn every_message_is_valid_or_malformed_as_labelled() {
        for message in stream(FAULTY) {
            let checked = check(message.topic, &message.payload);
            match message.kind {
                MessageKind::Impression | MessageKind::Click => {
                    let valid = checked
                        .unwrap_or_else(|reason| panic!("{reason}: {}", String::from_utf8_lossy(&message.payload)));
                    assert_eq!(valid.event_time, message.event_time);
                    assert_eq!(valid.impression_id, message.key);
                    assert_eq!(message.topic == Topic::Clicks, valid.click_id.is_some());
                }
                MessageKind::Malformed(kind) => {
                    assert!(checked.is_err(), "{kind:?} is valid: {}", String::from_utf8_lossy(&message.payload));
                }
            }
            assert!(!message.payload.contains(&b'\n'));
        }
    }

    #[test]
    fn disorder_stays_within_the_jitter_for_on_time_events() {
        let jitter_ms = 3000;
        let mut newest: HashMap<Topic, EpochMillis> = HashMap::new();
        let mut newest_overall = i64::MIN;
        let mut worst = 0;
        for message in stream(FAULTY) {
            if matches!(message.kind, MessageKind::Malformed(_)) {
                continue;
            }
            let newest_on_topic = newest.entry(message.topic).or_insert(i64::MIN);
            if !message.late {
                assert!(
                    message.event_time >= newest_overall.saturating_sub(jitter_ms),
                    "{} arrives after event time {newest_overall}",
                    message.event_time
                );
                worst = worst.max(newest_overall.saturating_sub(message.event_time));
            } else {
                // A late event comes after at least 3 minutes minus the jitter of newer event time on its topic
                // (give or take the gaps between events on the sparse clicks topic).
                let newer = newest_on_topic.saturating_sub(message.event_time);
                assert!(newer >= LATE_DELAY_MS.start() - jitter_ms - 2000, "only {newer} ms of newer data");
            }
            *newest_on_topic = (*newest_on_topic).max(message.event_time);
            newest_overall = newest_overall.max(message.event_time);
        }
        // The bound is used, not just respected.
        assert!(worst > jitter_ms / 2, "largest disorder {worst} ms");
    }

    #[test]
    fn clicks_follow_their_impression_within_the_delay() {
        let mut impressions: HashMap<String, Valid> = HashMap::new();
        let mut clicks = Vec::new();
        for message in stream(FAULTY) {
            if let Ok(valid) = check(message.topic, &message.payload) {
                match message.topic {
                    Topic::Impressions => {
                        assert!(impressions.insert(valid.impression_id.clone(), valid).is_none(), "duplicate id");
                    }
                    Topic::Clicks => clicks.push(valid),
                }
            }
        }
        let mut click_ids = std::collections::HashSet::new();
        for click in &clicks {
            assert!(click_ids.insert(click.click_id.clone()), "duplicate click id");
            let impression = &impressions[&click.impression_id];
            assert!(click.event_time >= impression.event_time);
            assert!(click.event_time <= impression.event_time + 30_000);
            assert_eq!(click.user_id, impression.user_id);
        }
        let click_through = clicks.len() as f64 / impressions.len() as f64;
        assert!((0.02..0.035).contains(&click_through), "click-through {click_through}");
    }

    #[test]
    fn fractions_are_roughly_respected() {
        let messages: Vec<Message> = stream(&[
            "--events",
            "200000",
            "--late-fraction",
            "0.05",
            "--malformed-fraction",
            "0.02",
            "--epoch-ms-fraction",
            "0.2",
        ])
        .collect();
        let (malformed, valid): (Vec<&Message>, Vec<&Message>) =
            messages.iter().partition(|m| matches!(m.kind, MessageKind::Malformed(_)));
        let malformed_share = malformed.len() as f64 / messages.len() as f64;
        let share_of_valid =
            |keep: fn(&Message) -> bool| valid.iter().filter(|m| keep(m)).count() as f64 / valid.len() as f64;
        let late = share_of_valid(|m| m.late);
        let epoch = share_of_valid(|m| m.payload.windows(19).any(|w| w == b"\"event_timestamp\":1"));
        assert!((malformed_share - 0.02).abs() < 0.002, "malformed {malformed_share}");
        assert!((late - 0.05).abs() < 0.005, "late {late}");
        assert!((epoch - 0.2).abs() < 0.01, "epoch {epoch}");
        let kinds: std::collections::HashSet<_> = messages.iter().map(|m| m.kind).collect();
        assert_eq!(kinds.len(), 2 + MalformedKind::CYCLE.len());
    }

    #[test]
    fn duplicates_are_exact_on_time_copies_and_counted_once_each() {
        let args = ["--events", "100000", "--duplicate-fraction", "0.05", "--late-fraction", "0.01"];
        let messages: Vec<Message> = stream(&args).collect();
        assert_eq!(messages.len(), 100_000, "copies count in --events");
        let mut seen: HashMap<(Topic, &[u8]), bool> = HashMap::new();
        let (mut copies, mut valid) = (0, 0);
        for m in messages.iter().filter(|m| !matches!(m.kind, MessageKind::Malformed(_))) {
            valid += 1;
            let before = seen.insert((m.topic, m.payload.as_slice()), m.duplicate);
            if m.duplicate {
                copies += 1;
                assert!(!m.late, "only on-time events are copied");
            }
            // Either copy may arrive first, but no event is written more than twice.
            assert!(before.is_none_or(|first_was_copy| first_was_copy != m.duplicate), "a third copy");
        }
        assert_eq!(valid - seen.len(), copies, "every copy has its original, with the same bytes");
        let share = copies as f64 / (valid - copies) as f64;
        assert!((share - 0.05).abs() < 0.005, "duplicates {share}");
        let same_seed_without: Vec<Message> = stream(&["--events", "100000", "--late-fraction", "0.01"]).collect();
        assert!(same_seed_without.iter().all(|m| !m.duplicate));
    }

    #[test]
    fn event_time_advances_evenly_over_the_span() {
        let messages: Vec<Message> = stream(&["--events", "60000", "--span", "1m", "--jitter", "0s"]).collect();
        let start = 1_795_946_400_000;
        assert_eq!(messages.len(), 60_000);
        let impressions: Vec<&Message> = messages.iter().filter(|m| m.topic == Topic::Impressions).collect();
        assert_eq!(impressions[0].event_time, start);
        assert!(impressions.windows(2).all(|pair| pair[0].event_time <= pair[1].event_time));
        assert!(impressions.last().unwrap().event_time < start + 60_000);
        assert!(impressions.last().unwrap().event_time > start + 59_900);
    }

    #[test]
    fn the_pending_queue_stays_small() {
        // 5M messages over 10 minutes is about 8,300 per second; the queue holds about 3 s of them plus the
        // clicks of the last 30 s and the late events of the last 5 minutes.
        let mut stream = stream(&["--events", "5000000", "--late-fraction", "0.001"]);
        let mut largest = 0;
        for _ in 0..1_000_000 {
            stream.next();
            largest = largest.max(stream.pending());
        }
        assert!(largest < 60_000, "{largest} pending");
    }

    #[test]
    fn too_much_lateness_for_the_span_is_refused() {
        let config =
            Config::try_parse_from(["adgen", "--jsonl", "x", "--span", "2m", "--late-fraction", "0.1"]).unwrap();
        assert!(config.stream_params().is_err());
    }
}
