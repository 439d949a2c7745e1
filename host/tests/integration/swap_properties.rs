//! Property tests of live plugin swaps (`plugin/slot.rs`), with the aggregations compiled in:
//! for random event streams and a swap at a random point, to a version with the same state
//! version (the open windows carry over) or another one (the old version finishes them),
//!
//! - every result record equals the one an uninterrupted run publishes: no event lost or
//!   counted twice across the swap;
//! - each window's records all come from one version, the one the swap rule names;
//! - a second swap while the old version is still finishing its windows is refused, and changes
//!   nothing.
//!
//! (That an uninterrupted run equals the batch computation is `time_properties.rs`.)

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use adstream::config::TimeConfig;
use adstream::engine::{Engine, Input, Sink};
use adstream::event::Source;
use adstream::plugin::{Aggregator, NativeAggregator, SwapMode};
use adstream::sink::topics::OutputTopics;
use proptest::prelude::*;

const BASE: i64 = 1_795_946_400_000;
const WINDOW_MS: i64 = 2_000;

/// Every result record: (topic, key, value) → the version that published it and its window.
#[derive(Default)]
struct Collect {
    results: BTreeMap<(String, String, String), (String, String)>,
    /// window-start header → versions seen, per plugin.
    versions: BTreeMap<(String, String), Vec<String>>,
}

impl Sink for Collect {
    fn send(&mut self, topic: &str, key: Option<&[u8]>, value: &[u8], headers: &[(&str, &[u8])]) -> anyhow::Result<()> {
        let header =
            |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| String::from_utf8_lossy(v).into_owned());
        let Some(window) = header("window-start") else {
            return Ok(()); // late and dead letters: not results
        };
        let version = header("plugin-version").expect("every result names its version");
        let plugin = header("plugin").expect("every result names its plugin");
        let key = String::from_utf8_lossy(key.unwrap_or_default()).into_owned();
        let record = (topic.to_owned(), key, String::from_utf8_lossy(value).into_owned());
        assert!(self.results.insert(record, (version.clone(), window.clone())).is_none(), "a record published twice");
        let seen = self.versions.entry((plugin, window)).or_default();
        if !seen.contains(&version) {
            seen.push(version);
        }
        Ok(())
    }
}

fn topics() -> OutputTopics {
    OutputTopics {
        late: "late".into(),
        dead_letter: "dlq".into(),
        plugin_errors: "errors".into(),
        ..OutputTopics::with_prefix("")
    }
}

fn ctr(version: &str, state_version: u32) -> Box<dyn Aggregator> {
    Box::new(NativeAggregator::<ctr::Ctr>::new("ctr", "ctr").with_version(version, state_version))
}

fn engagement() -> Box<dyn Aggregator> {
    Box::new(NativeAggregator::<engagement::Engagement>::new("engagement", "engagement"))
}

/// (partition, payload) in consumption order: impressions on partitions 0 and 1 (tasks 0 and 1),
/// each click on the clicks partition of its impression's task (2 or 3).
fn stream(raw: &[(u16, u8, bool)]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut impressions = Vec::new();
    for (i, &(jitter, key, click)) in raw.iter().enumerate() {
        let ts = BASE + i as i64 * 40 - i64::from(jitter % 1_500);
        if click && !impressions.is_empty() {
            let (id, its): (usize, i64) = impressions[usize::from(key) % impressions.len()];
            let payload = format!(
                r#"{{"click_id":"k{i}","impression_id":"i{id}","user_id":"u{key}","event_timestamp":{}}}"#,
                its + i64::from(jitter % 900)
            );
            out.push((2 + id % 2, payload));
        } else {
            impressions.push((i, ts));
            let payload = format!(
                r#"{{"impression_id":"i{i}","user_id":"u{}","campaign_id":"c{}","ad_id":"a","device_type":"d{}","browser":"b","event_timestamp":{ts},"cost":0.5}}"#,
                key % 9,
                key % 5,
                key % 3
            );
            out.push((i % 2, payload));
        }
    }
    out
}

fn pipeline(batch_size: usize) -> Engine {
    let time = TimeConfig {
        window_ms: WINDOW_MS,
        slide_ms: WINDOW_MS,
        out_of_orderness_ms: 500,
        idle_timeout: Duration::from_secs(3600),
        allowed_lateness_ms: 0,
        join_horizon_ms: 5_000,
        keep_duplicates: false,
    };
    let mut p = Engine::with_aggregators(time, vec![ctr("1.0.0", 1), engagement()], batch_size, topics()).unwrap();
    let now = Instant::now();
    for (source, partition) in
        [(Source::Impressions, 0), (Source::Impressions, 1), (Source::Clicks, 0), (Source::Clicks, 1)]
    {
        p.add_partition(source, "t", partition, now).unwrap();
    }
    p
}

/// What a run with a swap saw at the swap.
#[derive(Default)]
struct AtSwap {
    /// Windows open.
    open: Vec<i64>,
    /// Windows (window-start header) already published.
    published: Vec<String>,
    mode: Option<SwapMode>,
}

/// Runs the stream, swapping ctr for version 2.0.0 (state version `state_version`) before
/// message `at` if given.
fn run(events: &[(usize, String)], batch_size: usize, swap: Option<(usize, u32)>) -> (Collect, AtSwap) {
    let mut p = pipeline(batch_size);
    let mut sink = Collect::default();
    let now = Instant::now();
    let mut at_swap = AtSwap::default();
    for (n, (partition, payload)) in events.iter().enumerate() {
        if let Some((at, state_version)) = swap
            && at == n
        {
            at_swap.open = p.open_windows();
            at_swap.published = sink.versions.keys().map(|(_, w)| w.clone()).collect();
            let report = p.swap(ctr("2.0.0", state_version)).expect("the swap is taken");
            if matches!(report.mode, SwapMode::FinishingOpenWindows { .. }) {
                let again = p.swap(ctr("3.0.0", state_version)).expect_err("busy: still finishing");
                assert!(again.to_string().contains("still finishing"), "{again}");
            }
            at_swap.mode = Some(report.mode);
        }
        let input = Input { partition: *partition, offset: n as i64, key: None, payload: payload.as_bytes() };
        p.ingest(input, now, &mut sink).expect("ingest");
    }
    p.finish(&mut sink).expect("finish");
    let stats = p.stats();
    assert_eq!(stats.accounted(), stats.consumed);
    assert_eq!(stats.plugin_errors, 0);
    (sink, at_swap)
}

fn check(raw: Vec<(u16, u8, bool)>, at: usize, state_version: u32, batch_size: usize) -> Result<(), TestCaseError> {
    let events = stream(&raw);
    let at = at % (events.len() + 1);
    let (plain, _) = run(&events, batch_size, None);
    let (swapped, at_swap) = run(&events, batch_size, Some((at, state_version)));
    // Same records, whoever published them.
    let records = |c: &Collect| c.results.keys().cloned().collect::<Vec<_>>();
    prop_assert_eq!(records(&swapped), records(&plain));
    match (&at_swap.mode, at_swap.open.is_empty(), state_version) {
        (None, _, _) => {} // the swap point was past the end
        (Some(SwapMode::Immediate), true, _) => {}
        (Some(SwapMode::CarriedOver { windows }), false, 1) => prop_assert_eq!(*windows, at_swap.open.len()),
        (Some(SwapMode::FinishingOpenWindows { windows, .. }), false, 2) => {
            prop_assert_eq!(*windows, at_swap.open.len())
        }
        (mode, _, _) => prop_assert!(false, "mode {:?} with open windows {:?}", mode, at_swap.open),
    }
    // One version per window, the one the rule names.
    let cutover = at_swap.open.iter().max().copied();
    for ((plugin, window), versions) in &swapped.versions {
        prop_assert_eq!(versions.len(), 1, "window {} of {} published by {:?}", window, plugin, versions);
        if plugin != "ctr" {
            continue;
        }
        let start = adstream_abi::time::parse_rfc3339_millis(window).unwrap();
        let old = at_swap.mode.is_none()
            || at_swap.published.contains(window)
            || matches!(at_swap.mode, Some(SwapMode::FinishingOpenWindows { .. }))
                && cutover.is_some_and(|c| start <= c);
        let want = if old { "1.0.0" } else { "2.0.0" };
        prop_assert_eq!(
            &versions[0],
            want,
            "window {} (open at the swap: {:?}, {:?})",
            window,
            at_swap.open,
            at_swap.mode
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn a_swap_loses_nothing_and_each_window_has_one_version(
        raw in proptest::collection::vec((any::<u16>(), any::<u8>(), proptest::bool::weighted(0.2)), 0..250),
        at in any::<usize>(),
        state_version in prop_oneof![Just(1u32), Just(2u32)],
        batch_size in prop_oneof![Just(1usize), Just(7), Just(4096)],
    ) {
        check(raw, at, state_version, batch_size)?;
    }
}

/// ctr that cannot take the state of a window open at the swap: `restore-window` fails for
/// windows up to `refuses_through`.
struct NoRestore {
    inner: NativeAggregator<ctr::Ctr>,
    refuses_through: i64,
}

impl NoRestore {
    fn new(refuses_through: i64) -> Self {
        NoRestore { inner: NativeAggregator::<ctr::Ctr>::new("ctr", "ctr").with_version("2.0.0", 1), refuses_through }
    }
}

impl Aggregator for NoRestore {
    fn meta(&self) -> &adstream::plugin::PluginMeta {
        self.inner.meta()
    }
    fn process(&mut self, batch: &[u8]) -> Result<(), adstream::plugin::PluginError> {
        self.inner.process(batch)
    }
    fn close_window(
        &mut self,
        window: adstream::plugin::Window,
    ) -> Result<Vec<adstream::plugin::OutputRecord>, adstream::plugin::PluginError> {
        self.inner.close_window(window)
    }
    fn reset(&mut self) -> anyhow::Result<()> {
        self.inner.reset()
    }
    fn export_window(
        &mut self,
        window: adstream::plugin::Window,
    ) -> Result<Option<Vec<u8>>, adstream::plugin::PluginError> {
        self.inner.export_window(window)
    }
    fn restore_window(
        &mut self,
        window: adstream::plugin::Window,
        state: &[u8],
    ) -> Result<(), adstream::plugin::PluginError> {
        if window.start_ms > self.refuses_through {
            return self.inner.restore_window(window, state);
        }
        Err(adstream::plugin::PluginError::BadOutput {
            plugin: "ctr".into(),
            call: "restore-window",
            detail: "refuses the state of a window open at the swap".into(),
        })
    }
    fn merge_window(
        &mut self,
        window: adstream::plugin::Window,
        state: &[u8],
    ) -> Result<(), adstream::plugin::PluginError> {
        self.inner.merge_window(window, state)
    }
    fn fresh(&self) -> anyhow::Result<Box<dyn Aggregator>> {
        Ok(Box::new(NoRestore::new(self.refuses_through)))
    }
}

/// A compatible version that then refuses the exported state: the swap falls back to the old
/// version finishing the open windows, and nothing is lost.
#[test]
fn a_failed_carry_over_falls_back_to_the_old_version_finishing() {
    let raw: Vec<(u16, u8, bool)> = (0..400u16).map(|i| (i.wrapping_mul(7919), (i % 251) as u8, i % 5 == 0)).collect();
    let events = stream(&raw);
    let at = events.len() / 2;
    let (plain, _) = run(&events, 7, None);
    let mut p = pipeline(7);
    let mut sink = Collect::default();
    let now = Instant::now();
    let mut open = Vec::new();
    for (n, (partition, payload)) in events.iter().enumerate() {
        if n == at {
            open = p.open_windows();
            assert!(!open.is_empty(), "windows are open mid-stream");
            let new = NoRestore::new(*open.iter().max().unwrap());
            let report = p.swap(Box::new(new)).expect("the swap is taken");
            assert!(matches!(report.mode, SwapMode::FinishingOpenWindows { .. }), "{report:?}");
        }
        let input = Input { partition: *partition, offset: n as i64, key: None, payload: payload.as_bytes() };
        p.ingest(input, now, &mut sink).expect("ingest");
    }
    p.finish(&mut sink).expect("finish");
    assert_eq!(sink.results.keys().collect::<Vec<_>>(), plain.results.keys().collect::<Vec<_>>());
    let through = *open.iter().max().unwrap();
    for ((plugin, window), versions) in &sink.versions {
        let start = adstream_abi::time::parse_rfc3339_millis(window).unwrap();
        if plugin == "ctr" {
            assert_eq!(versions, &[if start <= through { "1.0.0" } else { "2.0.0" }], "window {window}");
        }
    }
}
