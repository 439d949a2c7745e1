//! The expected results, computed from the generated JSONL files by a plain batch computation
//! written independently of the host: its own validation, its own timestamp parsing (chrono),
//! its own windowing and join, straight from SPEC.md.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde_json::Value;

/// The host's default window: tumbling, 1 minute.
pub const WINDOW_MS: i64 = 60_000;
pub const HORIZON_MS: i64 = 600_000;
pub const OUT_OF_ORDERNESS_MS: i64 = 5_000;
/// The generator delays late events by 3 to 5 minutes and jitters the others by at most 3 s:
/// an event this far behind the newest event before it in its file is late, whatever the
/// interleaving of partitions.
pub const LATE_THRESHOLD_MS: i64 = 90_000;

#[derive(Clone, Debug)]
pub struct Impression {
    pub id: String,
    pub user: String,
    pub campaign: String,
    pub device: String,
    pub ts: i64,
    pub cost: f64,
}

#[derive(Clone, Debug)]
pub struct Click {
    pub impression_id: String,
    pub ts: i64,
}

/// Windows `[start, start + size)` aligned to the epoch, one starting every `slide` (tumbling
/// when the slide is the size): SPEC "Time", as `--window` and `--slide` set them.
#[derive(Clone, Copy, Debug)]
pub struct Windows {
    pub size: i64,
    pub slide: i64,
}

impl Default for Windows {
    fn default() -> Self {
        Windows { size: WINDOW_MS, slide: WINDOW_MS }
    }
}

impl Windows {
    /// The starts of every window that holds an event of time `ts`, oldest first.
    pub fn of(self, ts: i64) -> impl Iterator<Item = i64> {
        let last = ts.div_euclid(self.slide) * self.slide;
        (0..self.size / self.slide).rev().map(move |k| last - k * self.slide)
    }
}

/// The generated input, classified.
#[derive(Debug, Default)]
pub struct Inputs {
    pub impressions: Vec<Impression>,
    pub clicks: Vec<Click>,
    pub messages: usize,
    pub malformed: usize,
    pub late: usize,
    /// On-time events whose id (`impression_id`, `click_id`) and event time came before in their
    /// file: a retrying producer's copies (`adgen --duplicate-fraction`), not in
    /// [`Inputs::impressions`] or [`Inputs::clicks`].
    pub duplicates: usize,
    /// The event times of those copies.
    pub duplicate_times: Vec<i64>,
    /// Largest event time of any valid event.
    pub max_ts: i64,
    /// The windows the results are computed over (1-minute tumbling unless [`Inputs::windows`]).
    pub windows: Windows,
}

/// Expected results, (key, window start) → figures, over windows of `window_ms`.
#[derive(Debug)]
pub struct Want<V> {
    pub by_window: BTreeMap<(String, i64), V>,
    pub window_ms: i64,
}

impl<V> std::ops::Deref for Want<V> {
    type Target = BTreeMap<(String, i64), V>;
    fn deref(&self) -> &Self::Target {
        &self.by_window
    }
}

fn ts_of(v: &Value) -> Option<i64> {
    let ms = match v {
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s).ok()?.timestamp_millis(),
        Value::Number(n) => n.as_i64()?,
        _ => return None,
    };
    let range = chrono::DateTime::parse_from_rfc3339("2000-01-01T00:00:00Z").unwrap().timestamp_millis()
        ..chrono::DateTime::parse_from_rfc3339("2100-01-01T00:00:00Z").unwrap().timestamp_millis();
    range.contains(&ms).then_some(ms)
}

fn text(o: &serde_json::Map<String, Value>, field: &str) -> Option<String> {
    o.get(field)?.as_str().filter(|s| !s.is_empty()).map(str::to_owned)
}

fn read_lines(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines: Vec<Vec<u8>> = bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    if lines.last().is_some_and(Vec::is_empty) {
        lines.pop();
    }
    lines
}

/// Which valid events count as late.
pub enum Late<'a> {
    /// The generator's late events: far behind the newest event before them in their file.
    /// Exact for `replay`, which reads the files in step.
    Designated,
    /// The messages the host actually routed to the late topic (their exact bytes). A live run
    /// decides lateness by the watermark at the moment it reads an event, which depends on how
    /// the consumer interleaves partitions; every such message must still be one the generator
    /// made late (checked by `load`).
    Routed(&'a HashSet<Vec<u8>>),
}

impl Inputs {
    /// Reads `dir/ad-impressions.jsonl` and `dir/ad-clicks.jsonl`.
    pub fn load(dir: &Path, late: Late<'_>) -> Inputs {
        let impressions = read_lines(&dir.join("ad-impressions.jsonl"));
        Inputs::of_messages(&impressions, &read_lines(&dir.join("ad-clicks.jsonl")), late)
    }

    /// The input made of these messages of each topic, in order.
    pub fn of_messages(impressions: &[Vec<u8>], clicks: &[Vec<u8>], late: Late<'_>) -> Inputs {
        let mut inputs = Inputs { max_ts: i64::MIN, ..Default::default() };
        let is_late = |line: &[u8], ts: i64, newest: &mut i64| {
            let designated = ts < newest.saturating_sub(LATE_THRESHOLD_MS);
            *newest = (*newest).max(ts);
            match late {
                Late::Designated => designated,
                Late::Routed(set) => {
                    let routed = set.contains(line);
                    assert!(
                        !routed || designated,
                        "an on-time event was routed to the late topic: {}",
                        String::from_utf8_lossy(line)
                    );
                    routed
                }
            }
        };
        let mut newest = i64::MIN;
        let mut ids = HashSet::new();
        for line in impressions {
            inputs.messages += 1;
            let parsed = serde_json::from_slice::<Value>(line).ok();
            let imp = parsed.as_ref().and_then(Value::as_object).and_then(|o| {
                let cost = o.get("cost")?.as_f64().filter(|c| *c >= 0.0)?;
                for f in ["ad_id", "browser"] {
                    text(o, f)?;
                }
                Some(Impression {
                    id: text(o, "impression_id")?,
                    user: text(o, "user_id")?,
                    campaign: text(o, "campaign_id")?,
                    device: text(o, "device_type")?,
                    ts: ts_of(o.get("event_timestamp")?)?,
                    cost,
                })
            });
            match imp {
                None => inputs.malformed += 1,
                Some(i) => {
                    inputs.max_ts = inputs.max_ts.max(i.ts);
                    if is_late(line, i.ts, &mut newest) {
                        inputs.late += 1;
                    } else if !ids.insert((i.id.clone(), i.ts)) {
                        inputs.duplicates += 1;
                        inputs.duplicate_times.push(i.ts);
                    } else {
                        inputs.impressions.push(i);
                    }
                }
            }
        }
        let mut newest = i64::MIN;
        let mut ids = HashSet::new();
        for line in clicks {
            inputs.messages += 1;
            let parsed = serde_json::from_slice::<Value>(line).ok();
            let click = parsed.as_ref().and_then(Value::as_object).and_then(|o| {
                text(o, "user_id")?;
                let id = text(o, "click_id")?;
                Some((id, Click { impression_id: text(o, "impression_id")?, ts: ts_of(o.get("event_timestamp")?)? }))
            });
            match click {
                None => inputs.malformed += 1,
                Some((id, c)) => {
                    inputs.max_ts = inputs.max_ts.max(c.ts);
                    if is_late(line, c.ts, &mut newest) {
                        inputs.late += 1;
                    } else if !ids.insert((id, c.ts)) {
                        inputs.duplicates += 1;
                        inputs.duplicate_times.push(c.ts);
                    } else {
                        inputs.clicks.push(c);
                    }
                }
            }
        }
        inputs
    }

    /// The same input over other windows: `size` long, one every `slide`.
    pub fn windows(mut self, size: i64, slide: i64) -> Inputs {
        assert!(slide > 0 && size % slide == 0, "the slide divides the size");
        self.windows = Windows { size, slide };
        self
    }

    /// Windows a live run has emitted once every partition went idle: those whose end is at
    /// most the largest event time minus the out-of-orderness. `None` for all (replay).
    pub fn emitted_by_idle_watermark(&self) -> i64 {
        self.max_ts - OUT_OF_ORDERNESS_MS
    }

    /// The campaign of each valid click (None if unattributed).
    fn attributions(&self) -> Vec<Option<&Impression>> {
        let by_id: HashMap<&str, Vec<&Impression>> = self.impressions.iter().fold(HashMap::new(), |mut m, i| {
            m.entry(i.id.as_str()).or_default().push(i);
            m
        });
        self.clicks
            .iter()
            .map(|c| {
                by_id
                    .get(c.impression_id.as_str())
                    .and_then(|cands| cands.iter().copied().find(|i| i.ts <= c.ts && i.ts >= c.ts - HORIZON_MS))
            })
            .collect()
    }

    pub fn unattributed_clicks(&self) -> usize {
        self.attributions().iter().filter(|a| a.is_none()).count()
    }

    /// The starts of the windows of an event of time `ts` that a run bounded by `limit` has
    /// closed (every one of them with `None`).
    fn windows_of(&self, ts: i64, limit: Option<i64>) -> impl Iterator<Item = i64> {
        let size = self.windows.size;
        self.windows.of(ts).filter(move |w| limit.is_none_or(|l| w + size <= l))
    }

    fn want<V>(&self, by_window: BTreeMap<(String, i64), V>) -> Want<V> {
        Want { by_window, window_ms: self.windows.size }
    }

    /// (campaign, window start) → (impressions, clicks).
    pub fn ctr(&self, limit: Option<i64>) -> Want<(u64, u64)> {
        let mut out: BTreeMap<(String, i64), (u64, u64)> = BTreeMap::new();
        for i in &self.impressions {
            for w in self.windows_of(i.ts, limit) {
                out.entry((i.campaign.clone(), w)).or_default().0 += 1;
            }
        }
        for (c, imp) in self.clicks.iter().zip(self.attributions()) {
            let Some(imp) = imp else { continue };
            for w in self.windows_of(c.ts, limit) {
                out.entry((imp.campaign.clone(), w)).or_default().1 += 1;
            }
        }
        self.want(out)
    }

    /// (device, window start) → (impressions, distinct users).
    pub fn engagement(&self, limit: Option<i64>) -> Want<(u64, u64)> {
        let mut users: BTreeMap<(String, i64), (u64, HashSet<&str>)> = BTreeMap::new();
        for i in &self.impressions {
            for w in self.windows_of(i.ts, limit) {
                let e = users.entry((i.device.clone(), w)).or_default();
                e.0 += 1;
                e.1.insert(&i.user);
            }
        }
        self.want(users.into_iter().map(|(k, (n, u))| (k, (n, u.len() as u64))).collect())
    }

    /// (campaign, window start) → (impressions, total cost).
    pub fn spend(&self, limit: Option<i64>) -> Want<(u64, f64)> {
        let mut out: BTreeMap<(String, i64), (u64, f64)> = BTreeMap::new();
        for i in &self.impressions {
            for w in self.windows_of(i.ts, limit) {
                let e = out.entry((i.campaign.clone(), w)).or_default();
                e.0 += 1;
                e.1 += i.cost;
            }
        }
        self.want(out)
    }
}

/// What a window's completeness record must say: events counted (impressions, and clicks
/// attributed to one), late events, duplicates, unattributed clicks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Completeness {
    pub events: u64,
    pub late: u64,
    pub duplicates: u64,
    pub unattributed: u64,
}

impl Inputs {
    /// Window start → what its completeness record must say, for the windows a run bounded by
    /// `limit` has closed; `late` are the late topic's messages (their original bytes).
    pub fn completeness(&self, limit: Option<i64>, late: &[Vec<u8>]) -> BTreeMap<i64, Completeness> {
        let mut out: BTreeMap<i64, Completeness> = BTreeMap::new();
        for ((_, w), (imps, clicks)) in self.ctr(limit).by_window {
            out.entry(w).or_default().events += imps + clicks;
        }
        for &ts in &self.duplicate_times {
            for w in self.windows_of(ts, limit) {
                out.entry(w).or_default().duplicates += 1;
            }
        }
        for (c, imp) in self.clicks.iter().zip(self.attributions()) {
            if imp.is_none() {
                for w in self.windows_of(c.ts, limit) {
                    out.entry(w).or_default().unattributed += 1;
                }
            }
        }
        for bytes in late {
            let v: Value = serde_json::from_slice(bytes).expect("a late event is a valid event");
            let ts = ts_of(&v["event_timestamp"]).expect("a late event has its time");
            for w in self.windows_of(ts, limit) {
                out.entry(w).or_default().late += 1;
            }
        }
        out
    }
}

/// Checks the completeness records of a run (`records`: in publication order, so that the last
/// of each window is the one that stands) against `want` ([`Inputs::completeness`] of a run
/// bounded by `limit`): every window of `want` has one, with those figures, and no other window
/// that `limit` closes has one; revisions go up by one; each names the plugins loaded with the
/// SHA-256 of their files (`hashes`: name → hex, from [`super::plugin_hashes`]), and the tasks
/// that contributed. `Err` says what differs.
pub fn check_completeness(
    records: &[Value],
    want: &BTreeMap<i64, Completeness>,
    limit: Option<i64>,
    hashes: &BTreeMap<String, String>,
) -> Result<(), String> {
    let mut last: BTreeMap<i64, &Value> = BTreeMap::new();
    for v in records {
        let (start, length) = window_and_length_of(v);
        if limit.is_none_or(|l| start + length <= l) && !want.contains_key(&start) {
            return Err(format!("a record of a window the run has nothing of: {v}"));
        }
        let revision = v["revision"].as_u64().ok_or_else(|| format!("no revision in {v}"))?;
        let before = last.get(&start).map(|p| p["revision"].as_u64().unwrap_or(0) + 1).unwrap_or(0);
        if revision != before {
            return Err(format!("revision {revision} after {before} records of that window: {v}"));
        }
        last.insert(start, v);
    }
    let want_hashes: BTreeMap<&str, &str> = hashes.iter().map(|(n, h)| (n.as_str(), h.as_str())).collect();
    for (&start, expected) in want {
        let v = last.get(&start).ok_or_else(|| format!("no completeness record of window {start}"))?;
        let n = |k: &str| v[k].as_u64().unwrap_or(u64::MAX);
        let got = Completeness {
            events: n("events"),
            late: n("late"),
            duplicates: n("duplicates"),
            unattributed: n("unattributed_clicks"),
        };
        if got != *expected {
            return Err(format!("window {start}: the record says {got:?}, the run {expected:?}: {v}"));
        }
        let named: BTreeMap<&str, &str> = v["plugins"]
            .as_array()
            .map(|a| a.iter().map(|p| (p["name"].as_str().unwrap_or(""), p["sha256"].as_str().unwrap_or(""))).collect())
            .unwrap_or_default();
        if named != want_hashes {
            return Err(format!("window {start}: plugins {named:?}, loaded {want_hashes:?}"));
        }
        if expected.events > 0 && v["tasks"].as_array().is_none_or(Vec::is_empty) {
            return Err(format!("window {start}: no contributing task in {v}"));
        }
    }
    Ok(())
}

/// Window start and length of a result record, parsed independently.
fn window_and_length_of(v: &Value) -> (i64, i64) {
    let start = chrono::DateTime::parse_from_rfc3339(v["window_start"].as_str().expect("window_start")).unwrap();
    let end = chrono::DateTime::parse_from_rfc3339(v["window_end"].as_str().expect("window_end")).unwrap();
    (start.timestamp_millis(), end.timestamp_millis() - start.timestamp_millis())
}

/// Window start of a result record of the default 1-minute windows.
pub fn window_of(v: &Value) -> i64 {
    let (start, length) = window_and_length_of(v);
    assert_eq!(length, WINDOW_MS, "window length in {v}");
    start
}

/// Window start of a result record expected over `want`'s windows.
fn window_in<V>(v: &Value, want: &Want<V>) -> i64 {
    let (start, length) = window_and_length_of(v);
    assert_eq!(length, want.window_ms, "window length in {v}");
    start
}

/// Checks result records of the ctr plugin against the expectation: every (campaign, window)
/// exactly once, with the right numbers, and nothing else.
pub fn check_ctr(records: &[Value], want: &Want<(u64, u64)>) {
    let mut got = BTreeMap::new();
    for v in records {
        let key = (v["campaign_id"].as_str().expect("campaign_id").to_owned(), window_in(v, want));
        let (imps, clicks) = (v["impressions"].as_u64().unwrap(), v["clicks"].as_u64().unwrap());
        let ctr = v["ctr"].as_f64();
        let want_ctr = (imps > 0).then(|| clicks as f64 / imps as f64);
        assert_eq!(ctr, want_ctr, "ctr of {v}");
        assert!(got.insert(key.clone(), (imps, clicks)).is_none(), "duplicate ctr result for {key:?}");
    }
    assert_maps_equal("ctr", &got, &want.by_window);
}

pub fn check_engagement(records: &[Value], want: &Want<(u64, u64)>) {
    let mut got = BTreeMap::new();
    for v in records {
        let key = (v["device_type"].as_str().expect("device_type").to_owned(), window_in(v, want));
        let counts = (v["impressions"].as_u64().unwrap(), v["unique_users"].as_u64().unwrap());
        assert!(got.insert(key.clone(), counts).is_none(), "duplicate engagement result for {key:?}");
    }
    assert_maps_equal("engagement", &got, &want.by_window);
}

pub fn check_spend(records: &[Value], want: &Want<(u64, f64)>) {
    let mut seen = HashSet::new();
    for v in records {
        let key = (v["campaign_id"].as_str().expect("campaign_id").to_owned(), window_in(v, want));
        assert!(seen.insert(key.clone()), "duplicate spend result for {key:?}");
        let (imps, cost) = want.get(&key).unwrap_or_else(|| panic!("unexpected spend result {v}"));
        assert_eq!(v["impressions"].as_u64(), Some(*imps), "{v}");
        let got_cost = v["cost"].as_f64().unwrap();
        assert!((got_cost - cost).abs() <= 1e-9 * cost.max(1.0), "cost {got_cost} != {cost} in {v}");
        let cpm = v["cpm"].as_f64().unwrap();
        assert!((cpm - cost * 1000.0 / *imps as f64).abs() <= 1e-6, "cpm of {v}");
    }
    assert_eq!(seen.len(), want.len(), "spend: {} results, {} expected", seen.len(), want.len());
}

fn assert_maps_equal<V: PartialEq + std::fmt::Debug>(
    what: &str,
    got: &BTreeMap<(String, i64), V>,
    want: &BTreeMap<(String, i64), V>,
) {
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).take(5).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).take(5).collect();
    let wrong: Vec<_> = want
        .iter()
        .filter_map(|(k, v)| got.get(k).filter(|g| *g != v).map(|g| (k, format!("got {g:?}, expected {v:?}"))))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && wrong.is_empty(),
        "{what}: {} results, {} expected; missing {missing:?}; extra {extra:?}; wrong {wrong:?}",
        got.len(),
        want.len()
    );
}
