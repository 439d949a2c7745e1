//! Writes output records as JSON lines, one object per record:
//! `{"topic":..,"key":..,"value":<the JSON value, or the raw text>,"headers":{..}}`.
//! Used by `replay`.

use std::io::Write;

use anyhow::Context;
use serde_json::value::RawValue;

use crate::engine::Sink;

pub struct JsonlSink<W: Write> {
    out: W,
}

impl<W: Write> JsonlSink<W> {
    pub fn new(out: W) -> Self {
        JsonlSink { out }
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

#[derive(serde::Serialize)]
struct Line<'a> {
    topic: &'a str,
    key: Option<std::borrow::Cow<'a, str>>,
    /// The value itself when it is JSON (results), the text otherwise (rejected input).
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<std::borrow::Cow<'a, str>>,
    headers: std::collections::BTreeMap<&'a str, std::borrow::Cow<'a, str>>,
}

impl<W: Write> Sink for JsonlSink<W> {
    fn send(&mut self, topic: &str, key: Option<&[u8]>, value: &[u8], headers: &[(&str, &[u8])]) -> anyhow::Result<()> {
        let json = std::str::from_utf8(value).ok().and_then(|s| serde_json::from_str::<&RawValue>(s).ok());
        let line = Line {
            topic,
            key: key.map(String::from_utf8_lossy),
            value: json,
            text: json.is_none().then(|| String::from_utf8_lossy(value)),
            headers: headers.iter().map(|(k, v)| (*k, String::from_utf8_lossy(v))).collect(),
        };
        serde_json::to_writer(&mut self.out, &line).context("writing output")?;
        self.out.write_all(b"\n").context("writing output")
    }
}
