//! The rows of a benchmark run and the table `adbench` prints.

use std::fmt::Write;

use serde::Serialize;

use crate::Workload;
use crate::measure::Usage;

/// The best Apache Flink 2.3 figure for this workload on a 2-core machine (issue 4): 25–29
/// thousand events per CPU-second. Comparisons use the upper end, which flatters Flink.
const FLINK_EVENTS_PER_CPU_S: f64 = 29_000.0;

/// One measured configuration.
#[derive(Debug, Serialize)]
pub struct Row {
    pub workload: String,
    /// `replay` (files, no Kafka) or `kafka` (the real broker, end to end).
    pub mode: &'static str,
    /// `wasm` or `native`.
    pub plugins: &'static str,
    /// Messages the host consumed.
    pub events: u64,
    /// Runs behind the figures (the median by CPU is shown).
    pub runs: usize,
    pub usage: Usage,
    pub events_per_cpu_s: f64,
    pub events_per_wall_s: f64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    /// Windows behind the latency figures.
    pub latency_windows: usize,
    pub startup_ms: Option<f64>,
    /// The results equal those of the WebAssembly replay of the same data.
    pub results_match: bool,
}

impl Row {
    fn new(w: &Workload, mode: &'static str, plugins: &'static str, usage: Usage, stats: &serde_json::Value) -> Row {
        let events = stats["consumed"].as_u64().unwrap_or(0);
        let mut latencies: Vec<f64> = stats["result_latencies_us"]
            .as_array()
            .map(|a| a.iter().filter_map(serde_json::Value::as_f64).map(|us| us / 1000.0).collect())
            .unwrap_or_default();
        latencies.sort_by(f64::total_cmp);
        Row {
            workload: w.label(),
            mode,
            plugins,
            events,
            runs: 1,
            usage,
            events_per_cpu_s: events as f64 / usage.cpu_s(),
            events_per_wall_s: events as f64 / usage.wall_s,
            latency_p50_ms: percentile(&latencies, 0.50),
            latency_p99_ms: percentile(&latencies, 0.99),
            latency_windows: latencies.len(),
            startup_ms: stats["startup_to_first_message_us"].as_f64().map(|us| us / 1000.0),
            results_match: false,
        }
    }

    pub fn replay(
        w: &Workload,
        plugins: &'static str,
        usage: Usage,
        stats: &serde_json::Value,
        results_match: bool,
        runs: usize,
    ) -> Row {
        Row { results_match, runs, ..Row::new(w, "replay", plugins, usage, stats) }
    }

    pub fn kafka(
        w: &Workload,
        plugins: &'static str,
        usage: Usage,
        stats: &serde_json::Value,
        results_match: bool,
    ) -> Row {
        Row { results_match, ..Row::new(w, "kafka", plugins, usage, stats) }
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.max(1) - 1).copied()
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.digits$}"))
}

/// `1234567.8` → `1,234,568`.
fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn find<'a>(rows: &'a [Row], mode: &str, plugins: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.mode == mode && r.plugins == plugins)
}

/// The table, the WebAssembly/native ratios and the targets of issue 4, as Markdown.
pub fn render(rows: &[Row], brokers: &str) -> String {
    let mut s = String::new();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let _ = writeln!(s, "# adbench results\n\n{cores} cores, {cpu}; Kafka at {brokers}.\n");
    let _ = writeln!(
        s,
        "| workload | mode | plugins | events | runs | CPU s | events / CPU-s | wall s | events / wall-s | peak RSS MB | latency p50 / p99 ms (windows) | start-up ms | results |"
    );
    let _ = writeln!(s, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in rows {
        let latency = match r.latency_windows {
            0 => "–".to_owned(),
            n => format!("{} / {} ({n})", opt(r.latency_p50_ms, 1), opt(r.latency_p99_ms, 1)),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {:.2} | {} | {:.2} | {} | {:.0} | {} | {} | {} |",
            r.workload,
            r.mode,
            r.plugins,
            thousands(r.events as f64),
            r.runs,
            r.usage.cpu_s(),
            thousands(r.events_per_cpu_s),
            r.usage.wall_s,
            thousands(r.events_per_wall_s),
            r.usage.max_rss_mb,
            latency,
            opt(r.startup_ms, 1),
            if r.results_match { "same" } else { "DIFFERENT" },
        );
    }
    let _ = writeln!(s, "\n## Against the targets (main workload, first rows)\n");
    let mut target = |name: &str, value: Option<f64>, goal: f64, higher_is_better: bool, unit: &str| {
        let verdict = match value {
            None => "not measured".to_owned(),
            Some(v) if (higher_is_better && v >= goal) || (!higher_is_better && v <= goal) => "met".to_owned(),
            Some(v) => format!("missed by {:.0}%", ((v - goal) / goal).abs() * 100.0),
        };
        let shown =
            value.map_or_else(|| "–".to_owned(), |v| if v >= 1000.0 { thousands(v) } else { format!("{v:.2}") });
        let goal = if goal >= 1000.0 { thousands(goal) } else { format!("{goal}") };
        let op = if higher_is_better { "≥" } else { "≤" };
        let _ = writeln!(s, "- {name}: {shown} {unit} (target {op} {goal}): {verdict}");
    };
    let ratio = |mode| Some(find(rows, mode, "wasm")?.usage.cpu_s() / find(rows, mode, "native")?.usage.cpu_s());
    target(
        "replay, events per CPU-second",
        find(rows, "replay", "wasm").map(|r| r.events_per_cpu_s),
        2_000_000.0,
        true,
        "",
    );
    target(
        "Kafka end to end, events per CPU-second",
        find(rows, "kafka", "wasm").map(|r| r.events_per_cpu_s),
        1_000_000.0,
        true,
        "",
    );
    target("WASM CPU ÷ native CPU, replay", ratio("replay"), 1.1, false, "");
    target("WASM CPU ÷ native CPU, Kafka", ratio("kafka"), 1.1, false, "");
    target("p99 result latency", find(rows, "kafka", "wasm").and_then(|r| r.latency_p99_ms), 20.0, false, "ms");
    // Replay: the main workload's and the same events with UUID ids (issue 14: ≤ 150 MB for both).
    let main_events = &rows[0].workload;
    let rss = |mode: &str| {
        rows.iter()
            .filter(|r| r.mode == mode && r.plugins == "wasm" && r.workload.starts_with(main_events.as_str()))
            .map(|r| r.usage.max_rss_mb)
            .reduce(f64::max)
    };
    target("peak RSS, replay (ids as generated, and UUIDs)", rss("replay"), 150.0, false, "MB");
    target("peak RSS, Kafka", rss("kafka"), 250.0, false, "MB");
    target(
        "start-up to first message (warm cache)",
        find(rows, "kafka", "wasm").and_then(|r| r.startup_ms),
        100.0,
        false,
        "ms",
    );
    if let Some(r) = find(rows, "kafka", "wasm") {
        let _ = writeln!(
            s,
            "- against Apache Flink ({} events per CPU-second at best): {:.1}× (target ≥ 35×)",
            thousands(FLINK_EVENTS_PER_CPU_S),
            r.events_per_cpu_s / FLINK_EVENTS_PER_CPU_S
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_numbers_read_right() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert_eq!(percentile(&v, 0.5), Some(5.0));
        assert_eq!(percentile(&v, 0.99), Some(10.0));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(thousands(1_234_567.8), "1,234,568");
        assert_eq!(thousands(999.0), "999");
    }
}
