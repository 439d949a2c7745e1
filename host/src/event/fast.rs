//! The fast path of [`super::decode`]: a single walk over a flat JSON object whose values are
//! strings without escapes or numbers, which is what producers write in practice; and before
//! it, for the commonest form of all (compact, fields in the usual order), a walk that compares
//! each key with its punctuation at once instead of scanning it.
//!
//! It only ever accepts: anything it is not sure about (escapes, nested or literal values,
//! duplicate or missing fields, a value out of range) makes it return `None`, and the full
//! serde path decides, with its precise reasons. So wherever it returns an event, that event
//! is the one the serde path returns, which `tests` check against each other.

use std::borrow::Cow;

use adstream_abi::time::parse_rfc3339_millis;

use crate::bytes::short_eq;

use super::{Click, Event, Impression, MAX_EVENT_TIME_MS, MAX_FIELD_BYTES, MIN_EVENT_TIME_MS, Source};

/// A value as the scanner found it.
#[derive(Clone, Copy)]
enum Value<'a> {
    Str(&'a str),
    /// The text of a JSON number, checked against the JSON grammar.
    Num(&'a str),
}

struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        self.skip_ws();
        (self.peek()? == b).then(|| self.at += 1)
    }

    /// A string with no escape and no control character, the opening quote already eaten.
    fn string(&mut self) -> Option<&'a str> {
        let bytes = self.text.as_bytes();
        let start = self.at;
        let len = special_byte(&bytes[start..])?;
        self.at = start + len;
        (bytes[self.at] == b'"').then(|| {
            self.at += 1;
            &self.text[start..start + len]
        })
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Option<&'a str> {
        let bytes = self.text.as_bytes();
        let start = self.at;
        let digits = |at: &mut usize| {
            let from = *at;
            while bytes.get(*at).is_some_and(u8::is_ascii_digit) {
                *at += 1;
            }
            *at > from
        };
        let mut at = start;
        if bytes.get(at) == Some(&b'-') {
            at += 1;
        }
        match bytes.get(at) {
            Some(b'0') => at += 1,
            Some(b'1'..=b'9') => {
                digits(&mut at);
            }
            _ => return None,
        }
        if bytes.get(at) == Some(&b'.') {
            at += 1;
            if !digits(&mut at) {
                return None;
            }
        }
        if matches!(bytes.get(at), Some(b'e' | b'E')) {
            at += 1;
            if matches!(bytes.get(at), Some(b'+' | b'-')) {
                at += 1;
            }
            if !digits(&mut at) {
                return None;
            }
        }
        self.at = at;
        Some(&self.text[start..at])
    }

    fn value(&mut self) -> Option<Value<'a>> {
        self.skip_ws();
        match self.peek()? {
            b'"' => {
                self.at += 1;
                self.string().map(Value::Str)
            }
            b'-' | b'0'..=b'9' => self.number().map(Value::Num),
            _ => None,
        }
    }
}

/// Position of the first `"`, `\\` or control character, eight bytes at a time (the classic
/// "has a zero byte" bit trick; only the lowest flagged byte is exact, which is the one used).
fn special_byte(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let (chunks, tail) = bytes.as_chunks::<8>();
    for (i, chunk) in chunks.iter().enumerate() {
        let x = u64::from_le_bytes(*chunk);
        let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGHS;
        let found = zero_byte(x ^ (ONES * u64::from(b'"'))) | zero_byte(x ^ (ONES * u64::from(b'\\'))) | below_space;
        if found != 0 {
            return Some(i * 8 + (found.trailing_zeros() / 8) as usize);
        }
    }
    let at = tail.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
    Some(bytes.len() - tail.len() + at)
}

/// The fields of each event kind, in the order producers write them; a field's index is its bit
/// in the "seen" mask.
const IMPRESSION_FIELDS: [&str; 8] =
    ["impression_id", "user_id", "campaign_id", "ad_id", "device_type", "browser", "event_timestamp", "cost"];
const CLICK_FIELDS: [&str; 4] = ["click_id", "impression_id", "user_id", "event_timestamp"];

/// What comes before each field's value when a producer writes the fields in the order of
/// `IMPRESSION_FIELDS` (`CLICK_FIELDS`) with no whitespace, as our generator, most JSON
/// libraries' compact output and Kafka Connect do: the object's brace or the comma, and the key.
const IMPRESSION_LAYOUT: [&str; 8] = [
    r#"{"impression_id":"#,
    r#","user_id":"#,
    r#","campaign_id":"#,
    r#","ad_id":"#,
    r#","device_type":"#,
    r#","browser":"#,
    r#","event_timestamp":"#,
    r#","cost":"#,
];
const CLICK_LAYOUT: [&str; 4] = [r#"{"click_id":"#, r#","impression_id":"#, r#","user_id":"#, r#","event_timestamp":"#];

/// The common case of [`fields`], cheaper: the message is exactly `layout[0]`, a value,
/// `layout[1]`, a value, ..., and `}`. Each key is compared with its punctuation as one short
/// run of bytes instead of being scanned as a string and looked up; a value is read as the
/// general walk reads it. `None` for anything else (it may have handed some values to `set` by
/// then); the general walk decides those. Where this answers, [`fields`] answers the same: the same
/// values, each field once, nothing after the object.
fn in_layout<'a>(text: &'a str, layout: &[&str], mut set: impl FnMut(usize, Value<'a>) -> Option<()>) -> Option<()> {
    let bytes = text.as_bytes();
    let mut s = Scanner { text, at: 0 };
    for (i, before) in layout.iter().enumerate() {
        let before = before.as_bytes();
        let end = s.at + before.len();
        if !bytes.get(s.at..end).is_some_and(|b| short_eq(b, before)) {
            return None;
        }
        s.at = end;
        set(i, s.value()?)?;
    }
    (s.at + 1 == bytes.len() && bytes[s.at] == b'}').then_some(())
}

/// Walks the object, handing each known field's value to `set` by its index in `fields`.
/// Unknown fields with simple values are skipped, as serde does.
fn fields<'a>(text: &'a str, names: &[&str], mut set: impl FnMut(usize, Value<'a>) -> Option<()>) -> Option<()> {
    let mut s = Scanner { text, at: 0 };
    let mut seen = 0u32;
    // Producers write the fields in one order, so the field after the last one is tried first.
    let mut next = 0;
    s.eat(b'{')?;
    s.skip_ws();
    if s.peek()? != b'}' {
        loop {
            s.eat(b'"')?;
            let key = s.string()?;
            s.eat(b':')?;
            let value = s.value()?;
            let known = if names.get(next).is_some_and(|n| short_eq(n.as_bytes(), key.as_bytes())) {
                Some(next)
            } else {
                names.iter().position(|&n| n == key)
            };
            if let Some(i) = known {
                next = i + 1;
                if seen & (1 << i) != 0 {
                    return None;
                }
                seen |= 1 << i;
                set(i, value)?;
            }
            s.skip_ws();
            match s.peek()? {
                b',' => s.at += 1,
                b'}' => break,
                _ => return None,
            }
        }
    }
    s.at += 1;
    s.skip_ws();
    (s.at == text.len() && seen == (1 << names.len()) - 1).then_some(())
}

fn id(value: Value<'_>) -> Option<&str> {
    match value {
        Value::Str(s) if !s.is_empty() && s.len() <= MAX_FIELD_BYTES => Some(s),
        _ => None,
    }
}

fn time(value: Value<'_>) -> Option<i64> {
    let ms = match value {
        Value::Str(s) => parse_rfc3339_millis(s).ok()?,
        // Only plain non-negative integers: fractions, exponents and signs go the slow way.
        Value::Num(n) if n.bytes().all(|b| b.is_ascii_digit()) && n.len() <= 18 => n.parse().ok()?,
        Value::Num(_) => return None,
    };
    (MIN_EVENT_TIME_MS..MAX_EVENT_TIME_MS).contains(&ms).then_some(ms)
}

/// A non-negative cost. The number's text is already valid JSON, so Rust's correctly rounded
/// parse gives the value serde_json gives (it parses integers exactly and rounds them the same
/// way); a sign, even on `-0`, is left to the slow path.
fn cost(value: Value<'_>) -> Option<f64> {
    match value {
        Value::Num(n) if !n.starts_with('-') => n.parse::<f64>().ok().filter(|c| c.is_finite()),
        _ => None,
    }
}

/// The event in `text`, if it is a plain valid one; `None` means "ask the full decoder".
pub fn decode(source: Source, text: &str) -> Option<Event<'_>> {
    match source {
        Source::Impressions => {
            let mut strs = [""; 6];
            let (mut ts, mut c) = (0, 0.0);
            let mut set = |i, v| {
                match i {
                    0..=5 => strs[i] = id(v)?,
                    6 => ts = time(v)?,
                    _ => c = cost(v)?,
                }
                Some(())
            };
            // If the layout path gives up half-way, the general walk sets every field again
            // before it succeeds: no value of the attempt survives.
            in_layout(text, &IMPRESSION_LAYOUT, &mut set).or_else(|| fields(text, &IMPRESSION_FIELDS, &mut set))?;
            let [impression_id, user_id, campaign_id, ad_id, device_type, browser] = strs.map(Cow::Borrowed);
            Some(Event::Impression(Impression {
                impression_id,
                user_id,
                campaign_id,
                ad_id,
                device_type,
                browser,
                event_time_ms: ts,
                cost: c,
            }))
        }
        Source::Clicks => {
            let mut strs = [""; 3];
            let mut ts = 0;
            let mut set = |i, v| {
                match i {
                    0..=2 => strs[i] = id(v)?,
                    _ => ts = time(v)?,
                }
                Some(())
            };
            // As for impressions: the general walk sets every field again if it succeeds.
            in_layout(text, &CLICK_LAYOUT, &mut set).or_else(|| fields(text, &CLICK_FIELDS, &mut set))?;
            let [click_id, impression_id, user_id] = strs.map(Cow::Borrowed);
            Some(Event::Click(Click { click_id, impression_id, user_id, event_time_ms: ts }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Values a field may take: the plain ones, and every kind the fast path must leave alone.
    const VALUES: &[&str] = &[
        r#""x1""#,
        r#""é ü""#,
        r#""x\u0031""#,
        r#""a\"b""#,
        r#""""#,
        "null",
        "true",
        "[]",
        "{}",
        r#"{"a":[1]}"#,
        "0",
        "-0",
        "0.5",
        "1e3",
        "1E+2",
        "2.5e-3",
        "01",
        "1.",
        "-1",
        "-0.0",
        "1e999",
        "18446744073709551616",
        "1795946400000",
        "1795946400000.0",
        "179594640000000000000",
        r#""2026-11-29T10:00:00.123Z""#,
        r#""2026-11-29T12:00:00+02:00""#,
        r#""2026-13-29T10:00:00Z""#,
        r#""1999-12-31T23:59:59Z""#,
        "946684799999",
    ];

    fn message(fields: &[(String, String)], ws: &str) -> String {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("{ws}\"{k}\"{ws}:{ws}{v}{ws}")).collect();
        format!("{ws}{{{}}}{ws}", body.join(","))
    }

    fn base(source: Source) -> Vec<(String, String)> {
        let fields: &[(&str, &str)] = match source {
            Source::Impressions => &[
                ("impression_id", r#""i1""#),
                ("user_id", r#""u1""#),
                ("campaign_id", r#""c1""#),
                ("ad_id", r#""a1""#),
                ("device_type", r#""mobile""#),
                ("browser", r#""chrome""#),
                ("event_timestamp", r#""2026-11-29T10:00:00.123Z""#),
                ("cost", "0.007499"),
            ],
            Source::Clicks => &[
                ("click_id", r#""k1""#),
                ("impression_id", r#""i1""#),
                ("user_id", r#""u1""#),
                ("event_timestamp", "1795946400999"),
            ],
        };
        fields.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())).collect()
    }

    /// A mutation of a valid message: a field's value replaced, a field dropped, duplicated or
    /// renamed, an unknown field added, or the fields reordered.
    fn mutated() -> impl Strategy<Value = (Source, String)> {
        let source = prop_oneof![Just(Source::Impressions), Just(Source::Clicks)];
        let edits = prop::collection::vec((0usize..5, 0usize..8, 0usize..VALUES.len()), 0..4);
        let ws = prop_oneof![Just(""), Just(" "), Just("\n\t")];
        (source, edits, ws, any::<u64>()).prop_map(|(source, edits, ws, shuffle)| {
            let mut fields = base(source);
            for (op, field, value) in edits {
                let i = field % fields.len();
                match op {
                    0 => fields[i].1 = VALUES[value].to_owned(),
                    1 => drop(fields.remove(i)),
                    2 => fields.push((fields[i].0.clone(), VALUES[value].to_owned())),
                    3 => fields.insert(i, ("extra".to_owned(), VALUES[value].to_owned())),
                    _ => fields[i].0.push('x'),
                }
                if fields.is_empty() {
                    break;
                }
            }
            let n = fields.len().max(1);
            fields.rotate_left(shuffle as usize % n);
            (source, message(&fields, ws))
        })
    }

    #[test]
    fn takes_the_plain_messages_producers_write() {
        for source in [Source::Impressions, Source::Clicks] {
            for ws in ["", " ", "\r\n "] {
                let text = message(&base(source), ws);
                let fast = decode(source, &text).unwrap_or_else(|| panic!("fast path refused {text}"));
                assert_eq!(Ok(fast), super::super::decode_json(source, &text));
            }
        }
    }

    /// The values a walk hands over, by field index, as text (`true` for a string).
    fn walk(source: Source, text: &str, layout: bool) -> Option<Vec<(usize, bool, String)>> {
        let mut got = Vec::new();
        let set = |i, v: Value<'_>| {
            got.push(match v {
                Value::Str(s) => (i, true, s.to_owned()),
                Value::Num(n) => (i, false, n.to_owned()),
            });
            Some(())
        };
        let done = match (source, layout) {
            (Source::Impressions, true) => in_layout(text, &IMPRESSION_LAYOUT, set),
            (Source::Impressions, false) => fields(text, &IMPRESSION_FIELDS, set),
            (Source::Clicks, true) => in_layout(text, &CLICK_LAYOUT, set),
            (Source::Clicks, false) => fields(text, &CLICK_FIELDS, set),
        };
        done.map(|()| got)
    }

    #[test]
    fn the_layout_path_takes_compact_messages_in_field_order_only() {
        for source in [Source::Impressions, Source::Clicks] {
            let compact = message(&base(source), "");
            assert!(walk(source, &compact, true).is_some(), "{compact}");
            assert_eq!(walk(source, &compact, true), walk(source, &compact, false));
            let spaced = message(&base(source), " ");
            assert_eq!(walk(source, &spaced, true), None, "{spaced}");
            assert!(walk(source, &spaced, false).is_some());
            let mut reordered = base(source);
            reordered.swap(0, 1);
            assert_eq!(walk(source, &message(&reordered, ""), true), None);
            assert_eq!(walk(source, &format!("{compact} "), true), None);
            assert_eq!(walk(source, &compact[..compact.len() - 1], true), None);
        }
    }

    /// Compact messages in field order with any of `VALUES` in any field, or cut short.
    fn compact() -> impl Strategy<Value = (Source, String)> {
        let source = prop_oneof![Just(Source::Impressions), Just(Source::Clicks)];
        let edits = prop::collection::vec((0usize..8, 0usize..VALUES.len()), 0..4);
        (source, edits, any::<u16>()).prop_map(|(source, edits, cut)| {
            let mut fields = base(source);
            for (field, value) in edits {
                let i = field % fields.len();
                fields[i].1 = VALUES[value].to_owned();
            }
            let mut text = message(&fields, "");
            if cut % 4 == 0 {
                let mut at = usize::from(cut) % text.len();
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                text.truncate(at);
            }
            (source, text)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        /// Wherever the layout path answers, the general walk answers the same, and so does
        /// the full decoder (through `decode`).
        #[test]
        fn the_layout_path_agrees_with_the_general_walk((source, text) in prop_oneof![compact(), mutated()]) {
            if let Some(values) = walk(source, &text, true) {
                prop_assert_eq!(Some(values), walk(source, &text, false), "{}", text);
            }
            if let Some(event) = decode(source, &text) {
                prop_assert_eq!(Ok(event), super::super::decode_json(source, &text), "{}", text);
            }
        }

        #[test]
        fn finds_the_first_special_byte(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
            let expected = bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            prop_assert_eq!(special_byte(&bytes), expected);
        }

        /// Wherever the fast path answers, it answers what the full decoder does.
        #[test]
        fn agrees_with_the_full_decoder((source, text) in mutated()) {
            if let Some(event) = decode(source, &text) {
                prop_assert_eq!(Ok(event), super::super::decode_json(source, &text), "{}", text);
            }
        }
    }
}
