//! `ctr`: impressions, attributed clicks and click-through rate per campaign and window, to
//! `campaign-ctr-results` (SPEC "Results"). Clicks arrive already joined to their impression by
//! the host, so a click counts for the campaign of the impression it clicked, in the window of
//! its own event time.

use adstream_abi::batch::{Event, Kind};
use adstream_abi::bytes::short_eq;
use adstream_abi::json::Obj;
use adstream_abi::sdk::{Aggregation, Output};
use adstream_abi::state::{StateError, StateReader, StateWriter};
use hashbrown::HashMap;
use rustc_hash::FxBuildHasher;

/// Impressions and clicks of one campaign in one window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub impressions: u64,
    pub clicks: u64,
}

/// The accumulator of one window: counts per campaign.
#[derive(Debug, Default)]
pub struct Ctr {
    campaigns: HashMap<CampaignId, Counts, FxBuildHasher>,
}

/// A campaign id as the map's key, compared with [`short_eq`]: `str`'s equality is a call to
/// `memcmp`, which in a WebAssembly guest is a byte loop, and the map compares once per event.
#[derive(Clone, Debug, PartialOrd, Ord)]
struct CampaignId(Box<str>);

/// As `str` hashes, so that a `&str` finds its key.
impl std::hash::Hash for CampaignId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl PartialEq for CampaignId {
    fn eq(&self, other: &Self) -> bool {
        short_eq(self.0.as_bytes(), other.0.as_bytes())
    }
}

impl Eq for CampaignId {}

/// Looked up by `&str`.
impl hashbrown::Equivalent<CampaignId> for str {
    fn equivalent(&self, key: &CampaignId) -> bool {
        short_eq(self.as_bytes(), key.0.as_bytes())
    }
}

impl From<&str> for CampaignId {
    fn from(id: &str) -> Self {
        CampaignId(id.into())
    }
}

impl Ctr {
    /// One hash per event, and an allocation only for a campaign new to the window.
    fn counts(&mut self, campaign_id: &str) -> &mut Counts {
        self.campaigns.entry_ref(campaign_id).or_default()
    }
}

impl Aggregation for Ctr {
    const WANTS: &'static [Kind] = &[Kind::Impression, Kind::Click];

    fn add(&mut self, event: &Event<'_>) {
        let counts = self.counts(event.campaign_id);
        match event.kind {
            Kind::Impression => counts.impressions += 1,
            Kind::Click => counts.clicks += 1,
        }
    }

    fn emit(self, start_ms: i64, end_ms: i64, out: &mut Vec<Output>) {
        let mut campaigns: Vec<_> = self.campaigns.into_iter().collect();
        campaigns.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (campaign_id, c) in campaigns {
            let ctr = (c.impressions > 0).then(|| c.clicks as f64 / c.impressions as f64);
            let mut value = String::with_capacity(160);
            Obj::new(&mut value)
                .str("campaign_id", &campaign_id.0)
                .time("window_start", start_ms)
                .time("window_end", end_ms)
                .u64("impressions", c.impressions)
                .u64("clicks", c.clicks)
                .f64("ctr", ctr)
                .end();
            out.push(Output { topic: String::new(), key: campaign_id.0.into(), value });
        }
    }

    fn encode(&self, out: &mut StateWriter) {
        out.u64(self.campaigns.len() as u64);
        for (campaign_id, c) in &self.campaigns {
            out.str(&campaign_id.0).u64(c.impressions).u64(c.clicks);
        }
    }

    fn decode(input: &mut StateReader<'_>) -> Result<Self, StateError> {
        let mut acc = Ctr::default();
        for _ in 0..input.len(24)? {
            let campaign_id = input.str()?;
            let counts = Counts { impressions: input.u64()?, clicks: input.u64()? };
            acc.campaigns.insert(campaign_id.into(), counts);
        }
        Ok(acc)
    }

    fn merge(&mut self, other: Self) {
        for (campaign_id, c) in other.campaigns {
            let counts = self.campaigns.entry(campaign_id).or_default();
            counts.impressions += c.impressions;
            counts.clicks += c.clicks;
        }
    }
}

adstream_abi::export_aggregation!(Ctr {
    wit: "../../wit",
    name: "ctr",
    description: "impressions, attributed clicks and CTR per campaign and window",
    outputs: ["campaign-ctr-results"],
    state_version: 1,
});

#[cfg(test)]
mod tests {
    use super::*;
    use adstream_abi::batch::BatchWriter;
    use adstream_abi::sdk::Windows;

    fn event(kind: Kind, window: i64, campaign: &str) -> Event<'_> {
        Event {
            kind,
            window_start_ms: window,
            event_time_ms: window + 1,
            impression_time_ms: window,
            cost: 0.001,
            campaign_id: campaign,
            ad_id: "a",
            device_type: "mobile",
            browser: "chrome",
            user_id: "u",
        }
    }

    #[test]
    fn counts_and_emits_per_campaign() {
        let mut batch = BatchWriter::new();
        for e in [
            event(Kind::Impression, 0, "c2"),
            event(Kind::Impression, 0, "c1"),
            event(Kind::Impression, 0, "c1"),
            event(Kind::Click, 0, "c1"),
            event(Kind::Click, 0, "c3"),
            event(Kind::Impression, 60_000, "c1"),
        ] {
            batch.push(&e);
        }
        let mut windows = Windows::<Ctr>::default();
        windows.process(batch.bytes()).unwrap();
        let out = windows.close(0, 60_000);
        let values: Vec<_> = out.iter().map(|o| (o.key.as_str(), o.value.as_str())).collect();
        assert_eq!(
            values,
            [
                (
                    "c1",
                    r#"{"campaign_id":"c1","window_start":"1970-01-01T00:00:00.000Z","window_end":"1970-01-01T00:01:00.000Z","impressions":2,"clicks":1,"ctr":0.5}"#
                ),
                (
                    "c2",
                    r#"{"campaign_id":"c2","window_start":"1970-01-01T00:00:00.000Z","window_end":"1970-01-01T00:01:00.000Z","impressions":1,"clicks":0,"ctr":0}"#
                ),
                (
                    "c3",
                    r#"{"campaign_id":"c3","window_start":"1970-01-01T00:00:00.000Z","window_end":"1970-01-01T00:01:00.000Z","impressions":0,"clicks":1,"ctr":null}"#
                ),
            ]
        );
        assert_eq!(windows.starts(), [60_000]);
        assert!(windows.close(0, 60_000).is_empty(), "a closed window is forgotten");
    }

    #[test]
    fn export_restore_and_merge_agree_with_direct_counting() {
        let mut a = Windows::<Ctr>::default();
        let mut b = Windows::<Ctr>::default();
        let mut both = Windows::<Ctr>::default();
        let mut batch_a = BatchWriter::new();
        let mut batch_b = BatchWriter::new();
        batch_a.push(&event(Kind::Impression, 0, "c1"));
        batch_a.push(&event(Kind::Click, 0, "c1"));
        batch_b.push(&event(Kind::Impression, 0, "c1"));
        batch_b.push(&event(Kind::Impression, 0, "c9"));
        a.process(batch_a.bytes()).unwrap();
        b.process(batch_b.bytes()).unwrap();
        both.process(batch_a.bytes()).unwrap();
        both.process(batch_b.bytes()).unwrap();
        a.merge(0, &b.export(0).unwrap()).unwrap();
        let mut restored = Windows::<Ctr>::default();
        restored.restore(0, &a.export(0).unwrap()).unwrap();
        assert_eq!(restored.close(0, 60_000), both.close(0, 60_000));
        assert!(restored.restore(0, b"\x05\0\0\0\0\0\0\0").is_err(), "corrupt state is refused");
    }
}
