//! Properties of the shared crate, with proptest. They live here rather than beside the code:
//! `adstream new-plugin` vendors `src/` into plugin projects, which have no proptest.

use adstream_abi::batch::{BatchReader, BatchWriter, Event, Kind};
use adstream_abi::bytes::{is_ascii, short_eq};
use proptest::prelude::*;

proptest! {
    #[test]
    fn is_ascii_is_cores(bytes in prop::collection::vec(prop_oneof![30 => 0u8..0x80, 1 => Just(0x80u8), 1 => Just(0xffu8)], 0..40)) {
        prop_assert_eq!(is_ascii(&bytes), bytes.is_ascii());
    }

    #[test]
    fn short_eq_is_equality(a in prop::collection::vec(0u8..3, 0..40), b in prop::collection::vec(0u8..3, 0..40)) {
        prop_assert_eq!(short_eq(&a, &b), a == b);
        prop_assert!(short_eq(&a, &a.clone()));
    }

    /// Any strings read back as written, ASCII ones (read without a UTF-8 check) or not,
    /// whatever lengths their prefixes have.
    #[test]
    fn batches_round_trip_any_strings(events in prop::collection::vec(
        (any::<bool>(), prop::array::uniform5("[a-z0-9-]{0,200}|\\PC{0,80}"), -1i64..1 << 50),
        0..8,
    )) {
        let mut w = BatchWriter::new();
        let events: Vec<Event<'_>> = events
            .iter()
            .map(|(click, [a, b, c, d, e], t)| Event {
                kind: if *click { Kind::Click } else { Kind::Impression },
                window_start_ms: *t - 7,
                event_time_ms: *t,
                impression_time_ms: *t + 1,
                cost: *t as f64 / 3.0,
                campaign_id: a,
                ad_id: b,
                device_type: c,
                browser: d,
                user_id: e,
            })
            .collect();
        for e in &events {
            w.push(e);
        }
        let read: Vec<_> = BatchReader::new(w.bytes()).unwrap().collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(read, events);
    }
}
