//! Decoding input messages (SPEC "Input topics") and the reasons a message is rejected.
//!
//! Decoding borrows from the message bytes wherever the JSON has no escapes, so the common path
//! allocates nothing. Every way a message can be wrong maps to one [`Rejected`] variant whose
//! [`Rejected::code`] goes into the dead-letter `reason` header.

use std::borrow::Cow;
use std::fmt;

use adstream_abi::time::{TimeError, parse_rfc3339_millis};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

mod fast;

/// Event times before this are rejected as absurd (2000-01-01T00:00:00Z).
pub const MIN_EVENT_TIME_MS: i64 = 946_684_800_000;
/// Event times from this on are rejected as absurd (2100-01-01T00:00:00Z).
pub const MAX_EVENT_TIME_MS: i64 = 4_102_444_800_000;
/// Longest id or label accepted in an event (it must fit the batch encoding).
pub const MAX_FIELD_BYTES: usize = 1024;

/// Which input topic a message came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    Impressions,
    Clicks,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Impressions => "impression",
            Source::Clicks => "click",
        }
    }
}

/// A decoded ad impression.
#[derive(Clone, Debug, PartialEq)]
pub struct Impression<'a> {
    pub impression_id: Cow<'a, str>,
    pub user_id: Cow<'a, str>,
    pub campaign_id: Cow<'a, str>,
    pub ad_id: Cow<'a, str>,
    pub device_type: Cow<'a, str>,
    pub browser: Cow<'a, str>,
    pub event_time_ms: i64,
    pub cost: f64,
}

/// A decoded click.
#[derive(Clone, Debug, PartialEq)]
pub struct Click<'a> {
    pub click_id: Cow<'a, str>,
    pub impression_id: Cow<'a, str>,
    pub user_id: Cow<'a, str>,
    pub event_time_ms: i64,
}

/// A valid input event.
#[derive(Clone, Debug, PartialEq)]
pub enum Event<'a> {
    Impression(Impression<'a>),
    Click(Click<'a>),
}

impl Event<'_> {
    pub fn event_time_ms(&self) -> i64 {
        match self {
            Event::Impression(i) => i.event_time_ms,
            Event::Click(c) => c.event_time_ms,
        }
    }
}

/// Why a message is not a valid event. Each goes to the dead-letter topic with [`Self::code`]
/// as its `reason` header and the `Display` text as `reason-detail`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("message is {len} bytes, more than the {max} allowed")]
    TooLong { len: usize, max: usize },
    #[error("message is empty")]
    Empty,
    #[error("message is not valid UTF-8 (first bad byte at {0})")]
    NotUtf8(usize),
    #[error("message is not JSON: {0}")]
    NotJson(String),
    #[error("message is JSON but not an object")]
    NotObject,
    #[error("JSON nested too deeply")]
    TooDeep,
    #[error("missing field `{0}`")]
    MissingField(String),
    #[error("field `{0}` appears twice")]
    DuplicateField(String),
    #[error("field `{field}` is null")]
    NullField { field: String },
    #[error("field `{field}` has the wrong type: {detail}")]
    WrongType { field: String, detail: String },
    #[error("field `{0}` is empty")]
    EmptyField(&'static str),
    #[error("field `{0}` is longer than {MAX_FIELD_BYTES} bytes")]
    FieldTooLong(&'static str),
    #[error("cost {0} is negative")]
    NegativeCost(String),
    #[error("event_timestamp {value:?}: {detail}")]
    BadTimestamp { value: String, detail: String },
    #[error("event_timestamp {0} ms is outside 2000-01-01..2100-01-01")]
    TimestampOutOfRange(i64),
}

impl Rejected {
    /// A short, stable, machine-readable reason: the `reason` header of a dead letter.
    pub fn code(&self) -> &'static str {
        match self {
            Rejected::TooLong { .. } => "too-long",
            Rejected::Empty => "empty",
            Rejected::NotUtf8(_) => "not-utf8",
            Rejected::NotJson(_) => "not-json",
            Rejected::NotObject => "not-object",
            Rejected::TooDeep => "too-deep",
            Rejected::MissingField(_) => "missing-field",
            Rejected::DuplicateField(_) => "duplicate-field",
            Rejected::NullField { .. } => "null-field",
            Rejected::WrongType { .. } => "wrong-type",
            Rejected::EmptyField(_) => "empty-field",
            Rejected::FieldTooLong(_) => "field-too-long",
            Rejected::NegativeCost(_) => "negative-cost",
            Rejected::BadTimestamp { .. } => "bad-timestamp",
            Rejected::TimestampOutOfRange(_) => "timestamp-out-of-range",
        }
    }
}

/// `event_timestamp` as read: epoch ms, or why it could not be read. Bad timestamps are kept as
/// a value rather than a serde error so that the reason stays precise.
#[derive(Debug)]
enum Timestamp {
    Ms(i64),
    Bad { value: String, detail: String },
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 string or an integer of epoch milliseconds")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Timestamp, E> {
                Ok(match parse_rfc3339_millis(s) {
                    Ok(ms) => Timestamp::Ms(ms),
                    Err(e @ (TimeError::Syntax | TimeError::Range)) => {
                        Timestamp::Bad { value: s.chars().take(64).collect(), detail: e.to_string() }
                    }
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Timestamp, E> {
                Ok(Timestamp::Ms(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Timestamp, E> {
                Ok(i64::try_from(v).map_or_else(
                    |_| Timestamp::Bad { value: v.to_string(), detail: "too large for epoch milliseconds".into() },
                    Timestamp::Ms,
                ))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Timestamp, E> {
                let detail = if v.fract() == 0.0 {
                    "too large for epoch milliseconds"
                } else {
                    "epoch milliseconds must be an integer"
                };
                Ok(Timestamp::Bad { value: v.to_string(), detail: detail.into() })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct RawImpression<'a> {
    #[serde(borrow)]
    impression_id: Cow<'a, str>,
    #[serde(borrow)]
    user_id: Cow<'a, str>,
    #[serde(borrow)]
    campaign_id: Cow<'a, str>,
    #[serde(borrow)]
    ad_id: Cow<'a, str>,
    #[serde(borrow)]
    device_type: Cow<'a, str>,
    #[serde(borrow)]
    browser: Cow<'a, str>,
    event_timestamp: Timestamp,
    cost: f64,
}

#[derive(Deserialize)]
struct RawClick<'a> {
    #[serde(borrow)]
    click_id: Cow<'a, str>,
    #[serde(borrow)]
    impression_id: Cow<'a, str>,
    #[serde(borrow)]
    user_id: Cow<'a, str>,
    event_timestamp: Timestamp,
}

/// Classifies a serde_json error. The field name of a type error is not in serde's message, so
/// the (rare) error path parses once more with `serde_path_to_error` to find it.
fn classify<'a, T: Deserialize<'a>>(text: &'a str, err: serde_json::Error) -> Rejected {
    use serde_json::error::Category;
    let msg = err.to_string();
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io if msg.starts_with("recursion limit") => Rejected::TooDeep,
        Category::Syntax | Category::Eof | Category::Io => Rejected::NotJson(msg),
        Category::Data => {
            if let Some(field) = msg.strip_prefix("missing field `").and_then(|r| r.split('`').next()) {
                return Rejected::MissingField(field.to_owned());
            }
            if let Some(field) = msg.strip_prefix("duplicate field `").and_then(|r| r.split('`').next()) {
                return Rejected::DuplicateField(field.to_owned());
            }
            if !text.trim_start().starts_with('{') {
                return Rejected::NotObject;
            }
            let mut de = serde_json::Deserializer::from_str(text);
            let field = match serde_path_to_error::deserialize::<_, T>(&mut de) {
                Err(e) => e.path().to_string(),
                Ok(_) => "?".to_owned(),
            };
            let detail = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
            if detail.starts_with("invalid type: null") {
                Rejected::NullField { field }
            } else {
                Rejected::WrongType { field, detail }
            }
        }
    }
}

fn check_id(name: &'static str, value: &str) -> Result<(), Rejected> {
    if value.is_empty() {
        Err(Rejected::EmptyField(name))
    } else if value.len() > MAX_FIELD_BYTES {
        Err(Rejected::FieldTooLong(name))
    } else {
        Ok(())
    }
}

fn check_time(ts: Timestamp) -> Result<i64, Rejected> {
    match ts {
        Timestamp::Ms(ms) if (MIN_EVENT_TIME_MS..MAX_EVENT_TIME_MS).contains(&ms) => Ok(ms),
        Timestamp::Ms(ms) => Err(Rejected::TimestampOutOfRange(ms)),
        Timestamp::Bad { value, detail } => Err(Rejected::BadTimestamp { value, detail }),
    }
}

/// Deepest nesting of arrays and objects accepted; an event is one flat object, so anything
/// deeper is in an unknown field. serde skips unknown fields without a depth limit, so the
/// check is done here.
pub const MAX_DEPTH: usize = 8;

/// Whether brackets outside strings nest deeper than [`MAX_DEPTH`]. The exact scan runs only for
/// the rare message with more than a few brackets at all.
fn too_deep(payload: &[u8]) -> bool {
    if payload.iter().filter(|&&b| b == b'[' || b == b'{').count() <= MAX_DEPTH {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in payload {
        match (in_string, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, false, _) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b'[' | b'{') => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return true;
                }
            }
            (false, _, b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Decodes one message of `source`, of at most `max_bytes` bytes.
pub fn decode(source: Source, payload: &[u8], max_bytes: usize) -> Result<Event<'_>, Rejected> {
    if payload.len() > max_bytes {
        return Err(Rejected::TooLong { len: payload.len(), max: max_bytes });
    }
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Err(Rejected::Empty);
    }
    let text = std::str::from_utf8(payload).map_err(|e| Rejected::NotUtf8(e.valid_up_to()))?;
    if let Some(event) = fast::decode(source, text) {
        return Ok(event);
    }
    decode_json(source, text)
}

/// The complete decoder, behind the fast path: serde_json, with a precise reason for every
/// rejection.
fn decode_json(source: Source, text: &str) -> Result<Event<'_>, Rejected> {
    if too_deep(text.as_bytes()) {
        return Err(Rejected::TooDeep);
    }
    // serde would read a struct from a JSON array too; an event is an object, nothing else.
    if !text.trim_start().starts_with('{') {
        return match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => Err(Rejected::NotObject),
            Err(e) => Err(classify::<serde::de::IgnoredAny>(text, e)),
        };
    }
    match source {
        Source::Impressions => {
            let raw: RawImpression = serde_json::from_str(text).map_err(|e| classify::<RawImpression>(text, e))?;
            for (name, value) in [
                ("impression_id", &raw.impression_id),
                ("user_id", &raw.user_id),
                ("campaign_id", &raw.campaign_id),
                ("ad_id", &raw.ad_id),
                ("device_type", &raw.device_type),
                ("browser", &raw.browser),
            ] {
                check_id(name, value)?;
            }
            if raw.cost < 0.0 {
                return Err(Rejected::NegativeCost(raw.cost.to_string()));
            }
            Ok(Event::Impression(Impression {
                event_time_ms: check_time(raw.event_timestamp)?,
                impression_id: raw.impression_id,
                user_id: raw.user_id,
                campaign_id: raw.campaign_id,
                ad_id: raw.ad_id,
                device_type: raw.device_type,
                browser: raw.browser,
                cost: raw.cost,
            }))
        }
        Source::Clicks => {
            let raw: RawClick = serde_json::from_str(text).map_err(|e| classify::<RawClick>(text, e))?;
            for (name, value) in
                [("click_id", &raw.click_id), ("impression_id", &raw.impression_id), ("user_id", &raw.user_id)]
            {
                check_id(name, value)?;
            }
            Ok(Event::Click(Click {
                event_time_ms: check_time(raw.event_timestamp)?,
                click_id: raw.click_id,
                impression_id: raw.impression_id,
                user_id: raw.user_id,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMP: &str = r#"{"impression_id":"i1","user_id":"u1","campaign_id":"c1","ad_id":"a1","device_type":"mobile","browser":"chrome","event_timestamp":"2026-11-29T10:00:00.123Z","cost":0.5}"#;

    fn imp_with(field: &str, value: &str) -> String {
        let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(IMP).unwrap();
        v.insert(field.into(), serde_json::from_str(value).unwrap());
        serde_json::to_string(&v).unwrap()
    }

    fn reject(source: Source, text: &[u8]) -> Rejected {
        decode(source, text, 4096).expect_err(&String::from_utf8_lossy(text))
    }

    #[test]
    fn decodes_valid_events_borrowing_the_input() {
        let Event::Impression(i) = decode(Source::Impressions, IMP.as_bytes(), 4096).unwrap() else { panic!() };
        assert_eq!(i.event_time_ms, 1_795_946_400_123);
        assert!(matches!(i.campaign_id, Cow::Borrowed("c1")));
        let click = r#"{"click_id":"k1","impression_id":"i1","user_id":"u1","event_timestamp":1795946400999,"extra":{"a":[1]}}"#;
        let Event::Click(c) = decode(Source::Clicks, click.as_bytes(), 4096).unwrap() else { panic!() };
        assert_eq!((c.event_time_ms, c.impression_id.as_ref()), (1_795_946_400_999, "i1"));
        let escaped = imp_with("campaign_id", r#""c\u0031""#);
        let Event::Impression(i) = decode(Source::Impressions, escaped.as_bytes(), 4096).unwrap() else { panic!() };
        assert_eq!(i.campaign_id, "c1");
    }

    #[test]
    fn names_the_reason_for_each_kind_of_bad_message() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"not json".to_vec(), "not-json"),
            (IMP.as_bytes()[..40].to_vec(), "not-json"),
            (b"[1,2]".to_vec(), "not-object"),
            (b"".to_vec(), "empty"),
            (vec![b'{', 0xff, b'}'], "not-utf8"),
            (format!("{}{}", "[".repeat(200), "]".repeat(200)).into_bytes(), "too-deep"),
            (imp_with("extra", &format!("{}1{}", "[".repeat(9), "]".repeat(9))).into_bytes(), "too-deep"),
            (br#"["i1","u1","c1","a1","mobile","chrome","2026-11-29T10:00:00Z",0.5]"#.to_vec(), "not-object"),
            (b"42".to_vec(), "not-object"),
            (IMP.replace(r#""cost":0.5"#, r#""cost":"0.5""#).into_bytes(), "wrong-type"),
            (IMP.replace(r#","cost":0.5"#, "").into_bytes(), "missing-field"),
            (IMP.replace(r#""cost":0.5"#, r#""cost":0.5,"cost":1"#).into_bytes(), "duplicate-field"),
            (imp_with("user_id", "null").into_bytes(), "null-field"),
            (imp_with("user_id", "42").into_bytes(), "wrong-type"),
            (imp_with("impression_id", r#""""#).into_bytes(), "empty-field"),
            (imp_with("cost", "-1").into_bytes(), "negative-cost"),
            (imp_with("event_timestamp", r#""yesterday""#).into_bytes(), "bad-timestamp"),
            (imp_with("event_timestamp", "1.5").into_bytes(), "bad-timestamp"),
            (imp_with("event_timestamp", "5").into_bytes(), "timestamp-out-of-range"),
            (imp_with("campaign_id", &format!("\"{}\"", "x".repeat(2000))).into_bytes(), "field-too-long"),
            (IMP.replace(r#""cost":0.5"#, r#""cost":1e999"#).into_bytes(), "not-json"),
        ];
        for (text, code) in cases {
            assert_eq!(reject(Source::Impressions, &text).code(), code, "{}", String::from_utf8_lossy(&text));
        }
        let wrong = reject(Source::Impressions, imp_with("user_id", "42").as_bytes());
        assert_eq!(
            wrong,
            Rejected::WrongType {
                field: "user_id".into(),
                detail: "invalid type: integer `42`, expected a string".into()
            }
        );
        assert_eq!(decode(Source::Impressions, IMP.as_bytes(), 10).unwrap_err().code(), "too-long");
        // Brackets inside strings and shallow nesting are fine.
        let shallow = imp_with("extra", r#"{"a":[[1],[2]],"s":"[[[[[[[[[[[[{{{{{{{{"}"#);
        assert!(decode(Source::Impressions, shallow.as_bytes(), 4096).is_ok());
    }
}
