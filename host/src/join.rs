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

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use crate::event::{Click, Impression};

/// What the join keeps of an impression: what a click needs to be attributed and enriched.
#[derive(Clone, Debug, PartialEq)]
pub struct ImpressionInfo {
    pub event_time_ms: i64,
    pub cost: f64,
    pub campaign_id: Rc<str>,
    pub ad_id: Rc<str>,
    pub device_type: Rc<str>,
    pub browser: Rc<str>,
}

/// A click waiting for its impression.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingClick {
    pub window_start_ms: i64,
    pub event_time_ms: i64,
    pub user_id: Box<str>,
}

/// A click matched to its impression, ready for the plugins.
#[derive(Clone, Debug, PartialEq)]
pub struct JoinedClick<'a> {
    pub window_start_ms: i64,
    pub event_time_ms: i64,
    pub user_id: &'a str,
    pub impression: &'a ImpressionInfo,
}

/// Join state: impressions within the horizon and clicks waiting for theirs.
#[derive(Debug)]
pub struct Join {
    horizon_ms: i64,
    /// Impressions that a future, non-late click could still match, by `impression_id`.
    impressions: HashMap<Box<str>, ImpressionInfo>,
    /// Clicks whose impression has not arrived, by the `impression_id` they clicked.
    pending: HashMap<Box<str>, Vec<PendingClick>>,
    /// Shared copies of the low-cardinality labels (campaign, ad, device, browser), so that each
    /// kept impression costs four reference counts rather than four strings. Pruned with the
    /// impressions.
    labels: HashSet<Rc<str>>,
}

impl Join {
    pub fn new(horizon_ms: i64) -> Self {
        Join { horizon_ms, impressions: HashMap::new(), pending: HashMap::new(), labels: HashSet::new() }
    }

    fn label(&mut self, s: &str) -> Rc<str> {
        if let Some(l) = self.labels.get(s) {
            return l.clone();
        }
        let l: Rc<str> = Rc::from(s);
        self.labels.insert(l.clone());
        l
    }

    fn matches(&self, impression_time_ms: i64, click_time_ms: i64) -> bool {
        impression_time_ms <= click_time_ms && impression_time_ms >= click_time_ms.saturating_sub(self.horizon_ms)
    }

    /// Adds an impression and hands every pending click it matches to `on_click`.
    pub fn add_impression(&mut self, imp: &Impression<'_>, mut on_click: impl FnMut(JoinedClick<'_>)) {
        let info = ImpressionInfo {
            event_time_ms: imp.event_time_ms,
            cost: imp.cost,
            campaign_id: self.label(&imp.campaign_id),
            ad_id: self.label(&imp.ad_id),
            device_type: self.label(&imp.device_type),
            browser: self.label(&imp.browser),
        };
        if let Some(mut waiting) = self.pending.remove(imp.impression_id.as_ref()) {
            waiting.retain(|c| {
                let hit = self.matches(info.event_time_ms, c.event_time_ms);
                if hit {
                    on_click(JoinedClick {
                        window_start_ms: c.window_start_ms,
                        event_time_ms: c.event_time_ms,
                        user_id: &c.user_id,
                        impression: &info,
                    });
                }
                !hit
            });
            if !waiting.is_empty() {
                self.pending.insert(imp.impression_id.as_ref().into(), waiting);
            }
        }
        self.impressions.insert(imp.impression_id.as_ref().into(), info);
    }

    /// Matches a click; if its impression is not there yet, keeps it pending and returns `None`.
    pub fn add_click<'s>(&'s mut self, click: &'s Click<'_>, window_start_ms: i64) -> Option<JoinedClick<'s>> {
        let found = self.impressions.get(click.impression_id.as_ref());
        if let Some(info) = found.filter(|i| self.matches(i.event_time_ms, click.event_time_ms)) {
            return Some(JoinedClick {
                window_start_ms,
                event_time_ms: click.event_time_ms,
                user_id: &click.user_id,
                impression: info,
            });
        }
        self.pending.entry(click.impression_id.as_ref().into()).or_default().push(PendingClick {
            window_start_ms,
            event_time_ms: click.event_time_ms,
            user_id: click.user_id.as_ref().into(),
        });
        None
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
    /// still open. Also drops labels no kept impression uses.
    pub fn expire(&mut self, cutoff_ms: i64) {
        let horizon = self.horizon_ms;
        let before = self.impressions.len();
        self.impressions.retain(|_, i| i.event_time_ms.saturating_add(horizon) >= cutoff_ms);
        if self.impressions.len() < before {
            self.labels.retain(|l| Rc::strong_count(l) > 1);
        }
    }

    /// Impressions kept for the join.
    pub fn impressions(&self) -> usize {
        self.impressions.len()
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
    fn expires_impressions_beyond_the_horizon() {
        let mut j = Join::new(10_000);
        j.add_impression(&imp("old", 1_000, "c1"), |_| {});
        j.add_impression(&imp("new", 50_000, "c2"), |_| {});
        j.expire(11_000);
        assert_eq!(j.impressions(), 2, "1000 + 10000 is still >= the cutoff");
        j.expire(11_001);
        assert_eq!(j.impressions(), 1);
        assert_eq!(j.labels.len(), 4, "c1's label went with its impression");
    }
}
