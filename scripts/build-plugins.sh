#!/usr/bin/env bash
# Builds every plugin crate under plugins/ as a WebAssembly component (wasm32-wasip2) and
# copies it to target/plugins/<name>.wasm, where the README, the justfile and the tests look.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup toolchain install >/dev/null  # the pinned toolchain and the wasm32-wasip2 target
packages=()
for dir in plugins/*/; do
  packages+=(-p "$(basename "$dir")")
done
cargo build --profile plugin --target wasm32-wasip2 "${packages[@]}"
mkdir -p target/plugins
for dir in plugins/*/; do
  name=$(basename "$dir")
  cp "target/wasm32-wasip2/plugin/${name}.wasm" "target/plugins/${name}.wasm"
  echo "built target/plugins/${name}.wasm ($(stat -c %s "target/plugins/${name}.wasm") bytes)"
done
