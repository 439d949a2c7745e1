//! The window rule, in one place (SPEC "Time"): tumbling event-time windows `[start, start +
//! size)` aligned to the epoch, and when a watermark closes one.
//!
//! Two watermarks use it. A task's own closes a window *at that task*: its later events of the
//! window are late, and the task hands its share of the window (a partial) to the merge. The
//! merge's (the smallest over the tasks) publishes the window.

use adstream_abi::time::window_start;

use crate::config::TimeConfig;

/// Window size and allowed lateness, and the join horizon that decides how long an impression
/// is kept.
#[derive(Clone, Copy, Debug, Default)]
pub struct WindowRule {
    pub window_ms: i64,
    pub allowed_lateness_ms: i64,
    pub join_horizon_ms: i64,
}

impl WindowRule {
    pub fn of(time: &TimeConfig) -> Self {
        WindowRule {
            window_ms: time.window_ms,
            allowed_lateness_ms: time.allowed_lateness_ms,
            join_horizon_ms: time.join_horizon_ms,
        }
    }

    /// The start of the window an event of time `ts` belongs to.
    pub fn start_of(&self, ts: i64) -> i64 {
        window_start(ts, self.window_ms)
    }

    /// The watermark at which the window starting at `start` closes: its end plus the allowed
    /// lateness.
    pub fn closes_at(&self, start: i64) -> i64 {
        start.saturating_add(self.window_ms).saturating_add(self.allowed_lateness_ms)
    }

    /// Whether `watermark` has closed the window starting at `start`.
    pub fn is_closed(&self, start: i64, watermark: i64) -> bool {
        self.closes_at(start) <= watermark
    }

    /// The watermark at which no future click can join an impression of time `ts`: once the
    /// window of `ts + horizon` has closed.
    pub fn impression_released_at(&self, ts: i64) -> i64 {
        self.closes_at(self.start_of(ts.saturating_add(self.join_horizon_ms)))
    }

    /// The oldest window a click can still be counted in at `watermark`: impressions older than
    /// it can be forgotten by the join.
    pub fn oldest_open(&self, watermark: i64) -> i64 {
        self.start_of(watermark.saturating_sub(self.allowed_lateness_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_closes_at_its_end_plus_the_lateness() {
        let rule = WindowRule { window_ms: 60_000, allowed_lateness_ms: 1_000, join_horizon_ms: 30_000 };
        assert_eq!(rule.start_of(125_000), 120_000);
        assert_eq!(rule.start_of(-1), -60_000);
        assert!(!rule.is_closed(120_000, 180_999));
        assert!(rule.is_closed(120_000, 181_000));
        // An impression at 125 s can be clicked until 155 s, in the window [120, 180) s.
        assert_eq!(rule.impression_released_at(125_000), 181_000);
        assert_eq!(rule.impression_released_at(155_000), 241_000);
        assert_eq!(rule.oldest_open(181_000), 180_000);
    }
}
