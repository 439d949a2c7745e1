//! `adstream new-plugin`: writes a plugin project of its own, outside this repository, that
//! builds with nothing from it: the plugin's source, a copy of the SDK (Python's, or the Rust
//! crate `adstream-abi`), the WIT the host implements, and a build script that installs what it
//! needs (componentize-py, or the pinned Rust toolchain with its wasm32-wasip2 target).

use std::path::{Path, PathBuf};

use anyhow::{Context, ensure};

/// The componentize-py release the SDK is tested with (as `scripts/build-plugins.sh`).
pub const COMPONENTIZE_PY: &str = "0.25.1";

const SDK_INIT: &str = include_str!("../../sdk/python/adstream_sdk/__init__.py");
const SDK_BATCH: &str = include_str!("../../sdk/python/adstream_sdk/batch.py");
const SDK_DETECTOR: &str = include_str!("../../sdk/python/adstream_sdk/detector.py");
/// The Rust SDK, vendored into a Rust project (it has no dependencies).
const ABI: [(&str, &str); 7] = [
    ("lib.rs", include_str!("../../crates/abi/src/lib.rs")),
    ("batch.rs", include_str!("../../crates/abi/src/batch.rs")),
    ("bytes.rs", include_str!("../../crates/abi/src/bytes.rs")),
    ("json.rs", include_str!("../../crates/abi/src/json.rs")),
    ("sdk.rs", include_str!("../../crates/abi/src/sdk.rs")),
    ("state.rs", include_str!("../../crates/abi/src/state.rs")),
    ("time.rs", include_str!("../../crates/abi/src/time.rs")),
];
/// The toolchain the host and its plugins are built with.
const TOOLCHAIN: &str = include_str!("../../rust-toolchain.toml");
const WIT: &str = include_str!("../../wit/aggregation.wit");

const APP: &str = r#""""NAME: impressions per campaign and window, to NAME-results.

A starting point: change `Views` (one instance per window) and the `plugin(...)` line, then
`bash build.sh` and try it without Kafka:

    adstream replay --input EVENTS_DIR --plugin NAME.wasm
"""

import json

from adstream_sdk import IMPRESSION, Aggregation, plugin, rfc3339_ms, to_json


class Views(Aggregation):
    def __init__(self):
        self.by_campaign = {}

    def add(self, event):
        """One event of the window (only the kinds in `wants`)."""
        self.by_campaign[event.campaign_id] = self.by_campaign.get(event.campaign_id, 0) + 1

    def emit(self, window):
        """The window is complete: its records, as (key, value) pairs."""
        start, end = rfc3339_ms(window.start_ms), rfc3339_ms(window.end_ms)
        return [
            (campaign, to_json({"campaign_id": campaign, "window_start": start, "window_end": end, "impressions": n}))
            for campaign, n in sorted(self.by_campaign.items())
        ]

    # The accumulator as bytes and back, and the merge of two (restarts, live swap, scale-out).
    # Bump `state_version` below when this format changes.
    def encode(self):
        return json.dumps(self.by_campaign, sort_keys=True).encode()

    @classmethod
    def decode(cls, data):
        views = cls()
        views.by_campaign = json.loads(data)
        return views

    def merge(self, other):
        for campaign, n in other.by_campaign.items():
            self.by_campaign[campaign] = self.by_campaign.get(campaign, 0) + n


WitWorld = plugin(
    Views,
    name="NAME",
    version="0.1.0",
    description="impressions per campaign and window",
    wants=[IMPRESSION],
    outputs=["NAME-results"],
    state_version=1,
)
"#;

const BUILD: &str = r#"#!/usr/bin/env bash
# Builds the plugin NAME into NAME.wasm, a WebAssembly component for the adstream host, from
# app.py, the SDK beside it (adstream_sdk/) and the host's interface (wit/aggregation.wit).
# Uses componentize-py VERSION from PATH, else installs it into .venv here (needs Python 3.10+).
set -euo pipefail
cd "$(dirname "$0")"
if command -v componentize-py >/dev/null && componentize-py --version | grep -q "VERSION"; then
  componentize=componentize-py
else
  if [ ! -x .venv/bin/componentize-py ]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check "componentize-py==VERSION"
  fi
  componentize=.venv/bin/componentize-py
fi
# A detector (app.py imports the SDK's detector module) implements the other world of the WIT.
world=aggregation
if grep -Eq '^(from adstream_sdk\.detector import|import adstream_sdk\.detector)' app.py; then world=detector; fi
"$componentize" -d wit -w "$world" componentize -p . app -o NAME.wasm >/dev/null
echo "built NAME.wasm ($(stat -c %s NAME.wasm) bytes): adstream replay --input EVENTS_DIR --plugin NAME.wasm"
"#;

const RUST_LIB: &str = r#"//! `NAME`: impressions per campaign and window, to `NAME-results`.
//!
//! A starting point: change `Views` (one value per window) and the `export_aggregation!` call,
//! then `bash build.sh` and try it without Kafka:
//!
//!     adstream replay --input EVENTS_DIR --plugin NAME.wasm
//!     adstream check-plugin --input EVENTS_DIR --plugin NAME.wasm

use std::collections::BTreeMap;

use adstream_abi::batch::{Event, Kind};
use adstream_abi::json::Obj;
use adstream_abi::sdk::{Aggregation, Output};
use adstream_abi::state::{StateError, StateReader, StateWriter};

/// The accumulator of one window.
#[derive(Debug, Default)]
pub struct Views {
    by_campaign: BTreeMap<String, u64>,
}

impl Aggregation for Views {
    /// The event kinds the host hands over (`Kind::Click` arrive joined to their impression).
    const WANTS: &'static [Kind] = &[Kind::Impression];

    fn add(&mut self, event: &Event<'_>) {
        *self.by_campaign.entry(event.campaign_id.to_owned()).or_default() += 1;
    }

    /// The window is complete: its records (an empty topic is the first output topic).
    fn emit(self, start_ms: i64, end_ms: i64, out: &mut Vec<Output>) {
        for (campaign_id, n) in self.by_campaign {
            let mut value = String::new();
            Obj::new(&mut value)
                .str("campaign_id", &campaign_id)
                .time("window_start", start_ms)
                .time("window_end", end_ms)
                .u64("impressions", n)
                .end();
            out.push(Output { topic: String::new(), key: campaign_id, value });
        }
    }

    // The accumulator as bytes and back, and the merge of two (restarts, live swap, scale-out).
    // Bump `state_version` below when this format changes.
    fn encode(&self, out: &mut StateWriter) {
        out.u64(self.by_campaign.len() as u64);
        for (campaign_id, n) in &self.by_campaign {
            out.str(campaign_id).u64(*n);
        }
    }

    fn decode(input: &mut StateReader<'_>) -> Result<Self, StateError> {
        let mut views = Views::default();
        for _ in 0..input.len(16)? {
            let campaign_id = input.str()?.to_owned();
            views.by_campaign.insert(campaign_id, input.u64()?);
        }
        Ok(views)
    }

    fn merge(&mut self, other: Self) {
        for (campaign_id, n) in other.by_campaign {
            *self.by_campaign.entry(campaign_id).or_default() += n;
        }
    }
}

adstream_abi::export_aggregation!(Views {
    wit: "wit",
    name: "NAME",
    description: "impressions per campaign and window",
    outputs: ["NAME-results"],
    state_version: 1,
});
"#;

const RUST_CARGO: &str = r#"[package]
name = "NAME"
# The plugin's version: every record it publishes carries it (header plugin-version).
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
# The adstream SDK (batch reading, JSON writing, state), vendored: it has no dependencies.
adstream-abi = { path = "adstream-abi" }
wit-bindgen = "WIT_BINDGEN"

[profile.release]
# Small and fast components.
debug = false
strip = true
codegen-units = 1
lto = true

[workspace]
"#;

const ABI_CARGO: &str = r#"[package]
name = "adstream-abi"
description = "The adstream SDK for Rust plugins: the batch encoding, JSON output, state (vendored by adstream new-plugin)"
version = "VERSION"
edition = "2024"
publish = false
"#;

const RUST_BUILD: &str = r#"#!/usr/bin/env bash
# Builds the plugin NAME into NAME.wasm, a WebAssembly component for the adstream host, with the
# Rust toolchain rust-toolchain.toml pins and its wasm32-wasip2 target (installed by rustup when
# missing), against the host's interface (wit/aggregation.wit).
set -euo pipefail
cd "$(dirname "$0")"
rustup toolchain install >/dev/null
cargo build --release --target wasm32-wasip2
cp target/wasm32-wasip2/release/LIBNAME.wasm NAME.wasm
echo "built NAME.wasm ($(stat -c %s NAME.wasm) bytes): adstream replay --input EVENTS_DIR --plugin NAME.wasm"
"#;

/// The plugin languages `new-plugin` writes.
pub const LANGUAGES: [&str; 2] = ["python", "rust"];

/// Writes a plugin in `lang` (one of [`LANGUAGES`]) named `name` into `dir`; returns the files
/// written.
pub fn new_plugin(name: &str, lang: &str, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    match lang {
        "rust" => new_rust_plugin(name, dir),
        _ => new_python_plugin(name, dir),
    }
}

/// Writes a Rust plugin named `name` into `dir` (which must not exist, or be empty): a crate of
/// its own, with the SDK vendored, the WIT, the pinned toolchain and a `build.sh`.
pub fn new_rust_plugin(name: &str, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    check(name, dir)?;
    let mut files = vec![
        ("Cargo.toml".to_owned(), RUST_CARGO.replace("NAME", name).replace("WIT_BINDGEN", WIT_BINDGEN)),
        ("src/lib.rs".to_owned(), RUST_LIB.replace("NAME", name)),
        ("build.sh".to_owned(), RUST_BUILD.replace("LIBNAME", &name.replace('-', "_")).replace("NAME", name)),
        ("rust-toolchain.toml".to_owned(), TOOLCHAIN.to_owned()),
        ("wit/aggregation.wit".to_owned(), WIT.to_owned()),
        ("adstream-abi/Cargo.toml".to_owned(), ABI_CARGO.replace("VERSION", env!("CARGO_PKG_VERSION"))),
        (".gitignore".to_owned(), "target/\n*.wasm\nCargo.lock\n".to_owned()),
    ];
    for (file, text) in ABI {
        files.push((format!("adstream-abi/src/{file}"), text.to_owned()));
    }
    write(dir, files)
}

/// The wit-bindgen release the host's plugins are built with (the workspace's dependency).
const WIT_BINDGEN: &str = "0.63";

/// Writes a Python plugin named `name` into `dir` (which must not exist, or be empty); returns
/// the files written.
pub fn new_python_plugin(name: &str, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    check(name, dir)?;
    let files = vec![
        ("app.py".to_owned(), APP.replace("NAME", name)),
        ("build.sh".to_owned(), BUILD.replace("NAME", name).replace("VERSION", COMPONENTIZE_PY)),
        ("adstream_sdk/__init__.py".to_owned(), SDK_INIT.to_owned()),
        ("adstream_sdk/batch.py".to_owned(), SDK_BATCH.to_owned()),
        ("adstream_sdk/detector.py".to_owned(), SDK_DETECTOR.to_owned()),
        ("wit/aggregation.wit".to_owned(), WIT.to_owned()),
        (".gitignore".to_owned(), ".venv/\n__pycache__/\n*.wasm\n".to_owned()),
    ];
    write(dir, files)
}

/// A plugin name that names a `.wasm` and a topic, and a folder free to write into.
fn check(name: &str, dir: &Path) -> anyhow::Result<()> {
    ensure!(
        !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'),
        "plugin name {name:?}: use lowercase letters, digits, '-' and '_' (at most 64): it names the plugin, its .wasm and its output topic"
    );
    if dir.exists() {
        let empty = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?.next().is_none();
        ensure!(empty, "{} exists and is not empty: name another --dir", dir.display());
    }
    Ok(())
}

fn write(dir: &Path, files: Vec<(String, String)>) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (file, text) in files {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The versions a template pins are those this repository builds its plugins with.
    #[test]
    fn the_templates_pin_what_the_repository_builds_with() {
        let workspace = include_str!("../../Cargo.toml");
        assert!(workspace.contains(&format!("wit-bindgen = \"{WIT_BINDGEN}\"")), "wit-bindgen {WIT_BINDGEN}");
        let build = include_str!("../../scripts/build-plugins.sh");
        assert!(build.contains(&format!("componentize-py=={COMPONENTIZE_PY}")), "componentize-py {COMPONENTIZE_PY}");
    }

    #[test]
    fn refuses_bad_names_and_a_folder_in_use() {
        let dir = tempfile::tempdir().unwrap();
        assert!(new_python_plugin("Top Ads", &dir.path().join("x")).is_err());
        std::fs::write(dir.path().join("taken"), "").unwrap();
        let e = new_python_plugin("views", dir.path()).unwrap_err().to_string();
        assert!(e.contains("not empty"), "{e}");
        let files = new_python_plugin("views", &dir.path().join("views")).unwrap();
        let app = std::fs::read_to_string(&files[0]).unwrap();
        assert!(app.contains("name=\"views\"") && app.contains("\"views-results\"") && !app.contains("NAME"));
        let files = new_rust_plugin("top-ads", &dir.path().join("rust")).unwrap();
        let text = |end: &str| std::fs::read_to_string(files.iter().find(|f| f.ends_with(end)).unwrap()).unwrap();
        assert!(text("src/lib.rs").contains("name: \"top-ads\"") && !text("src/lib.rs").contains("NAME"));
        assert!(text("build.sh").contains("release/top_ads.wasm NAME.wasm".replace("NAME", "top-ads").as_str()));
        assert!(text("Cargo.toml").contains("wit-bindgen = \"0.63\""));
        assert!(text("rust-toolchain.toml").contains("wasm32-wasip2"));
        assert_eq!(files.iter().filter(|f| f.to_string_lossy().contains("adstream-abi/src/")).count(), ABI.len());
    }

    /// Every source file of the SDK is vendored: a module added to `crates/abi` and not to `ABI`
    /// would leave a new plugin unable to build.
    #[test]
    fn the_vendored_sdk_is_the_whole_crate() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/abi/src");
        let mut on_disk: Vec<String> =
            std::fs::read_dir(&src).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        on_disk.sort();
        let mut vendored: Vec<String> = ABI.iter().map(|(name, _)| (*name).to_owned()).collect();
        vendored.sort();
        assert_eq!(vendored, on_disk);
    }
}
