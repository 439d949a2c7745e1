//! Anomalies injected into the stream (`--anomaly`), so that a detector can be shown and tested:
//! from a given time into the run, one campaign or device type behaves unlike before.
//!
//! A stream with no anomaly draws exactly what it drew before anomalies existed; one with
//! anomalies draws the same until the first event an anomaly touches.

use std::time::Duration;

use crate::model::Device;
use crate::time::EpochMillis;

/// Users a bot or click-fraud burst comes from: `u0` .. `u19`.
pub const BOT_USERS: u32 = 20;

/// Click probability of an impression in a click-fraud burst.
pub const BURST_CLICK_THROUGH: f64 = 0.5;

/// What goes wrong.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AnomalyKind {
    /// `ctr-zero:c7`: campaign c7's impressions are no longer clicked.
    CtrZero(u32),
    /// `click-burst:c3`: campaign c3's impressions come from [`BOT_USERS`] users, who click half
    /// of them.
    ClickBurst(u32),
    /// `traffic-halving:tablet`: half of the impressions that would be from tablets come from
    /// another device type instead.
    TrafficHalving(Device),
    /// `bots:mobile`: half of the mobile impressions come from [`BOT_USERS`] users.
    Bots(Device),
}

/// An anomaly and when it holds, as given on the command line: offsets from `--start`.
#[derive(Clone, Debug, PartialEq)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    pub from: Duration,
    /// `None`: to the end of the run.
    pub lasting: Option<Duration>,
}

/// An anomaly with its event-time range `[from, until)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Active {
    pub kind: AnomalyKind,
    pub from: EpochMillis,
    pub until: EpochMillis,
}

impl Anomaly {
    /// `KIND:TARGET@FROM[+FOR]`, e.g. `ctr-zero:c7@20m` or `click-burst:c3@25m+3m`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let usage = || {
            format!(
                "{s:?}: expected KIND:TARGET@FROM[+FOR] with KIND ctr-zero or click-burst (TARGET a campaign, c7) or traffic-halving or bots (TARGET mobile, desktop or tablet), e.g. ctr-zero:c7@20m or bots:mobile@25m+5m"
            )
        };
        let (what, when) = s.split_once('@').ok_or_else(usage)?;
        let (kind, target) = what.split_once(':').ok_or_else(usage)?;
        let campaign = || target.strip_prefix('c').and_then(|n| n.parse::<u32>().ok()).ok_or_else(usage);
        let device = || Device::parse(target).ok_or_else(usage);
        let kind = match kind {
            "ctr-zero" => AnomalyKind::CtrZero(campaign()?),
            "click-burst" => AnomalyKind::ClickBurst(campaign()?),
            "traffic-halving" => AnomalyKind::TrafficHalving(device()?),
            "bots" => AnomalyKind::Bots(device()?),
            _ => return Err(usage()),
        };
        let (from, lasting) = match when.split_once('+') {
            Some((from, lasting)) => (from, Some(lasting)),
            None => (when, None),
        };
        let duration = |text: &str| humantime::parse_duration(text.trim()).map_err(|e| format!("{s:?}: {text:?}: {e}"));
        Ok(Anomaly { kind, from: duration(from)?, lasting: lasting.map(duration).transpose()? })
    }

    /// Its event-time range in a run that starts at `start`.
    pub fn at(&self, start: EpochMillis) -> Active {
        let from = start.saturating_add(self.from.as_millis() as i64);
        let until = self.lasting.map_or(EpochMillis::MAX, |d| from.saturating_add(d.as_millis() as i64));
        Active { kind: self.kind, from, until }
    }

    /// The campaign it targets, if any.
    pub fn campaign(&self) -> Option<u32> {
        match self.kind {
            AnomalyKind::CtrZero(c) | AnomalyKind::ClickBurst(c) => Some(c),
            _ => None,
        }
    }
}

impl Active {
    pub fn holds_at(&self, t: EpochMillis) -> bool {
        (self.from..self.until).contains(&t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anomalies_parse_and_nonsense_is_refused() {
        let a = Anomaly::parse("ctr-zero:c7@20m").unwrap();
        assert_eq!((a.kind, a.from, a.lasting), (AnomalyKind::CtrZero(7), Duration::from_secs(1200), None));
        let b = Anomaly::parse("bots:mobile@25m+5m").unwrap();
        assert_eq!(b.kind, AnomalyKind::Bots(Device::Mobile));
        let active = b.at(1_000);
        assert!(active.holds_at(1_000 + 1_500_000) && !active.holds_at(1_000 + 1_800_000) && !active.holds_at(999));
        for bad in ["ctr-zero:c7", "ctr-zero:7@1m", "bots:phone@1m", "melt:c1@1m", "click-burst:c1@soon"] {
            assert!(Anomaly::parse(bad).is_err(), "{bad}");
        }
    }
}
