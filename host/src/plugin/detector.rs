//! A detector: a plugin of the `detector` world (`wit/aggregation.wit`), which reads the
//! published results of other plugins window after window and remembers across windows.
//!
//! It runs under the same sandbox as an aggregation ([`super::instance`]): nothing granted, a
//! deadline on every call, a memory cap. What it remembers is the engine's to keep exactly-once
//! ([`crate::engine::detect`]): this module only makes the calls.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, ensure};
use wasmtime::Store;
use wasmtime::component::Component;

use super::instance::{Limits, PluginState, classify, linker, new_store};
use super::runtime::Runtime;
use super::world::adstream::aggregation::detection::Published;
use super::world::{Detector as Bindings, DetectorPre};
use super::{OutputRecord, PluginError, PluginMeta, Window};
use crate::config::{Grants, PluginConfig};

/// Whether `component` is a detector (it exports `observe`) rather than an aggregation.
pub fn is_detector(runtime: &Runtime, component: &Component) -> bool {
    component.component_type().exports(runtime.engine()).any(|(name, _)| name == "observe")
}

/// A loaded, configured detector.
pub struct Detector {
    meta: PluginMeta,
    /// The plugins whose results it reads, by name.
    inputs: Vec<String>,
    settings: Vec<(String, String)>,
    /// Keeps the engine and its epoch ticker alive as long as the detector.
    runtime: Arc<Runtime>,
    pre: DetectorPre<PluginState>,
    store: Store<PluginState>,
    bindings: Bindings,
    limits: Limits,
    grants: Grants,
}

impl Detector {
    /// Instantiates, describes and configures the detector compiled in `component`.
    pub fn new(
        runtime: &Arc<Runtime>,
        component: &Component,
        hash: String,
        path: &Path,
        config: &PluginConfig,
    ) -> anyhow::Result<Self> {
        let what = || format!("detector {}", path.display());
        let pre = linker(runtime)?.instantiate_pre(component).and_then(DetectorPre::new);
        let pre = pre.map_err(anyhow::Error::from).with_context(|| format!("linking {}", what()))?;
        let _entered = runtime.enter();
        let defaults = Limits::defaults(config);
        let mut store = new_store(runtime, defaults.memory_bytes, defaults.deadline_ticks, config.grants);
        let bindings = pre
            .instantiate(&mut store)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("instantiating {}", what()))?;
        let info = bindings
            .call_describe(&mut store)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("calling describe() of {}", what()))?;
        let inputs = bindings
            .call_inputs(&mut store)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("calling inputs() of {}", what()))?;
        // A detector reads results, not events: what `wants` says is not used.
        let meta =
            PluginMeta { wants_impressions: false, wants_clicks: false, ..PluginMeta::described(info, hash, path)? };
        ensure!(
            !inputs.is_empty(),
            "{} ({}) reads the results of no plugin (its inputs() is empty)",
            what(),
            meta.name
        );
        let settings: Vec<(String, String)> = config
            .settings
            .iter()
            .filter(|s| s.plugin == meta.name)
            .map(|s| (s.key.clone(), s.value.clone()))
            .collect();
        let limits = Limits::of(config, &meta.name);
        limits.apply(&mut store);
        let mut detector = Detector {
            meta,
            inputs,
            settings,
            runtime: runtime.clone(),
            pre,
            store,
            bindings,
            limits,
            grants: config.grants,
        };
        detector.configure().map_err(|e| anyhow::anyhow!("{e}")).with_context(|| {
            format!(
                "the settings of detector {} (--plugin-setting {}:KEY=VALUE)",
                detector.meta.name, detector.meta.name
            )
        })?;
        Ok(detector)
    }

    pub fn meta(&self) -> &PluginMeta {
        &self.meta
    }

    /// The plugins whose results it reads.
    pub fn inputs(&self) -> &[String] {
        &self.inputs
    }

    fn configure(&mut self) -> Result<(), PluginError> {
        let settings = self.settings.clone();
        self.call("configure", |b, s| b.call_configure(s, &settings))
    }

    /// Window `window` was published with `results` (of the plugins it reads): its records.
    pub fn observe(&mut self, window: Window, results: &[Published]) -> Result<Vec<OutputRecord>, PluginError> {
        let mut records = self.call("observe", |b, s| b.call_observe(s, window, results))?;
        for r in &mut records {
            if r.topic.is_empty() {
                r.topic.clone_from(&self.meta.output_topics[0]);
            }
        }
        Ok(records)
    }

    /// What it remembers, as bytes.
    pub fn save_state(&mut self) -> Result<Vec<u8>, PluginError> {
        self.call("save-state", |b, s| b.call_save_state(s).map(Ok))
    }

    /// Gives it back what it remembered.
    pub fn load_state(&mut self, state: &[u8]) -> Result<(), PluginError> {
        self.call("load-state", |b, s| b.call_load_state(s, state))
    }

    /// A new instance, configured, that remembers nothing: after a fault (an instance that
    /// trapped cannot be entered again), or before an earlier run's state is loaded.
    pub fn reset(&mut self) -> anyhow::Result<()> {
        let mut store = new_store(&self.runtime, self.limits.memory_bytes, self.limits.deadline_ticks, self.grants);
        let entered = self.runtime.enter();
        let bindings = self.pre.instantiate(&mut store);
        drop(entered);
        self.bindings = bindings
            .map_err(anyhow::Error::from)
            .with_context(|| format!("re-instantiating detector {}", self.meta.name))?;
        self.store = store;
        self.configure().map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Runs one call under the deadline, and maps failures to [`PluginError`].
    fn call<T>(
        &mut self,
        call: &'static str,
        f: impl FnOnce(&Bindings, &mut Store<PluginState>) -> wasmtime::Result<Result<T, String>>,
    ) -> Result<T, PluginError> {
        let _entered = self.runtime.enter();
        self.store.set_epoch_deadline(self.limits.deadline_ticks);
        match f(&self.bindings, &mut self.store) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(detail)) => Err(PluginError::BadOutput { plugin: self.meta.name.clone(), call, detail }),
            Err(e) => Err(classify(&self.store, &self.meta.name, self.limits.timeout_ms, call, e)),
        }
    }
}
