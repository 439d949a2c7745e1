//! `engagement`: impressions and the exact number of distinct users per device type and window,
//! to `device-engagement-results` (SPEC "Results").

use adstream_abi::batch::{Event, Kind};
use adstream_abi::json::Obj;
use adstream_abi::sdk::{Aggregation, Output, keyed};
use adstream_abi::state::{StateError, StateReader, StateWriter};

mod users;
use users::UserSet;

/// Impressions and distinct users of one device type in one window.
#[derive(Debug, Default)]
pub struct Device {
    impressions: u64,
    /// Every distinct `user_id` seen: exact, so its size grows with the users of the window.
    users: UserSet,
}

/// The accumulator of one window: one entry per device type. There are a handful of device
/// types, so a vector scanned in order beats hashing the name on every event.
#[derive(Debug, Default)]
pub struct Engagement {
    devices: Vec<(Box<str>, Device)>,
}

impl Engagement {
    fn device(&mut self, device_type: &str) -> &mut Device {
        keyed(&mut self.devices, device_type, Device::default)
    }
}

impl Aggregation for Engagement {
    const WANTS: &'static [Kind] = &[Kind::Impression];

    fn add(&mut self, event: &Event<'_>) {
        let device = self.device(event.device_type);
        device.impressions += 1;
        device.users.insert(event.user_id.as_bytes());
    }

    fn emit(self, start_ms: i64, end_ms: i64, out: &mut Vec<Output>) {
        let mut devices = self.devices;
        devices.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (device_type, d) in devices {
            let mut value = String::with_capacity(160);
            Obj::new(&mut value)
                .str("device_type", &device_type)
                .time("window_start", start_ms)
                .time("window_end", end_ms)
                .u64("impressions", d.impressions)
                .u64("unique_users", d.users.len() as u64)
                .end();
            out.push(Output { topic: String::new(), key: device_type.into(), value });
        }
    }

    fn encode(&self, out: &mut StateWriter) {
        out.u64(self.devices.len() as u64);
        for (device_type, d) in &self.devices {
            out.str(device_type).u64(d.impressions).u64(d.users.len() as u64);
            for user in d.users.iter() {
                out.bytes(user);
            }
        }
    }

    fn decode(input: &mut StateReader<'_>) -> Result<Self, StateError> {
        let mut acc = Engagement::default();
        for _ in 0..input.len(24)? {
            let device_type = input.str()?;
            let impressions = input.u64()?;
            let users = input.len(8)?;
            // Straight into the accumulator (a device named twice adds up, as `merge` would),
            // each id hashed once, into a table sized for them all: restoring a window is
            // what the merge stage does with every partial it receives.
            let mine = acc.device(device_type);
            mine.impressions += impressions;
            mine.users.reserve(users);
            for _ in 0..users {
                mine.users.insert(input.bytes()?);
            }
        }
        Ok(acc)
    }

    fn merge(&mut self, other: Self) {
        for (device_type, d) in other.devices {
            let mine = self.device(&device_type);
            mine.impressions += d.impressions;
            if mine.users.is_empty() {
                mine.users = d.users;
                continue;
            }
            mine.users.reserve(d.users.len());
            for user in d.users.iter() {
                mine.users.insert(user);
            }
        }
    }
}

adstream_abi::export_aggregation!(Engagement {
    wit: "../../wit",
    name: "engagement",
    description: "impressions and exact unique users per device type and window",
    outputs: ["device-engagement-results"],
    state_version: 1,
});

#[cfg(test)]
mod tests {
    use super::*;
    use adstream_abi::batch::BatchWriter;
    use adstream_abi::sdk::Windows;

    fn event<'a>(kind: Kind, device: &'a str, user: &'a str) -> Event<'a> {
        Event {
            kind,
            window_start_ms: 0,
            event_time_ms: 5,
            impression_time_ms: 5,
            cost: 0.0,
            campaign_id: "c1",
            ad_id: "a",
            device_type: device,
            browser: "safari",
            user_id: user,
        }
    }

    #[test]
    fn counts_distinct_users_per_device_and_ignores_clicks() {
        let mut batch = BatchWriter::new();
        for (kind, device, user) in [
            (Kind::Impression, "mobile", "u1"),
            (Kind::Impression, "mobile", "u1"),
            (Kind::Impression, "mobile", "u2"),
            (Kind::Impression, "tablet", "u1"),
            (Kind::Click, "desktop", "u3"),
        ] {
            batch.push(&event(kind, device, user));
        }
        let mut windows = Windows::<Engagement>::default();
        windows.process(batch.bytes()).unwrap();
        let mut half = Windows::<Engagement>::default();
        half.restore(0, &windows.export(0).unwrap()).unwrap();
        half.merge(0, &windows.export(0).unwrap()).unwrap();
        let out = windows.close(0, 60_000);
        let values: Vec<_> = out.iter().map(|o| o.value.as_str()).collect();
        assert_eq!(
            values,
            [
                r#"{"device_type":"mobile","window_start":"1970-01-01T00:00:00.000Z","window_end":"1970-01-01T00:01:00.000Z","impressions":3,"unique_users":2}"#,
                r#"{"device_type":"tablet","window_start":"1970-01-01T00:00:00.000Z","window_end":"1970-01-01T00:01:00.000Z","impressions":1,"unique_users":1}"#,
            ]
        );
        // Merging a window with itself doubles impressions but not distinct users.
        let merged: Vec<_> = half.close(0, 60_000).into_iter().map(|o| o.value).collect();
        assert!(merged[0].contains(r#""impressions":6,"unique_users":2"#), "{merged:?}");
    }

    /// A state that names a device twice adds the two up, as merging them would.
    #[test]
    fn a_device_named_twice_in_a_state_adds_up() {
        let mut w = StateWriter::default();
        w.u64(2);
        w.str("mobile").u64(3).u64(2).str("u1").str("u2");
        w.str("mobile").u64(4).u64(2).str("u2").str("u3");
        let acc = Engagement::decode(&mut StateReader(&w.0)).unwrap();
        assert_eq!(acc.devices.len(), 1);
        let (device, d) = &acc.devices[0];
        assert_eq!((&**device, d.impressions, d.users.len()), ("mobile", 7, 3));
        assert!(d.users.iter().eq(["u1", "u2", "u3"].map(str::as_bytes)));
    }

    /// Two tasks' partials of a window: users seen at both count once, a device seen at one
    /// only comes through whole.
    #[test]
    fn merging_partials_unites_their_users() {
        let partial = |events: &[(&str, &str)]| {
            let mut batch = BatchWriter::new();
            for &(device, user) in events {
                batch.push(&event(Kind::Impression, device, user));
            }
            let mut windows = Windows::<Engagement>::default();
            windows.process(batch.bytes()).unwrap();
            windows.export(0).unwrap()
        };
        let many: Vec<String> = (0..1000).map(|i| format!("u{i}")).collect();
        let a: Vec<(&str, &str)> = many[..600].iter().map(|u| ("mobile", u.as_str())).collect();
        let mut b: Vec<(&str, &str)> = many[400..].iter().map(|u| ("mobile", u.as_str())).collect();
        b.push(("tablet", "u1"));
        let mut merge = Windows::<Engagement>::default();
        merge.restore(0, &partial(&a)).unwrap();
        merge.merge(0, &partial(&b)).unwrap();
        let out: Vec<_> = merge.close(0, 60_000).into_iter().map(|o| o.value).collect();
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(
            out[0].contains(r#""mobile""#) && out[0].contains(r#""impressions":1200,"unique_users":1000"#),
            "{out:?}"
        );
        assert!(out[1].contains(r#""tablet""#) && out[1].contains(r#""impressions":1,"unique_users":1"#), "{out:?}");
    }
}
