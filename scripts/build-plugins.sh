#!/usr/bin/env bash
# Builds every plugin crate under plugins/ as a WebAssembly component (wasm32-wasip2) and
# copies it to target/plugins/<name>.wasm, where the README, the justfile and the tests look.
# The deliberately misbehaving plugins under test-plugins/ go to target/test-plugins/.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup toolchain install >/dev/null  # the pinned toolchain and the wasm32-wasip2 target
packages=()
for dir in plugins/*/ test-plugins/*/; do
  packages+=(-p "$(basename "$dir")")
done
cargo build --locked --profile plugin --target wasm32-wasip2 "${packages[@]}"
for kind in plugins test-plugins; do
  mkdir -p "target/${kind}"
  for dir in "${kind}"/*/; do
    name=$(basename "$dir")
    cp "target/wasm32-wasip2/plugin/${name}.wasm" "target/${kind}/${name}.wasm"
    echo "built target/${kind}/${name}.wasm ($(stat -c %s "target/${kind}/${name}.wasm") bytes)"
  done
done
