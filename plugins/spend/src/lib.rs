//! `spend`: impressions, total cost and CPM (cost per thousand impressions) per campaign and
//! window, to `campaign-spend-results`. Written to show that a new aggregation is a new `.wasm`
//! and nothing else: the host does not know it exists until `--plugin` names it.

use adstream_abi::batch::{Event, Kind};
use adstream_abi::json::Obj;
use adstream_abi::sdk::{Aggregation, Output};
use adstream_abi::state::{StateError, StateReader, StateWriter};
use rustc_hash::FxHashMap;

/// Impressions and summed cost of one campaign in one window.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Spend {
    pub impressions: u64,
    pub cost: f64,
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
        s.cost += event.cost;
    }

    fn emit(self, start_ms: i64, end_ms: i64, out: &mut Vec<Output>) {
        let mut campaigns: Vec<_> = self.campaigns.into_iter().collect();
        campaigns.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (campaign_id, s) in campaigns {
            let cpm = (s.impressions > 0).then(|| s.cost * 1000.0 / s.impressions as f64);
            let mut value = String::with_capacity(160);
            Obj::new(&mut value)
                .str("campaign_id", &campaign_id)
                .time("window_start", start_ms)
                .time("window_end", end_ms)
                .u64("impressions", s.impressions)
                .f64("cost", Some(s.cost))
                .f64("cpm", cpm)
                .end();
            out.push(Output { topic: String::new(), key: campaign_id.into(), value });
        }
    }

    fn encode(&self, out: &mut StateWriter) {
        out.u64(self.campaigns.len() as u64);
        for (campaign_id, s) in &self.campaigns {
            out.str(campaign_id).u64(s.impressions).f64(s.cost);
        }
    }

    fn decode(input: &mut StateReader<'_>) -> Result<Self, StateError> {
        let mut acc = CampaignSpend::default();
        for _ in 0..input.len(24)? {
            let campaign_id = input.str()?;
            let spend = Spend { impressions: input.u64()?, cost: input.f64()? };
            acc.campaigns.insert(campaign_id.into(), spend);
        }
        Ok(acc)
    }

    fn merge(&mut self, other: Self) {
        for (campaign_id, s) in other.campaigns {
            let mine = self.campaigns.entry(campaign_id).or_default();
            mine.impressions += s.impressions;
            mine.cost += s.cost;
        }
    }
}

adstream_abi::export_aggregation!(CampaignSpend {
    wit: "../../wit",
    name: "spend",
    description: "impressions, total cost and CPM per campaign and window",
    outputs: ["campaign-spend-results"],
    state_version: 1,
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
}
