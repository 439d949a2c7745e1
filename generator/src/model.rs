//! The world the events describe — campaigns, their ads and click-through rates, users — and how one
//! impression or click is drawn from it and encoded as the JSON of SPEC.md.
//!
//! Everything is drawn from the caller's seeded RNG, in a fixed order, so the same seed gives the same world
//! and the same events. The encoding is written by hand (ids and enum values never need escaping) because
//! it runs for every message; the tests check it against `serde_json`.

use std::fmt::Write as _;

use rand::Rng;

use crate::time::{EpochMillis, write_rfc3339};

/// The two input topics of SPEC.md, by role; their Kafka names are configurable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    Impressions,
    Clicks,
}

impl Topic {
    pub const ALL: [Topic; 2] = [Topic::Impressions, Topic::Clicks];

    /// The topic's name in SPEC.md, which is also the default Kafka topic name.
    pub fn spec_name(self) -> &'static str {
        match self {
            Topic::Impressions => "ad-impressions",
            Topic::Clicks => "ad-clicks",
        }
    }

    /// The JSONL file that receives this topic's messages: `ad-impressions.jsonl`, `ad-clicks.jsonl`, whatever
    /// the Kafka topic is called.
    pub fn jsonl_file_name(self) -> &'static str {
        match self {
            Topic::Impressions => "ad-impressions.jsonl",
            Topic::Clicks => "ad-clicks.jsonl",
        }
    }

    /// The fields of a valid message on this topic, in the order they are written.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Topic::Impressions => &[
                "impression_id",
                "user_id",
                "campaign_id",
                "ad_id",
                "device_type",
                "browser",
                "event_timestamp",
                "cost",
            ],
            Topic::Clicks => &["click_id", "impression_id", "user_id", "event_timestamp"],
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// The shape of the world; see the matching command-line options.
#[derive(Clone, Debug, PartialEq)]
pub struct WorldParams {
    pub campaigns: u32,
    pub ads_per_campaign: u32,
    pub users: u32,
    pub ctr_min: f64,
    pub ctr_max: f64,
    /// Share of valid events whose `event_timestamp` is an integer of epoch milliseconds.
    pub epoch_ms_fraction: f64,
    pub ids: IdStyle,
}

/// How impression and click ids are written (`--id-style`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum IdStyle {
    /// `i<n>` and `k<n>`: short and readable.
    #[default]
    Short,
    /// UUIDs (the version 4 layout, lower case), 36 characters, as many ad servers write ids:
    /// what the host's memory for the join is measured with.
    Uuid,
}

impl IdStyle {
    /// Writes the id of impression (`kind` 'i') or click ('k') number `n`. Ids of one kind are
    /// distinct for distinct numbers in both styles.
    pub fn write(self, out: &mut String, kind: char, n: u64) {
        match self {
            IdStyle::Short => {
                let _ = write!(out, "{kind}{n}");
            }
            IdStyle::Uuid => {
                // `hi` is a bijection of `n` (for a given kind), and all of its 64 bits are
                // written: distinct numbers, distinct ids.
                let hi = mix(n ^ u64::from(kind).rotate_right(8));
                let lo = mix(hi);
                let _ = write!(
                    out,
                    "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
                    hi >> 32,
                    (hi >> 16) & 0xffff,
                    (hi >> 4) & 0xfff,
                    0x8000 | (hi & 0xf) << 10 | lo & 0x3ff,
                    lo >> 16
                );
            }
        }
    }

    pub fn id(self, kind: char, n: u64) -> String {
        let mut out = String::new();
        self.write(&mut out, kind, n);
        out
    }
}

/// SplitMix64's finaliser: a bijection of u64 that scatters its bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Share of valid events whose `event_timestamp` is RFC 3339 with a numeric offset instead of `Z`.
pub const OFFSET_TIMESTAMP_FRACTION: f64 = 0.05;

/// Offsets (minutes east of UTC) used for those timestamps: whole hours, half and quarter hours, both signs.
const OFFSETS: [i32; 8] = [120, -300, 330, -210, 540, 60, -480, 345];

/// Smallest and largest cost of one impression, in millionths, so that it prints with at most 6 decimals.
const COST_MICROS: std::ops::RangeInclusive<u32> = 100..=10_000;

/// How an event writes its `event_timestamp`. All three denote the same instant with millisecond precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampStyle {
    /// `"2026-11-29T10:00:00.123Z"`
    Utc,
    /// `1795946400123`
    EpochMillis,
    /// `"2026-11-29T12:00:00.123+02:00"`, minutes east of UTC.
    Offset(i32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Mobile,
    Desktop,
    Tablet,
}

impl Device {
    pub fn as_str(self) -> &'static str {
        match self {
            Device::Mobile => "mobile",
            Device::Desktop => "desktop",
            Device::Tablet => "tablet",
        }
    }

    pub fn parse(name: &str) -> Option<Device> {
        [Device::Mobile, Device::Desktop, Device::Tablet].into_iter().find(|d| d.as_str() == name)
    }

    /// Another device type: where the impressions of a halved device type go.
    pub fn other(self) -> Device {
        match self {
            Device::Mobile => Device::Desktop,
            Device::Desktop | Device::Tablet => Device::Mobile,
        }
    }

    /// Mobile, desktop and tablet with weights 60, 30 and 10.
    fn draw(rng: &mut impl Rng) -> Device {
        match rng.random_range(0..10) {
            0..6 => Device::Mobile,
            6..9 => Device::Desktop,
            _ => Device::Tablet,
        }
    }
}

const BROWSERS: [&str; 4] = ["chrome", "safari", "firefox", "edge"];

/// The campaigns, ads and users events are drawn from. Immutable once drawn.
#[derive(Clone, Debug)]
pub struct World {
    params: WorldParams,
    /// Probability that an impression of campaign `c` is clicked, indexed by `c`.
    click_through: Vec<f64>,
}

/// One ad impression: the row of the `ad-impressions` table in SPEC.md.
#[derive(Clone, Debug, PartialEq)]
pub struct Impression {
    /// Written as `i<id>` (or a UUID, see `ids`); unique within a run.
    pub id: u64,
    pub ids: IdStyle,
    pub user: u32,
    pub campaign: u32,
    /// The ad's number within its campaign; written as `a<campaign>-<ad>`.
    pub ad: u32,
    pub device: Device,
    pub browser: &'static str,
    pub event_time: EpochMillis,
    pub timestamp: TimestampStyle,
    pub cost_micros: u32,
}

/// One click on an impression: the row of the `ad-clicks` table in SPEC.md.
#[derive(Clone, Debug, PartialEq)]
pub struct Click {
    /// Written as `k<id>` (or a UUID, see `ids`); unique within a run.
    pub id: u64,
    pub ids: IdStyle,
    /// The clicked impression's id (`i<impression>`).
    pub impression: u64,
    pub user: u32,
    pub event_time: EpochMillis,
    pub timestamp: TimestampStyle,
}

impl World {
    /// Draws each campaign's click-through probability uniformly from `[ctr_min, ctr_max]`.
    pub fn new(params: WorldParams, rng: &mut impl Rng) -> World {
        let click_through = (0..params.campaigns)
            .map(|_| params.ctr_min + (params.ctr_max - params.ctr_min) * rng.random::<f64>())
            .collect();
        World { params, click_through }
    }

    /// The probability that an impression of `campaign` is clicked.
    pub fn click_through(&self, campaign: u32) -> f64 {
        self.click_through[campaign as usize]
    }

    /// Draws an impression with the given id at `event_time`: campaign, ad and user uniformly, the device by its
    /// weight, the browser uniformly, the cost uniformly from 0.0001 to 0.01.
    pub fn impression(&self, rng: &mut impl Rng, id: u64, event_time: EpochMillis) -> Impression {
        Impression {
            id,
            ids: self.params.ids,
            campaign: rng.random_range(0..self.params.campaigns),
            ad: rng.random_range(0..self.params.ads_per_campaign),
            user: rng.random_range(0..self.params.users),
            device: Device::draw(rng),
            browser: BROWSERS[rng.random_range(0..BROWSERS.len())],
            event_time,
            timestamp: self.timestamp_style(rng),
            cost_micros: rng.random_range(COST_MICROS),
        }
    }

    /// A click with the given id on impression `impression` of `user`, at `event_time`.
    pub fn click(&self, rng: &mut impl Rng, id: u64, impression: u64, user: u32, event_time: EpochMillis) -> Click {
        Click { id, ids: self.params.ids, impression, user, event_time, timestamp: self.timestamp_style(rng) }
    }

    /// A user drawn uniformly, for messages that are not tied to an impression.
    pub fn user(&self, rng: &mut impl Rng) -> u32 {
        rng.random_range(0..self.params.users)
    }

    fn timestamp_style(&self, rng: &mut impl Rng) -> TimestampStyle {
        let draw = rng.random::<f64>();
        if draw < self.params.epoch_ms_fraction {
            TimestampStyle::EpochMillis
        } else if draw < self.params.epoch_ms_fraction + OFFSET_TIMESTAMP_FRACTION {
            TimestampStyle::Offset(OFFSETS[rng.random_range(0..OFFSETS.len())])
        } else {
            TimestampStyle::Utc
        }
    }
}

impl Impression {
    /// The message key: the impression id, shared with the impression's clicks.
    pub fn key(&self) -> String {
        self.ids.id('i', self.id)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::with_capacity(224);
        let (user, campaign, ad) = (self.user, self.campaign, self.ad);
        out.push_str(r#"{"impression_id":""#);
        self.ids.write(&mut out, 'i', self.id);
        // Writing into a String cannot fail.
        let _ = write!(
            out,
            r#"","user_id":"u{user}","campaign_id":"c{campaign}","ad_id":"a{campaign}-{ad}","device_type":"{}","browser":"{}","event_timestamp":"#,
            self.device.as_str(),
            self.browser,
        );
        write_timestamp(&mut out, self.event_time, self.timestamp);
        let _ = write!(out, r#","cost":{}.{:06}}}"#, self.cost_micros / 1_000_000, self.cost_micros % 1_000_000);
        out.into_bytes()
    }
}

impl Click {
    /// The message key: the clicked impression's id, so that a click lands on its impression's partition.
    pub fn key(&self) -> String {
        self.ids.id('i', self.impression)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::with_capacity(128);
        out.push_str(r#"{"click_id":""#);
        self.ids.write(&mut out, 'k', self.id);
        out.push_str(r#"","impression_id":""#);
        self.ids.write(&mut out, 'i', self.impression);
        let _ = write!(out, r#"","user_id":"u{}","event_timestamp":"#, self.user);
        write_timestamp(&mut out, self.event_time, self.timestamp);
        out.push('}');
        out.into_bytes()
    }
}

fn write_timestamp(out: &mut String, instant: EpochMillis, style: TimestampStyle) {
    match style {
        TimestampStyle::EpochMillis => {
            let _ = write!(out, "{instant}");
        }
        TimestampStyle::Utc | TimestampStyle::Offset(_) => {
            let offset = match style {
                TimestampStyle::Offset(minutes) => Some(minutes),
                _ => None,
            };
            out.push('"');
            write_rfc3339(out, instant, offset);
            out.push('"');
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use serde_json::{Value, json};

    use super::*;

    fn world(rng: &mut ChaCha8Rng) -> World {
        let params = WorldParams {
            campaigns: 100,
            ads_per_campaign: 10,
            users: 50_000,
            ctr_min: 0.005,
            ctr_max: 0.05,
            epoch_ms_fraction: 0.1,
            ids: IdStyle::Short,
        };
        World::new(params, rng)
    }

    #[test]
    fn encodes_the_spec_fields() {
        let impression = Impression {
            id: 17,
            ids: IdStyle::Short,
            user: 3,
            campaign: 42,
            ad: 7,
            device: Device::Tablet,
            browser: "edge",
            event_time: 1_795_946_400_123,
            timestamp: TimestampStyle::Offset(120),
            cost_micros: 4200,
        };
        let value: Value = serde_json::from_slice(&impression.encode()).unwrap();
        assert_eq!(
            value,
            json!({"impression_id": "i17", "user_id": "u3", "campaign_id": "c42", "ad_id": "a42-7",
                   "device_type": "tablet", "browser": "edge",
                   "event_timestamp": "2026-11-29T12:00:00.123+02:00", "cost": 0.0042})
        );
        let click = Click {
            id: 5,
            ids: IdStyle::Short,
            impression: 17,
            user: 3,
            event_time: 1_795_946_400_999,
            timestamp: TimestampStyle::EpochMillis,
        };
        let value: Value = serde_json::from_slice(&click.encode()).unwrap();
        assert_eq!(
            value,
            json!({"click_id": "k5", "impression_id": "i17", "user_id": "u3", "event_timestamp": 1_795_946_400_999_i64})
        );
        assert_eq!(click.key(), impression.key());
    }

    #[test]
    fn uuid_ids_are_distinct_version_4_uuids_shared_by_a_click_and_its_impression() {
        let ids: std::collections::HashSet<String> = (0..100_000).map(|n| IdStyle::Uuid.id('i', n)).collect();
        assert_eq!(ids.len(), 100_000);
        for id in ids.iter().take(100) {
            let b = id.as_bytes();
            assert_eq!(b.len(), 36);
            assert!(b.iter().enumerate().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => *c == b'-',
                _ => c.is_ascii_hexdigit() && !c.is_ascii_uppercase(),
            }));
            assert_eq!(b[14], b'4', "version 4");
            assert!(matches!(b[19], b'8' | b'9' | b'a' | b'b'), "the RFC 4122 variant");
        }
        assert_ne!(IdStyle::Uuid.id('i', 5), IdStyle::Uuid.id('k', 5));
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let world = World::new(WorldParams { ids: IdStyle::Uuid, ..world(&mut rng).params }, &mut rng);
        let impression = world.impression(&mut rng, 17, 0);
        let click = world.click(&mut rng, 5, 17, 3, 10);
        let (i, c): (Value, Value) =
            (serde_json::from_slice(&impression.encode()).unwrap(), serde_json::from_slice(&click.encode()).unwrap());
        assert_eq!(i["impression_id"], IdStyle::Uuid.id('i', 17));
        assert_eq!(c["impression_id"], i["impression_id"]);
        assert_eq!(c["click_id"], IdStyle::Uuid.id('k', 5));
        assert_eq!((impression.key(), click.key()), (IdStyle::Uuid.id('i', 17), IdStyle::Uuid.id('i', 17)));
    }

    #[test]
    fn draws_within_the_world_and_by_weight() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let world = world(&mut rng);
        assert!(world.click_through.iter().all(|ctr| (0.005..=0.05).contains(ctr)));
        let draws = 100_000;
        let (mut mobile, mut epoch, mut offset) = (0, 0, 0);
        for id in 0..draws {
            let impression = world.impression(&mut rng, id, 0);
            assert!(impression.campaign < 100 && impression.ad < 10 && impression.user < 50_000);
            assert!(COST_MICROS.contains(&impression.cost_micros));
            mobile += u64::from(impression.device == Device::Mobile);
            epoch += u64::from(impression.timestamp == TimestampStyle::EpochMillis);
            offset += u64::from(matches!(impression.timestamp, TimestampStyle::Offset(_)));
        }
        let share = |count: u64| count as f64 / draws as f64;
        assert!((share(mobile) - 0.6).abs() < 0.01, "mobile {}", share(mobile));
        assert!((share(epoch) - 0.1).abs() < 0.01, "epoch {}", share(epoch));
        assert!((share(offset) - OFFSET_TIMESTAMP_FRACTION).abs() < 0.01, "offset {}", share(offset));
    }
}
