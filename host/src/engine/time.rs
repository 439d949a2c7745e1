//! The window rule, in one place (SPEC "Time"): event-time windows `[start, start + size)`
//! aligned to the epoch, one starting every `slide` (tumbling when the slide is the size), and
//! when a watermark closes one.
//!
//! Sliding windows are made of *panes*: slide-sized, aligned, non-overlapping. An event is
//! folded once, into its pane; a window's result is the merge of its `size / slide` panes. A
//! pane is *closed* once the first window that holds it (the one ending at the pane's end) is
//! closed: its later events are late, in none of its windows, so that every window of an event
//! holds it or none does. It is *released* once the last window that holds it (the one
//! starting at the pane's start) is closed. With tumbling windows a pane is a window, and the
//! two moments are one.
//!
//! Two watermarks use it. A task's own closes a pane *at that task*: its later events of the
//! pane are late, and the task hands its share of each closed window (a partial) to the merge.
//! The merge's (the smallest over the tasks) publishes the window.

use adstream_abi::time::window_start;

use crate::config::TimeConfig;
use crate::plugin::Window;

/// Window size, slide and allowed lateness, and the join horizon that decides how long an
/// impression is kept.
#[derive(Clone, Copy, Debug, Default)]
pub struct WindowRule {
    pub window_ms: i64,
    pub slide_ms: i64,
    pub allowed_lateness_ms: i64,
    pub join_horizon_ms: i64,
}

impl WindowRule {
    pub fn of(time: &TimeConfig) -> Self {
        WindowRule {
            window_ms: time.window_ms,
            slide_ms: time.slide_ms,
            allowed_lateness_ms: time.allowed_lateness_ms,
            join_horizon_ms: time.join_horizon_ms,
        }
    }

    /// Whether windows overlap.
    pub fn sliding(&self) -> bool {
        self.slide_ms < self.window_ms
    }

    /// The start of the pane an event of time `ts` belongs to (its window, when tumbling).
    pub fn start_of(&self, ts: i64) -> i64 {
        window_start(ts, self.slide_ms)
    }

    /// The pane starting at `start`.
    pub fn pane(&self, start: i64) -> Window {
        Window { start_ms: start, end_ms: start.saturating_add(self.slide_ms) }
    }

    /// The window starting at `start`.
    pub fn window(&self, start: i64) -> Window {
        Window { start_ms: start, end_ms: start.saturating_add(self.window_ms) }
    }

    /// The starts of the panes of the window starting at `start`, oldest first.
    pub fn panes_of(&self, start: i64) -> impl Iterator<Item = i64> + use<> {
        let slide = self.slide_ms;
        (0..self.window_ms / slide).map(move |i| start.saturating_add(i * slide))
    }

    /// The start of the first window that holds the pane starting at `pane`.
    pub fn first_window_of(&self, pane: i64) -> i64 {
        pane.saturating_add(self.slide_ms).saturating_sub(self.window_ms)
    }

    /// The watermark at which the pane starting at `start` closes: the end of its first window
    /// plus the allowed lateness.
    pub fn closes_at(&self, start: i64) -> i64 {
        start.saturating_add(self.slide_ms).saturating_add(self.allowed_lateness_ms)
    }

    /// Whether `watermark` has closed the pane starting at `start`.
    pub fn is_closed(&self, start: i64, watermark: i64) -> bool {
        self.closes_at(start) <= watermark
    }

    /// The watermark at which the window starting at `start` closes: its end plus the allowed
    /// lateness. For the pane starting there, the watermark at which it is released.
    pub fn window_closes_at(&self, start: i64) -> i64 {
        start.saturating_add(self.window_ms).saturating_add(self.allowed_lateness_ms)
    }

    /// Whether `watermark` has closed the window starting at `start`.
    pub fn window_is_closed(&self, start: i64, watermark: i64) -> bool {
        self.window_closes_at(start) <= watermark
    }

    /// The start of the newest window `watermark` has closed, to tell when a watermark closes
    /// another one: `i64::MIN` for a watermark that cannot have closed any (the bottom of the
    /// range, before any event), `i64::MAX` at the top (an idle task's, which holds nothing).
    pub fn newest_closed(&self, watermark: i64) -> i64 {
        match watermark {
            w if w <= i64::MIN / 2 => i64::MIN,
            w if w >= i64::MAX / 2 => i64::MAX,
            w => self.start_of(w - self.window_ms - self.allowed_lateness_ms),
        }
    }

    /// The watermark at which no future click can join an impression of time `ts`: once the
    /// last window of the pane of `ts + horizon` has closed.
    pub fn impression_released_at(&self, ts: i64) -> i64 {
        self.window_closes_at(self.start_of(ts.saturating_add(self.join_horizon_ms)))
    }

    /// The oldest pane a click can still be counted in at `watermark`: impressions older than
    /// it can be forgotten by the join.
    pub fn oldest_open(&self, watermark: i64) -> i64 {
        if watermark < i64::MIN / 2 {
            // Nothing closed yet (and no window arithmetic near the bottom of the range).
            return i64::MIN;
        }
        self.start_of(watermark.saturating_sub(self.allowed_lateness_ms))
    }

    /// The oldest pane with impressions a click still to be counted at `watermark` can join:
    /// one within the horizon before the oldest pane a window not closed holds (the oldest open
    /// one when tumbling; with sliding windows, a new owner counts again the re-read clicks of
    /// closed panes that such a window holds).
    pub fn joinable_from(&self, watermark: i64) -> i64 {
        match self.oldest_open(watermark) {
            i64::MIN => i64::MIN,
            open => {
                let held = open.saturating_sub(self.window_ms - self.slide_ms);
                self.start_of(held.saturating_sub(self.join_horizon_ms))
            }
        }
    }

    /// How many closed panes' impressions a click still to be counted can join, at most: each
    /// one's cut is in the checkpoints (see [`super::task::Task::was_on_time`]).
    pub fn joinable_panes(&self) -> i64 {
        (self.join_horizon_ms + self.slide_ms - 1) / self.slide_ms + self.window_ms / self.slide_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_closes_at_its_end_plus_the_lateness() {
        let rule =
            WindowRule { window_ms: 60_000, slide_ms: 60_000, allowed_lateness_ms: 1_000, join_horizon_ms: 30_000 };
        assert_eq!(rule.start_of(125_000), 120_000);
        assert_eq!(rule.start_of(-1), -60_000);
        assert!(!rule.is_closed(120_000, 180_999));
        assert!(rule.is_closed(120_000, 181_000));
        // An impression at 125 s can be clicked until 155 s, in the window [120, 180) s.
        assert_eq!(rule.impression_released_at(125_000), 181_000);
        assert_eq!(rule.impression_released_at(155_000), 241_000);
        assert_eq!(rule.oldest_open(181_000), 180_000);
        // A click at 180 s, the oldest that can still be counted, joins impressions from 150 s.
        assert_eq!(rule.joinable_from(181_000), 120_000);
        assert_eq!((rule.oldest_open(i64::MIN), rule.joinable_from(i64::MIN)), (i64::MIN, i64::MIN));
        assert_eq!(rule.joinable_panes(), 2);
        // The window [120, 180) s is the newest closed from 181 s on, until [180, 240) s closes.
        assert_eq!(rule.newest_closed(180_999), 60_000);
        assert_eq!((rule.newest_closed(181_000), rule.newest_closed(240_999)), (120_000, 120_000));
        assert_eq!(rule.newest_closed(241_000), 180_000);
        assert_eq!((rule.newest_closed(i64::MIN), rule.newest_closed(i64::MAX)), (i64::MIN, i64::MAX));
    }

    #[test]
    fn a_sliding_window_is_its_panes_and_a_pane_closes_with_its_first_window() {
        // 5-minute windows every minute.
        let rule = WindowRule { window_ms: 300_000, slide_ms: 60_000, allowed_lateness_ms: 0, join_horizon_ms: 0 };
        assert_eq!(rule.start_of(125_000), 120_000);
        assert_eq!(rule.panes_of(0).collect::<Vec<_>>(), [0, 60_000, 120_000, 180_000, 240_000]);
        // The pane [120, 180) s is in the windows starting at -120 s ... 120 s.
        assert_eq!(rule.first_window_of(120_000), -120_000);
        assert!(rule.is_closed(120_000, 180_000), "closed with the window [-120, 180) s");
        assert!(!rule.window_is_closed(120_000, 419_999));
        assert!(rule.window_is_closed(120_000, 420_000), "released with the window [120, 420) s");
        // With a 10-minute horizon: at 20 min the oldest pane open is [20, 21) min, and windows
        // not closed hold panes from 16 min on, whose re-read clicks a new owner counts again:
        // they join impressions from 6 min on.
        let rule = WindowRule { join_horizon_ms: 600_000, ..rule };
        assert_eq!(rule.joinable_from(1_200_000), 360_000);
        assert_eq!(rule.joinable_panes(), 15);
        let bounds = |w: Window| (w.start_ms, w.end_ms);
        assert_eq!(bounds(rule.window(120_000)), (120_000, 420_000));
        assert_eq!(bounds(rule.pane(120_000)), (120_000, 180_000));
    }
}
