//! The `adstream` command line: parses flags, sets up logging, and calls into the library.
//! It lives in the library so that a benchmark build (`bench/`, `adstream-native`) runs the very
//! same command with aggregations compiled in (see [`crate::plugin::native`]).

use std::path::PathBuf;

use crate::config::{Config, HttpArgs, KafkaArgs, PluginArgs, PluginConfig, TimeArgs, TimeConfig};
use crate::plugin::native::Natives;
use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// Event-time ad analytics over Kafka: 1-minute tumbling windows, watermarks, a click-to-
/// impression join, and the aggregations as WebAssembly plugins you swap by path.
///
/// Every flag can also be set by its ADSTREAM_* environment variable or in a TOML file given
/// with --config; a flag beats its variable, which beats the file.
#[derive(Parser)]
#[command(version, propagate_version = true, max_term_width = 110)]
struct Cli {
    /// Log format: human-readable text, or one JSON object per line
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"], env = "ADSTREAM_LOG_FORMAT")]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

// Built once per process: the size of the `run` variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Consume ad-impressions and ad-clicks from Kafka, aggregate, and publish the results.
    ///
    /// Examples:
    ///   adstream run --brokers 127.0.0.1:9092 --plugin target/plugins/ctr.wasm --plugin target/plugins/engagement.wasm
    ///
    ///   # a cluster with SASL over TLS (README: "Connecting to your cluster")
    ///   export ADSTREAM_SASL_PASSWORD=...
    ///   adstream run --brokers b-1.kafka.example.com:9096 --sasl-mechanism SCRAM-SHA-512 \
    ///     --sasl-username adstream --ssl-ca-location kafka-ca.pem --plugin target/plugins/ctr.wasm
    ///
    /// A failure that retrying cannot heal (credentials, certificates, permissions, a missing
    /// topic) stops it with a message saying what to fix; a broker that is away is waited for.
    #[command(verbatim_doc_comment)]
    Run {
        /// A TOML file with [kafka], [time], [plugins] and [http] tables of the same settings as the flags
        #[arg(long, env = "ADSTREAM_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        time: TimeArgs,
        #[command(flatten)]
        plugins: PluginArgs,
        #[command(flatten)]
        http: HttpArgs,
        /// On shutdown, write the final counters (consumed, counted, late, dead-lettered...) here as JSON
        #[arg(long)]
        stats_file: Option<PathBuf>,
    },
    /// Run the same pipeline over JSONL files instead of Kafka and write every output record
    /// (results, late events, dead letters) as JSON lines. The end of the input closes every
    /// window. For plugin authors, tests, and reproducing a problem.
    ///
    /// Example:
    ///   adstream replay --input events/ --plugin target/plugins/ctr.wasm --out results.jsonl
    Replay {
        /// A directory holding ad-impressions.jsonl and ad-clicks.jsonl (as `adgen --jsonl` writes)
        #[arg(long, conflicts_with_all = ["impressions", "clicks"])]
        input: Option<PathBuf>,
        /// The impressions file, one message per line
        #[arg(long, requires = "clicks")]
        impressions: Option<PathBuf>,
        /// The clicks file, one message per line
        #[arg(long, requires = "impressions")]
        clicks: Option<PathBuf>,
        /// Where to write the output records [default: standard output]
        #[arg(long)]
        out: Option<PathBuf>,
        /// Split the input over this many tasks, by impression_id (as a keyed producer would over
        /// partitions): every window is then merged from the tasks' partials, which runs the
        /// plugins' export-window, restore-window and merge-window. The records must not depend
        /// on it for input within the out-of-orderness bound: compare --tasks 1 and --tasks 3
        /// to check a plugin's merge
        #[arg(long, default_value_t = 1)]
        tasks: usize,
        /// Run the tasks on this many threads (at most --tasks), fed their lines by one more
        /// that reads the input once; the windows are merged on another, as `run` merges the
        /// tasks of several hosts. For input within the out-of-orderness bound the result records
        /// are the same as on one thread, in another order (late copies are written when routed,
        /// not after their window). For throughput on several cores, e.g. --tasks 4 --threads 2
        #[arg(long, default_value_t = 1)]
        threads: usize,
        #[command(flatten)]
        offline: OfflineArgs,
    },
    /// Check a plugin's merge on real input, without Kafka: replay the input through one task,
    /// then split over several by impression_id (as Kafka's partitions split it), where every
    /// window is folded in several instances and merged from their exported accumulators
    /// (export-window, merge-window). Both runs must publish the same records; the differences
    /// are printed and the exit code is 1 if not. Use input without late events (`adgen
    /// --late-fraction 0`): a late decision depends on each task's own watermark.
    ///
    /// Example:
    ///   adgen --jsonl /tmp/ev --events 200k --late-fraction 0
    ///   adstream check-plugin --input /tmp/ev --plugin ~/plugins/top-ads/top-ads.wasm
    #[command(verbatim_doc_comment)]
    CheckPlugin {
        /// A directory holding ad-impressions.jsonl and ad-clicks.jsonl (as `adgen --jsonl` writes)
        #[arg(long)]
        input: PathBuf,
        /// The tasks of the second replay
        #[arg(long, default_value_t = 3)]
        tasks: usize,
        #[command(flatten)]
        offline: OfflineArgs,
    },
    /// Show the result topics as a live table, one block per window.
    Tail(crate::tail::TailArgs),
    /// Write a new plugin project, anywhere (it needs nothing from this repository): an
    /// aggregation to edit (impressions per campaign and window), in Python or Rust, the SDK,
    /// the host's WIT and a build script that installs what it needs (componentize-py, or the
    /// pinned Rust toolchain and its wasm32-wasip2 target).
    ///
    /// Example:
    ///   adstream new-plugin top-ads --dir ~/plugins/top-ads              # Python
    ///   adstream new-plugin top-ads --lang rust --dir ~/plugins/top-ads  # Rust
    ///   bash ~/plugins/top-ads/build.sh          # → ~/plugins/top-ads/top-ads.wasm
    ///   adgen --jsonl /tmp/ev --events 100k && adstream replay --input /tmp/ev --plugin ~/plugins/top-ads/top-ads.wasm
    #[command(verbatim_doc_comment)]
    NewPlugin {
        /// The plugin's name: lowercase letters, digits, '-' and '_'; it also names its .wasm and
        /// its output topic (<name>-results)
        name: String,
        /// The plugin's language
        #[arg(long, default_value = "python", value_parser = crate::scaffold::LANGUAGES)]
        lang: String,
        /// Where to write it; it must not exist or be empty [default: ./<name>]
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// The settings of the commands that run without Kafka (`replay`, `check-plugin`).
#[derive(Debug, clap::Args)]
pub struct OfflineArgs {
    /// A TOML file with [time] and [plugins] tables
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    time: TimeArgs,
    #[command(flatten)]
    plugins: PluginArgs,
}

impl OfflineArgs {
    /// The window rule and the plugins, from the flags and the file, with the aggregations
    /// compiled into this binary.
    fn load(self, natives: Natives) -> anyhow::Result<(TimeConfig, PluginConfig)> {
        let (time, mut plugins) = Config::load_offline(self.config.as_deref(), self.time, self.plugins)?;
        plugins.natives = natives;
        Ok((time, plugins))
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ADSTREAM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn,librdkafka=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Cancels `token` on the first SIGINT or SIGTERM.
fn cancel_on_signal(token: CancellationToken) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        runtime.block_on(async {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            }
            token.cancel();
        });
    })?;
    Ok(())
}

/// The `adstream` command. `natives` are the aggregations compiled into this binary, loadable
/// as `--plugin native:NAME` (none in the shipped host).
///
/// An error ends it with the message and its causes, one per line, and exit code 1; the stack
/// trace of where it arose in the host is printed only with `ADSTREAM_BACKTRACE=1` (not with
/// `RUST_BACKTRACE`, which many machines set for other reasons).
pub fn main(natives: Natives) -> std::process::ExitCode {
    crate::metrics::process_started();
    let backtrace = std::env::var_os("ADSTREAM_BACKTRACE").is_some_and(|v| v != "0");
    // SAFETY: the first thing the process does, before any other thread exists.
    unsafe { std::env::set_var("RUST_LIB_BACKTRACE", if backtrace { "1" } else { "0" }) };
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    let json = cli.log_format == "json";
    let code = match command(cli, natives) {
        Ok(()) => 0,
        Err(error) if json => {
            tracing::error!(error = %format!("{error:#}"), "stopped");
            1
        }
        Err(error) => {
            eprintln!("{}", report(&error, backtrace));
            1
        }
    };
    // Clients given up after a failure may still be closing: see `kafka::aside`.
    crate::kafka::aside::finish(code, std::time::Duration::from_secs(2));
    std::process::ExitCode::from(code)
}

/// An error for a person: the message, then each cause on a line of its own, then (on request)
/// the stack trace.
fn report(error: &anyhow::Error, backtrace: bool) -> String {
    let mut text = format!("error: {error}");
    let causes: Vec<String> = error.chain().skip(1).map(|c| c.to_string()).collect();
    if !causes.is_empty() {
        text.push_str("\n\ncaused by:");
        for c in causes {
            text.push_str(&format!("\n    {c}"));
        }
    }
    if backtrace {
        text.push_str(&format!("\n\n{}", error.backtrace()));
    }
    text
}

fn command(cli: Cli, natives: Natives) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config, kafka, time, plugins, http, stats_file } => {
            let mut config = Config::load(config.as_deref(), kafka, time, plugins, http)?;
            config.plugins.natives = natives;
            let shutdown = CancellationToken::new();
            cancel_on_signal(shutdown.clone())?;
            let stats = crate::app::run(&config, &shutdown)?;
            if let Some(path) = stats_file {
                std::fs::write(&path, serde_json::to_vec_pretty(&stats)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        Command::Replay { input, impressions, clicks, out, tasks, threads, offline } => {
            let (time, plugins) = offline.load(natives)?;
            if plugins.watch {
                // Not an error: the same ADSTREAM_* environment often serves run and replay.
                tracing::warn!("--watch-plugins applies to `run`; replay loads its plugins once and ignores it");
            }
            let (impressions, clicks) = match (input, impressions, clicks) {
                (Some(dir), _, _) => (dir.join("ad-impressions.jsonl"), dir.join("ad-clicks.jsonl")),
                (None, Some(i), Some(c)) => (i, c),
                _ => anyhow::bail!("name the input: --input DIR, or --impressions FILE --clicks FILE"),
            };
            let stats = match out {
                Some(path) => {
                    let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
                    crate::app::replay(time, &plugins, &impressions, &clicks, tasks, threads, file)?
                }
                None => {
                    crate::app::replay(time, &plugins, &impressions, &clicks, tasks, threads, std::io::stdout().lock())?
                }
            };
            eprintln!("{}", serde_json::to_string(&stats)?);
        }
        Command::CheckPlugin { input, tasks, offline } => {
            let (time, plugins) = offline.load(natives)?;
            let (impressions, clicks) = (input.join("ad-impressions.jsonl"), input.join("ad-clicks.jsonl"));
            let report = crate::app::check::check(time, &plugins, &impressions, &clicks, tasks)?;
            let runs = format!("1 task and {} tasks", report.tasks);
            if report.differences.is_empty() {
                println!(
                    "check-plugin: {} records over {} windows, the same with {runs}: the merge is exact on this input",
                    report.records, report.windows
                );
            } else {
                for (run, record) in report.differences.iter().take(20) {
                    println!("{run}: {record}");
                }
                if report.late > 0 {
                    println!(
                        "note: the input has {} late events, whose decisions depend on each task's watermark: check with input without them (adgen --late-fraction 0)",
                        report.late
                    );
                }
                anyhow::bail!(
                    "{} of {} records differ between {runs} (the first 20 above): the plugin's export-window or merge-window does not rebuild what one instance computes",
                    report.differences.len(),
                    report.records
                );
            }
        }
        Command::NewPlugin { name, lang, dir } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            for file in crate::scaffold::new_plugin(&name, &lang, &dir)? {
                eprintln!("wrote {}", file.display());
            }
            let source = if lang == "rust" { "src/lib.rs" } else { "app.py" };
            eprintln!("next: edit {}, then `bash {}`", dir.join(source).display(), dir.join("build.sh").display());
        }
        Command::Tail(args) => {
            let shutdown = CancellationToken::new();
            cancel_on_signal(shutdown.clone())?;
            crate::tail::tail(&args, &shutdown)?;
        }
    }
    Ok(())
}
