//! The names of the output topics, in one place: the host's own (late, dead letters, plugin
//! errors) and each plugin's, with the output prefix and the per-plugin overrides applied; and
//! how large a record is as the broker counts it.
//!
//! `--topic-prefix` names the input and the output topics alike; `--output-topic-prefix`
//! renames the outputs alone (a second host on the production input, writing elsewhere); and
//! `--plugin-topic ctr=ctr-v2-results` sends one plugin's records to a topic named as is.

use crate::plugin::PluginMeta;

/// Output topic names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputTopics {
    pub late: String,
    pub dead_letter: String,
    /// Where a record goes in place of a plugin's result that is withheld.
    pub plugin_errors: String,
    /// Each published window's completeness record (see [`crate::engine::complete`]).
    pub completeness: String,
    /// Prepended to every topic a plugin declares.
    pub prefix: String,
    /// Plugin outputs sent to a topic given by name (taken as is, no prefix added).
    pub overrides: Vec<PluginTopic>,
}

impl OutputTopics {
    /// The default names, under `prefix` (for `replay` and tests).
    pub fn with_prefix(prefix: &str) -> Self {
        OutputTopics {
            late: format!("{prefix}ad-events-late"),
            dead_letter: format!("{prefix}ad-events-dlq"),
            plugin_errors: format!("{prefix}adstream-plugin-errors"),
            completeness: format!("{prefix}adstream-window-completeness"),
            prefix: prefix.to_owned(),
            overrides: Vec::new(),
        }
    }

    /// The topic the records plugin `meta` returns for its declared topic `declared` go to.
    pub fn plugin_topic(&self, meta: &PluginMeta, declared: &str) -> String {
        let first = meta.output_topics.first().map_or("", String::as_str);
        let named =
            self.overrides.iter().find(|o| o.plugin == meta.name && o.declared.as_deref().unwrap_or(first) == declared);
        match named {
            Some(o) => o.topic.clone(),
            None => format!("{}{declared}", self.prefix),
        }
    }

    /// Every topic plugin `meta` writes to.
    pub fn of_plugin(&self, meta: &PluginMeta) -> Vec<String> {
        meta.output_topics.iter().map(|t| self.plugin_topic(meta, t)).collect()
    }

    /// The host's own output topics.
    pub fn host_topics(&self) -> [String; 4] {
        [self.late.clone(), self.dead_letter.clone(), self.plugin_errors.clone(), self.completeness.clone()]
    }

    /// Every `--plugin-topic` must name a loaded plugin and, for a plugin with several output
    /// topics, which one.
    pub fn check_overrides<'a>(&self, plugins: impl Iterator<Item = &'a PluginMeta> + Clone) -> anyhow::Result<()> {
        for o in &self.overrides {
            let Some(meta) = plugins.clone().find(|m| m.name == o.plugin) else {
                let loaded: Vec<&str> = plugins.clone().map(|m| m.name.as_str()).collect();
                anyhow::bail!(
                    "--plugin-topic {o}: no plugin named {:?} is loaded (loaded: {})",
                    o.plugin,
                    loaded.join(", ")
                );
            };
            match &o.declared {
                Some(d) if !meta.output_topics.contains(d) => anyhow::bail!(
                    "--plugin-topic {o}: plugin {} declares no output topic {d:?} (it declares {:?})",
                    meta.name,
                    meta.output_topics
                ),
                None if meta.output_topics.len() > 1 => anyhow::bail!(
                    "--plugin-topic {o}: plugin {} declares several output topics ({:?}): name the one to rename, as {}:{}=TOPIC",
                    meta.name,
                    meta.output_topics,
                    meta.name,
                    meta.output_topics[0]
                ),
                _ => {}
            }
        }
        Ok(())
    }
}

/// `--plugin-topic PLUGIN=TOPIC` or `PLUGIN:DECLARED=TOPIC`: the records plugin `PLUGIN` returns
/// for its output topic `DECLARED` (its only one, in the short form) go to `TOPIC`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginTopic {
    pub plugin: String,
    pub declared: Option<String>,
    pub topic: String,
}

impl PluginTopic {
    pub fn parse(s: &str) -> Result<Self, String> {
        let usage = || format!("{s:?}: expected PLUGIN=TOPIC or PLUGIN:DECLARED-TOPIC=TOPIC (e.g. ctr=ctr-v2-results)");
        let (left, topic) = s.split_once('=').ok_or_else(usage)?;
        let (plugin, declared) = match left.split_once(':') {
            Some((p, d)) => (p, Some(d.trim().to_owned())),
            None => (left, None),
        };
        let (plugin, topic) = (plugin.trim(), topic.trim());
        if plugin.is_empty() || topic.is_empty() || declared.as_deref() == Some("") {
            return Err(usage());
        }
        Ok(PluginTopic { plugin: plugin.to_owned(), declared, topic: topic.to_owned() })
    }
}

impl std::fmt::Display for PluginTopic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.declared {
            Some(d) => write!(f, "{}:{d}={}", self.plugin, self.topic),
            None => write!(f, "{}={}", self.plugin, self.topic),
        }
    }
}

impl<'de> serde::Deserialize<'de> for PluginTopic {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// At most how many bytes a record takes in a record batch of its own, as the broker compares
/// with a topic's `max.message.bytes`: the batch header (61 bytes), the record's framing with
/// every varint at its widest, the key, the value, the headers, and what compression may add
/// to data that does not compress (lz4's worst case is under 0.4% plus a frame header).
pub fn record_bytes(key: Option<&[u8]>, value: &[u8], headers: &[(&str, &[u8])]) -> usize {
    const BATCH_HEADER: usize = 61;
    const RECORD_FRAMING: usize = 5 + 1 + 10 + 5 + 5 + 5 + 5;
    const HEADER_FRAMING: usize = 5 + 5;
    let raw = BATCH_HEADER
        + RECORD_FRAMING
        + key.map_or(0, <[u8]>::len)
        + value.len()
        + headers.iter().map(|(k, v)| HEADER_FRAMING + k.len() + v.len()).sum::<usize>();
    raw + raw / 250 + 64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, outputs: &[&str]) -> PluginMeta {
        PluginMeta {
            name: name.into(),
            version: "1".into(),
            description: String::new(),
            wants_impressions: true,
            wants_clicks: true,
            output_topics: outputs.iter().map(|s| s.to_string()).collect(),
            state_version: 1,
            hash: String::new(),
            path: std::path::PathBuf::new(),
        }
    }

    #[test]
    fn the_output_prefix_and_overrides_name_the_plugin_topics() {
        let mut t = OutputTopics::with_prefix("staging.");
        let ctr = meta("ctr", &["campaign-ctr-results"]);
        assert_eq!(t.plugin_topic(&ctr, "campaign-ctr-results"), "staging.campaign-ctr-results");
        t.overrides.push(PluginTopic::parse("ctr=ctr-v2").unwrap());
        assert_eq!(t.of_plugin(&ctr), ["ctr-v2"]);
        let two = meta("two", &["a", "b"]);
        t.overrides.push(PluginTopic::parse("two:b=bee").unwrap());
        assert_eq!(t.of_plugin(&two), ["staging.a", "bee"]);
        assert!(t.check_overrides([&ctr, &two].into_iter()).is_ok());
        let ambiguous = OutputTopics { overrides: vec![PluginTopic::parse("two=x").unwrap()], ..t.clone() };
        assert!(ambiguous.check_overrides([&two].into_iter()).unwrap_err().to_string().contains("two:a=TOPIC"));
        let unknown = OutputTopics { overrides: vec![PluginTopic::parse("nope=x").unwrap()], ..t };
        assert!(unknown.check_overrides([&ctr].into_iter()).unwrap_err().to_string().contains("loaded: ctr"));
        for bad in ["ctr", "=x", "ctr=", "ctr:=x"] {
            assert!(PluginTopic::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_record_is_never_smaller_than_its_parts() {
        let value = vec![7u8; 1 << 20];
        let n = record_bytes(Some(b"key"), &value, &[("reason", b"too-long")]);
        assert!(n > (1 << 20) + 3 + 6 + 8 + 61, "{n}");
        assert!(n < (1 << 20) + 8 * 1024, "not absurdly pessimistic: {n}");
    }
}
