//! `adstream check-plugin`: a plugin's merge checked on real input, without Kafka. The input is
//! replayed through one task, then split over several (as Kafka's partitions would split it),
//! where every window is folded in several instances and merged from their exported
//! accumulators (`export-window`, `merge-window`); the two runs must publish the same records.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::{PluginConfig, TimeConfig};
use crate::metrics::Stats;

/// What the two replays published, and where they differ.
pub struct Report {
    pub tasks: usize,
    /// Result records (late and dead-letter copies left out) of the one-task replay.
    pub records: usize,
    pub windows: u64,
    /// Late events in the input: their decisions depend on each task's watermark, so they may
    /// make the runs differ without any fault of the plugin.
    pub late: u64,
    /// Records only one run published: (which run, the record).
    pub differences: Vec<(&'static str, String)>,
}

/// Replays `impressions` and `clicks` with 1 task and with `tasks` tasks, and compares the result
/// records (topic, key, value and headers).
pub fn check(
    time: TimeConfig,
    plugins: &PluginConfig,
    impressions: &Path,
    clicks: &Path,
    tasks: usize,
) -> anyhow::Result<Report> {
    anyhow::ensure!(tasks >= 2, "--tasks must be at least 2: the check compares 1 task with several");
    let run = |tasks: usize| -> anyhow::Result<(Stats, BTreeMap<String, usize>)> {
        let mut out = Vec::new();
        let stats = super::replay(time, plugins, impressions, clicks, tasks, 1, &mut out)?;
        let mut records = BTreeMap::new();
        for line in String::from_utf8(out)?.lines() {
            let v: serde_json::Value = serde_json::from_str(line)?;
            // Copies of input messages (late, dead letters) say where they came from, which
            // differs between the runs: only what plugins published is compared.
            if v["headers"].get("plugin").is_none() {
                continue;
            }
            *records.entry(line.to_owned()).or_default() += 1;
        }
        Ok((stats, records))
    };
    let (one_stats, one) = run(1)?;
    let (_, many) = run(tasks)?;
    let mut differences = Vec::new();
    for (record, n) in &one {
        let m = many.get(record).copied().unwrap_or(0);
        differences.extend(std::iter::repeat_n(("only with 1 task", record.clone()), n.saturating_sub(m)));
    }
    for (record, m) in &many {
        let n = one.get(record).copied().unwrap_or(0);
        differences.extend(std::iter::repeat_n(("only with several tasks", record.clone()), m.saturating_sub(n)));
    }
    Ok(Report {
        tasks,
        records: one.values().sum(),
        windows: one_stats.windows_emitted,
        late: one_stats.late,
        differences,
    })
}
