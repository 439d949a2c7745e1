//! An aggregation compiled into the host instead of loaded as a component: the same
//! [`Aggregation`] code the plugins run, driven through the same [`Aggregator`] interface. Used by
//! the pipeline's property tests, and to measure what the WebAssembly boundary costs.

use std::path::PathBuf;

use adstream_abi::batch::Kind;
use adstream_abi::sdk::{Aggregation, Windows};

use super::{Aggregator, OutputRecord, PluginError, PluginMeta, Window};

/// Aggregations compiled into a binary, by name: what `--plugin native:NAME` loads. The shipped
/// host has none; the benchmark build `adstream-native` (in `bench/`) registers ctr and
/// engagement, to measure what the WebAssembly boundary costs against the same code run natively.
pub type Natives = &'static [(&'static str, fn() -> Box<dyn Aggregator>)];

/// The prefix of a `--plugin` that names a compiled-in aggregation.
const NATIVE_PREFIX: &str = "native:";

/// The aggregation a `--plugin native:NAME` names, or `None` for a path to a `.wasm`.
pub fn native_name(plugin: &std::path::Path) -> Option<&str> {
    plugin.to_str()?.strip_prefix(NATIVE_PREFIX)
}

pub struct NativeAggregator<A> {
    meta: PluginMeta,
    windows: Windows<A>,
}

impl<A: Aggregation> NativeAggregator<A> {
    /// `name` and `topic` play the parts of the plugin's `describe()`.
    pub fn new(name: &str, topic: &str) -> Self {
        let meta = PluginMeta {
            name: name.to_owned(),
            version: "native".to_owned(),
            description: format!("{name}, compiled into the host"),
            wants_impressions: A::WANTS.contains(&Kind::Impression),
            wants_clicks: A::WANTS.contains(&Kind::Click),
            output_topics: vec![topic.to_owned()],
            state_version: 0,
            hash: String::new(),
            path: PathBuf::new(),
        };
        NativeAggregator { meta, windows: Windows::default() }.identified()
    }

    /// No file to hash: what tells two versions apart (a swap to the version running is a
    /// no-op) is the name, version and state version.
    fn identified(mut self) -> Self {
        let m = &self.meta;
        let id = format!("native/{}/{}/{}", m.name, m.version, m.state_version);
        self.meta.hash = crate::bytes::hex(&<sha2::Sha256 as sha2::Digest>::digest(id.as_bytes()));
        self
    }

    /// The same aggregation describing itself with another version and state version (tests of
    /// live swaps).
    pub fn with_version(mut self, version: &str, state_version: u32) -> Self {
        self.meta.version = version.to_owned();
        self.meta.state_version = state_version;
        self.identified()
    }
}

impl<A: Aggregation + 'static> Aggregator for NativeAggregator<A> {
    fn meta(&self) -> &PluginMeta {
        &self.meta
    }

    fn process(&mut self, batch: &[u8]) -> Result<(), PluginError> {
        self.windows.process(batch).map_err(|detail| PluginError::BadOutput {
            plugin: self.meta.name.clone(),
            call: "process",
            detail,
        })
    }

    fn close_window(&mut self, window: Window) -> Result<Vec<OutputRecord>, PluginError> {
        let topic = &self.meta.output_topics[0];
        Ok(self
            .windows
            .close(window.start_ms, window.end_ms)
            .into_iter()
            .map(|o| OutputRecord {
                topic: if o.topic.is_empty() { topic.clone() } else { o.topic },
                key: o.key,
                value: o.value,
            })
            .collect())
    }

    fn reset(&mut self) -> anyhow::Result<()> {
        self.windows = Windows::default();
        Ok(())
    }

    fn export_window(&mut self, window: Window) -> Result<Option<Vec<u8>>, PluginError> {
        Ok(self.windows.export(window.start_ms))
    }

    fn merge_window(&mut self, window: Window, state: &[u8]) -> Result<(), PluginError> {
        self.windows.merge(window.start_ms, state).map_err(|detail| PluginError::BadOutput {
            plugin: self.meta.name.clone(),
            call: "merge-window",
            detail,
        })
    }

    fn fresh(&self) -> anyhow::Result<Box<dyn Aggregator>> {
        Ok(Box::new(NativeAggregator::<A> { meta: self.meta.clone(), windows: Windows::default() }))
    }

    fn restore_window(&mut self, window: Window, state: &[u8]) -> Result<(), PluginError> {
        self.windows.restore(window.start_ms, state).map_err(|detail| PluginError::BadOutput {
            plugin: self.meta.name.clone(),
            call: "restore-window",
            detail,
        })
    }
}
