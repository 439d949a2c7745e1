//! Messages that are not valid events, for exercising the host's dead-letter path.
//!
//! Each malformed message starts as a valid event and is broken in one way. The kinds are used in a fixed cycle
//! ([`MalformedKind::nth`]) so that any run with a few dozen malformed messages contains every kind; the details
//! within a kind (which field, which bad timestamp) come from the seeded RNG. No kind ever produces a raw
//! newline, so a JSONL line is always exactly one message.

use rand::Rng;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::model::Topic;

/// The ways a message is made invalid per SPEC.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MalformedKind {
    /// Text that is not JSON at all.
    NotJson,
    /// A valid event cut short.
    TruncatedJson,
    /// A valid event wrapped in a JSON array.
    JsonArray,
    /// A valid event with bytes that are not UTF-8 inside a string.
    InvalidUtf8,
    /// A valid event without one of its fields.
    MissingField,
    /// `cost` as a string (`"0.0042"`); impressions only.
    CostAsString,
    /// `user_id` as an integer.
    UserIdAsInteger,
    /// `event_timestamp` that is not RFC 3339 or is out of range.
    BadTimestamp,
    /// `impression_id` as `""`.
    EmptyImpressionId,
    /// `cost` below zero; impressions only.
    NegativeCost,
    /// One field `null`.
    NullField,
}

impl MalformedKind {
    pub const CYCLE: [MalformedKind; 11] = [
        MalformedKind::NotJson,
        MalformedKind::TruncatedJson,
        MalformedKind::JsonArray,
        MalformedKind::InvalidUtf8,
        MalformedKind::MissingField,
        MalformedKind::CostAsString,
        MalformedKind::UserIdAsInteger,
        MalformedKind::BadTimestamp,
        MalformedKind::EmptyImpressionId,
        MalformedKind::NegativeCost,
        MalformedKind::NullField,
    ];

    /// The kind of the `n`-th malformed message of a run.
    pub fn nth(n: u64) -> MalformedKind {
        Self::CYCLE[(n % Self::CYCLE.len() as u64) as usize]
    }

    /// The topic the message goes to, given one drawn at random: kinds about `cost` only break impressions
    /// (on the clicks topic `cost` is an unknown field, which SPEC.md says is ignored).
    pub fn topic(self, drawn: Topic) -> Topic {
        match self {
            MalformedKind::CostAsString | MalformedKind::NegativeCost => Topic::Impressions,
            _ => drawn,
        }
    }

    /// Breaks `valid`, the encoding of a valid event on `topic`.
    pub fn corrupt(self, valid: &[u8], topic: Topic, rng: &mut impl Rng) -> Vec<u8> {
        match self {
            MalformedKind::NotJson => {
                const NOT_JSON: [&str; 5] = [
                    "not json",
                    "impression_id=i1 user_id=u1 campaign_id=c1",
                    "{'impression_id': 'i1', 'user_id': 'u1'}",
                    "<impression id=\"i1\"/>",
                    "{impression_id: i1}",
                ];
                NOT_JSON[rng.random_range(0..NOT_JSON.len())].as_bytes().to_vec()
            }
            // Every proper prefix of a JSON object is invalid: the object only closes at its last byte.
            MalformedKind::TruncatedJson => valid[..rng.random_range(1..valid.len())].to_vec(),
            MalformedKind::JsonArray => [b"[".as_slice(), valid, b"]"].concat(),
            MalformedKind::InvalidUtf8 => {
                const NOT_UTF8: [&[u8]; 4] = [b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf"];
                let marker = b"\"user_id\":\"";
                let at =
                    valid.windows(marker.len()).position(|window| window == marker).map_or(1, |at| at + marker.len());
                let bad = NOT_UTF8[rng.random_range(0..NOT_UTF8.len())];
                [&valid[..at], bad, &valid[at..]].concat()
            }
            _ => {
                let mut object = match serde_json::from_slice(valid) {
                    Ok(Value::Object(object)) => object,
                    // Cannot happen for our own encodings; still, whatever was passed in is not that.
                    _ => return b"not an event".to_vec(),
                };
                self.corrupt_field(&mut object, topic, rng);
                serde_json::to_vec(&Value::Object(object)).unwrap_or_else(|_| b"not an event".to_vec())
            }
        }
    }

    fn corrupt_field(self, object: &mut Map<String, Value>, topic: Topic, rng: &mut impl Rng) {
        let fields = topic.fields();
        let any_field = fields[rng.random_range(0..fields.len())];
        match self {
            MalformedKind::MissingField => {
                object.remove(any_field);
            }
            MalformedKind::NullField => {
                object.insert(any_field.to_owned(), Value::Null);
            }
            MalformedKind::CostAsString => {
                let cost = object.get("cost").map_or_else(|| "0.001".to_owned(), Value::to_string);
                object.insert("cost".to_owned(), Value::String(cost));
            }
            MalformedKind::NegativeCost => {
                let cost = object.get("cost").and_then(Value::as_f64).unwrap_or(0.001);
                object.insert("cost".to_owned(), Value::from(-cost.max(0.0001)));
            }
            MalformedKind::UserIdAsInteger => {
                let user = object.get("user_id").and_then(Value::as_str).unwrap_or("u0");
                let number: u64 = user.trim_start_matches('u').parse().unwrap_or(0);
                object.insert("user_id".to_owned(), Value::from(number));
            }
            MalformedKind::EmptyImpressionId => {
                object.insert("impression_id".to_owned(), Value::String(String::new()));
            }
            MalformedKind::BadTimestamp => {
                let bad = match rng.random_range(0..6) {
                    0 => Value::from("yesterday"),
                    1 => Value::from("2026-11-29T25:00:00.000Z"),
                    2 => Value::from("2026-02-30T10:00:00.000Z"),
                    // RFC 3339 requires the offset.
                    3 => Value::from("2026-11-29T10:00:00.000"),
                    4 => Value::from("29/11/2026 10:00"),
                    // An integer, but about 292 million years after the epoch: no date.
                    _ => Value::from(i64::MAX),
                };
                object.insert("event_timestamp".to_owned(), bad);
            }
            MalformedKind::NotJson
            | MalformedKind::TruncatedJson
            | MalformedKind::JsonArray
            | MalformedKind::InvalidUtf8 => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::model::{World, WorldParams};
    use crate::spec_check::check;

    #[test]
    fn every_kind_is_invalid_on_its_topic_and_stays_on_one_line() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let params = WorldParams {
            campaigns: 10,
            ads_per_campaign: 3,
            users: 100,
            ctr_min: 0.01,
            ctr_max: 0.02,
            epoch_ms_fraction: 0.3,
            ids: crate::model::IdStyle::Short,
        };
        let world = World::new(params, &mut rng);
        for n in 0..MalformedKind::CYCLE.len() as u64 * 300 {
            let kind = MalformedKind::nth(n);
            let impression = world.impression(&mut rng, n, 1_795_946_400_000 + n as i64);
            let click = world.click(&mut rng, n, n, impression.user, impression.event_time);
            for drawn in Topic::ALL {
                let topic = kind.topic(drawn);
                let valid = match topic {
                    Topic::Impressions => impression.encode(),
                    Topic::Clicks => click.encode(),
                };
                assert!(check(topic, &valid).is_ok());
                let broken = kind.corrupt(&valid, topic, &mut rng);
                assert!(
                    check(topic, &broken).is_err(),
                    "{kind:?} on {topic:?} is valid: {}",
                    String::from_utf8_lossy(&broken)
                );
                assert!(!broken.contains(&b'\n') && !broken.is_empty());
            }
        }
    }
}
