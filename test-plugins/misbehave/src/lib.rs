//! `misbehave`: counts impressions per campaign until it sees an impression of a campaign named for a fault,
//! then commits that fault inside the `process` call:
//!
//! - `evil-trap`: panics (a trap);
//! - `evil-loop`: loops forever (the host's deadline must interrupt it);
//! - `evil-oom`: allocates without end (the memory limit must stop it);
//! - `evil-output`: from then on emits records whose value is not JSON;
//! - `evil-file`: tries to read `/etc/hostname` and emits what it read (it must not be able to);
//! - `evil-clock`: emits the wall-clock time it sees (it must see no real clock);
//! - `evil-huge`: counted like any campaign, but its record carries [`HUGE_BYTES`] of padding, more than
//!   any result topic takes (the host must withhold that one record and publish the others).
//!
//! Only for the host's tests; `scripts/build-plugins.sh` builds it into `target/test-plugins/`.

use std::collections::BTreeMap;

use adstream_abi::batch::{Event, Kind};
use adstream_abi::json::Obj;
use adstream_abi::sdk::{Aggregation, Output};
use adstream_abi::state::{StateError, StateReader, StateWriter};

/// Padding of the `evil-huge` record: above the 8 MiB + 64 KiB the tests' topics take.
pub const HUGE_BYTES: usize = 12 << 20;

#[derive(Debug, Default)]
pub struct Misbehave {
    /// Impressions per campaign.
    counts: BTreeMap<String, u64>,
    /// Set by `evil-output`/`evil-file`/`evil-clock`: replaces this window's records.
    poison: Option<String>,
}

#[inline(never)]
fn spin(n: u64) -> u64 {
    let mut x = n;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        if x == 0 {
            return x;
        }
    }
}

impl Aggregation for Misbehave {
    const WANTS: &'static [Kind] = &[Kind::Impression];

    fn add(&mut self, event: &Event<'_>) {
        match (event.kind, event.campaign_id) {
            (Kind::Impression, "evil-trap") => panic!("misbehave: a deliberate panic"),
            (Kind::Impression, "evil-loop") => {
                spin(event.event_time_ms as u64);
            }
            (Kind::Impression, "evil-oom") => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            (Kind::Impression, "evil-output") => self.poison = Some("{not json".into()),
            (Kind::Impression, "evil-file") => {
                let leaked = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|e| format!("denied: {e}"));
                self.poison = Some(format!("{{\"file\":{leaked:?}}}"));
            }
            (Kind::Impression, "evil-clock") => {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs());
                self.poison = Some(format!("{{\"clock\":{}}}", now.unwrap_or(0)));
            }
            _ => *self.counts.entry(event.campaign_id.to_owned()).or_default() += 1,
        }
    }

    fn emit(self, start_ms: i64, end_ms: i64, out: &mut Vec<Output>) {
        match self.poison {
            Some(value) => out.push(Output { topic: String::new(), key: "evil".into(), value }),
            None => {
                for (campaign_id, n) in self.counts {
                    let mut value = String::new();
                    let obj = Obj::new(&mut value)
                        .str("campaign_id", &campaign_id)
                        .time("window_start", start_ms)
                        .time("window_end", end_ms)
                        .u64("impressions", n);
                    if campaign_id == "evil-huge" {
                        obj.str("padding", &"x".repeat(HUGE_BYTES)).end();
                    } else {
                        obj.end();
                    }
                    out.push(Output { topic: String::new(), key: campaign_id, value });
                }
            }
        }
    }

    // The poison is state too: a window's accumulator travels from its task to the merge.
    fn encode(&self, out: &mut StateWriter) {
        out.u64(self.counts.len() as u64);
        for (campaign_id, n) in &self.counts {
            out.str(campaign_id).u64(*n);
        }
        out.u64(u64::from(self.poison.is_some()));
        if let Some(poison) = &self.poison {
            out.str(poison);
        }
    }

    fn decode(input: &mut StateReader<'_>) -> Result<Self, StateError> {
        let mut acc = Misbehave::default();
        for _ in 0..input.len(16)? {
            let campaign_id = input.str()?.to_owned();
            acc.counts.insert(campaign_id, input.u64()?);
        }
        if input.u64()? == 1 {
            acc.poison = Some(input.str()?.to_owned());
        }
        Ok(acc)
    }

    fn merge(&mut self, other: Self) {
        for (campaign_id, n) in other.counts {
            *self.counts.entry(campaign_id).or_default() += n;
        }
        self.poison = self.poison.take().or(other.poison);
    }
}

adstream_abi::export_aggregation!(Misbehave {
    wit: "../../wit",
    name: "misbehave",
    description: "counts impressions per campaign, and commits a fault on demand (tests only)",
    outputs: ["misbehave-results"],
    state_version: 1,
});
