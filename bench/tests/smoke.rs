//! The benchmark harness itself, on a workload small enough for CI: every variant runs, on the
//! real broker too, and each one's results match the WebAssembly replay's. (The figures are
//! not checked: speed targets live in `just bench`, never in a timed test.)

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[test]
fn adbench_measures_every_variant_and_checks_its_results() {
    let adbench = PathBuf::from(env!("CARGO_BIN_EXE_adbench"));
    let bin_dir = adbench.parent().expect("a directory").to_owned();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_owned();
    let brokers = std::env::var("ADSTREAM_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let out = tempfile::tempdir().expect("a temporary directory");
    let run = Command::new(&adbench)
        .current_dir(&workspace)
        .args(["--events", "20k", "--users", "2k", "--repeat", "1", "--no-scaling", "--brokers", &brokers])
        .arg("--out")
        .arg(out.path())
        .arg("--bin-dir")
        .arg(&bin_dir)
        .stderr(Stdio::piped())
        .output()
        .expect("running adbench");
    let progress = String::from_utf8_lossy(&run.stderr);
    eprint!("{progress}");
    print!("{}", String::from_utf8_lossy(&run.stdout));
    // The error and its cause sit at the end of adbench's output: repeated here, so that a
    // failure's reason is in the last lines of a long CI log, next to the test's name.
    let before_backtrace = progress.split("Stack backtrace:").next().unwrap_or_default();
    let tail: Vec<&str> = before_backtrace.lines().collect();
    if !run.status.success() {
        let kept = out.keep();
        panic!(
            "adbench failed (are target/release/adstream and adgen built? `just build`); the end of its output:\n{}\n(its data and logs are kept in {})",
            tail[tail.len().saturating_sub(12)..].join("\n"),
            kept.display(),
        );
    }

    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(out.path().join("results.json")).expect("results.json")).unwrap();
    let variants: Vec<(&str, &str)> =
        rows.iter().map(|r| (r["mode"].as_str().unwrap(), r["plugins"].as_str().unwrap())).collect();
    assert_eq!(
        variants,
        [
            ("replay", "wasm"),
            ("replay", "native"),
            ("replay", "wasm, engagement in Python"),
            ("replay", "wasm + anomaly detector (Python)"),
            ("replay", "wasm"),
            ("kafka", "wasm"),
            ("kafka", "native")
        ]
    );
    // The fifth: the same events with UUID ids, and the same results as the first's.
    assert_eq!(rows[4]["workload"], "20k events, 2k users, UUID ids");
    for r in &rows {
        assert_eq!(r["results_match"], true, "{r}");
        assert!(r["usage"]["user_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["usage"]["max_rss_mb"].as_f64().unwrap() > 1.0, "{r}");
        if r["mode"] == "replay" {
            assert_eq!(r["events"], 20_000, "{r}");
        } else {
            assert!(r["events"].as_u64().unwrap() > 10_000, "{r}");
            assert!(r["latency_windows"].as_u64().unwrap() >= 5, "{r}");
            assert!(r["startup_ms"].as_f64().is_some(), "{r}");
        }
    }
    let table = std::fs::read_to_string(out.path().join("results.md")).unwrap();
    assert!(table.contains("WASM CPU ÷ native CPU, replay"), "{table}");
}
