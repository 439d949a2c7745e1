//! What the engine publishes for a window: the plugins' records, checked, and in place of a
//! result it cannot vouch for, a record on the plugin-errors topic saying why.

use adstream_abi::json::Obj;

use super::Sink;
use crate::plugin::{OutputRecord, PluginMeta, Window};

/// Publishes on `topic` (the plugin-errors topic) a record saying what of plugin `meta`'s result
/// for `window` is withheld: the plugin, its version, the window, and the `fields` of the case.
pub fn plugin_error(
    topic: &str,
    meta: &PluginMeta,
    window: Window,
    fields: impl for<'o> FnOnce(Obj<'o>) -> Obj<'o>,
    sink: &mut dyn Sink,
) -> anyhow::Result<()> {
    let mut value = String::new();
    let head = Obj::new(&mut value)
        .str("plugin", &meta.name)
        .str("plugin_version", &meta.version)
        .time("window_start", window.start_ms)
        .time("window_end", window.end_ms);
    fields(head).end();
    let headers: [(&str, &[u8]); 2] = [("plugin", meta.name.as_bytes()), ("plugin-version", meta.version.as_bytes())];
    sink.send(topic, Some(meta.name.as_bytes()), value.as_bytes(), &headers)
}

/// A record a plugin returned, if the host can publish it: a non-empty key, a value that is one
/// JSON object, and a topic the plugin declared (the host creates and sizes only those).
pub fn check_record(r: OutputRecord, meta: &PluginMeta) -> Result<OutputRecord, String> {
    let plugin = &meta.name;
    if !meta.output_topics.contains(&r.topic) {
        return Err(format!(
            "plugin {plugin} returned a record for topic {:?}, which it did not declare (it declares {:?})",
            r.topic, meta.output_topics
        ));
    }
    let is_object =
        r.value.trim_start().starts_with('{') && serde_json::from_str::<serde::de::IgnoredAny>(&r.value).is_ok();
    if r.key.is_empty() || !is_object {
        let shown: String = r.value.chars().take(80).collect();
        return Err(format!(
            "plugin {plugin} returned a record the host cannot publish (key {:?}, value {shown:?}): values must be JSON objects",
            r.key
        ));
    }
    Ok(r)
}

/// The records one plugin published for one window, kept for the console.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WindowResults {
    pub plugin: String,
    pub version: String,
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    /// The records, in the plugin's order, at most [`WindowResults::MAX_RECORDS`].
    pub records: Vec<(String, serde_json::Value)>,
    /// How many records the window had in all.
    pub total: usize,
}

impl WindowResults {
    /// Records kept per window: enough for the console's charts and tables, and a bound on the
    /// memory a plugin with many keys can take.
    pub const MAX_RECORDS: usize = 500;

    pub(super) fn new(meta: &PluginMeta, window: Window, records: &[OutputRecord]) -> Self {
        WindowResults {
            plugin: meta.name.clone(),
            version: meta.version.clone(),
            window_start_ms: window.start_ms,
            window_end_ms: window.end_ms,
            records: records
                .iter()
                .take(Self::MAX_RECORDS)
                .filter_map(|r| Some((r.key.clone(), serde_json::from_str(&r.value).ok()?)))
                .collect(),
            total: records.len(),
        }
    }
}
