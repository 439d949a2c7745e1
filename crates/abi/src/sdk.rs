//! The per-window accumulator store that every plugin needs: a plugin implements
//! [`Aggregation`] for its accumulator and delegates its WIT exports to [`Windows`].

use crate::batch::{BatchReader, Event, Kind};
use crate::bytes::short_eq;
use crate::state::{StateError, StateReader, StateWriter};

/// One output record (the WIT `output-record`, before it crosses the boundary).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// Empty means the plugin's default output topic.
    pub topic: String,
    pub key: String,
    pub value: String,
}

/// An aggregation over one window: what a plugin author writes.
/// The value under `key` in a short list of (key, value) pairs, added with `new()` if it is not
/// there yet. For accumulators with a handful of keys (device types), where a vector scanned in
/// order beats hashing the key on every event.
pub fn keyed<'a, T>(entries: &'a mut Vec<(Box<str>, T)>, key: &str, new: impl FnOnce() -> T) -> &'a mut T {
    let i = match entries.iter().position(|(k, _)| short_eq(k.as_bytes(), key.as_bytes())) {
        Some(i) => i,
        None => {
            entries.push((key.into(), new()));
            entries.len() - 1
        }
    };
    &mut entries[i].1
}

pub trait Aggregation: Default {
    /// The event kinds the aggregation folds; others are skipped before [`Aggregation::add`].
    const WANTS: &'static [Kind];

    /// Folds one event into this window's accumulator.
    fn add(&mut self, event: &Event<'_>);

    /// Turns the finished accumulator of window `[start_ms, end_ms)` into output records.
    fn emit(self, start_ms: i64, end_ms: i64, out: &mut Vec<Output>);

    /// Writes the accumulator in the plugin's state format.
    fn encode(&self, out: &mut StateWriter);

    /// Reads an accumulator written by [`Aggregation::encode`].
    fn decode(input: &mut StateReader<'_>) -> Result<Self, StateError>;

    /// Merges another accumulator of the same window into this one.
    fn merge(&mut self, other: Self);
}

/// The open windows of one plugin instance and their accumulators.
///
/// Only a handful of windows are open at once (the watermark closes them in order), so a small
/// vector scanned from the newest end beats a hash map on the per-event path.
#[derive(Debug)]
pub struct Windows<A> {
    /// (window start, accumulator), one entry per window that has received an event.
    open: Vec<(i64, A)>,
}

impl<A> Default for Windows<A> {
    fn default() -> Self {
        Windows { open: Vec::new() }
    }
}

impl<A: Aggregation> Windows<A> {
    /// Index of the window's entry, created empty if the window has none yet.
    fn index(&mut self, start: i64) -> usize {
        match self.open.iter().rposition(|(s, _)| *s == start) {
            Some(i) => i,
            None => {
                self.open.push((start, A::default()));
                self.open.len() - 1
            }
        }
    }

    fn acc(&mut self, start: i64) -> &mut A {
        let i = self.index(start);
        &mut self.open[i].1
    }

    /// The WIT `process` export.
    pub fn process(&mut self, batch: &[u8]) -> Result<(), String> {
        let reader = BatchReader::new(batch).map_err(|e| e.to_string())?;
        let mut current: Option<(i64, usize)> = None;
        for event in reader {
            let event = event.map_err(|e| e.to_string())?;
            if !A::WANTS.contains(&event.kind) {
                continue;
            }
            let index = match current {
                Some((start, i)) if start == event.window_start_ms => i,
                _ => {
                    let i = self.index(event.window_start_ms);
                    current = Some((event.window_start_ms, i));
                    i
                }
            };
            self.open[index].1.add(&event);
        }
        Ok(())
    }

    /// The WIT `close-window` export.
    pub fn close(&mut self, start_ms: i64, end_ms: i64) -> Vec<Output> {
        let mut out = Vec::new();
        if let Some(i) = self.open.iter().position(|(s, _)| *s == start_ms) {
            let (_, acc) = self.open.swap_remove(i);
            acc.emit(start_ms, end_ms, &mut out);
        }
        out
    }

    /// The WIT `open-windows` export.
    pub fn starts(&self) -> Vec<i64> {
        self.open.iter().map(|(s, _)| *s).collect()
    }

    /// The WIT `export-window` export.
    pub fn export(&self, start_ms: i64) -> Option<Vec<u8>> {
        let (_, acc) = self.open.iter().find(|(s, _)| *s == start_ms)?;
        let mut w = StateWriter::default();
        acc.encode(&mut w);
        Some(w.0)
    }

    fn decode(state: &[u8]) -> Result<A, String> {
        let mut r = StateReader(state);
        let acc = A::decode(&mut r).map_err(|e| e.to_string())?;
        r.finish().map_err(|e| e.to_string())?;
        Ok(acc)
    }

    /// The WIT `restore-window` export.
    pub fn restore(&mut self, start_ms: i64, state: &[u8]) -> Result<(), String> {
        let acc = Self::decode(state)?;
        *self.acc(start_ms) = acc;
        Ok(())
    }

    /// The WIT `merge-window` export.
    pub fn merge(&mut self, start_ms: i64, state: &[u8]) -> Result<(), String> {
        let acc = Self::decode(state)?;
        self.acc(start_ms).merge(acc);
        Ok(())
    }
}

/// Implements the `aggregation` world for an [`Aggregation`]: generates the guest bindings from
/// the WIT in `wit/` (the path is relative to the plugin crate's manifest), keeps one
/// [`Windows`] store per instance, and exports every function by delegating to it.
///
/// ```ignore
/// adstream_abi::export_aggregation!(Ctr {
///     wit: "../../wit",
///     name: "ctr",
///     description: "impressions, attributed clicks and CTR per campaign and window",
///     outputs: ["campaign-ctr-results"],
///     state_version: 1,
/// });
/// ```
///
/// The plugin crate must depend on `wit-bindgen`. Only expands on `wasm32` targets, so the
/// aggregation itself stays testable (and benchmarkable) natively.
#[macro_export]
macro_rules! export_aggregation {
    ($acc:ident { wit: $wit:literal, name: $name:literal, description: $desc:literal,
        outputs: [$($topic:literal),* $(,)?], state_version: $state:literal $(,)? }) => {
        #[cfg(target_arch = "wasm32")]
        mod component {
            wit_bindgen::generate!({ world: "aggregation", path: $wit });

            use $crate::batch::Kind;
            use $crate::sdk::Windows;

            std::thread_local! {
                static WINDOWS: std::cell::RefCell<Windows<super::$acc>> = Default::default();
            }

            struct Plugin;

            impl Guest for Plugin {
                fn describe() -> PluginInfo {
                    let wants = <super::$acc as $crate::sdk::Aggregation>::WANTS.iter().map(|k| match k {
                        Kind::Impression => EventKind::Impression,
                        Kind::Click => EventKind::Click,
                    });
                    PluginInfo {
                        name: $name.into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        description: $desc.into(),
                        wants: wants.collect(),
                        output_topics: vec![$($topic.into()),*],
                        state_version: $state,
                    }
                }

                fn process(batch: Vec<u8>) -> Result<(), String> {
                    WINDOWS.with_borrow_mut(|w| w.process(&batch))
                }

                fn close_window(w: Window) -> Result<Vec<OutputRecord>, String> {
                    let out = WINDOWS.with_borrow_mut(|ws| ws.close(w.start_ms, w.end_ms));
                    Ok(out.into_iter().map(|o| OutputRecord { topic: o.topic, key: o.key, value: o.value }).collect())
                }

                fn open_windows() -> Vec<i64> {
                    WINDOWS.with_borrow(|w| w.starts())
                }

                fn export_window(w: Window) -> Option<Vec<u8>> {
                    WINDOWS.with_borrow(|ws| ws.export(w.start_ms))
                }

                fn restore_window(w: Window, state: Vec<u8>) -> Result<(), String> {
                    WINDOWS.with_borrow_mut(|ws| ws.restore(w.start_ms, &state))
                }

                fn merge_window(w: Window, state: Vec<u8>) -> Result<(), String> {
                    WINDOWS.with_borrow_mut(|ws| ws.merge(w.start_ms, &state))
                }
            }

            export!(Plugin);
        }
    };
}
