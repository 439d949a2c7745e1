//! One plugin's place in the pipeline, and how a new version takes it while the host runs.
//!
//! A live swap never loses or double-counts an event, and every window's result comes from one
//! version only:
//!
//! - **Compatible** (same name and `state-version`): the accumulator of every open window is
//!   exported from the old instance and restored into the new one, which takes over at once and
//!   publishes every window from then on.
//! - **Incompatible** (another `state-version`): the old instance keeps every window up to the
//!   newest one open at the swap (the *cut-over* window) and finishes them; events of later
//!   windows go to the new instance only. The old instance is dropped once the cut-over window is
//!   emitted.
//! - **No window open**: the new instance simply takes over.
//!
//! Either way the host first hands the old instance every event buffered so far, so the split is
//! exact: an event goes to exactly one version, chosen by its window.

use std::collections::BTreeMap;

use adstream_abi::batch::{BatchReader, BatchWriter};
use adstream_abi::time::format_rfc3339_millis;
use serde::Serialize;

use super::{Aggregator, OutputRecord, PluginError, PluginMeta, Window};

/// Which of a slot's instances a call went to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Current,
    /// The previous version, finishing the windows that were open at the swap.
    Retiring,
}

struct Retiring {
    aggregator: Box<dyn Aggregator>,
    /// The newest window it finishes; later windows belong to the current version.
    through: i64,
}

/// One plugin position: the version in charge, possibly the previous version finishing its
/// windows, and what the pipeline must remember about it.
pub struct Slot {
    current: Box<dyn Aggregator>,
    retiring: Option<Retiring>,
    /// Windows whose result this plugin will not publish, because a failure lost its state for
    /// them → why.
    pub withheld: BTreeMap<i64, String>,
    /// Failed calls and unusable records, since start.
    pub errors: u64,
    pub last_error: Option<String>,
    /// Swaps applied since start.
    pub swaps: u64,
}

/// How a swap was carried out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "mode")]
pub enum SwapMode {
    /// The new file is the version running (same SHA-256): nothing was done.
    Unchanged,
    /// No window was open: the new version took over at once.
    Immediate,
    /// Compatible state: the open windows' accumulators moved to the new version.
    CarriedOver { windows: usize },
    /// The old version finishes the windows up to `through` (RFC 3339); the new one has the rest.
    FinishingOpenWindows { through: String, windows: usize },
}

/// What a swap did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SwapReport {
    pub plugin: String,
    pub from_version: String,
    pub to_version: String,
    pub from_hash: String,
    pub to_hash: String,
    #[serde(flatten)]
    pub mode: SwapMode,
}

impl SwapReport {
    /// What two pipeline threads' swaps of the same plugin did together: the windows add up,
    /// and windows finished by the old version win over windows carried over.
    pub fn and(self, other: SwapReport) -> SwapReport {
        use SwapMode::*;
        let mode = match (self.mode.clone(), other.mode) {
            (Immediate | Unchanged, m) | (m, Immediate | Unchanged) => m,
            (CarriedOver { windows: a }, CarriedOver { windows: b }) => CarriedOver { windows: a + b },
            (FinishingOpenWindows { through, windows: a }, CarriedOver { windows: b })
            | (CarriedOver { windows: a }, FinishingOpenWindows { through, windows: b }) => {
                FinishingOpenWindows { through, windows: a + b }
            }
            (FinishingOpenWindows { through: x, windows: a }, FinishingOpenWindows { through: y, windows: b }) => {
                // RFC 3339 times of one format order as text.
                FinishingOpenWindows { through: x.max(y), windows: a + b }
            }
        };
        SwapReport { mode, ..self }
    }
}

/// Why a swap was refused; the old version keeps running.
#[derive(Debug, thiserror::Error)]
pub enum SwapRefused {
    #[error("no plugin named {0:?} is loaded: a swap replaces a loaded plugin (loaded: {1})")]
    NotLoaded(String, String),
    #[error(
        "plugin {plugin} is still finishing the windows through {through} of its previous version; swap again once that window is emitted"
    )]
    Busy { plugin: String, through: String },
    #[error(
        "plugin {plugin}'s new version has state-version {to}, the running one {from}: with sliding windows (--slide) only a version with the same state-version can take over open windows; swap it once no window is open, or keep the state format"
    )]
    SlidingState { plugin: String, from: u32, to: u32 },
    #[error("the new version could not be instantiated: {0}")]
    Instantiate(String),
}

impl Slot {
    pub fn new(aggregator: Box<dyn Aggregator>) -> Self {
        Slot { current: aggregator, retiring: None, withheld: BTreeMap::new(), errors: 0, last_error: None, swaps: 0 }
    }

    /// The version in charge of new windows.
    pub fn meta(&self) -> &PluginMeta {
        self.current.meta()
    }

    /// The previous version and the newest window it still finishes, during an incompatible
    /// swap.
    pub fn retiring(&self) -> Option<(&PluginMeta, i64)> {
        self.retiring.as_ref().map(|r| (r.aggregator.meta(), r.through))
    }

    pub fn meta_of(&self, which: Which) -> &PluginMeta {
        match (which, &self.retiring) {
            (Which::Retiring, Some(r)) => r.aggregator.meta(),
            _ => self.current.meta(),
        }
    }

    /// Folds a batch in: all of it into the current version, or, during an incompatible swap,
    /// each event into the version that owns its window.
    pub fn process(&mut self, batch: &[u8]) -> Vec<(Which, PluginError)> {
        let Some(retiring) = &mut self.retiring else {
            return self.current.process(batch).err().map(|e| (Which::Current, e)).into_iter().collect();
        };
        let (mut old, mut new) = (BatchWriter::new(), BatchWriter::new());
        let Ok(reader) = BatchReader::new(batch) else { unreachable!("the host's own batches are well formed") };
        for event in reader {
            let event = event.expect("the host's own batches are well formed");
            if event.window_start_ms <= retiring.through { old.push(&event) } else { new.push(&event) }
        }
        let mut failures = Vec::new();
        if !old.is_empty()
            && let Err(e) = retiring.aggregator.process(old.bytes())
        {
            failures.push((Which::Retiring, e));
        }
        if !new.is_empty()
            && let Err(e) = self.current.process(new.bytes())
        {
            failures.push((Which::Current, e));
        }
        failures
    }

    /// Closes `window` in the version that owns it, and returns the records with the version
    /// that produced them. Windows close in order, and the cut-over window was open at the swap,
    /// so the previous version is dropped once that window is closed.
    pub fn close_window(&mut self, window: Window) -> (Which, Result<Vec<OutputRecord>, PluginError>) {
        let which = self.which_for(window.start_ms);
        (which, self.instance(which).close_window(window))
    }

    /// Exports `window` from the version that owns it.
    pub fn export_window(&mut self, window: Window) -> (Which, Result<Option<Vec<u8>>, PluginError>) {
        let which = self.which_for(window.start_ms);
        (which, self.instance(which).export_window(window))
    }

    /// The version that owns the window starting at `start`.
    pub fn which_for(&self, start: i64) -> Which {
        match &self.retiring {
            Some(r) if start <= r.through => Which::Retiring,
            _ => Which::Current,
        }
    }

    /// The instance of `which` (the current one when no version is retiring).
    pub fn instance(&mut self, which: Which) -> &mut dyn Aggregator {
        match (which, &mut self.retiring) {
            (Which::Retiring, Some(r)) => r.aggregator.as_mut(),
            _ => self.current.as_mut(),
        }
    }

    /// After `window` is emitted: drops the previous version if that was its last window.
    pub fn emitted(&mut self, window: i64) {
        if let Some(r) = self.retiring.take_if(|r| window >= r.through) {
            let meta = r.aggregator.meta();
            tracing::info!(plugin = %meta.name, version = %meta.version, window = %format_rfc3339_millis(window), "swap complete: the previous version emitted its last window");
        }
    }

    /// A call to `which` failed: that instance restarts empty, and the windows it held (those of
    /// `open` it owns) are withheld rather than published incomplete.
    pub fn failed(&mut self, which: Which, error: &PluginError, open: impl Iterator<Item = i64>) {
        self.errors += 1;
        let reason = error.to_string();
        self.last_error = Some(reason.clone());
        let through = self.retiring.as_ref().map(|r| r.through);
        for w in open {
            let owned = match (which, through) {
                (Which::Retiring, Some(t)) => w <= t,
                (Which::Current, Some(t)) => w > t,
                (_, None) => true,
            };
            if owned {
                self.withheld.entry(w).or_insert_with(|| reason.clone());
            }
        }
        let name = self.meta_of(which).name.clone();
        if let Err(e) = self.instance(which).reset() {
            tracing::error!(plugin = %name, error = %e, "could not restart the plugin");
        }
    }

    /// A record of this plugin could not be published.
    pub fn bad_record(&mut self, reason: &str) {
        self.errors += 1;
        self.last_error = Some(reason.to_owned());
    }

    /// Refused if the previous swap is still finishing its windows.
    pub fn check_idle(&self) -> Result<(), SwapRefused> {
        match self.retiring() {
            Some((meta, through)) => {
                Err(SwapRefused::Busy { plugin: meta.name.clone(), through: format_rfc3339_millis(through) })
            }
            None => Ok(()),
        }
    }

    /// Puts `new` in charge. `open` are the windows this slot's instance holds now (the caller
    /// has already handed it every buffered event); `through` the newest window open anywhere
    /// in the engine, the cut-over of an incompatible swap, so that every task and the merge
    /// split the windows between the versions alike; `window_ms` is the size of what the
    /// instance holds (panes, with sliding windows).
    pub fn swap(
        &mut self,
        mut new: Box<dyn Aggregator>,
        open: &[i64],
        through: Option<i64>,
        window_ms: i64,
    ) -> Result<SwapReport, SwapRefused> {
        self.check_idle()?;
        let old = self.current.meta().clone();
        let report = SwapReport {
            plugin: old.name.clone(),
            from_version: old.version.clone(),
            to_version: new.meta().version.clone(),
            from_hash: old.hash.clone(),
            to_hash: new.meta().hash.clone(),
            mode: SwapMode::Immediate,
        };
        self.swaps += 1;
        let Some(through) = through.or_else(|| open.iter().copied().max()) else {
            self.current = new;
            return Ok(report);
        };
        if old.state_version == new.meta().state_version {
            match self.carry_over(new.as_mut(), open, window_ms) {
                Ok(()) => {
                    self.current = new;
                    return Ok(SwapReport { mode: SwapMode::CarriedOver { windows: open.len() }, ..report });
                }
                Err(e) => {
                    tracing::warn!(plugin = %old.name, error = %e, "could not carry the open windows over to the new version; the old version finishes them instead");
                    if let Err(e) = new.reset() {
                        tracing::error!(plugin = %old.name, error = %e, "could not restart the new version");
                    }
                }
            }
        }
        // If the export above trapped, the old instance fails on its next call, and the windows it
        // holds are withheld (see `failed`) rather than published incomplete.
        self.retire(new, through);
        let mode = SwapMode::FinishingOpenWindows { through: format_rfc3339_millis(through), windows: open.len() };
        Ok(SwapReport { mode, ..report })
    }

    /// Puts `new` in charge of the windows after `through`; the version in charge now finishes
    /// the others. (The merge's slot follows its tasks this way when one of them could not
    /// carry its windows over.)
    pub fn retire(&mut self, new: Box<dyn Aggregator>, through: i64) {
        let old = std::mem::replace(&mut self.current, new);
        self.retiring = Some(Retiring { aggregator: old, through });
    }

    /// Moves every open window's accumulator from the current version into `new`.
    fn carry_over(&mut self, new: &mut dyn Aggregator, open: &[i64], window_ms: i64) -> Result<(), PluginError> {
        for &start_ms in open {
            let window = Window { start_ms, end_ms: start_ms + window_ms };
            if let Some(state) = self.current.export_window(window)? {
                new.restore_window(window, &state)?;
            }
        }
        Ok(())
    }
}
