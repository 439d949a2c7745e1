//! The built plugins are WebAssembly components that implement the project's WIT world, and
//! the host's loader handles them (and things that are not plugins) as documented.

use std::time::Duration;

use crate::common::{plugin, workspace};
use adstream::config::PluginConfig;
use adstream::plugin::{Aggregator, Plugin, Runtime};

fn config(cache: &std::path::Path) -> PluginConfig {
    PluginConfig {
        plugins: Vec::new(),
        cache_dir: cache.to_owned(),
        batch_size: 1024,
        timeout: Duration::from_secs(2),
        memory_bytes: 64 << 20,
        grants: Default::default(),
        limits: Vec::new(),
        settings: Vec::new(),
        natives: &[],
        watch: false,
    }
}

/// Every plugin under plugins/ (Rust crates, and Python's `app.py`) is built, is a component
/// (not a core module), instantiates against the `aggregation` world (or, for the detector,
/// `detector`) and describes itself.
#[test]
fn every_plugin_is_a_component_of_the_aggregation_world() {
    let cache = crate::common::plugin_cache();
    let runtime = Runtime::new(&cache).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(workspace().join("plugins"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["anomaly", "ctr", "engagement", "engagement-py", "engagement_hll", "spend"]);
    // The detector: the other world of the WIT, which a live swap (Plugin::load) refuses.
    let refused = Plugin::load(&runtime, &plugin("anomaly"), &config(&cache)).err().expect("not an aggregation");
    assert!(format!("{refused:#}").contains("it is a detector"), "{refused:#}");
    let loader = adstream::plugin::Loader::new(&config(&cache)).unwrap();
    match loader.load_any(&plugin("anomaly")).unwrap() {
        adstream::plugin::Loaded::Detector(d) => {
            assert_eq!(d.meta().name, "anomaly");
            assert_eq!(d.inputs(), ["ctr", "engagement"]);
            assert_eq!(d.meta().output_topics, ["ad-anomalies"]);
        }
        adstream::plugin::Loaded::Aggregation(_) => panic!("anomaly loaded as an aggregation"),
    }
    // Its settings are checked by the detector itself, at start-up.
    let mut strict = config(&cache);
    strict.settings = vec![adstream::config::PluginSetting::parse("anomaly:treshold=4").unwrap()];
    let bad =
        adstream::plugin::Loader::new(&strict).unwrap().load_any(&plugin("anomaly")).err().expect("a typo is refused");
    assert!(format!("{bad:#}").contains("unknown setting(s) treshold"), "{bad:#}");
    for name in names.iter().filter(|n| *n != "anomaly") {
        let path = plugin(name);
        let bytes = std::fs::read(&path).unwrap();
        // A component's preamble: the wasm magic, then version 0x0d and layer 1 (a core
        // module has version 1, layer 0).
        assert_eq!(&bytes[..8], b"\0asm\x0d\0\x01\0", "{name}.wasm is not a component");
        let loaded = Plugin::load(&runtime, &path, &config(&cache)).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let meta = loaded.meta();
        assert_eq!(&meta.name, name);
        // Its own version, from its Cargo.toml or its app.py (not the workspace's).
        let dir = workspace().join("plugins").join(name);
        let source = std::fs::read_to_string(dir.join("Cargo.toml"))
            .or_else(|_| std::fs::read_to_string(dir.join("app.py")))
            .unwrap();
        let declared = source
            .lines()
            .find_map(|l| l.trim().strip_prefix("version = \"").or_else(|| l.trim().strip_prefix("version=\"")))
            .and_then(|v| v.split('"').next())
            .unwrap_or_else(|| panic!("{name}: no version in its Cargo.toml or app.py"));
        assert_eq!(meta.version, declared, "{name}");
        assert!(!meta.output_topics.is_empty() && meta.wants_impressions, "{meta:?}");
        assert_eq!(meta.hash.len(), 64);
    }
    let ctr = Plugin::load(&runtime, &plugin("ctr"), &config(&cache)).unwrap();
    assert!(ctr.meta().wants_clicks && ctr.meta().output_topics == ["campaign-ctr-results"]);
}

/// The compiled form is cached by content hash and reused.
#[test]
fn compiled_plugins_are_cached() {
    let cache = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(cache.path()).unwrap();
    Plugin::load(&runtime, &plugin("engagement"), &config(cache.path())).unwrap();
    let files: Vec<_> = std::fs::read_dir(cache.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let modified = std::fs::metadata(&files[0]).unwrap().modified().unwrap();
    Plugin::load(&runtime, &plugin("engagement"), &config(cache.path())).unwrap();
    assert_eq!(std::fs::metadata(&files[0]).unwrap().modified().unwrap(), modified, "cache entry rewritten");
    // A damaged cache entry is ignored and replaced, not trusted.
    std::fs::write(&files[0], b"garbage").unwrap();
    Plugin::load(&runtime, &plugin("engagement"), &config(cache.path())).unwrap();
    assert_ne!(std::fs::read(&files[0]).unwrap(), b"garbage");
}

/// A core module, or any other file, is refused with an error that names it.
#[test]
fn refuses_what_is_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(dir.path()).unwrap();
    for (file, bytes) in [("core.wasm", b"\0asm\x01\0\0\0".to_vec()), ("text.wasm", b"hello".to_vec())] {
        let path = dir.path().join(file);
        std::fs::write(&path, bytes).unwrap();
        let err = Plugin::load(&runtime, &path, &config(dir.path())).err().expect("must fail");
        let text = format!("{err:#}");
        assert!(text.contains(file) && text.contains("not a valid WebAssembly component"), "{text}");
        if file == "core.wasm" {
            assert!(text.contains("core WebAssembly module") && text.contains("wasm32-wasip2"), "{text}");
        }
    }
}

/// The Python SDK's batch decoder reads the encoding's test vectors as the Rust reader does
/// (`crates/abi/tests/batch_vectors.rs`): its unit tests, with the Python the plugin build set
/// up (`.cache/python`), else the system's.
#[test]
fn the_python_sdk_reads_the_batch_test_vectors() {
    let venv = workspace().join(".cache/python/bin/python3");
    let python = if venv.is_file() { venv } else { "python3".into() };
    let out = std::process::Command::new(&python)
        .arg(workspace().join("sdk/python/tests/test_batch.py"))
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && log.contains("Ran 2 tests") && log.contains("OK"), "{log}");
}

/// `adstream new-plugin` writes a Python plugin project that builds outside this repository
/// (its build script, with the componentize-py the plugin build installed on PATH) and whose
/// plugin counts the impressions of each campaign and window as the batch computation does.
#[test]
fn a_new_python_plugin_builds_outside_the_repository_and_counts_right() {
    template_builds_outside_the_repository_and_counts_right("python");
}

/// The Rust template: a crate of its own with the SDK vendored, the WIT and the pinned
/// toolchain, built by its `build.sh` (about 20 s: wit-bindgen compiles in its own target).
#[test]
fn a_new_rust_plugin_builds_outside_the_repository_and_counts_right() {
    template_builds_outside_the_repository_and_counts_right("rust");
}

fn template_builds_outside_the_repository_and_counts_right(lang: &str) {
    use crate::common::expected::{Inputs, Late};
    use crate::common::{adstream, run_ok};
    use std::collections::BTreeMap;
    use std::process::Command;

    let dir = tempfile::tempdir().unwrap();
    let project = build_template(dir.path(), "views", lang, None);
    let events = crate::common::generate_jsonl(dir.path(), "30000", "5", "0", "0");
    let out = run_ok(
        Command::new(adstream())
            .args(["replay", "--input"])
            .arg(&events)
            .arg("--plugin")
            .arg(project.join("views.wasm"))
            .arg("--plugin-cache")
            .arg(dir.path().join("cache")),
    );
    let mut got: BTreeMap<(String, String), u64> = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        if r["topic"] == "adstream-window-completeness" {
            continue;
        }
        assert_eq!(r["topic"], "views-results", "{line}");
        let v = &r["value"];
        let key = (v["window_start"].as_str().unwrap().to_owned(), v["campaign_id"].as_str().unwrap().to_owned());
        assert!(got.insert(key, v["impressions"].as_u64().unwrap()).is_none(), "twice: {line}");
    }
    let mut want: BTreeMap<(String, String), u64> = BTreeMap::new();
    for i in Inputs::load(&events, Late::Designated).impressions {
        let window = adstream_abi::time::format_rfc3339_millis(i.ts.div_euclid(60_000) * 60_000);
        *want.entry((window, i.campaign)).or_default() += 1;
    }
    assert!(want.len() > 100, "{} (window, campaign) pairs", want.len());
    assert_eq!(got, want, "the template's impressions per campaign and window");
}

/// Writes a plugin project `name` with `adstream new-plugin --lang LANG` in `dir`, replaces its
/// `app.py` with `app` if given, and builds it with the project's own `build.sh`, with nothing of
/// this workspace's cargo run in its environment; returns the project folder.
fn build_template(dir: &std::path::Path, name: &str, lang: &str, app: Option<&str>) -> std::path::PathBuf {
    use crate::common::{adstream, run_ok};
    use std::process::Command;

    let project = dir.join(name);
    run_ok(Command::new(adstream()).args(["new-plugin", name, "--lang", lang, "--dir"]).arg(&project));
    if let Some(app) = app {
        std::fs::write(project.join("app.py"), app).unwrap();
    }
    let path = format!("{}:{}", workspace().join(".cache/python/bin").display(), std::env::var("PATH").unwrap());
    // At a low priority: a compiler on both cores would starve the hosts of the tests running
    // beside this one (their plugin calls have a deadline, their kills a schedule).
    let mut build = Command::new("nice");
    build.args(["-n", "15", "bash"]).arg(project.join("build.sh")).env("PATH", path).current_dir(dir);
    for (var, _) in std::env::vars().filter(|(k, _)| k.starts_with("CARGO_")) {
        build.env_remove(var);
    }
    run_ok(&mut build);
    project
}

/// A detector written in a Python template project (the template ships the detector SDK): its
/// `build.sh` builds it against the `detector` world, and it runs over `ctr`'s results, window
/// after window.
#[test]
fn a_detector_written_in_a_python_template_builds_and_sees_every_window() {
    use crate::common::{adstream, run_ok};
    use std::process::Command;

    const APP: &str = r#"
import json
from adstream_sdk.detector import Detector, detector

class Watch(Detector):
    def __init__(self, settings):
        self.seen = 0
    def observe(self, window, results):
        self.seen += 1
        return [("all", {"windows_seen": self.seen, "campaigns": len(results)})]
    def save(self):
        return json.dumps(self.seen).encode()
    def load(self, data):
        self.seen = json.loads(data)

WitWorld = detector(Watch, name="watch", version="0.1.0", description="counts windows",
                    inputs=["ctr"], outputs=["watch-results"], state_version=1)
"#;
    let dir = tempfile::tempdir().unwrap();
    let project = build_template(dir.path(), "watch", "python", Some(APP));
    let events = crate::common::generate_jsonl(dir.path(), "20000", "6", "0", "0");
    let out = run_ok(
        Command::new(adstream())
            .args(["replay", "--input"])
            .arg(&events)
            .arg("--plugin")
            .arg(plugin("ctr"))
            .arg("--plugin")
            .arg(project.join("watch.wasm"))
            .arg("--plugin-cache")
            .arg(dir.path().join("cache")),
    );
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let windows: std::collections::BTreeSet<&str> = lines
        .iter()
        .filter(|r| r["topic"] == "campaign-ctr-results")
        .map(|r| r["value"]["window_start"].as_str().unwrap())
        .collect();
    let seen: Vec<u64> = lines
        .iter()
        .filter(|r| r["topic"] == "watch-results")
        .map(|r| r["value"]["windows_seen"].as_u64().unwrap())
        .collect();
    assert!(windows.len() >= 10, "{} windows", windows.len());
    assert_eq!(seen, (1..=windows.len() as u64).collect::<Vec<_>>(), "one alert per window, in order");
}
