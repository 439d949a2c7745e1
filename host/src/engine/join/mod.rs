//! The click-to-impression join (SPEC "Results": a click is attributed through its
//! `impression_id` to an impression whose event time is at most the click's and at least the
//! click's minus the join horizon).
//!
//! The host keeps the join, not the plugins: every plugin that wants clicks gets them already
//! enriched with their impression's campaign, ad, device and browser, the state is bounded by
//! the horizon in one place, and it is rebuilt on restart by re-reading the input.
//!
//! Determinism: an impression that arrives after its window was emitted is late and never
//! joins, and a click's window is emitted only once the watermark passed its end, so when a
//! click's window closes every impression that could match it has either arrived or is late.
//! Clicks that find no impression on arrival wait (as *pending*) until their window closes;
//! then they are counted as unattributed.
//!
//! Repeats (a producer's retried copies). A copy has its original's id *and* event time. The
//! task asks [`Join::holds`] before it counts an impression: one the join keeps with the same id
//! and time is a repeat, dropped (unless `--keep-duplicates`). The join keeps an impression for
//! at least the horizon after its event time, longer than a copy can come without being late, and
//! the copy's time names the one bucket to look in: the check costs no memory of its own, and one
//! lookup that the impression's own insertion then finds in the cache. An id reused at another
//! time is another event: counted, and a click matches the newest kept impression with its id
//! whose time it can match (within one minute of event time, the later arrival). Click ids are
//! not kept by the join, so [`Join::first_click`] keeps them, bucketed and expired like the
//! impressions. The order of arrival is the input's, so a restart, which re-reads every
//! impression the join kept and every click of an open window, decides the same.

mod bucket;
mod index;
mod record;

use std::collections::BTreeMap;

use hashbrown::{DefaultHashBuilder, HashMap};

use self::bucket::{Bucket, ClickIds};
use self::record::PackedId;
use crate::event::{Click, Impression};

/// Impressions are kept in buckets of this much event time, so that expiry drops whole buckets
/// (and their memory) at once instead of scanning every impression.
const BUCKET_MS: i64 = 60_000;

/// What a click learns of the impression it matched.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ImpressionInfo<'a> {
    pub event_time_ms: i64,
    pub cost: f64,
    pub campaign_id: &'a str,
    pub ad_id: &'a str,
    pub device_type: &'a str,
    pub browser: &'a str,
}

/// A click waiting for its impression.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingClick {
    pub window_start_ms: i64,
    pub event_time_ms: i64,
    pub user_id: Box<str>,
}

/// A click matched to its impression, ready for the plugins.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JoinedClick<'a> {
    pub window_start_ms: i64,
    pub event_time_ms: i64,
    pub user_id: &'a str,
    pub impression: ImpressionInfo<'a>,
}

/// Join state: impressions within the horizon and clicks waiting for theirs.
#[derive(Debug)]
pub struct Join {
    horizon_ms: i64,
    /// Impressions that a future, non-late click could still match, by bucket start.
    buckets: BTreeMap<i64, Bucket>,
    /// Clicks whose impression has not arrived, by the `impression_id` they clicked.
    pending: HashMap<Box<str>, Vec<PendingClick>>,
    /// Click ids seen, with the first one's event time (see [`Join::first_click`]), by bucket
    /// of that time, dropped with the impression buckets of the same time.
    click_ids: BTreeMap<i64, ClickIds>,
    /// Seeded per process: ids come from outside, so the hash must not be predictable.
    hasher: DefaultHashBuilder,
    /// The last bucket expired, kept to be reused by the next new one.
    spare: Option<Bucket>,
}

impl Join {
    pub fn new(horizon_ms: i64) -> Self {
        Join {
            horizon_ms,
            buckets: BTreeMap::new(),
            pending: HashMap::new(),
            click_ids: BTreeMap::new(),
            hasher: DefaultHashBuilder::default(),
            spare: None,
        }
    }

    fn matches(&self, impression_time_ms: i64, click_time_ms: i64) -> bool {
        impression_time_ms <= click_time_ms && impression_time_ms >= click_time_ms.saturating_sub(self.horizon_ms)
    }

    /// Adds an impression and hands every pending click it matches to `on_click`.
    pub fn add_impression(&mut self, imp: &Impression<'_>, mut on_click: impl FnMut(JoinedClick<'_>)) {
        if !self.pending.is_empty()
            && let Some(mut waiting) = self.pending.remove(imp.impression_id.as_ref())
        {
            let info = ImpressionInfo {
                event_time_ms: imp.event_time_ms,
                cost: imp.cost,
                campaign_id: &imp.campaign_id,
                ad_id: &imp.ad_id,
                device_type: &imp.device_type,
                browser: &imp.browser,
            };
            waiting.retain(|c| {
                let hit = self.matches(info.event_time_ms, c.event_time_ms);
                if hit {
                    on_click(JoinedClick {
                        window_start_ms: c.window_start_ms,
                        event_time_ms: c.event_time_ms,
                        user_id: &c.user_id,
                        impression: info,
                    });
                }
                !hit
            });
            if !waiting.is_empty() {
                self.pending.insert(imp.impression_id.as_ref().into(), waiting);
            }
        }
        let start = imp.event_time_ms.div_euclid(BUCKET_MS) * BUCKET_MS;
        if !self.buckets.contains_key(&start) {
            // Sized like the largest bucket kept (the newest one may still be filling): at a
            // steady rate, no growing and rehashing. And made of the last expired bucket's
            // memory: a minute's worth of allocations freed and taken again every minute
            // fragments the heap (the soak saw RSS creep up by that).
            let like = self.buckets.values().map(Bucket::size).reduce(|a, b| (a.0.max(b.0), a.1.max(b.1)));
            let mut bucket = self.spare.take().unwrap_or_default();
            bucket.recycle(like.unwrap_or_default());
            self.buckets.insert(start, bucket);
        }
        self.buckets.get_mut(&start).expect("inserted above").insert(&self.hasher, start, imp);
    }

    /// Whether an impression with this id and event time is kept: then this one is a repeat.
    /// (If the id came twice in its bucket at different times, only the later one is found.)
    pub fn holds(&self, impression_id: &str, event_time_ms: i64) -> bool {
        let start = event_time_ms.div_euclid(BUCKET_MS) * BUCKET_MS;
        let Some(bucket) = self.buckets.get(&start) else {
            return false;
        };
        let id = PackedId::of(impression_id.as_bytes());
        bucket.get(id.hash(&self.hasher), &id, start).is_some_and(|i| i.event_time_ms == event_time_ms)
    }

    /// Remembers a click's id and time until the impressions of its time are forgotten; `false`
    /// if a click with this id and time was seen before: this one is a repeat.
    pub fn first_click(&mut self, click_id: &str, click_time_ms: i64) -> bool {
        let start = click_time_ms.div_euclid(BUCKET_MS) * BUCKET_MS;
        let offset_ms = u16::try_from(click_time_ms - start).expect("the time lies in the bucket");
        self.click_ids.entry(start).or_default().first(&self.hasher, click_id, offset_ms)
    }

    /// The newest kept impression with this id that a click at `click_time_ms` can match.
    fn find(&self, impression_id: &str, click_time_ms: i64) -> Option<ImpressionInfo<'_>> {
        let (from, to) = (click_time_ms.saturating_sub(self.horizon_ms), click_time_ms);
        let id = PackedId::of(impression_id.as_bytes());
        let hash = id.hash(&self.hasher);
        self.buckets
            .range(from.div_euclid(BUCKET_MS) * BUCKET_MS..=to)
            .rev()
            .filter_map(|(&start, b)| b.get(hash, &id, start))
            .find(|i| self.matches(i.event_time_ms, click_time_ms))
    }

    /// Matches a click; if its impression is not there yet, keeps it pending and returns `None`.
    pub fn add_click<'s>(&'s mut self, click: &'s Click<'_>, window_start_ms: i64) -> Option<JoinedClick<'s>> {
        if self.find(&click.impression_id, click.event_time_ms).is_none() {
            self.pending.entry(click.impression_id.as_ref().into()).or_default().push(PendingClick {
                window_start_ms,
                event_time_ms: click.event_time_ms,
                user_id: click.user_id.as_ref().into(),
            });
            return None;
        }
        // Looked up again rather than kept from above: returning that borrow on one branch and
        // mutating `pending` on the other is beyond today's borrow checker. Clicks are ~3% of events.
        let impression = self.find(&click.impression_id, click.event_time_ms)?;
        Some(JoinedClick { window_start_ms, event_time_ms: click.event_time_ms, user_id: &click.user_id, impression })
    }

    /// Window `window_start_ms` is being emitted: its pending clicks will never be attributed.
    /// Returns how many there were.
    pub fn close_window(&mut self, window_start_ms: i64) -> u64 {
        let mut unattributed = 0;
        self.pending.retain(|_, clicks| {
            let before = clicks.len();
            clicks.retain(|c| c.window_start_ms != window_start_ms);
            unattributed += (before - clicks.len()) as u64;
            !clicks.is_empty()
        });
        unattributed
    }

    /// Forgets impressions no future non-late click can match: those with
    /// `event time + horizon < cutoff_ms`, where `cutoff_ms` is the start of the oldest window
    /// still open. Whole buckets go at once, so up to a bucket's worth more than that is kept;
    /// [`Join::find`] checks the time of every match, so keeping more never changes a result.
    pub fn expire(&mut self, cutoff_ms: i64) {
        let horizon = self.horizon_ms;
        let kept = |start: i64| (start + BUCKET_MS - 1).saturating_add(horizon) >= cutoff_ms;
        while let Some((&start, _)) = self.buckets.first_key_value() {
            if kept(start) {
                break;
            }
            self.spare = self.buckets.pop_first().map(|(_, b)| b);
        }
        while self.click_ids.first_key_value().is_some_and(|(&start, _)| !kept(start)) {
            self.click_ids.pop_first();
        }
    }

    /// Impressions kept for the join.
    pub fn impressions(&self) -> usize {
        self.buckets.values().map(Bucket::len).sum()
    }

    /// Clicks waiting for their impression.
    pub fn pending_clicks(&self) -> usize {
        self.pending.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn imp(id: &str, ts: i64, campaign: &str) -> Impression<'static> {
        Impression {
            impression_id: Cow::Owned(id.into()),
            user_id: "u".into(),
            campaign_id: Cow::Owned(campaign.into()),
            ad_id: "a".into(),
            device_type: "mobile".into(),
            browser: "chrome".into(),
            event_time_ms: ts,
            cost: 0.1,
        }
    }

    fn click(impression: &str, ts: i64) -> Click<'static> {
        Click {
            click_id: "k".into(),
            impression_id: Cow::Owned(impression.into()),
            user_id: "u9".into(),
            event_time_ms: ts,
        }
    }

    #[test]
    fn attributes_within_the_horizon_in_either_arrival_order() {
        let mut j = Join::new(600_000);
        j.add_impression(&imp("i1", 1_000, "c1"), |_| panic!("nothing pending"));
        let c = click("i1", 2_000);
        assert_eq!(j.add_click(&c, 0).map(|m| m.impression.campaign_id.to_string()), Some("c1".into()));
        // Click first, impression later.
        let early = click("i2", 5_000);
        assert!(j.add_click(&early, 0).is_none());
        let mut released = Vec::new();
        j.add_impression(&imp("i2", 4_000, "c2"), |m| {
            released.push((m.event_time_ms, m.impression.campaign_id.to_string()))
        });
        assert_eq!(released, [(5_000, "c2".to_string())]);
        assert_eq!(j.pending_clicks(), 0);
    }

    #[test]
    fn refuses_matches_outside_the_horizon_and_counts_unattributed() {
        let mut j = Join::new(10_000);
        j.add_impression(&imp("i1", 1_000, "c1"), |_| {});
        let too_late = click("i1", 11_001);
        assert!(j.add_click(&too_late, 0).is_none());
        let before = click("i1", 999);
        assert!(j.add_click(&before, 0).is_none(), "an impression after the click never matches");
        let exact = click("i1", 11_000);
        assert!(j.add_click(&exact, 0).is_some(), "the horizon bound is inclusive");
        assert_eq!(j.pending_clicks(), 2);
        assert_eq!(j.close_window(60_000), 0);
        assert_eq!(j.close_window(0), 2);
        assert_eq!(j.pending_clicks(), 0);
    }

    #[test]
    fn expires_whole_buckets_beyond_the_horizon() {
        let mut j = Join::new(10_000);
        j.add_impression(&imp("old", 1_000, "c1"), |_| {});
        j.add_impression(&imp("new", 70_000, "c2"), |_| {});
        j.expire(69_999);
        assert_eq!(j.impressions(), 2, "59_999 + 10_000 is still >= the cutoff");
        j.expire(70_000);
        assert_eq!(j.impressions(), 1);
        assert_eq!(j.buckets.len(), 1, "the old bucket and its labels are gone");
        // Its memory makes the next new bucket, emptied.
        j.add_impression(&imp("next", 130_000, "c3"), |_| {});
        assert!(j.spare.is_none());
        assert_eq!(j.impressions(), 2);
        assert!(j.add_click(&click("old", 130_001), 0).is_none());
        let c = click("next", 130_001);
        assert_eq!(j.add_click(&c, 0).map(|m| m.impression.campaign_id), Some("c3"));
    }

    #[test]
    fn the_same_id_at_the_same_time_is_a_repeat_until_its_bucket_expires() {
        let mut j = Join::new(10_000);
        assert!(!j.holds("i1", 1_000));
        j.add_impression(&imp("i1", 1_000, "c1"), |_| {});
        assert!(j.holds("i1", 1_000), "a retried copy");
        assert!(!j.holds("i2", 1_000) && !j.holds("i", 1_000), "another id");
        assert!(!j.holds("i1", 1_001) && !j.holds("i1", 61_000), "the id at another time: another event");
        assert!(j.first_click("k1", 2_000));
        assert!(!j.first_click("k1", 2_000), "a retried click");
        assert!(j.first_click("k1", 2_001) && j.first_click("k1", 65_000), "the id at another time");
        assert!(!j.first_click("k1", 2_000), "the first one is remembered");
        // A copy of an impression in an older bucket is found too.
        j.add_impression(&imp("i2", 61_000, "c1"), |_| {});
        assert!(j.holds("i1", 1_000) && j.holds("i2", 61_000));
        j.expire(70_000);
        assert!(!j.holds("i1", 1_000) && j.holds("i2", 61_000), "forgotten with its bucket");
        assert!(j.first_click("k1", 2_000), "forgotten with the impressions of its time");
        assert!(!j.first_click("k1", 65_000));
    }

    #[test]
    fn kept_impressions_past_the_horizon_never_match() {
        let mut j = Join::new(10_000);
        j.add_impression(&imp("i1", 1_000, "c1"), |_| {});
        j.expire(30_000);
        assert_eq!(j.impressions(), 1, "its bucket is still kept");
        assert!(j.add_click(&click("i1", 30_000), 0).is_none(), "but the time check refuses it");
    }

    #[test]
    fn finds_impressions_across_buckets_and_prefers_the_newest_match() {
        let mut j = Join::new(600_000);
        j.add_impression(&imp("i1", 59_999, "c1"), |_| {});
        j.add_impression(&imp("i2", 60_000, "c2"), |_| {});
        j.add_impression(&imp("dup", 1_000, "old"), |_| {});
        j.add_impression(&imp("dup", 200_000, "new"), |_| {});
        let campaign = |j: &mut Join, id: &str, ts: i64| {
            j.add_click(&click(id, ts), 0).map(|m| m.impression.campaign_id.to_owned())
        };
        assert_eq!(campaign(&mut j, "i1", 120_000).as_deref(), Some("c1"));
        assert_eq!(campaign(&mut j, "i2", 120_000).as_deref(), Some("c2"));
        assert_eq!(campaign(&mut j, "dup", 300_000).as_deref(), Some("new"));
        assert_eq!(campaign(&mut j, "dup", 100_000).as_deref(), Some("old"), "the newer one is after this click");
        j.add_impression(&imp("dup", 200_500, "newer"), |_| {});
        assert_eq!(campaign(&mut j, "dup", 300_000).as_deref(), Some("newer"), "same bucket: the later arrival");
        let c = click("i2", 60_001);
        let info = j.add_click(&c, 0).unwrap().impression;
        assert_eq!((info.event_time_ms, info.cost, info.device_type, info.browser), (60_000, 0.1, "mobile", "chrome"));
    }
}

#[cfg(test)]
mod model_tests {
    use super::*;
    use proptest::prelude::*;
    use std::borrow::Cow;

    /// Ids the tests draw from: short ones, UUIDs in both cases, one with letters of both cases.
    const IDS: [&str; 6] = [
        "i1",
        "i2",
        "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
        "3F2504E0-4F89-11D3-9A0C-0305E82C3301",
        "3F2504E0-4f89-11d3-9a0c-0305e82c3301",
        "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
    ];

    proptest! {
        /// Against a plain model of the rule in the module's doc: a click matches, among the
        /// impressions of its id within the horizon, the one in the newest bucket, and within a
        /// bucket the latest arrival; every field comes back exactly.
        #[test]
        fn matches_as_the_plain_model_does(
            impressions in prop::collection::vec((0usize..6, 0i64..400_000, 0u32..3, prop_oneof![Just(0.004237), Just(0.1 + 0.2), (0u32..10_000).prop_map(|n| f64::from(n) / 1e4)]), 0..60),
            clicks in prop::collection::vec((0usize..6, 0i64..500_000), 0..30),
        ) {
            let horizon = 120_000;
            let mut j = Join::new(horizon);
            for &(id, ts, campaign, cost) in &impressions {
                let imp = Impression {
                    impression_id: Cow::Borrowed(IDS[id]),
                    user_id: "u".into(),
                    campaign_id: Cow::Owned(format!("c{campaign}")),
                    ad_id: "a".into(),
                    device_type: "mobile".into(),
                    browser: "chrome".into(),
                    event_time_ms: ts,
                    cost,
                };
                j.add_impression(&imp, |_| {});
            }
            for &(id, click_ts) in &clicks {
                let bucket = |ts: i64| ts.div_euclid(BUCKET_MS);
                let in_horizon = |ts: i64| ts <= click_ts && ts >= click_ts - horizon;
                // The latest arrival of the id per bucket, then the newest bucket whose one matches.
                let mut latest: BTreeMap<i64, (i64, u32, f64)> = BTreeMap::new();
                for &(i, ts, campaign, cost) in &impressions {
                    if i == id {
                        latest.insert(bucket(ts), (ts, campaign, cost));
                    }
                }
                let want = latest.values().rev().find(|(ts, ..)| in_horizon(*ts))
                    .map(|&(ts, campaign, cost)| (ts, format!("c{campaign}"), cost.to_bits()));
                let click = Click { click_id: "k".into(), impression_id: Cow::Borrowed(IDS[id]), user_id: "u".into(), event_time_ms: click_ts };
                let got = j.add_click(&click, 0)
                    .map(|m| (m.impression.event_time_ms, m.impression.campaign_id.to_owned(), m.impression.cost.to_bits()));
                prop_assert_eq!(got, want);
                let held = latest.get(&bucket(click_ts)).is_some_and(|&(ts, ..)| ts == click_ts);
                prop_assert_eq!(j.holds(IDS[id], click_ts), held);
            }
        }
    }
}
