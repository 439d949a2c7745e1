//! The command line: every option, its default, its `ADGEN_*` environment variable, and the checks that turn it
//! into [`StreamParams`].

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail, ensure};
use clap::Parser;

use crate::anomaly::Anomaly;
use crate::model::{IdStyle, WorldParams};
use crate::stream::StreamParams;
use crate::time::{EpochMillis, VALID_EVENT_TIMES, format_rfc3339, parse_rfc3339};

/// The host's default allowed out-of-orderness; on-time events must stay within it.
const HOST_OUT_OF_ORDERNESS: Duration = Duration::from_secs(5);
/// The host's default join horizon; a click later than this after its impression could not be attributed.
const HOST_JOIN_HORIZON: Duration = Duration::from_secs(600);

/// Generates ad impressions and clicks (the input topics of SPEC.md) into Kafka or JSONL files.
///
/// The output is a function of the seed and the options: the same command writes the same bytes in the same
/// order on every topic, whatever the destination and however fast it runs. Only `--start now` reads the clock.
#[derive(Clone, Debug, Parser)]
#[command(name = "adgen", version, max_term_width = 110, after_help = EXAMPLES)]
pub struct Config {
    /// Kafka bootstrap servers, as a comma-separated list of host:port.
    #[arg(
        long,
        env = "ADGEN_BROKERS",
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT,...",
        help_heading = "Destination"
    )]
    pub brokers: String,

    /// Kafka topic for impressions.
    #[arg(
        long,
        env = "ADGEN_IMPRESSIONS_TOPIC",
        default_value = "ad-impressions",
        value_name = "TOPIC",
        help_heading = "Destination"
    )]
    pub impressions_topic: String,

    /// Kafka topic for clicks.
    #[arg(
        long,
        env = "ADGEN_CLICKS_TOPIC",
        default_value = "ad-clicks",
        value_name = "TOPIC",
        help_heading = "Destination"
    )]
    pub clicks_topic: String,

    /// Prefix added to both topic names (as `adstream run --topic-prefix` reads them), e.g. `test-42.`.
    #[arg(long, env = "ADGEN_TOPIC_PREFIX", default_value = "", value_name = "PREFIX", help_heading = "Destination")]
    pub topic_prefix: String,

    /// Compression of the produced batches: none, gzip, snappy, lz4 or zstd (the host reads them all).
    #[arg(long, env = "ADGEN_COMPRESSION", default_value = "lz4", value_parser = ["none", "gzip", "snappy", "lz4", "zstd"],
          help_heading = "Destination")]
    pub compression: String,

    /// Partitions of each topic when adgen creates it (replication factor 1). Topics that already exist are
    /// left as they are. Messages are keyed by impression id, so with equal partition counts an impression
    /// and its clicks share a partition number.
    #[arg(long, env = "ADGEN_PARTITIONS", default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(i32).range(1..), help_heading = "Destination")]
    pub partitions: i32,

    /// Write to files instead of Kafka: DIR/ad-impressions.jsonl and DIR/ad-clicks.jsonl, one message per line,
    /// exactly the bytes that would be produced (malformed messages may not be UTF-8, so read them as bytes).
    /// DIR is created if needed; the files are replaced.
    #[arg(long, env = "ADGEN_JSONL", value_name = "DIR", conflicts_with = "tee_jsonl", help_heading = "Destination")]
    pub jsonl: Option<PathBuf>,

    /// Write to Kafka and also to DIR/ad-impressions.jsonl and DIR/ad-clicks.jsonl, as with --jsonl: a record
    /// of exactly what was produced, to compute expected results from.
    #[arg(long, env = "ADGEN_TEE_JSONL", value_name = "DIR", help_heading = "Destination")]
    pub tee_jsonl: Option<PathBuf>,

    /// Extra librdkafka producer setting, overriding adgen's own (repeatable), e.g. -X linger.ms=50 or
    /// -X security.protocol=ssl. Also applies to the admin client that creates the topics. In
    /// ADGEN_PRODUCER_CONFIG, separate settings with `;`.
    #[arg(short = 'X', long = "producer-config", env = "ADGEN_PRODUCER_CONFIG", value_name = "KEY=VALUE",
          value_parser = parse_key_value, value_delimiter = ';', help_heading = "Destination")]
    pub producer_config: Vec<(String, String)>,

    /// Messages to write in total: impressions, clicks and malformed ones together. Accepts 5000000, 5_000_000,
    /// 5M or 200k.
    #[arg(long, env = "ADGEN_EVENTS", default_value = "5000000", value_name = "N", value_parser = parse_count,
          conflicts_with = "duration", help_heading = "Volume and time")]
    pub events: u64,

    /// Instead of --events: write for this long at --rate, that is duration × rate messages, with event time
    /// advancing 1/rate per message (with --start now it follows the wall clock). The count is fixed up front
    /// to keep the output deterministic, so a destination that cannot keep up makes the run last longer.
    #[arg(long, env = "ADGEN_DURATION", value_name = "DURATION", value_parser = humantime::parse_duration,
          requires = "rate", help_heading = "Volume and time")]
    pub duration: Option<Duration>,

    /// Messages per second to write at; 0 writes as fast as possible. Pacing never changes the messages.
    #[arg(long, env = "ADGEN_RATE", default_value = "0", value_name = "PER_SECOND", value_parser = parse_count,
          help_heading = "Volume and time")]
    pub rate: u64,

    /// Event time of the first message: an RFC 3339 date-time, or `now` for the current time (the one option
    /// that makes a run depend on when it starts). All event times must fall within 2000 .. 2100, the range
    /// the host accepts.
    #[arg(long, env = "ADGEN_START", default_value = "2026-11-29T10:00:00Z", value_name = "TIME",
          value_parser = parse_start, help_heading = "Volume and time")]
    pub start: Start,

    /// Event time covered by --events: message i is made at start + i × span / events. Clicks and the emission
    /// order add at most --click-delay-max past the end.
    #[arg(long, env = "ADGEN_SPAN", default_value = "10m", value_name = "DURATION",
          value_parser = humantime::parse_duration, conflicts_with = "duration", help_heading = "Volume and time")]
    pub span: Duration,

    /// Seed of every random choice. Same seed and options, same bytes.
    #[arg(long, env = "ADGEN_SEED", default_value_t = 42, help_heading = "Volume and time")]
    pub seed: u64,

    /// Campaigns, with ids c0 .. c{N-1}; each impression picks one uniformly.
    #[arg(long, env = "ADGEN_CAMPAIGNS", default_value = "100", value_name = "N", value_parser = parse_u32_count,
          help_heading = "What the events look like")]
    pub campaigns: u32,

    /// Ads per campaign, with ids a<campaign>-<n> (e.g. a17-3 is ad 3 of campaign c17).
    #[arg(long, env = "ADGEN_ADS_PER_CAMPAIGN", default_value = "10", value_name = "N",
          value_parser = parse_u32_count, help_heading = "What the events look like")]
    pub ads_per_campaign: u32,

    /// How impression and click ids are written: `short` (i<n>, k<n>) or `uuid` (36-character
    /// version 4 UUIDs, as many ad servers write them; the host's join memory grows with id length).
    #[arg(long, env = "ADGEN_ID_STYLE", value_enum, default_value_t = IdStyle::Short, value_name = "STYLE",
          help_heading = "What the events look like")]
    pub id_style: IdStyle,

    /// Users, with ids u0 .. u{N-1}; each impression picks one uniformly, and its click has the same user.
    #[arg(long, env = "ADGEN_USERS", default_value = "50000", value_name = "N", value_parser = parse_u32_count,
          help_heading = "What the events look like")]
    pub users: u32,

    /// Smallest click-through probability of a campaign. Each campaign's is drawn uniformly from
    /// [--ctr-min, --ctr-max], and each of its impressions is clicked with that probability.
    #[arg(long, env = "ADGEN_CTR_MIN", default_value_t = 0.005, value_name = "P", value_parser = parse_fraction,
          help_heading = "What the events look like")]
    pub ctr_min: f64,

    /// Largest click-through probability of a campaign.
    #[arg(long, env = "ADGEN_CTR_MAX", default_value_t = 0.05, value_name = "P", value_parser = parse_fraction,
          help_heading = "What the events look like")]
    pub ctr_max: f64,

    /// Longest time from an impression to its click; each click's delay is uniform from 0 to this. At most the
    /// host's 10-minute join horizon.
    #[arg(long, env = "ADGEN_CLICK_DELAY_MAX", default_value = "30s", value_name = "DURATION",
          value_parser = humantime::parse_duration, help_heading = "What the events look like")]
    pub click_delay_max: Duration,

    /// Share of valid events whose event_timestamp is an integer of epoch milliseconds. Of the rest, 5% are RFC
    /// 3339 with a numeric offset such as +02:00 (the same instant) and the others RFC 3339 in UTC with a Z.
    #[arg(long, env = "ADGEN_EPOCH_MS_FRACTION", default_value_t = 0.1, value_name = "F",
          value_parser = parse_fraction, help_heading = "What the events look like")]
    pub epoch_ms_fraction: f64,

    /// Largest disorder of on-time events: each is emitted at event time + uniform[0, jitter], merged across
    /// both topics, so no event follows one more than this newer. Must stay below the host's allowed
    /// out-of-orderness (5s), or on-time events would turn late.
    #[arg(long, env = "ADGEN_JITTER", default_value = "3s", value_name = "DURATION",
          value_parser = humantime::parse_duration, help_heading = "Disorder and bad data")]
    pub jitter: Duration,

    /// Share of valid events (impressions and clicks) emitted 3 to 5 minutes after their event time, when the
    /// host has closed their 1-minute window: they are otherwise valid, and should end in the late topic. Only
    /// events at least 3 minutes before the end of the span are chosen, so the span must exceed 3 minutes.
    #[arg(long, env = "ADGEN_LATE_FRACTION", default_value_t = 0.0, value_name = "F",
          value_parser = parse_fraction, help_heading = "Disorder and bad data")]
    pub late_fraction: f64,

    /// Share of messages that are invalid (they count in --events), for the dead-letter path. They cycle through
    /// not JSON, truncated JSON, a JSON array, invalid UTF-8, a missing field, cost as a string, an integer
    /// user_id, an unparseable or out-of-range timestamp, an empty impression_id, a negative cost and a null
    /// field; on either topic, keyed by an impression id like valid ones.
    #[arg(long, env = "ADGEN_MALFORMED_FRACTION", default_value_t = 0.0, value_name = "F",
          value_parser = parse_fraction, help_heading = "Disorder and bad data")]
    pub malformed_fraction: f64,

    /// Share of on-time valid events (impressions and clicks) written twice, as a producer that retries
    /// without idempotence does: the same key and bytes, the copy emitted apart from the original within
    /// --jitter of its event time (so either may arrive first). Copies count in --events and in the summary's
    /// `duplicates`. Counting each event once is the reader's job: the same id is the same event.
    #[arg(long, env = "ADGEN_DUPLICATE_FRACTION", default_value_t = 0.0, value_name = "F",
          value_parser = parse_fraction, help_heading = "Disorder and bad data")]
    pub duplicate_fraction: f64,

    /// Inject an anomaly, for a detector to find (repeatable): KIND:TARGET@FROM[+FOR], FROM and FOR
    /// from --start (without +FOR, to the end). `ctr-zero:c7@20m`: campaign c7 is no longer clicked;
    /// `click-burst:c3@25m+3m`: c3's impressions come from 20 users who click half of them;
    /// `traffic-halving:tablet@30m`: half of the tablet impressions come from another device type;
    /// `bots:mobile@35m`: half of the mobile impressions come from 20 users.
    #[arg(long = "anomaly", value_name = "KIND:TARGET@FROM[+FOR]", value_parser = Anomaly::parse,
          help_heading = "Disorder and bad data")]
    pub anomalies: Vec<Anomaly>,

    /// No progress bar (the final summary line is still printed).
    #[arg(short, long, env = "ADGEN_QUIET", help_heading = "Reporting")]
    pub quiet: bool,

    /// Also write the final counts as JSON to FILE: messages, impressions, clicks, late, malformed and duplicates, in total
    /// and per topic, malformed per kind, the event-time range and the elapsed time.
    #[arg(long, env = "ADGEN_SUMMARY_JSON", value_name = "FILE", help_heading = "Reporting")]
    pub summary_json: Option<PathBuf>,
}

const EXAMPLES: &str = "\
Examples:
  adgen --events 1M --partitions 4                 1M messages over 10 minutes of event time, into Kafka
  adgen --jsonl /tmp/g --events 200k --seed 7      the same kind of data into /tmp/g/*.jsonl
  adgen --tee-jsonl /tmp/g --late-fraction 0.01 --malformed-fraction 0.01 --summary-json /tmp/g/summary.json
  adgen --start now --duration 30m --rate 5000     a live stream whose event time follows the clock";

/// When the event time starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The wall clock when the run starts.
    Now,
    At(EpochMillis),
}

/// Where messages go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    Kafka { tee_jsonl: Option<PathBuf> },
    Jsonl(PathBuf),
}

impl Config {
    /// Checks the options and turns them into what the message stream needs.
    pub fn stream_params(&self) -> Result<StreamParams> {
        ensure!(self.ctr_min <= self.ctr_max, "--ctr-min ({}) is above --ctr-max ({})", self.ctr_min, self.ctr_max);
        ensure!(
            self.jitter < HOST_OUT_OF_ORDERNESS,
            "--jitter {} must be below the host's allowed out-of-orderness of 5s, or on-time events turn late",
            humantime::format_duration(self.jitter)
        );
        ensure!(
            self.click_delay_max <= HOST_JOIN_HORIZON,
            "--click-delay-max {} is beyond the host's 10-minute join horizon: such clicks could not be attributed",
            humantime::format_duration(self.click_delay_max)
        );
        ensure!(self.malformed_fraction < 1.0, "--malformed-fraction must be below 1");
        for a in &self.anomalies {
            if let Some(c) = a.campaign() {
                ensure!(
                    c < self.campaigns,
                    "--anomaly names campaign c{c}, but there are {} (c0 .. c{})",
                    self.campaigns,
                    self.campaigns - 1
                );
            }
        }

        let (messages, span) = match self.duration {
            Some(duration) => {
                ensure!(self.rate > 0, "--duration needs a --rate above 0: event time advances 1/rate per message");
                let messages = u128::from(self.rate) * duration.as_millis() / 1000;
                (u64::try_from(messages).context("--duration × --rate is too many messages")?, duration)
            }
            None => (self.events, self.span),
        };
        let span_ms = i64::try_from(span.as_millis()).context("the span is too long")?;
        ensure!(span_ms > 0 || messages == 0, "the span of event time must be at least 1ms");

        let start = match self.start {
            Start::At(instant) => instant,
            Start::Now => {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).context("the clock is before 1970")?;
                i64::try_from(now.as_millis()).context("the clock is out of range")?
            }
        };
        // No event time reaches the end of the span plus the longest click delay.
        let last = start.saturating_add(span_ms).saturating_add(self.click_delay_max.as_millis() as i64);
        ensure!(
            VALID_EVENT_TIMES.contains(&start) && last < VALID_EVENT_TIMES.end,
            "event times must stay within {} .. {} (the host rejects others as out of range)",
            format_rfc3339(VALID_EVENT_TIMES.start),
            format_rfc3339(VALID_EVENT_TIMES.end),
        );

        let params = StreamParams {
            seed: self.seed,
            messages,
            start,
            span_ms,
            world: WorldParams {
                campaigns: self.campaigns,
                ads_per_campaign: self.ads_per_campaign,
                users: self.users,
                ctr_min: self.ctr_min,
                ctr_max: self.ctr_max,
                epoch_ms_fraction: self.epoch_ms_fraction,
                ids: self.id_style,
            },
            click_delay_max_ms: self.click_delay_max.as_millis() as i64,
            jitter_us: self.jitter.as_micros() as i64,
            late_fraction: self.late_fraction,
            malformed_fraction: self.malformed_fraction,
            duplicate_fraction: self.duplicate_fraction,
            anomalies: self.anomalies.iter().map(|a| a.at(start)).collect(),
        };
        if params.late_probability().is_none() {
            bail!(
                "--late-fraction {} is too much for a span of {}: only events at least 3 minutes before the end of \
                 the span can be late, so at most a share of (span - 3m) / span",
                self.late_fraction,
                humantime::format_duration(span)
            );
        }
        Ok(params)
    }

    /// Where the messages go.
    pub fn destination(&self) -> Destination {
        match &self.jsonl {
            Some(dir) => Destination::Jsonl(dir.clone()),
            None => Destination::Kafka { tee_jsonl: self.tee_jsonl.clone() },
        }
    }

    /// The two topic names, prefixed: impressions, clicks.
    pub fn topics(&self) -> [String; 2] {
        [
            format!("{}{}", self.topic_prefix, self.impressions_topic),
            format!("{}{}", self.topic_prefix, self.clicks_topic),
        ]
    }

    /// Messages per second, if paced.
    pub fn pace(&self) -> Option<u64> {
        (self.rate > 0).then_some(self.rate)
    }
}

fn parse_start(text: &str) -> Result<Start> {
    if text.eq_ignore_ascii_case("now") {
        return Ok(Start::Now);
    }
    parse_rfc3339(text).map(Start::At)
}

/// A count such as `5000000`, `5_000_000`, `5M` or `200k`.
fn parse_count(text: &str) -> Result<u64> {
    let digits: String = text.chars().filter(|c| *c != '_').collect();
    let (number, unit) = match digits.char_indices().last() {
        Some((at, 'k' | 'K')) => (&digits[..at], 1_000),
        Some((at, 'm' | 'M')) => (&digits[..at], 1_000_000),
        Some((at, 'g' | 'G' | 'b' | 'B')) => (&digits[..at], 1_000_000_000),
        _ => (&digits[..], 1),
    };
    let number: u64 = number.parse().with_context(|| format!("`{text}` is not a count like 5000000 or 5M"))?;
    number.checked_mul(unit).with_context(|| format!("`{text}` is too large"))
}

fn parse_u32_count(text: &str) -> Result<u32> {
    let count = u32::try_from(parse_count(text)?).with_context(|| format!("`{text}` is too large"))?;
    ensure!(count > 0, "must be at least 1");
    Ok(count)
}

fn parse_fraction(text: &str) -> Result<f64> {
    let fraction: f64 = text.parse().with_context(|| format!("`{text}` is not a number"))?;
    ensure!((0.0..=1.0).contains(&fraction), "`{text}` is not between 0 and 1");
    Ok(fraction)
}

fn parse_key_value(text: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => Ok((key.trim().to_owned(), value.to_owned())),
        _ => bail!("`{text}` is not KEY=VALUE"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("adgen").chain(args.iter().copied()))
    }

    #[test]
    fn the_defaults_follow_the_brief() {
        let config = parse(&[]).unwrap();
        let params = config.stream_params().unwrap();
        assert_eq!(params.messages, 5_000_000);
        assert_eq!(params.start, 1_795_946_400_000);
        assert_eq!(params.span_ms, 600_000);
        assert_eq!(params.jitter_us, 3_000_000);
        assert_eq!(params.click_delay_max_ms, 30_000);
        assert_eq!((params.world.campaigns, params.world.ads_per_campaign, params.world.users), (100, 10, 50_000));
        assert_eq!(config.brokers, "127.0.0.1:9092");
        assert_eq!(config.destination(), Destination::Kafka { tee_jsonl: None });
        assert_eq!(config.pace(), None);
    }

    #[test]
    fn duration_and_rate_fix_the_count_and_the_span() {
        let config = parse(&["--duration", "30m", "--rate", "2k", "--start", "now"]).unwrap();
        let params = config.stream_params().unwrap();
        assert_eq!(params.messages, 3_600_000);
        assert_eq!(params.span_ms, 1_800_000);
        assert!(parse(&["--duration", "30m"]).is_err(), "--duration without --rate");
        assert!(parse(&["--duration", "30m", "--rate", "0"]).unwrap().stream_params().is_err());
        assert!(parse(&["--duration", "30m", "--rate", "5", "--events", "9"]).is_err());
        assert!(parse(&["--duration", "30m", "--rate", "5", "--span", "1m"]).is_err());
    }

    #[test]
    fn nonsense_is_refused_with_a_reason() {
        assert!(parse(&["--late-fraction", "1.5"]).is_err());
        assert!(parse(&["--partitions", "0"]).is_err());
        assert!(parse(&["--users", "0"]).is_err());
        assert!(parse(&["--start", "tomorrow"]).is_err());
        assert!(parse(&["--start", "1999-12-31T23:59:59Z"]).unwrap().stream_params().is_err());
        assert!(parse(&["--start", "2099-12-31T23:55:00Z"]).unwrap().stream_params().is_err());
        assert!(parse(&["--start", "2099-12-31T23:00:00Z", "--span", "1m"]).unwrap().stream_params().is_ok());
        assert!(parse(&["--jsonl", "a", "--tee-jsonl", "b"]).is_err());
        for args in [
            &["--jitter", "5s"][..],
            &["--ctr-min", "0.2", "--ctr-max", "0.1"],
            &["--click-delay-max", "11m"],
            &["--malformed-fraction", "1"],
            &["--span", "0s"],
        ] {
            assert!(parse(args).unwrap().stream_params().is_err(), "{args:?} accepted");
        }
    }

    #[test]
    fn counts_and_settings_parse_in_friendly_forms() {
        assert_eq!(parse_count("5_000_000").unwrap(), 5_000_000);
        assert_eq!(parse_count("200k").unwrap(), 200_000);
        assert_eq!(parse_count("5M").unwrap(), 5_000_000);
        assert!(parse_count("5x").is_err());
        assert!(parse_count("").is_err());
        let config = parse(&["-X", "linger.ms=50", "--producer-config", "acks=1"]).unwrap();
        assert_eq!(config.producer_config.len(), 2);
        assert_eq!(config.producer_config[1], ("acks".to_owned(), "1".to_owned()));
    }

    #[test]
    fn the_help_is_consistent() {
        use clap::CommandFactory as _;
        Config::command().debug_assert();
    }
}
