//! The batch encoding's test vectors (`sdk/test-vectors/batch-v1.json`), which other languages'
//! SDKs are checked against too (`sdk/python/tests`): the writer makes exactly the vector's bytes
//! from its events, and the reader gives its events back.

use adstream_abi::batch::{BatchReader, BatchWriter, Event, Kind};
use serde_json::Value;

fn vector() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../sdk/test-vectors/batch-v1.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("the test vector")).expect("JSON")
}

fn event(v: &Value) -> Event<'_> {
    let s = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("{k}: {v}"));
    let i = |k: &str| v[k].as_i64().unwrap_or_else(|| panic!("{k}: {v}"));
    Event {
        kind: if v["kind"] == 0 { Kind::Impression } else { Kind::Click },
        window_start_ms: i("window_start_ms"),
        event_time_ms: i("event_time_ms"),
        impression_time_ms: i("impression_time_ms"),
        cost: v["cost"].as_f64().unwrap(),
        campaign_id: s("campaign_id"),
        ad_id: s("ad_id"),
        device_type: s("device_type"),
        browser: s("browser"),
        user_id: s("user_id"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_writer_makes_the_vector_s_bytes_and_the_reader_its_events() {
    let vector = vector();
    let events: Vec<Event<'_>> = vector["events"].as_array().unwrap().iter().map(event).collect();
    assert!(events.iter().any(|e| e.kind == Kind::Click) && events.iter().any(|e| !e.user_id.is_ascii()));
    let mut writer = BatchWriter::new();
    for e in &events {
        writer.push(e);
    }
    let bytes = writer.bytes().to_vec();
    assert_eq!(hex(&bytes), vector["hex"].as_str().unwrap());
    let read: Vec<Event<'_>> = BatchReader::new(&bytes).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(read, events);
}
