#!/usr/bin/env bash
# Builds the plugins as WebAssembly components and copies each to target/plugins/<name>.wasm,
# where the README, the justfile and the tests look; the deliberately misbehaving plugins under
# test-plugins/ go to target/test-plugins/.
#
# - A Rust plugin is a crate (plugins/<name>/Cargo.toml), built for wasm32-wasip2.
# - A Python plugin is plugins/<name>/app.py, built against wit/ with componentize-py and the
#   Python SDK (sdk/python): a detector (app.py imports adstream_sdk.detector) for the WIT's
#   `detector` world, any other for `aggregation`. componentize-py is installed from PyPI into a project-local
#   virtual environment (.cache/python) when missing, and Debian's python3 (with venv) if there
#   is no Python 3.10 or later.
#
# Usage: bash scripts/build-plugins.sh [NAME...]   (default: every plugin and test plugin)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/packages.sh

# The componentize-py release the Python SDK is tested with.
COMPONENTIZE_PY=componentize-py==0.25.1

wanted() { # whether plugin $1 is among the names given (every plugin when none are)
  [ "${#names[@]}" -eq 0 ] && return 0
  local n
  for n in "${names[@]}"; do [ "$n" = "$1" ] && return 0; done
  return 1
}

names=("$@")
crates=()
pythons=()
for dir in plugins/*/ test-plugins/*/; do
  name=$(basename "$dir")
  wanted "$name" || continue
  if [ -f "$dir/Cargo.toml" ]; then
    crates+=("$dir")
  elif [ -f "$dir/app.py" ]; then
    pythons+=("$dir")
  fi
done
for n in "${names[@]}"; do
  if [ ! -d "plugins/$n" ] && [ ! -d "test-plugins/$n" ]; then
    echo "build-plugins: no plugin named $n (plugins/$n/ with a Cargo.toml or an app.py)" >&2
    exit 2
  fi
done

copy() { # copy the component built for plugin directory $2 from $1
  local kind name
  kind=$(dirname "$2")
  name=$(basename "$2")
  mkdir -p "target/$kind"
  cp "$1" "target/$kind/$name.wasm"
  echo "built target/$kind/$name.wasm ($(stat -c %s "target/$kind/$name.wasm") bytes)"
}

if [ "${#crates[@]}" -gt 0 ]; then
  rustup toolchain install >/dev/null  # the pinned toolchain and the wasm32-wasip2 target
  # A crate just added to plugins/ is not in Cargo.lock yet: add it (and only then let Cargo
  # change the lock file), rather than fail on --locked.
  if ! cargo metadata --locked --format-version 1 >/dev/null 2>&1; then
    echo "Cargo.lock does not match the workspace (a new plugin crate?): updating it"
    cargo metadata --format-version 1 >/dev/null
  fi
  packages=()
  for dir in "${crates[@]}"; do packages+=(-p "$(basename "$dir")"); done
  cargo build --locked --profile plugin --target wasm32-wasip2 "${packages[@]}"
  for dir in "${crates[@]}"; do
    copy "target/wasm32-wasip2/plugin/$(basename "$dir").wasm" "${dir%/}"
  done
fi

if [ "${#pythons[@]}" -gt 0 ]; then
  venv=.cache/python
  if ! "$venv/bin/componentize-py" --version 2>/dev/null | grep -q "${COMPONENTIZE_PY#*==}"; then
    # Python 3.10 or later with venv: Debian's python3 and python3-venv when missing.
    need_packages "python3 -c 'import sys, venv, ensurepip; assert sys.version_info >= (3, 10)'" python3 python3-venv
    echo "installing $COMPONENTIZE_PY into $venv (Python plugins)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$COMPONENTIZE_PY"
  fi
  mkdir -p target/python
  for dir in "${pythons[@]}"; do
    out="target/python/$(basename "$dir").wasm"
    # A detector (it imports the SDK's detector module) implements the other world of the WIT.
    world=aggregation
    if grep -Eq '^(from adstream_sdk\.detector import|import adstream_sdk\.detector)' "$dir/app.py"; then world=detector; fi
    # componentize-py's output differs from one build to the next, and with it the SHA-256 that
    # names a compiled plugin in the caches (each new one ~35 MB): built again only when what
    # goes into it changed (the plugin's files, the SDK, the WIT, the componentize-py release).
    inputs=$({
      echo "$COMPONENTIZE_PY $world"
      find "$dir" sdk/python wit -type f ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum
    } | sha256sum | cut -d' ' -f1)
    if [ -s "$out" ] && [ "$(cat "$out.inputs" 2>/dev/null)" = "$inputs" ]; then
      echo "up to date: $out (its sources are unchanged)"
    else
      rm -f "$out.inputs"
      "$venv/bin/componentize-py" -d wit -w "$world" componentize -p "$dir" -p sdk/python app -o "$out" >/dev/null
      echo "$inputs" >"$out.inputs"
    fi
    copy "$out" "${dir%/}"
  done
fi
