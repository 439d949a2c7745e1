//! Property tests of the time logic: for random event sequences (disorder within and beyond the
//! bound, several partitions, random interleaving, random window sizes, lateness and join
//! horizons), the pipeline's late events are exactly those a straightforward re-implementation of
//! the SPEC's watermark rule calls late; each appears once in the late topic; and the emitted
//! windows equal a batch computation over the events that were not late.
//!
//! The aggregations run natively here (the same code the plugins run), so that a thousand cases
//! take seconds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use adstream::config::TimeConfig;
use adstream::event::Source;
use adstream::pipeline::{Input, Pipeline, Sink};
use adstream::plugin::{Aggregator, NativeAggregator};
use adstream::sink::topics::OutputTopics;
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct Ev {
    partition: usize,
    /// Impression id, or for a click the id it clicked.
    id: usize,
    click: bool,
    ts: i64,
    campaign: u8,
    device: u8,
    user: u8,
}

impl Ev {
    fn json(&self, n: usize) -> String {
        if self.click {
            format!(
                r#"{{"click_id":"k{n}","impression_id":"i{}","user_id":"u{}","event_timestamp":{}}}"#,
                self.id, self.user, self.ts
            )
        } else {
            format!(
                r#"{{"impression_id":"i{}","user_id":"u{}","campaign_id":"c{}","ad_id":"a","device_type":"d{}","browser":"b","event_timestamp":{},"cost":0.5}}"#,
                self.id, self.user, self.campaign, self.device, self.ts
            )
        }
    }
}

#[derive(Clone, Debug)]
struct Case {
    time: TimeConfig,
    impression_partitions: usize,
    click_partitions: usize,
    /// In consumption order.
    events: Vec<Ev>,
}

const BASE: i64 = 1_795_946_400_000;

fn case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![Just(1_000i64), Just(2_000), Just(5_000), Just(60_000)],
        0i64..4_000,
        prop_oneof![Just(0i64), Just(1_500)],
        prop_oneof![Just(3_000i64), Just(20_000)],
        1usize..4,
        1usize..3,
        // disorder: sometimes within the out-of-orderness, sometimes far beyond it
        prop_oneof![Just(500i64), Just(6_000), Just(30_000)],
        proptest::collection::vec(
            (any::<u64>(), 0i64..400, any::<u8>(), any::<u8>(), any::<u8>(), any::<bool>()),
            0..150,
        ),
    )
        .prop_map(|(window, ooo, lateness, horizon, ip, cp, disorder, raw)| {
            let time = TimeConfig {
                window_ms: window,
                out_of_orderness_ms: ooo,
                idle_timeout: Duration::from_secs(3600),
                allowed_lateness_ms: lateness,
                join_horizon_ms: horizon,
            };
            let mut events = Vec::new();
            let mut impressions: Vec<(usize, i64)> = Vec::new();
            for (i, (r, step, campaign, device, user, click)) in raw.into_iter().enumerate() {
                // The stream's clock advances by `step`; each event is that minus a random delay.
                let clock = BASE + i as i64 * 100 + step * 10;
                let ts = clock - (r % (disorder as u64 + 1)) as i64;
                if click && !impressions.is_empty() {
                    // Mostly clicks on a real impression, shortly after it (sometimes beyond the
                    // horizon, sometimes before it); now and then one on an unknown impression.
                    let (id, its) = impressions[(r as usize / 7) % impressions.len()];
                    let delay = (r % (horizon as u64 * 3 / 2)) as i64 - 500;
                    let id = if r % 11 == 0 { 1_000_000 + i } else { id };
                    events.push(Ev {
                        partition: ip + (r as usize % cp),
                        id,
                        click: true,
                        ts: its + delay,
                        campaign,
                        device,
                        user,
                    });
                } else {
                    impressions.push((i, ts));
                    events.push(Ev {
                        partition: r as usize % ip,
                        id: i,
                        click: false,
                        ts,
                        campaign: campaign % 4,
                        device: device % 3,
                        user: user % 8,
                    });
                }
            }
            // Consumption interleaves partitions at random but keeps each partition's order:
            // a stable sort by a random key per event within the partition's own sequence.
            let mut next_key: HashMap<usize, u64> = HashMap::new();
            let mut keyed: Vec<(u64, Ev)> = events
                .into_iter()
                .enumerate()
                .map(|(i, e)| {
                    let k = next_key.entry(e.partition).or_insert(0);
                    *k = (*k).max((i as u64 * 2654435761) % 997 + i as u64);
                    (*k, e)
                })
                .collect();
            keyed.sort_by_key(|(k, _)| *k);
            Case {
                time,
                impression_partitions: ip,
                click_partitions: cp,
                events: keyed.into_iter().map(|(_, e)| e).collect(),
            }
        })
}

#[derive(Default)]
struct Collect {
    results: BTreeMap<String, Vec<serde_json::Value>>,
    late: Vec<Vec<u8>>,
    dead: usize,
}

impl Sink for Collect {
    fn send(&mut self, topic: &str, _key: Option<&[u8]>, value: &[u8], _h: &[(&str, &[u8])]) -> anyhow::Result<()> {
        match topic {
            "late" => self.late.push(value.to_vec()),
            "dlq" => self.dead += 1,
            _ => self.results.entry(topic.to_owned()).or_default().push(serde_json::from_slice(value)?),
        }
        Ok(())
    }
}

fn window(ts: i64, size: i64) -> i64 {
    ts.div_euclid(size) * size
}

/// The SPEC rule, restated: an event is late if, when it is read, the watermark (the minimum
/// over partitions of their largest event time so far, minus the out-of-orderness) has reached
/// its window's end plus the allowed lateness. No partition is idle here.
fn late_by_spec(case: &Case) -> Vec<bool> {
    let parts = case.impression_partitions + case.click_partitions;
    let mut max_ts = vec![i64::MIN; parts];
    case.events
        .iter()
        .map(|e| {
            let wm = max_ts.iter().min().copied().unwrap_or(i64::MIN).saturating_sub(case.time.out_of_orderness_ms);
            let end = window(e.ts, case.time.window_ms) + case.time.window_ms;
            let late = end + case.time.allowed_lateness_ms <= wm;
            max_ts[e.partition] = max_ts[e.partition].max(e.ts);
            late
        })
        .collect()
}

fn run(case: &Case) -> Result<(), TestCaseError> {
    let aggregators: Vec<Box<dyn Aggregator>> = vec![
        Box::new(NativeAggregator::<ctr::Ctr>::new("ctr", "ctr")),
        Box::new(NativeAggregator::<engagement::Engagement>::new("engagement", "engagement")),
    ];
    let topics = OutputTopics {
        late: "late".into(),
        dead_letter: "dlq".into(),
        plugin_errors: "errors".into(),
        ..OutputTopics::with_prefix("")
    };
    // A small batch size, so that windows close between batches too.
    let mut pipeline = Pipeline::with_aggregators(case.time, aggregators, 7, topics);
    let now = Instant::now();
    for p in 0..case.impression_partitions + case.click_partitions {
        let source = if p < case.impression_partitions { Source::Impressions } else { Source::Clicks };
        pipeline.add_partition(source, "t", p as i32, now);
    }
    let mut sink = Collect::default();
    let payloads: Vec<String> = case.events.iter().enumerate().map(|(n, e)| e.json(n)).collect();
    for (n, (e, payload)) in case.events.iter().zip(&payloads).enumerate() {
        let input = Input { partition: e.partition, offset: n as i64, key: None, payload: payload.as_bytes() };
        pipeline.ingest(input, now, &mut sink).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
    pipeline.finish(&mut sink).map_err(|e| TestCaseError::fail(e.to_string()))?;

    // Late: exactly the SPEC's, each once.
    let expected_late = late_by_spec(case);
    let late_set: HashSet<&[u8]> = sink.late.iter().map(Vec::as_slice).collect();
    prop_assert_eq!(late_set.len(), sink.late.len(), "a late event was routed twice");
    for (i, late) in expected_late.iter().enumerate() {
        prop_assert_eq!(late_set.contains(payloads[i].as_bytes()), *late, "event {} {:?}", i, case.events[i]);
    }
    prop_assert_eq!(sink.dead, 0);

    // Batch computation over the events that were not late.
    let size = case.time.window_ms;
    let on_time: Vec<&Ev> = case.events.iter().zip(&expected_late).filter(|(_, l)| !**l).map(|(e, _)| e).collect();
    let imps: HashMap<usize, &Ev> = on_time.iter().filter(|e| !e.click).map(|e| (e.id, *e)).collect();
    let mut ctr: BTreeMap<(String, i64), (u64, u64)> = BTreeMap::new();
    let mut eng: BTreeMap<(String, i64), (u64, HashSet<u8>)> = BTreeMap::new();
    for e in &on_time {
        if e.click {
            let hit = imps.get(&e.id).filter(|i| i.ts <= e.ts && i.ts >= e.ts - case.time.join_horizon_ms);
            if let Some(i) = hit {
                ctr.entry((format!("c{}", i.campaign), window(e.ts, size))).or_default().1 += 1;
            }
        } else {
            ctr.entry((format!("c{}", e.campaign), window(e.ts, size))).or_default().0 += 1;
            let d = eng.entry((format!("d{}", e.device), window(e.ts, size))).or_default();
            d.0 += 1;
            d.1.insert(e.user);
        }
    }
    let start = |v: &serde_json::Value| {
        let s = v["window_start"].as_str().unwrap();
        adstream_abi::time::parse_rfc3339_millis(s).unwrap()
    };
    let mut got_ctr = BTreeMap::new();
    for v in sink.results.get("ctr").into_iter().flatten() {
        let key = (v["campaign_id"].as_str().unwrap().to_owned(), start(v));
        let counts = (v["impressions"].as_u64().unwrap(), v["clicks"].as_u64().unwrap());
        prop_assert!(got_ctr.insert(key, counts).is_none(), "a window emitted twice");
    }
    prop_assert_eq!(got_ctr, ctr);
    let mut got_eng = BTreeMap::new();
    for v in sink.results.get("engagement").into_iter().flatten() {
        let key = (v["device_type"].as_str().unwrap().to_owned(), start(v));
        got_eng.insert(key, (v["impressions"].as_u64().unwrap(), v["unique_users"].as_u64().unwrap()));
    }
    let want_eng: BTreeMap<_, _> = eng.into_iter().map(|(k, (n, u))| (k, (n, u.len() as u64))).collect();
    prop_assert_eq!(got_eng, want_eng);

    // Conservation.
    let stats = pipeline.stats();
    prop_assert_eq!(stats.accounted(), stats.consumed);
    prop_assert_eq!(stats.consumed as usize, case.events.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn windows_equal_the_batch_computation_over_events_not_late(case in case()) {
        run(&case)?;
    }
}
