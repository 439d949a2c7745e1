//! `adstream new-plugin`: writes a plugin project of its own, outside this repository, that
//! builds with nothing from it: the plugin's source, a copy of the Python SDK, the WIT the host
//! implements, and a build script that installs componentize-py when it is missing.

use std::path::{Path, PathBuf};

use anyhow::{Context, ensure};

/// The componentize-py release the SDK is tested with (as `scripts/build-plugins.sh`).
pub const COMPONENTIZE_PY: &str = "0.25.1";

const SDK_INIT: &str = include_str!("../../sdk/python/adstream_sdk/__init__.py");
const SDK_BATCH: &str = include_str!("../../sdk/python/adstream_sdk/batch.py");
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
"$componentize" -d wit -w aggregation componentize -p . app -o NAME.wasm >/dev/null
echo "built NAME.wasm ($(stat -c %s NAME.wasm) bytes): adstream replay --input EVENTS_DIR --plugin NAME.wasm"
"#;

/// Writes a Python plugin named `name` into `dir` (which must not exist, or be empty); returns
/// the files written.
pub fn new_python_plugin(name: &str, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
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
    let files = [
        ("app.py", APP.replace("NAME", name)),
        ("build.sh", BUILD.replace("NAME", name).replace("VERSION", COMPONENTIZE_PY)),
        ("adstream_sdk/__init__.py", SDK_INIT.to_owned()),
        ("adstream_sdk/batch.py", SDK_BATCH.to_owned()),
        ("wit/aggregation.wit", WIT.to_owned()),
        (".gitignore", ".venv/\n__pycache__/\n*.wasm\n".to_owned()),
    ];
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
    }
}
