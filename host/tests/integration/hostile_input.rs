//! Hostile input: every way a message can be wrong ends in the dead-letter topic with a precise
//! reason header and its source, unchanged; the pipeline never panics on any input (a proptest
//! fuzzes the decoder and the pipeline with random and mutated messages; `just fuzz` runs it
//! longer).

use std::time::{Duration, Instant};

use adstream::config::TimeConfig;
use adstream::engine::{Engine, Input, MAX_MESSAGE_BYTES, Sink};
use adstream::event::{Source, decode};
use adstream::plugin::{Aggregator, NativeAggregator};
use adstream::sink::topics::OutputTopics;
use proptest::prelude::*;

const IMP: &str = r#"{"impression_id":"i1","user_id":"u1","campaign_id":"c1","ad_id":"a1","device_type":"mobile","browser":"chrome","event_timestamp":"2026-11-29T10:00:00.123Z","cost":0.5}"#;
const CLICK: &str = r#"{"click_id":"k1","impression_id":"i1","user_id":"u1","event_timestamp":"2026-11-29T10:00:01Z"}"#;

fn with(base: &str, field: &str, raw_value: &str) -> Vec<u8> {
    let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(base).unwrap();
    v.remove(field);
    let body = serde_json::to_string(&v).unwrap();
    format!("{},\"{field}\":{raw_value}}}", &body[..body.len() - 1]).into_bytes()
}

fn without(base: &str, field: &str) -> Vec<u8> {
    let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(base).unwrap();
    v.remove(field);
    serde_json::to_vec(&v).unwrap()
}

/// (source, message, expected reason)
fn corpus() -> Vec<(Source, Vec<u8>, &'static str)> {
    use Source::{Clicks as C, Impressions as I};
    let mut deep = String::new();
    for _ in 0..50 {
        deep.push('[');
    }
    vec![
        (I, b"".to_vec(), "empty"),
        (I, b"   \n ".to_vec(), "empty"),
        (I, b"hello".to_vec(), "not-json"),
        (I, IMP.as_bytes()[..60].to_vec(), "not-json"),
        (I, format!("{IMP}{IMP}").into_bytes(), "not-json"),
        (I, IMP.replace(',', ";").into_bytes(), "not-json"),
        (I, vec![0xff, 0xfe, b'{', b'}'], "not-utf8"),
        (I, [b"{\"impression_id\":\"".as_slice(), &[0xc3, 0x28], b"\"}"].concat(), "not-utf8"),
        (I, b"[1,2,3]".to_vec(), "not-object"),
        (I, b"\"a string\"".to_vec(), "not-object"),
        (I, b"null".to_vec(), "not-object"),
        (I, b"42".to_vec(), "not-object"),
        (I, format!("{deep}1").into_bytes(), "too-deep"),
        (I, with(IMP, "extra", "[[[[[[[[[[[[1]]]]]]]]]]]]"), "too-deep"),
        (I, vec![b' '; MAX_MESSAGE_BYTES + 1], "too-long"),
        (I, without(IMP, "cost"), "missing-field"),
        (I, without(IMP, "impression_id"), "missing-field"),
        (I, without(IMP, "event_timestamp"), "missing-field"),
        (C, without(CLICK, "impression_id"), "missing-field"),
        (I, with(IMP, "cost", "null"), "null-field"),
        (I, with(IMP, "campaign_id", "null"), "null-field"),
        (C, with(CLICK, "event_timestamp", "null"), "null-field"),
        (I, with(IMP, "cost", "\"0.5\""), "wrong-type"),
        (I, with(IMP, "user_id", "42"), "wrong-type"),
        (I, with(IMP, "device_type", "[\"mobile\"]"), "wrong-type"),
        (I, with(IMP, "ad_id", "{\"id\":1}"), "wrong-type"),
        (I, with(IMP, "cost", "true"), "wrong-type"),
        (C, with(CLICK, "click_id", "7"), "wrong-type"),
        (I, format!("{},\"cost\":1}}", &IMP[..IMP.len() - 1]).into_bytes(), "duplicate-field"),
        (I, with(IMP, "impression_id", "\"\""), "empty-field"),
        (C, with(CLICK, "click_id", "\"\""), "empty-field"),
        (I, with(IMP, "campaign_id", &format!("\"{}\"", "c".repeat(5000))), "field-too-long"),
        (I, with(IMP, "cost", "-0.01"), "negative-cost"),
        (I, with(IMP, "cost", "1e400"), "not-json"),
        (I, with(IMP, "event_timestamp", "\"yesterday\""), "bad-timestamp"),
        (I, with(IMP, "event_timestamp", "\"2026-11-29\""), "bad-timestamp"),
        (I, with(IMP, "event_timestamp", "\"2026-11-29 10:00:00Z\""), "bad-timestamp"),
        (I, with(IMP, "event_timestamp", "\"2026-13-01T00:00:00Z\""), "bad-timestamp"),
        (I, with(IMP, "event_timestamp", "\"2026-02-30T00:00:00Z\""), "bad-timestamp"),
        (I, with(IMP, "event_timestamp", "1795946400000.5"), "bad-timestamp"),
        (I, with(IMP, "event_timestamp", "\"1795946400000\""), "bad-timestamp"),
        (I, with(IMP, "event_timestamp", "-5"), "timestamp-out-of-range"),
        (I, with(IMP, "event_timestamp", "0"), "timestamp-out-of-range"),
        (I, with(IMP, "event_timestamp", "\"9999-12-31T23:59:59Z\""), "timestamp-out-of-range"),
        (I, with(IMP, "event_timestamp", "\"1970-01-01T00:00:00Z\""), "timestamp-out-of-range"),
        (I, with(IMP, "event_timestamp", "99999999999999999999"), "bad-timestamp"),
        (C, CLICK.as_bytes()[..30].to_vec(), "not-json"),
        (C, IMP.as_bytes().to_vec(), "missing-field"),
    ]
}

/// One record the pipeline sent: topic, value, headers.
type Sent = (String, Vec<u8>, Vec<(String, String)>);

struct Collect(Vec<Sent>);

impl Sink for Collect {
    fn send(
        &mut self,
        topic: &str,
        _key: Option<&[u8]>,
        value: &[u8],
        headers: &[(&str, &[u8])],
    ) -> anyhow::Result<()> {
        let headers = headers.iter().map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v).into_owned())).collect();
        self.0.push((topic.to_owned(), value.to_vec(), headers));
        Ok(())
    }
}

fn pipeline() -> Engine {
    let aggregators: Vec<Box<dyn Aggregator>> = vec![Box::new(NativeAggregator::<ctr::Ctr>::new("ctr", "ctr"))];
    let topics = OutputTopics {
        late: "late".into(),
        dead_letter: "dlq".into(),
        plugin_errors: "errors".into(),
        ..OutputTopics::with_prefix("")
    };
    let time = TimeConfig { idle_timeout: Duration::from_secs(3600), ..TimeConfig::default() };
    let mut p = Engine::with_aggregators(time, aggregators, 64, topics).unwrap();
    p.add_partition(Source::Impressions, "ad-impressions", 0, Instant::now()).unwrap();
    p.add_partition(Source::Clicks, "ad-clicks", 3, Instant::now()).unwrap();
    p
}

#[test]
fn every_kind_of_bad_message_is_dead_lettered_with_its_reason() {
    let corpus = corpus();
    let kinds: std::collections::BTreeSet<&str> = corpus.iter().map(|c| c.2).collect();
    assert!(corpus.len() >= 30 && kinds.len() >= 12, "{} messages, {} reasons", corpus.len(), kinds.len());
    let mut p = pipeline();
    let mut sink = Collect(Vec::new());
    for (offset, (source, bytes, _)) in corpus.iter().enumerate() {
        let partition = usize::from(*source == Source::Clicks);
        let input = Input { partition, offset: offset as i64, key: Some(b"k"), payload: bytes };
        p.ingest(input, Instant::now(), &mut sink).unwrap();
    }
    assert_eq!(sink.0.len(), corpus.len(), "one dead letter per message");
    for ((source, bytes, reason), (topic, value, headers)) in corpus.iter().zip(&sink.0) {
        let h = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).unwrap_or("");
        let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(80)]);
        assert_eq!(topic, "dlq", "{shown}");
        assert_eq!(h("reason"), *reason, "{shown}: {}", h("reason-detail"));
        assert!(!h("reason-detail").is_empty());
        assert_eq!(value, bytes, "the original bytes, unchanged");
        let (want_topic, want_partition) =
            if *source == Source::Clicks { ("ad-clicks", "3") } else { ("ad-impressions", "0") };
        assert_eq!((h("source-topic"), h("source-partition")), (want_topic, want_partition));
        assert!(h("source-offset").parse::<usize>().is_ok());
    }
    let stats = p.stats();
    assert_eq!(
        (stats.dead_lettered, stats.consumed, stats.accounted()),
        (corpus.len() as u64, corpus.len() as u64, corpus.len() as u64)
    );
}

/// Messages made from a valid one by random byte edits, and random bytes: decoding never panics,
/// and whatever decodes has the fields an event must have.
fn mutated() -> impl Strategy<Value = (bool, Vec<u8>)> {
    let edits = proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 0..8);
    prop_oneof![
        (any::<bool>(), edits).prop_map(|(click, edits)| {
            let mut bytes = if click { CLICK } else { IMP }.as_bytes().to_vec();
            for (at, byte, op) in edits {
                let len = bytes.len();
                let i = at.index(len.max(1)).min(len.saturating_sub(1));
                match op {
                    0 if len > 0 => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    _ if len > 0 => {
                        bytes.remove(i);
                    }
                    _ => {}
                }
            }
            (click, bytes)
        }),
        (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..300)),
    ]
}

fn fuzz_cases() -> u32 {
    std::env::var("ADSTREAM_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(3000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz_cases(), ..ProptestConfig::default() })]

    #[test]
    fn decoding_never_panics_and_accepts_only_complete_events((click, bytes) in mutated()) {
        let source = if click { Source::Clicks } else { Source::Impressions };
        if let Ok(event) = decode(source, &bytes, MAX_MESSAGE_BYTES) {
            let ts = event.event_time_ms();
            prop_assert!((adstream::event::MIN_EVENT_TIME_MS..adstream::event::MAX_EVENT_TIME_MS).contains(&ts));
            if let adstream::event::Event::Impression(i) = &event {
                prop_assert!(i.cost >= 0.0 && !i.impression_id.is_empty() && !i.campaign_id.is_empty());
            }
        }
        // Through the whole pipeline as well: routed somewhere, never a panic.
        let mut p = pipeline();
        let mut sink = Collect(Vec::new());
        p.ingest(Input { partition: usize::from(click), offset: 0, key: None, payload: &bytes }, Instant::now(), &mut sink).unwrap();
        p.finish(&mut sink).unwrap();
        let stats = p.stats();
        prop_assert_eq!(stats.accounted(), 1);
    }
}
