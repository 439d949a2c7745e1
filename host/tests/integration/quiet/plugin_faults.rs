//! Plugin fault isolation: a purpose-built misbehaving plugin (`test-plugins/misbehave`) traps,
//! loops forever, allocates without end, returns output that is not JSON, tries to read a file
//! and the clock. Each time the host goes on, the well-behaved `ctr` plugin's results stay
//! exactly right, the misbehaving plugin's results are right for every window it did not fail
//! in, and for the window it failed in a record on the plugin-errors topic accounts for the
//! events instead.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::{plugin, workspace};
use adstream::config::{PluginConfig, TimeConfig};
use adstream::engine::{Engine, Input, Sink};
use adstream::event::Source;
use adstream::plugin::{Aggregator, Plugin, Runtime};
use adstream::sink::topics::OutputTopics;
use serde_json::Value;

const DEADLINE: Duration = Duration::from_millis(200);
const WINDOW_MS: i64 = 60_000;
const BASE: i64 = 1_795_946_400_000;

#[derive(Default)]
struct Collect(Vec<(String, Value)>);

impl Sink for Collect {
    fn send(&mut self, topic: &str, _key: Option<&[u8]>, value: &[u8], _h: &[(&str, &[u8])]) -> anyhow::Result<()> {
        let value =
            serde_json::from_slice(value).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(value).into()));
        self.0.push((topic.to_owned(), value));
        Ok(())
    }
}

fn impression(n: usize, ts: i64, campaign: &str) -> String {
    format!(
        r#"{{"impression_id":"i{n}","user_id":"u{n}","campaign_id":"{campaign}","ad_id":"a","device_type":"mobile","browser":"b","event_timestamp":{ts},"cost":0.1}}"#
    )
}

/// Three windows of impressions; the fourth event of window 1 is the trigger.
fn events(trigger: &str) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    for w in 0..3 {
        for k in 0..8 {
            let ts = BASE + w * WINDOW_MS + k * 1000;
            let campaign = if w == 1 && k == 3 { trigger.to_owned() } else { format!("c{}", k % 3) };
            out.push((ts, campaign));
        }
    }
    out
}

struct Outcome {
    sink: Collect,
    stats: adstream::metrics::Stats,
    /// How long the call that handed the trigger to the plugins took.
    trigger_call: Duration,
}

fn run(trigger: &str) -> Outcome {
    run_with(trigger, Default::default(), Vec::new())
}

fn run_with(trigger: &str, grants: adstream::config::Grants, limits: Vec<adstream::config::PluginLimit>) -> Outcome {
    run_plugin("misbehave", 32, trigger, grants, limits)
}

/// [`run_with`] of one of the test plugins: `misbehave` (Rust) or `misbehave-py` (Python), under
/// a memory limit of `memory_mib`.
fn run_plugin(
    file: &str,
    memory_mib: u64,
    trigger: &str,
    grants: adstream::config::Grants,
    limits: Vec<adstream::config::PluginLimit>,
) -> Outcome {
    let cache = crate::common::plugin_cache();
    let config = PluginConfig {
        plugins: Vec::new(),
        cache_dir: cache.clone(),
        batch_size: 1,
        timeout: DEADLINE,
        memory_bytes: memory_mib << 20,
        grants,
        limits,
        settings: Vec::new(),
        natives: &[],
        watch: false,
    };
    let runtime = Runtime::new(&cache).unwrap();
    let misbehave = workspace().join(format!("target/test-plugins/{file}.wasm"));
    assert!(misbehave.is_file(), "run `bash scripts/build-plugins.sh` first");
    let aggregators: Vec<Box<dyn Aggregator>> = vec![
        Box::new(Plugin::load(&runtime, &plugin("ctr"), &config).unwrap()),
        Box::new(Plugin::load(&runtime, &misbehave, &config).unwrap()),
    ];
    let topics = OutputTopics {
        late: "late".into(),
        dead_letter: "dlq".into(),
        plugin_errors: "errors".into(),
        ..OutputTopics::with_prefix("")
    };
    let time = TimeConfig { out_of_orderness_ms: 0, idle_timeout: Duration::from_secs(3600), ..TimeConfig::default() };
    let mut p = Engine::with_aggregators(time, aggregators, 1, topics).unwrap();
    p.add_partition(Source::Impressions, "ad-impressions", 0, Instant::now()).unwrap();
    let mut sink = Collect::default();
    let mut trigger_call = Duration::ZERO;
    for (n, (ts, campaign)) in events(trigger).iter().enumerate() {
        let payload = impression(n, *ts, campaign);
        let started = Instant::now();
        p.ingest(
            Input { partition: 0, offset: n as i64, key: None, payload: payload.as_bytes() },
            Instant::now(),
            &mut sink,
        )
        .expect("the host goes on");
        if campaign == trigger {
            trigger_call = started.elapsed();
        }
    }
    p.finish(&mut sink).unwrap();
    Outcome { stats: p.stats(), sink, trigger_call }
}

/// (campaign, window) → impressions, from the events, independently of the host.
fn expected(trigger: &str) -> BTreeMap<(String, i64), u64> {
    let mut m = BTreeMap::new();
    for (ts, campaign) in events(trigger) {
        *m.entry((campaign, (ts - BASE) / WINDOW_MS)).or_default() += 1;
    }
    m
}

fn results(sink: &Collect, topic: &str) -> BTreeMap<(String, i64), u64> {
    sink.0
        .iter()
        .filter(|(t, _)| t == topic)
        .map(|(_, v)| {
            let start = adstream_abi::time::parse_rfc3339_millis(v["window_start"].as_str().unwrap()).unwrap();
            (
                (v["campaign_id"].as_str().unwrap().to_owned(), (start - BASE) / WINDOW_MS),
                v["impressions"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The checks every fault shares: ctr exact; misbehave exact outside window 1; window 1 of
/// misbehave accounted for by one error record with all 8 of its events.
fn check_isolated(trigger: &str, kind: &str) -> Outcome {
    check_outcome(run(trigger), trigger, kind)
}

fn check_outcome(out: Outcome, trigger: &str, kind: &str) -> Outcome {
    let want = expected(trigger);
    assert_eq!(results(&out.sink, "campaign-ctr-results"), want, "ctr is unaffected by {trigger}");
    let outside: BTreeMap<_, _> = want.iter().filter(|((_, w), _)| *w != 1).map(|(k, v)| (k.clone(), *v)).collect();
    assert_eq!(results(&out.sink, "misbehave-results"), outside, "misbehave's other windows are right");
    let errors: Vec<&Value> = out.sink.0.iter().filter(|(t, _)| t == "errors").map(|(_, v)| v).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["plugin"], "misbehave");
    assert_eq!(errors[0]["events"], 8, "every event of the window is accounted for: {}", errors[0]);
    assert_eq!(errors[0]["window_start"], adstream_abi::time::format_rfc3339_millis(BASE + WINDOW_MS));
    let reason = errors[0]["reason"].as_str().unwrap();
    assert!(reason.contains(kind), "{trigger}: {reason}");
    assert!(out.stats.plugin_errors >= 1 && out.stats.windows_withheld == 1, "{:?}", out.stats);
    assert_eq!(out.stats.accounted(), out.stats.consumed);
    out
}

#[test]
fn a_trapping_plugin_is_isolated() {
    let out = check_isolated("evil-trap", "trapped");
    // The panic's message reaches the error record, though stderr is not granted.
    let errors: Vec<&Value> = out.sink.0.iter().filter(|(t, _)| t == "errors").map(|(_, v)| v).collect();
    let reason = errors[0]["reason"].as_str().unwrap();
    assert!(reason.contains("misbehave: a deliberate panic") && reason.contains("src/lib.rs"), "{reason}");
    assert!(!reason.contains("<unknown>"), "the frames without names are left out: {reason}");
}

#[test]
fn an_endless_loop_is_interrupted_at_its_deadline() {
    let out = check_isolated("evil-loop", "deadline");
    // Within 100 ms of the deadline (the epoch ticks every 5 ms).
    assert!(out.trigger_call < DEADLINE + Duration::from_millis(100), "took {:?}", out.trigger_call);
    assert!(out.trigger_call >= DEADLINE, "interrupted early: {:?}", out.trigger_call);
}

#[test]
fn a_memory_bomb_hits_its_limit() {
    check_isolated("evil-oom", "memory limit");
}

#[test]
fn output_that_is_not_json_is_withheld() {
    check_isolated("evil-output", "values must be JSON objects");
}

/// No file system and no clock: the plugin runs, but what it reads is an error and the epoch.
#[test]
fn a_plugin_has_no_files_and_no_clock() {
    for (trigger, field) in [("evil-file", "file"), ("evil-clock", "clock")] {
        let out = run(trigger);
        assert_eq!(out.stats.plugin_errors, 0);
        let poisoned: Vec<&Value> = out
            .sink
            .0
            .iter()
            .filter(|(t, v)| t == "misbehave-results" && v.get(field).is_some())
            .map(|(_, v)| v)
            .collect();
        assert_eq!(poisoned.len(), 1, "{trigger}");
        match field {
            "file" => assert!(poisoned[0]["file"].as_str().unwrap().starts_with("denied"), "{}", poisoned[0]),
            _ => assert_eq!(poisoned[0]["clock"], 0, "the clock is frozen at the epoch"),
        }
        assert_eq!(results(&out.sink, "campaign-ctr-results"), expected(trigger));
    }
}

/// What the operator grants, the plugin gets: here the real clock.
#[test]
fn a_granted_clock_is_the_real_one() {
    let out = run_with("evil-clock", adstream::config::Grants { clock: true, ..Default::default() }, Vec::new());
    let clock = out.sink.0.iter().find_map(|(t, v)| (t == "misbehave-results").then(|| v.get("clock")).flatten());
    let seconds = clock.and_then(Value::as_u64).expect("a clock reading");
    assert!(seconds > 1_700_000_000, "{seconds} is not the wall clock");
}

/// Limits by plugin name: a shorter deadline for `misbehave` alone.
#[test]
fn a_plugin_can_have_its_own_deadline() {
    let limit = adstream::config::PluginLimit::parse("misbehave:timeout=50ms").unwrap();
    let out = run_with("evil-loop", Default::default(), vec![limit]);
    assert!(out.trigger_call < Duration::from_millis(150), "took {:?}", out.trigger_call);
    assert_eq!(results(&out.sink, "campaign-ctr-results"), expected("evil-loop"));
    assert_eq!(out.stats.windows_withheld, 1);
}

/// A CPython interpreter (an 18 MB component) in 64 MiB: room for the interpreter, not for a
/// hoard. The Python plugin's faults are contained as the Rust one's are.
const PYTHON_MEMORY_MIB: u64 = 64;

fn check_python(trigger: &str, kind: &str) -> Outcome {
    let out = run_plugin("misbehave-py", PYTHON_MEMORY_MIB, trigger, Default::default(), Vec::new());
    check_outcome(out, trigger, kind)
}

#[test]
fn a_python_exception_is_isolated_and_named() {
    let out = check_python("evil-trap", "returned an error");
    let errors: Vec<&Value> = out.sink.0.iter().filter(|(t, _)| t == "errors").map(|(_, v)| v).collect();
    let reason = errors[0]["reason"].as_str().unwrap();
    assert!(reason.contains("RuntimeError: misbehave: a deliberate exception"), "{reason}");
}

#[test]
fn an_endless_python_loop_is_interrupted_at_its_deadline() {
    let out = check_python("evil-loop", "deadline");
    assert!(out.trigger_call < DEADLINE + Duration::from_millis(100), "took {:?}", out.trigger_call);
    assert!(out.trigger_call >= DEADLINE, "interrupted early: {:?}", out.trigger_call);
}

#[test]
fn a_python_memory_bomb_hits_its_limit() {
    check_python("evil-oom", "memory limit");
}
