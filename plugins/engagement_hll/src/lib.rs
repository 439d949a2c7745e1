//! `engagement_hll`: impressions and the *approximate* number of distinct users per device type
//! and window, to `device-engagement-results`, for windows whose exact user sets (the
//! `engagement` plugin) would be too big. Each record says that its `unique_users` is an estimate
//! and how far off it typically is (SPEC "Results").
//!
//! Distinct users are counted with HyperLogLog++ at precision 14: 16,384 registers of 6 bits
//! (about 13 KiB) per device type and window once it holds more than a few thousand users, less
//! before; the standard error is 1.04 / sqrt(16384) = 0.81%. Merging two sketches keeps the
//! larger of each register pair, so a window merged from several tasks' partials is the sketch of
//! all its users: the estimate does not depend on how the input was split. Users are hashed with
//! SipHash-1-3 under fixed keys, the same in every instance of this build.

use std::hash::{BuildHasher, DefaultHasher};

use adstream_abi::batch::{Event, Kind};
use adstream_abi::json::Obj;
use adstream_abi::sdk::{Aggregation, Output, keyed};
use adstream_abi::state::{StateError, StateReader, StateWriter};
use hyperloglogplus::{HyperLogLog, HyperLogLogPlus};
use serde::{Deserialize, Serialize};

/// Registers `2^PRECISION`; the standard error is `1.04 / sqrt(2^PRECISION)`.
const PRECISION: u8 = 14;
/// The standard error at [`PRECISION`], published with every estimate.
pub const RELATIVE_ERROR: f64 = 0.0081;

/// The same hash in every instance (the merge of partials from several tasks needs it).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct FixedKeys;

impl BuildHasher for FixedKeys {
    type Hasher = DefaultHasher;
    fn build_hasher(&self) -> DefaultHasher {
        DefaultHasher::new()
    }
}

type Sketch = HyperLogLogPlus<str, FixedKeys>;

fn sketch() -> Sketch {
    HyperLogLogPlus::new(PRECISION, FixedKeys).expect("14 is a valid precision")
}

/// Impressions and the distinct-user sketch of one device type in one window.
#[derive(Debug, Serialize, Deserialize)]
pub struct Device {
    impressions: u64,
    users: Sketch,
}

/// The accumulator of one window: one entry per device type, a handful, scanned in order.
#[derive(Debug, Default)]
pub struct EngagementHll {
    devices: Vec<(Box<str>, Device)>,
}

impl EngagementHll {
    fn device(&mut self, device_type: &str) -> &mut Device {
        keyed(&mut self.devices, device_type, || Device { impressions: 0, users: sketch() })
    }
}

impl Aggregation for EngagementHll {
    const WANTS: &'static [Kind] = &[Kind::Impression];

    fn add(&mut self, event: &Event<'_>) {
        let device = self.device(event.device_type);
        device.impressions += 1;
        device.users.insert(event.user_id);
    }

    fn emit(self, start_ms: i64, end_ms: i64, out: &mut Vec<Output>) {
        let mut devices = self.devices;
        devices.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (device_type, mut d) in devices {
            let estimate = d.users.count().round() as u64;
            let mut value = String::with_capacity(200);
            Obj::new(&mut value)
                .str("device_type", &device_type)
                .time("window_start", start_ms)
                .time("window_end", end_ms)
                .u64("impressions", d.impressions)
                .u64("unique_users", estimate)
                .bool("unique_users_approximate", true)
                .f64("unique_users_relative_error", Some(RELATIVE_ERROR))
                .end();
            out.push(Output { topic: String::new(), key: device_type.into(), value });
        }
    }

    fn encode(&self, out: &mut StateWriter) {
        out.u64(self.devices.len() as u64);
        for (device_type, d) in &self.devices {
            let sketch = serde_json::to_string(d).expect("a sketch serialises");
            out.str(device_type).str(&sketch);
        }
    }

    fn decode(input: &mut StateReader<'_>) -> Result<Self, StateError> {
        let mut acc = EngagementHll::default();
        for _ in 0..input.len(16)? {
            let device_type = input.str()?.into();
            let d: Device = serde_json::from_str(input.str()?).map_err(|_| StateError("not a HyperLogLog++ sketch"))?;
            acc.merge(EngagementHll { devices: vec![(device_type, d)] });
        }
        Ok(acc)
    }

    fn merge(&mut self, other: Self) {
        for (device_type, d) in other.devices {
            let mine = self.device(&device_type);
            mine.impressions += d.impressions;
            mine.users.merge(&d.users).expect("sketches of one precision");
        }
    }
}

adstream_abi::export_aggregation!(EngagementHll {
    wit: "../../wit",
    name: "engagement_hll",
    description: "impressions and approximate unique users (HyperLogLog++, 0.81% standard error) per device type and window",
    outputs: ["device-engagement-results"],
    state_version: 1,
});

#[cfg(test)]
mod tests {
    use super::*;
    use adstream_abi::batch::BatchWriter;
    use adstream_abi::sdk::Windows;

    fn batch(users: impl Iterator<Item = u32>) -> Vec<u8> {
        let mut batch = BatchWriter::new();
        for u in users {
            let user = format!("u{u}");
            batch.push(&Event {
                kind: Kind::Impression,
                window_start_ms: 0,
                event_time_ms: 5,
                impression_time_ms: 5,
                cost: 0.0,
                campaign_id: "c1",
                ad_id: "a",
                device_type: "mobile",
                browser: "safari",
                user_id: &user,
            });
        }
        batch.bytes().to_vec()
    }

    /// Two halves exported, restored and merged give the very record of one instance that saw
    /// everything: the estimate does not depend on how the input was split.
    #[test]
    fn merged_halves_estimate_what_one_sketch_of_everything_does() {
        let mut whole = Windows::<EngagementHll>::default();
        whole.process(&batch(0..60_000)).unwrap();
        let (mut a, mut b) = (Windows::<EngagementHll>::default(), Windows::<EngagementHll>::default());
        a.process(&batch(0..35_000)).unwrap();
        b.process(&batch(25_000..60_000)).unwrap();
        let mut merged = Windows::<EngagementHll>::default();
        merged.restore(0, &a.export(0).unwrap()).unwrap();
        merged.merge(0, &b.export(0).unwrap()).unwrap();
        let one = whole.close(0, 60_000);
        let (one, two) = (&one[0].value, &merged.close(0, 60_000)[0].value);
        assert!(one.contains(r#""impressions":60000,"#), "{one}");
        assert!(two.contains(r#""impressions":70000,"#), "{two}");
        let users = |v: &str| -> f64 {
            let at = v.find(r#""unique_users":"#).unwrap() + 15;
            v[at..].split(',').next().unwrap().parse().unwrap()
        };
        assert_eq!(users(one), users(two), "{one} vs {two}");
        assert!((users(one) - 60_000.0).abs() / 60_000.0 < 0.025, "{one}");
        assert!(one.contains(r#""unique_users_approximate":true,"unique_users_relative_error":0.0081"#), "{one}");
    }
}
