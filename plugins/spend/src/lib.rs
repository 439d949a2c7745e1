//! `spend`: impressions, total cost and CPM (cost per thousand impressions) per campaign and
//! window, to `campaign-spend-results`. Written to show that a new aggregation is a new `.wasm`
//! and nothing else: the host does not know it exists until `--plugin` names it.

use adstream_abi::batch::{Event, Kind};
use adstream_abi::json::Obj;
use adstream_abi::sdk::{Aggregation, Output};
use adstream_abi::state::{StateError, StateReader, StateWriter};
use rustc_hash::FxHashMap;

/// Impressions and summed cost of one campaign in one window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Spend {
    pub impressions: u64,
    pub cost: ExactSum,
}

/// A sum of floating-point numbers kept exactly (Shewchuk's non-overlapping partials, as
/// Python's `math.fsum`) and rounded once when read, so that it does not depend on the order
/// of the additions: a window whose costs were summed in several tasks and merged has the very
/// cost of one summed in one task. (A plain `f64` sum differs in its last bits.)
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExactSum {
    partials: Vec<f64>,
}

impl ExactSum {
    pub fn add(&mut self, value: f64) {
        let mut x = value;
        let mut kept = 0;
        for j in 0..self.partials.len() {
            let mut y = self.partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                self.partials[kept] = lo;
                kept += 1;
            }
            x = hi;
        }
        self.partials.truncate(kept);
        self.partials.push(x);
    }

    /// The exact sum, correctly rounded.
    pub fn value(&self) -> f64 {
        let p = &self.partials;
        let Some(&last) = p.last() else {
            return 0.0;
        };
        let (mut hi, mut lo, mut n) = (last, 0.0, p.len() - 1);
        while n > 0 {
            let x = hi;
            let y = p[n - 1];
            n -= 1;
            hi = x + y;
            lo = y - (hi - x);
            if lo != 0.0 {
                break;
            }
        }
        // Round half to even across the partials below, as the exact sum would.
        if n > 0 && ((lo < 0.0 && p[n - 1] < 0.0) || (lo > 0.0 && p[n - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            if y == x - hi {
                hi = x;
            }
        }
        hi
    }
}

/// The accumulator of one window: spend per campaign.
#[derive(Debug, Default)]
pub struct CampaignSpend {
    campaigns: FxHashMap<Box<str>, Spend>,
}

impl Aggregation for CampaignSpend {
    const WANTS: &'static [Kind] = &[Kind::Impression];

    fn add(&mut self, event: &Event<'_>) {
        if !self.campaigns.contains_key(event.campaign_id) {
            self.campaigns.insert(event.campaign_id.into(), Spend::default());
        }
        let s = self.campaigns.get_mut(event.campaign_id).expect("inserted above");
        s.impressions += 1;
        s.cost.add(event.cost);
    }

    fn emit(self, start_ms: i64, end_ms: i64, out: &mut Vec<Output>) {
        let mut campaigns: Vec<_> = self.campaigns.into_iter().collect();
        campaigns.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (campaign_id, s) in campaigns {
            let cost = s.cost.value();
            let cpm = (s.impressions > 0).then(|| cost * 1000.0 / s.impressions as f64);
            let mut value = String::with_capacity(160);
            Obj::new(&mut value)
                .str("campaign_id", &campaign_id)
                .time("window_start", start_ms)
                .time("window_end", end_ms)
                .u64("impressions", s.impressions)
                .f64("cost", Some(cost))
                .f64("cpm", cpm)
                .end();
            out.push(Output { topic: String::new(), key: campaign_id.into(), value });
        }
    }

    // State version 2: per campaign its id, impressions, and the cost's partials (count, then
    // each as f64).
    fn encode(&self, out: &mut StateWriter) {
        out.u64(self.campaigns.len() as u64);
        for (campaign_id, s) in &self.campaigns {
            out.str(campaign_id).u64(s.impressions).u64(s.cost.partials.len() as u64);
            for &p in &s.cost.partials {
                out.f64(p);
            }
        }
    }

    fn decode(input: &mut StateReader<'_>) -> Result<Self, StateError> {
        let mut acc = CampaignSpend::default();
        for _ in 0..input.len(24)? {
            let campaign_id = input.str()?;
            let impressions = input.u64()?;
            let mut cost = ExactSum::default();
            for _ in 0..input.len(8)? {
                cost.partials.push(input.f64()?);
            }
            acc.campaigns.insert(campaign_id.into(), Spend { impressions, cost });
        }
        Ok(acc)
    }

    fn merge(&mut self, other: Self) {
        for (campaign_id, s) in other.campaigns {
            let mine = self.campaigns.entry(campaign_id).or_default();
            mine.impressions += s.impressions;
            for p in s.cost.partials {
                mine.cost.add(p);
            }
        }
    }
}

adstream_abi::export_aggregation!(CampaignSpend {
    wit: "../../wit",
    name: "spend",
    description: "impressions, total cost and CPM per campaign and window",
    outputs: ["campaign-spend-results"],
    state_version: 2,
});

#[cfg(test)]
mod tests {
    use super::*;
    use adstream_abi::batch::BatchWriter;
    use adstream_abi::sdk::Windows;

    #[test]
    fn sums_cost_and_computes_cpm() {
        let mut batch = BatchWriter::new();
        for (kind, cost) in [(Kind::Impression, 0.002), (Kind::Impression, 0.004), (Kind::Click, 0.002)] {
            batch.push(&Event {
                kind,
                window_start_ms: 0,
                event_time_ms: 1,
                impression_time_ms: 1,
                cost,
                campaign_id: "c4",
                ad_id: "a",
                device_type: "desktop",
                browser: "edge",
                user_id: "u",
            });
        }
        let mut windows = Windows::<CampaignSpend>::default();
        windows.process(batch.bytes()).unwrap();
        let out = windows.close(0, 60_000);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].key, "c4");
        assert_eq!(
            out[0].value,
            r#"{"campaign_id":"c4","window_start":"1970-01-01T00:00:00.000Z","window_end":"1970-01-01T00:01:00.000Z","impressions":2,"cost":0.006,"cpm":3}"#
        );
    }

    #[test]
    fn the_cost_does_not_depend_on_how_the_events_were_split_and_merged() {
        let costs: Vec<f64> = (0..1000).map(|i| 0.0001 * f64::from(i % 97 + 1) + 1e-7 * f64::from(i % 13)).collect();
        let mut one = ExactSum::default();
        costs.iter().for_each(|&c| one.add(c));
        let mut naive_forward = 0.0;
        costs.iter().for_each(|&c| naive_forward += c);
        // Three "tasks", merged in another order.
        let mut parts = [ExactSum::default(), ExactSum::default(), ExactSum::default()];
        for (i, &c) in costs.iter().enumerate().rev() {
            parts[i % 3].add(c);
        }
        let mut merged = ExactSum::default();
        for part in parts.iter().rev() {
            part.partials.iter().for_each(|&p| merged.add(p));
        }
        assert_eq!(merged.value().to_bits(), one.value().to_bits());
        let mut tenths = ExactSum::default();
        (0..10).for_each(|_| tenths.add(0.1));
        assert_eq!(tenths.value(), 1.0, "a plain f64 sum gives 0.9999999999999999");
        assert!((one.value() - naive_forward).abs() < 1e-9);
    }

    #[test]
    fn the_state_round_trips() {
        let mut acc = CampaignSpend::default();
        let mut s = Spend { impressions: 3, cost: ExactSum::default() };
        [0.1, 0.2, 0.3].iter().for_each(|&c| s.cost.add(c));
        acc.campaigns.insert("c1".into(), s.clone());
        let mut out = StateWriter::default();
        acc.encode(&mut out);
        let back = CampaignSpend::decode(&mut StateReader(&out.0)).unwrap();
        assert_eq!(back.campaigns["c1"], s);
    }
}
