//! `adbench` (what `just bench` runs): the benchmark of issue 4, printed as a table and written
//! to `<out>/results.md` and `<out>/results.json`.
//!
//! For each workload it generates the input once (deterministic, by seed), then measures the
//! host as a child process: CPU (user + system, from the operating system), wall time, peak RSS,
//! and for Kafka runs the result latency and start-up time the host reports. Every variant runs
//! the same aggregation code twice: as WebAssembly plugins (`adstream`) and compiled in
//! (`adstream-native`), so the cost of the boundary is a ratio from the same run. Every run's
//! results are checked against the WebAssembly replay's, so a fast wrong run cannot pass.

mod kafka;
mod measure;
mod report;

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use adstream::event::{Source, decode};
use anyhow::Context;
use clap::Parser;

use kafka::Record;
use measure::{Running, Usage};
use report::Row;

/// Measures adstream: events per CPU-second, per wall-second, peak RSS, result latency and
/// start-up time, for replay and for the real broker, WebAssembly plugins against the same
/// aggregations compiled natively. Build first (`just bench` does): the release binaries and the
/// plugins.
#[derive(Parser)]
#[command(max_term_width = 110)]
struct Opts {
    /// Messages in the main workload (5M, 200k, 5_000_000...)
    #[arg(long, default_value = "5M", value_parser = parse_count)]
    events: u64,
    /// Users in the main workload
    #[arg(long, default_value = "50k", value_parser = parse_count)]
    users: u64,
    /// Seed of the generated data
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Replay runs per variant of the main workload; the median (by CPU) is reported
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Skip the scaling series (1M, 20M events; 10k, 1M users), which takes most of the time
    #[arg(long)]
    no_scaling: bool,
    /// Skip the runs on the real broker
    #[arg(long)]
    no_kafka: bool,
    /// Kafka bootstrap servers for the broker runs
    #[arg(long, default_value = "127.0.0.1:9092", env = "ADSTREAM_BROKERS")]
    brokers: String,
    /// Where the data, logs and results go
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Where adstream, adstream-native and adgen are
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Where ctr.wasm and engagement.wasm are
    #[arg(long, default_value = "target/plugins")]
    plugin_dir: PathBuf,
}

/// `5M`, `200k`, `5_000_000`.
fn parse_count(s: &str) -> Result<u64, String> {
    let s = s.replace('_', "");
    let (digits, factor) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1_000),
        Some('m' | 'M') => (&s[..s.len() - 1], 1_000_000),
        _ => (&s[..], 1),
    };
    digits.parse::<u64>().map(|n| n * factor).map_err(|e| format!("{s:?} is not a count like 5M, 200k or 5000: {e}"))
}

/// The generator's parameters for one workload.
#[derive(Clone, Copy, Debug)]
struct Workload {
    events: u64,
    users: u64,
    /// Impression and click ids as UUIDs (`adgen --id-style uuid`) rather than `i<n>`, `k<n>`:
    /// the same events otherwise, so the same results.
    uuid_ids: bool,
}

impl Workload {
    fn new(events: u64, users: u64) -> Self {
        Workload { events, users, uuid_ids: false }
    }

    fn label(&self) -> String {
        let ids = if self.uuid_ids { ", UUID ids" } else { "" };
        format!("{} events, {} users{ids}", short(self.events), short(self.users))
    }
}

fn short(n: u64) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Plugins {
    Wasm,
    Native,
    /// `ctr.wasm` with `engagement-py.wasm`, the engagement aggregation in Python: what a Python
    /// plugin costs against the Rust one (the `wasm` row).
    Python,
    /// The `wasm` plugins and the `anomaly` detector (Python) over their results: what a
    /// detector costs (its records are left out of the comparison with the `wasm` row's).
    Detector,
    /// `ctr.wasm` with `engagement_hll.wasm`, approximate unique users in constant memory per
    /// window, against the exact `engagement.wasm` (only the ctr records are compared).
    Hll,
}

impl Plugins {
    fn name(self) -> &'static str {
        match self {
            Plugins::Wasm => "wasm",
            Plugins::Native => "native",
            Plugins::Python => "wasm, engagement in Python",
            Plugins::Detector => "wasm + anomaly detector (Python)",
            Plugins::Hll => "wasm, engagement_hll (approximate)",
        }
    }
}

struct Bench {
    opts: Opts,
    seq: usize,
}

impl Bench {
    fn bin(&self, name: &str) -> PathBuf {
        self.opts.bin_dir.join(name)
    }

    /// The host binary of a variant, its subcommand and the plugin flags.
    fn host(&self, plugins: Plugins, subcommand: &str) -> Command {
        let mut cmd = match plugins {
            Plugins::Wasm | Plugins::Python | Plugins::Detector | Plugins::Hll => Command::new(self.bin("adstream")),
            Plugins::Native => Command::new(self.bin("adstream-native")),
        };
        cmd.arg(subcommand);
        for name in ["ctr", "engagement"] {
            match plugins {
                Plugins::Wasm | Plugins::Detector => {
                    cmd.arg("--plugin").arg(self.opts.plugin_dir.join(format!("{name}.wasm")))
                }
                Plugins::Native => cmd.arg("--plugin").arg(format!("native:{name}")),
                Plugins::Python | Plugins::Hll => {
                    let instead = if plugins == Plugins::Python { "engagement-py" } else { "engagement_hll" };
                    let file = if name == "engagement" { instead } else { name };
                    cmd.arg("--plugin").arg(self.opts.plugin_dir.join(format!("{file}.wasm")))
                }
            };
        }
        if plugins == Plugins::Detector {
            cmd.arg("--plugin").arg(self.opts.plugin_dir.join("anomaly.wasm"));
        }
        cmd.env("ADSTREAM_LOG", "warn,adstream=info");
        cmd
    }

    /// A fresh log file for the next child process.
    fn log(&mut self, what: &str) -> anyhow::Result<(PathBuf, File)> {
        self.seq += 1;
        let path = self.opts.out.join("logs").join(format!("{:02}-{what}.log", self.seq));
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok((path, file))
    }

    /// The workload's JSONL files and generator summary, generated once and kept.
    fn data(&mut self, w: Workload) -> anyhow::Result<PathBuf> {
        let ids = if w.uuid_ids { "-uuid" } else { "" };
        let dir = self.opts.out.join("data").join(format!("{}-{}-{}{ids}", w.events, w.users, self.opts.seed));
        if dir.join("summary.json").is_file() {
            return Ok(dir);
        }
        eprintln!("generating {} ...", w.label());
        let (_, log) = self.log("generate")?;
        let status = Command::new(self.bin("adgen"))
            .args(["--quiet", "--jsonl"])
            .arg(&dir)
            .args(["--events", &w.events.to_string(), "--users", &w.users.to_string()])
            .args(["--id-style", if w.uuid_ids { "uuid" } else { "short" }])
            .args(["--seed", &self.opts.seed.to_string(), "--summary-json"])
            .arg(dir.join("summary.json.tmp"))
            .stderr(log)
            .status()
            .context("running adgen")?;
        anyhow::ensure!(status.success(), "adgen failed");
        std::fs::rename(dir.join("summary.json.tmp"), dir.join("summary.json"))?;
        Ok(dir)
    }

    /// One replay; returns its usage, counters and results.
    fn replay(
        &mut self,
        data: &Path,
        plugins: Plugins,
    ) -> anyhow::Result<(Usage, serde_json::Value, BTreeSet<Record>)> {
        let out = self.opts.out.join(format!("replay-{}.jsonl", plugins.name()));
        let (log_path, log) = self.log(&format!("replay-{}", plugins.name()))?;
        let mut cmd = self.host(plugins, "replay");
        cmd.arg("--input").arg(data).arg("--out").arg(&out).stdout(Stdio::null()).stderr(log);
        let usage = Running::spawn(&mut cmd)?.wait(None).with_context(|| format!("see {}", log_path.display()))?;
        let text = std::fs::read_to_string(&log_path)?;
        let stats = text
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok().filter(|v| v["consumed"].is_u64()))
            .with_context(|| format!("no counters at the end of {}", log_path.display()))?;
        Ok((usage, stats, replay_records(&out)?))
    }
}

/// The result records of a replay's output file, without the windows' completeness records
/// (they name the plugins' hashes, which differ between variants by design).
fn replay_records(path: &Path) -> anyhow::Result<BTreeSet<Record>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut records = BTreeSet::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let field = |k: &str| v[k].as_str().map(str::to_owned).context("a replay line without topic or key");
        let topic = field("topic")?;
        if topic != "adstream-window-completeness" {
            records.insert((topic, field("key")?, serde_json::to_string(&v["value"])?));
        }
    }
    Ok(records)
}

fn main() -> anyhow::Result<()> {
    let opts = Opts::parse();
    anyhow::ensure!(opts.repeat >= 1, "--repeat must be at least 1");
    for bin in ["adstream", "adstream-native", "adgen"] {
        let path = opts.bin_dir.join(bin);
        anyhow::ensure!(path.is_file(), "{} is missing: `just bench` builds it", path.display());
    }
    for plugin in ["ctr", "engagement", "engagement-py", "anomaly", "engagement_hll"] {
        let path = opts.plugin_dir.join(format!("{plugin}.wasm"));
        anyhow::ensure!(path.is_file(), "{} is missing: `just build-plugins` builds it", path.display());
    }
    std::fs::create_dir_all(opts.out.join("logs"))?;
    let mut bench = Bench { opts, seq: 0 };
    let mut rows = Vec::new();

    // A small run first, so that the plugins are compiled into the cache before anything counts.
    let warm = bench.data(Workload::new(1_000, 100))?;
    bench.replay(&warm, Plugins::Wasm)?;
    bench.replay(&warm, Plugins::Python)?;
    bench.replay(&warm, Plugins::Detector)?;
    bench.replay(&warm, Plugins::Hll)?;

    let main = Workload::new(bench.opts.events, bench.opts.users);
    let data = bench.data(main)?;
    let mut reference = None;
    for plugins in [Plugins::Wasm, Plugins::Native] {
        let mut runs = Vec::new();
        for i in 0..bench.opts.repeat {
            eprintln!(
                "replay, {}, {} plugins, run {} of {} ...",
                main.label(),
                plugins.name(),
                i + 1,
                bench.opts.repeat
            );
            runs.push(bench.replay(&data, plugins)?);
        }
        runs.sort_by(|a, b| a.0.cpu_s().total_cmp(&b.0.cpu_s()));
        let (usage, stats, records) = runs.swap_remove(runs.len() / 2);
        let reference = reference.get_or_insert_with(|| records.clone());
        rows.push(Row::replay(&main, plugins.name(), usage, &stats, *reference == records, bench.opts.repeat));
    }
    let reference = reference.expect("the wasm replay ran");
    // Python costs several times Rust per event: one run.
    eprintln!("replay, {}, {} plugins ...", main.label(), Plugins::Python.name());
    let (usage, stats, records) = bench.replay(&data, Plugins::Python)?;
    rows.push(Row::replay(&main, Plugins::Python.name(), usage, &stats, reference == records, 1));
    eprintln!("replay, {}, {} ...", main.label(), Plugins::Detector.name());
    let (usage, stats, mut records) = bench.replay(&data, Plugins::Detector)?;
    records.retain(|(topic, _, _)| topic != "ad-anomalies");
    rows.push(Row::replay(&main, Plugins::Detector.name(), usage, &stats, reference == records, 1));
    // The join keeps every impression id of its horizon: its memory with 36-character ids.
    let uuids = Workload { uuid_ids: true, ..main };
    let uuid_data = bench.data(uuids)?;
    eprintln!("replay, {}, {} plugins ...", uuids.label(), Plugins::Wasm.name());
    let (usage, stats, records) = bench.replay(&uuid_data, Plugins::Wasm)?;
    rows.push(Row::replay(&uuids, Plugins::Wasm.name(), usage, &stats, reference == records, 1));

    if !bench.opts.no_kafka {
        rows.extend(kafka_runs(&mut bench, main, &data, &reference)?);
    }

    if !bench.opts.no_scaling {
        // The last field: also with engagement_hll, approximate unique users, at 50k and 1M users.
        let series = [
            (1_000_000, 50_000, true),
            (20_000_000, 50_000, false),
            (5_000_000, 10_000, false),
            (5_000_000, 1_000_000, true),
        ];
        for (events, users, with_hll) in series {
            let w = Workload::new(events, users);
            let data = bench.data(w)?;
            let mut reference = None;
            let hll = with_hll.then_some(Plugins::Hll);
            for plugins in [Plugins::Wasm, Plugins::Native].into_iter().chain(hll) {
                eprintln!("scaling: replay, {}, {} plugins ...", w.label(), plugins.name());
                let (usage, stats, records) = bench.replay(&data, plugins)?;
                let reference = reference.get_or_insert_with(|| records.clone());
                let same = if plugins == Plugins::Hll {
                    let ctr = |r: &BTreeSet<Record>| -> BTreeSet<Record> {
                        r.iter().filter(|r| r.0 == "campaign-ctr-results").cloned().collect()
                    };
                    ctr(reference) == ctr(&records)
                } else {
                    *reference == records
                };
                rows.push(Row::replay(&w, plugins.name(), usage, &stats, same, 1));
            }
        }
    }

    let table = report::render(&rows, &bench.opts.brokers);
    println!("{table}");
    std::fs::write(bench.opts.out.join("results.md"), &table)?;
    std::fs::write(bench.opts.out.join("results.json"), serde_json::to_vec_pretty(&rows)?)?;
    eprintln!("written to {}/results.md and results.json", bench.opts.out.display());
    anyhow::ensure!(rows.iter().all(|r| r.results_match), "a run's results differ from the WebAssembly replay's");
    Ok(())
}

/// The main workload on the real broker. Each variant gets topics of its own (`--topic-prefix`
/// names inputs and outputs alike), loaded before the host starts, which then consumes them from
/// the beginning.
fn kafka_runs(bench: &mut Bench, w: Workload, data: &Path, reference: &BTreeSet<Record>) -> anyhow::Result<Vec<Row>> {
    let run_id = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();

    // Windows that close without more input or an idle timeout: those ending at or before the
    // watermark all partitions reach, the smallest of their last event times minus the allowed
    // out-of-orderness (5 s). Later ones wait for more data, or for a partition to turn idle.
    let max_ms = last_event_time(data, "ad-impressions.jsonl", Source::Impressions)?.min(last_event_time(
        data,
        "ad-clicks.jsonl",
        Source::Clicks,
    )?);
    let closable: BTreeSet<String> = reference
        .iter()
        .filter_map(|(_, _, v)| serde_json::from_str::<serde_json::Value>(v).ok())
        .filter_map(|v| v["window_start"].as_str().map(str::to_owned))
        .filter(|w| event_time_ms(w).is_ok_and(|start| start + 60_000 <= max_ms - 5_000))
        .collect();
    let of_closable =
        |(_, _, value): &Record| closable.iter().any(|w| value.contains(&format!("\"window_start\":\"{w}\"")));
    let expected: BTreeSet<Record> = reference.iter().filter(|r| of_closable(r)).cloned().collect();

    let mut rows = Vec::new();
    for plugins in [Plugins::Wasm, Plugins::Native] {
        eprintln!("kafka, {}, {} plugins ...", w.label(), plugins.name());
        let prefix = format!("bench-{run_id}-{}-", plugins.name());
        eprintln!("loading {} into {prefix}ad-impressions and {prefix}ad-clicks ...", w.label());
        let (_, log) = bench.log("load-kafka")?;
        let status = Command::new(bench.bin("adgen"))
            .args(["--quiet", "--brokers", &bench.opts.brokers])
            .args(["--impressions-topic", &format!("{prefix}ad-impressions")])
            .args(["--clicks-topic", &format!("{prefix}ad-clicks")])
            .args(["--events", &w.events.to_string(), "--users", &w.users.to_string()])
            .args(["--seed", &bench.opts.seed.to_string()])
            .stderr(log)
            .status()
            .context("running adgen")?;
        anyhow::ensure!(status.success(), "adgen could not load the broker (is it running? `just kafka-up`)");
        let outputs: Vec<String> =
            ["campaign-ctr-results", "device-engagement-results"].iter().map(|t| format!("{prefix}{t}")).collect();
        create_outputs(&bench.opts.brokers, &outputs)?;
        let stats_path = bench.opts.out.join(format!("kafka-{}-stats.json", plugins.name()));
        let _ = std::fs::remove_file(&stats_path);
        let (log_path, log) = bench.log(&format!("kafka-{}", plugins.name()))?;
        let mut cmd = bench.host(plugins, "run");
        cmd.args(["--brokers", &bench.opts.brokers, "--group-id", &format!("{prefix}host")])
            .args(["--topic-prefix", &prefix])
            // The console serves as in production (its cost is in the figures), on any free port.
            .args(["--http-addr", "127.0.0.1:0"])
            .arg("--stats-file")
            .arg(&stats_path)
            .stdout(Stdio::null())
            .stderr(log);
        let host = Running::spawn(&mut cmd)?;
        let seen = kafka::await_windows(
            &bench.opts.brokers,
            &prefix,
            &["campaign-ctr-results", "device-engagement-results"],
            &closable,
            Duration::from_secs(600),
            || !host.has_exited(),
        );
        host.terminate()?;
        let started = host.started();
        let (seen, done_at) = match seen {
            Ok(seen) => seen,
            Err(e) => {
                host.wait(None)?;
                return Err(e.context(format!("see {}", log_path.display())));
            }
        };
        let usage = host.wait(Some(done_at - started)).with_context(|| format!("see {}", log_path.display()))?;
        // Records of later windows (published at shutdown, say) are not part of the comparison.
        let seen: BTreeSet<Record> = seen.into_iter().filter(|r| of_closable(r)).collect();
        let stats: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&stats_path).with_context(|| format!("reading {}", stats_path.display()))?,
        )?;
        rows.push(Row::kafka(&w, plugins.name(), usage, &stats, seen == expected));
        if seen != expected {
            eprintln!(
                "kafka {} results differ from the replay's: {} records seen, {} expected; first missing {:?}, first unexpected {:?}",
                plugins.name(),
                seen.len(),
                expected.len(),
                expected.difference(&seen).next(),
                seen.difference(&expected).next(),
            );
        }
    }
    Ok(rows)
}

/// Creates the result topics, one partition each, before the host starts; retries for up to 30 s
/// what the host would retry too (a broker without a leader for a moment, say).
fn create_outputs(brokers: &str, outputs: &[String]) -> anyhow::Result<()> {
    use adstream::kafka::admin::{Admin, KAFKA_DEFAULT_MAX_MESSAGE_BYTES};
    let settings = std::sync::Arc::new(adstream::kafka::ClientSettings::plaintext(brokers));
    let admin = Admin::new(&settings, &adstream::kafka::Health::default())?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match admin.create(outputs, 1, KAFKA_DEFAULT_MAX_MESSAGE_BYTES) {
            Ok(_) => return Ok(()),
            Err(e) if !e.is_fatal() && Instant::now() < deadline => {
                eprintln!("creating the result topics, again in 1 s: {:#}", e.into_error());
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => return Err(e.into_error()),
        }
    }
}

/// The largest event time in one input file, read with the host's own decoder. Streamed, so
/// that adbench stays small: a child's peak RSS as the kernel reports it includes the parent's
/// resident memory at the moment it was spawned.
fn last_event_time(data: &Path, file: &str, source: Source) -> anyhow::Result<i64> {
    use std::io::BufRead;
    let reader = std::io::BufReader::new(File::open(data.join(file)).with_context(|| format!("opening {file}"))?);
    let mut max = None;
    for line in reader.split(b'\n') {
        let line = line.with_context(|| format!("reading {file}"))?;
        if let Ok(event) = decode(source, &line, usize::MAX) {
            max = max.max(Some(event.event_time_ms()));
        }
    }
    max.with_context(|| format!("no valid event in {file}"))
}

/// Epoch ms of an RFC 3339 time.
fn event_time_ms(s: &str) -> anyhow::Result<i64> {
    adstream_abi::time::parse_rfc3339_millis(s).map_err(|e| anyhow::anyhow!("{s}: {e}"))
}
