//! Detectors in the engine: each published window's results, handed to the detectors that read
//! them, and what the detectors remember, kept exactly-once.
//!
//! The guarantee, and how it holds:
//!
//! - A detector runs where the merge stage runs, right after a window's results are published,
//!   so it sees the merged, global results, once per window, in window order.
//! - After each window it observes, its state is saved (`save-state`) and kept here with that
//!   window's start. At a checkpoint, the state of every detector that observed a window since
//!   the last one is written to the state topic (compacted, keyed by detector name), in the
//!   same transaction as the windows' results, the detectors' records and the offsets of the
//!   partials topic. So the committed state is always that of the last committed window.
//! - Whoever runs the merge stage next (after a crash, a restart, a rebalance or an aborted
//!   transaction) reads the state topic up to its end with `read_committed` and loads each
//!   detector's state before the first window is published; the windows after it are
//!   published again, and observed again, exactly as in an uninterrupted run. A window at or
//!   before the stored one is not observed twice.
//! - A failed `observe` (a trap, a deadline, an error, a record the host cannot publish) skips
//!   the window: the detector gets back the state it saved after the window before, and a
//!   record on the plugin-errors topic says what was skipped. A detector is a function of the
//!   results it reads, so a restart decides the same way.

use std::collections::HashMap;

use crate::plugin::world::adstream::aggregation::detection::Published;
use crate::plugin::{Detector, OutputRecord, PluginMeta, Window};

use super::publish::check_record;

/// Magic of a record of the state topic, version 1:
/// `"ADS1" | observed-through: i64 LE | state-version: u32 LE | state bytes`.
const STATE_MAGIC: &[u8; 4] = b"ADS1";

/// A detector and what it last saved.
pub struct DetectorSlot {
    pub detector: Detector,
    /// The start of the last window it observed (`i64::MIN`: none yet).
    observed_through: i64,
    /// Its state after that window: what a failed call rolls back to.
    saved: Option<Vec<u8>>,
    /// `saved` changed since the state topic was last written.
    unstored: bool,
    pub errors: u64,
    pub last_error: Option<String>,
}

/// A detector's state as the state topic holds it.
#[derive(Debug, PartialEq)]
pub struct Stored {
    pub observed_through: i64,
    pub state_version: u32,
    pub state: Vec<u8>,
}

impl Stored {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.state.len());
        out.extend_from_slice(STATE_MAGIC);
        out.extend_from_slice(&self.observed_through.to_le_bytes());
        out.extend_from_slice(&self.state_version.to_le_bytes());
        out.extend_from_slice(&self.state);
        out
    }

    pub fn decode(value: &[u8]) -> Option<Self> {
        let rest = value.strip_prefix(STATE_MAGIC)?;
        let observed_through = i64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
        let state_version = u32::from_le_bytes(rest.get(8..12)?.try_into().ok()?);
        Some(Stored { observed_through, state_version, state: rest[12..].to_vec() })
    }
}

impl DetectorSlot {
    pub fn new(detector: Detector) -> Self {
        DetectorSlot { detector, observed_through: i64::MIN, saved: None, unstored: false, errors: 0, last_error: None }
    }

    pub fn meta(&self) -> &PluginMeta {
        self.detector.meta()
    }

    /// Whether window `start` was observed already (before a restart, by the state loaded).
    pub fn observed(&self, start: i64) -> bool {
        start <= self.observed_through
    }

    /// The results of `window` it reads, from `published` (each plugin's records by name), in
    /// the order of its inputs.
    pub fn inputs_of(&self, published: &[(String, Vec<OutputRecord>)]) -> Vec<Published> {
        let mut results = Vec::new();
        for name in self.detector.inputs() {
            for (plugin, records) in published.iter().filter(|(p, _)| p == name) {
                results.extend(records.iter().map(|r| Published {
                    plugin: plugin.clone(),
                    key: r.key.clone(),
                    value: r.value.clone(),
                }));
            }
        }
        results
    }

    /// Observes `window`: its records, checked, and its state saved; or why there are none,
    /// the window skipped and the state before it given back.
    pub fn observe(
        &mut self,
        window: Window,
        results: &[Published],
    ) -> anyhow::Result<Result<Vec<OutputRecord>, String>> {
        self.observed_through = window.start_ms;
        let outcome = self
            .detector
            .observe(window, results)
            .map_err(|e| e.to_string())
            .and_then(|records| {
                records.into_iter().map(|r| check_record(r, self.detector.meta())).collect::<Result<Vec<_>, _>>()
            })
            .and_then(|records| Ok((records, self.detector.save_state().map_err(|e| e.to_string())?)));
        match outcome {
            Ok((records, state)) => {
                self.saved = Some(state);
                self.unstored = true;
                Ok(Ok(records))
            }
            Err(reason) => {
                self.errors += 1;
                self.last_error = Some(reason.clone());
                self.roll_back()?;
                Ok(Err(reason))
            }
        }
    }

    /// A fresh instance with the state saved last (none if it saved none).
    fn roll_back(&mut self) -> anyhow::Result<()> {
        self.detector.reset()?;
        if let Some(state) = &self.saved {
            self.detector
                .load_state(state)
                .map_err(|e| anyhow::anyhow!("giving detector its saved state back: {e}"))?;
        }
        Ok(())
    }

    /// What the state topic should hold for it now, if that changed since it was last written.
    pub fn take_unstored(&mut self) -> Option<Stored> {
        if !std::mem::take(&mut self.unstored) {
            return None;
        }
        Some(Stored {
            observed_through: self.observed_through,
            state_version: self.meta().state_version,
            state: self.saved.clone().unwrap_or_default(),
        })
    }

    /// Starts from what an earlier owner of the merge stage committed (`None`: nothing, a
    /// detector that remembers nothing yet). The instance is replaced in any case: what it
    /// holds may come from a transaction that was aborted.
    pub fn restore(&mut self, stored: Option<&Stored>) -> anyhow::Result<()> {
        self.detector.reset()?;
        self.unstored = false;
        let Some(stored) = stored else {
            self.observed_through = i64::MIN;
            self.saved = None;
            return Ok(());
        };
        let meta = self.detector.meta();
        anyhow::ensure!(
            stored.state_version == meta.state_version,
            "the state topic holds the state of detector {} in state-version {}, and the loaded version {} reads state-version {}: load a version that reads it, or start the detector afresh under another --group-id",
            meta.name,
            stored.state_version,
            meta.version,
            meta.state_version
        );
        let name = meta.name.clone();
        self.detector
            .load_state(&stored.state)
            .map_err(|e| anyhow::anyhow!("loading the stored state of detector {name}: {e}"))?;
        self.observed_through = stored.observed_through;
        self.saved = Some(stored.state.clone());
        Ok(())
    }
}

/// The state topic's records, by key (the last one of each key), decoded; a record that is not
/// a detector's state is an error, since the topic is the host's own.
pub fn decode_all(records: HashMap<String, Vec<u8>>, topic: &str) -> anyhow::Result<HashMap<String, Stored>> {
    records
        .into_iter()
        .map(|(key, value)| match Stored::decode(&value) {
            Some(stored) => Ok((key, stored)),
            None => anyhow::bail!("record {key:?} of the state topic {topic} is not a detector's state (the topic is the host's own: give it to no one else)"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_state_round_trips_and_other_bytes_are_refused() {
        let stored = Stored { observed_through: 1_795_946_400_000, state_version: 3, state: b"{\"a\":1}".to_vec() };
        assert_eq!(Stored::decode(&stored.encode()), Some(stored));
        assert_eq!(Stored::decode(b"ADS1short"), None);
        assert_eq!(Stored::decode(b"{\"json\":true}"), None);
        let empty = Stored { observed_through: i64::MIN, state_version: 0, state: Vec::new() };
        assert_eq!(Stored::decode(&empty.encode()), Some(empty));
    }
}
