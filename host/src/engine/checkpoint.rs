//! What a checkpoint carries for one partition beside its offset, in the commit's metadata:
//! `adstream/1 wm=<watermark> next=<offset> closed=<watermark> [cuts=<pane>:<offset>,...]
//! [cutsfrom=<pane>]`. For an input partition: its task's watermark (every window it closes
//! was handed to the merge in the same transaction), how far the partition had been read,
//! through which window the task had handed its windows over (beyond the watermark after an
//! idle spell), and where the partition had been read when each pane still of use closed (see
//! [`super::task::Task::was_on_time`]). For the partials topic: the watermark the merge
//! published through, and how far it had read. A new owner resumes from it (see
//! [`super::Engine::resume_partition`]).
//!
//! Kafka bounds the metadata (`offset.metadata.max.bytes`, 4096 by default): the cuts are at
//! most [`super::task::MAX_CUTS`] panes.

/// A partition's state at a checkpoint, as an earlier run left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub watermark: i64,
    /// Input partitions: every window this closes was handed to the merge (at least the
    /// watermark's; beyond it after an idle spell). Absent in older checkpoints.
    pub closed: i64,
    pub next: i64,
    /// Input partitions: (pane start, offset) for each pane closed at the task that a window
    /// not handed over still holds (sliding windows) or whose impressions a click still to be
    /// counted may join: where this partition had been read when the pane closed. `cuts=`.
    pub cuts: Vec<(i64, i64)>,
    /// Input partitions: every pane from this one on that closed at the task with an event in
    /// it has its cut in `cuts` (`None`: the cuts are complete only for panes a window not
    /// handed over holds, as in older checkpoints). `cutsfrom=`.
    pub cuts_from: Option<i64>,
}

impl Checkpoint {
    /// A checkpoint with no cuts (the partials topic's).
    pub fn new(watermark: i64, closed: i64, next: i64) -> Self {
        Checkpoint { watermark, closed, next, cuts: Vec::new(), cuts_from: None }
    }

    pub fn encode(&self) -> String {
        let mut text = format!("adstream/1 wm={} next={} closed={}", self.watermark, self.next, self.closed);
        for (i, (pane, offset)) in self.cuts.iter().enumerate() {
            text.push_str(&format!("{}{pane}:{offset}", if i == 0 { " cuts=" } else { "," }));
        }
        if let Some(from) = self.cuts_from {
            text.push_str(&format!(" cutsfrom={from}"));
        }
        text
    }

    /// `None` for metadata that is not a checkpoint (another tool's commit, or none).
    pub fn decode(metadata: &str) -> Option<Self> {
        let rest = metadata.strip_prefix("adstream/1 ")?;
        let mut watermark = None;
        let mut next = None;
        let mut closed = None;
        let mut cuts = Vec::new();
        let mut cuts_from = None;
        for field in rest.split(' ') {
            match field.split_once('=')? {
                ("wm", v) => watermark = v.parse().ok(),
                ("next", v) => next = v.parse().ok(),
                ("closed", v) => closed = v.parse().ok(),
                ("cuts", v) => {
                    for cut in v.split(',') {
                        let (pane, offset) = cut.split_once(':')?;
                        cuts.push((pane.parse().ok()?, offset.parse().ok()?));
                    }
                }
                ("cutsfrom", v) => cuts_from = Some(v.parse().ok()?),
                _ => {}
            }
        }
        let watermark = watermark?;
        Some(Checkpoint { watermark, closed: closed.unwrap_or(watermark), next: next?, cuts, cuts_from })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::task::MAX_CUTS;

    #[test]
    fn checkpoint_metadata_round_trips() {
        let cp = Checkpoint::new(-5, 60_000, 42);
        assert_eq!(Checkpoint::decode(&cp.encode()), Some(cp.clone()));
        let cut = Checkpoint { cuts: vec![(60_000, 17), (120_000, 40)], cuts_from: Some(0), ..cp };
        assert_eq!(cut.encode(), "adstream/1 wm=-5 next=42 closed=60000 cuts=60000:17,120000:40 cutsfrom=0");
        assert_eq!(Checkpoint::decode(&cut.encode()), Some(cut));
        assert_eq!(Checkpoint::decode(""), None);
        assert_eq!(Checkpoint::decode("adstream/1 wm=3"), None);
        assert_eq!(Checkpoint::decode("adstream/1 wm=3 next=4 cutsfrom=x"), None);
        // Older checkpoints: what was closed is what the watermark closes; no cuts beyond the
        // panes held.
        assert_eq!(Checkpoint::decode("adstream/1 wm=3 next=4"), Some(Checkpoint::new(3, 3, 4)));
    }

    #[test]
    fn the_most_cuts_fit_in_kafkas_default_metadata_limit() {
        // Panes and offsets as long as they get (this century's milliseconds; offsets in the
        // quadrillions).
        let pane = 4_102_444_800_000_i64;
        let cuts = (0..MAX_CUTS).map(|i| (pane + i * 60_000, 1_000_000_000_000_000 + i)).collect();
        let cp = Checkpoint { cuts, cuts_from: Some(pane), ..Checkpoint::new(pane, pane, i64::MAX) };
        let len = cp.encode().len();
        assert!(len <= 4096, "{len} bytes");
    }
}
