#!/usr/bin/env bash
# Runs every test, as CI does: formatting, lints, the plugin builds, and the unit, property and
# end-to-end tests (against a real Apache Kafka broker on 127.0.0.1, started here and stopped
# at the end if this script started it).
#
# Needs only rustup, a JDK and Maven: the pinned toolchain, the wasm32-wasip2 target and the
# Kafka jars are installed on first use, and so are Debian's packages for OpenSSL's headers
# (the host links the system's OpenSSL) and chromium and chromium-driver for the console's
# browser test (with apt-get, as root or through sudo, when they are missing).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/packages.sh

began=$SECONDS
step() { printf '\n==> %s   [%s, %d s in]\n' "$*" "$(date +%T)" "$((SECONDS - began))"; }

# Side runs: commands run in the background beside the step's own, each in a process group of
# its own (setsid) so that a failure stops it, children and all; `finish_sides` waits for them,
# prints their output and fails if one did.
logs=$(mktemp -d)
side_names=()
side_pids=()
started_kafka=0
cleanup() {
  for pid in "${side_pids[@]}"; do kill -- -"$pid" 2>/dev/null || true; done
  rm -rf "$logs"
  if [ "$started_kafka" = 1 ]; then bash scripts/kafka.sh down || true; fi
}
trap cleanup EXIT
side() {
  local name=$1
  shift
  setsid "$@" >"$logs/$name" 2>&1 &
  side_names+=("$name")
  side_pids+=("$!")
}
finish_sides() {
  local i status failed=()
  for i in "${!side_pids[@]}"; do
    status=0
    wait "${side_pids[$i]}" || status=$?
    echo "--- ${side_names[$i]} (run beside the step)"
    cat "$logs/${side_names[$i]}"
    [ "$status" = 0 ] || failed+=("${side_names[$i]} (exit $status)")
  done
  side_names=()
  side_pids=()
  [ ${#failed[@]} = 0 ] || { echo "failed: ${failed[*]}"; exit 1; }
}

step "toolchain (rust-toolchain.toml) and OpenSSL's headers"
rustup toolchain install
need_build_packages

step "formatting"
cargo fmt --all --check

# The host's lints ride on its build: clippy-driver compiles the workspace's own crates where
# rustc would, and lints them, warnings denied. A separate `cargo clippy` type-checked every
# dependency (wasmtime, cranelift, librdkafka's bindings...) once more: about a minute of a fresh
# clone's run. What the tests run is then compiled by clippy-driver: rustc with Clippy's lint
# passes (and its MIR optimisations off; LLVM's are the same). Cargo keeps these artifacts apart
# from a plain build's (the wrapper is part of their hash), so a `cargo test` by hand afterwards
# compiles the workspace's crates again, not their dependencies. Every cargo command below that
# builds takes the same wrapper.
lints=(--config "build.rustc-workspace-wrapper=\"$(rustup which clippy-driver)\"")
unset RUSTC_WORKSPACE_WRAPPER  # an inherited one would decide instead of the --config (no lints)
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"

step "host, generator and every test (release), linted; beside it the plugins, the browser and the broker"
# The host's build keeps both cores busy most of the time, not all of it (its last crates and
# links are one compiler at a time): the plugins (wasm32-wasip2 components, in target/wasm32-wasip2,
# which cargo locks apart from target/release) and their lints, the console test's browser
# (Debian's chromium and chromium-driver) and the Kafka broker's start are done beside it.
plugin_crates=()
for d in plugins/*/ test-plugins/*/; do [ -f "$d/Cargo.toml" ] && plugin_crates+=(-p "$(basename "$d")"); done
# shellcheck disable=SC2016  # the inner script's own arguments
side plugins bash -c 'bash scripts/build-plugins.sh && cargo clippy --profile plugin --locked --target wasm32-wasip2 "$@" -- -D warnings' _ "${plugin_crates[@]}"
side browser bash -c 'source scripts/packages.sh && need_packages "test -x /usr/bin/chromium && test -x /usr/bin/chromedriver" chromium chromium-driver && /usr/bin/chromium --version'
if ! bash scripts/kafka.sh status >/dev/null 2>&1; then
  started_kafka=1
  side kafka bash scripts/kafka.sh up
fi
# One build of everything the tests run, the binaries included (cargo builds a package's binaries
# for its integration tests): `cargo build -p adstream -p adgen` would resolve other features of
# shared crates (the plugins and dev-dependencies turn on rustc-hash's `std`, say) and compile the
# whole wasmtime/cranelift stack a second time for the tests.
cargo test "${lints[@]}" --release --locked --workspace --no-run
finish_sides

step "tests"
# The tests (host/tests/integration/main.rs has the layout) run in two phases. First three runs
# side by side:
# - `consumer_group`'s tests, several hosts each, one after another (the longest series, about
#   three minutes under this load; run among the others, those waiting on its lock held threads
#   idle);
# - the host's other tests but `quiet`'s, 5 at a time (most of their time is spent waiting for
#   the broker or a host, so on 2 cores this takes about half as long as one per core);
# - the other crates' tests (the generator, the SDK, the plugins, adbench's smoke run): about
#   half a minute, which cargo would otherwise spend before the host's tests.
# Then the `quiet` ones, whose assertions read the wall clock, with nothing else running: the
# plugin deadlines first (bounds of a tenth of a second, a second in all), then the others 4 at a
# time. Those mostly wait on the broker or a host (two at a time left the cores 50-90% idle; 4
# take about 53 s instead of 85); their bounds are seconds (at 4, the refused hosts stopped in
# 0.4-4.5 s of their 15).
export ADSTREAM_TEST_BROKERS="${ADSTREAM_TEST_BROKERS:-127.0.0.1:9092}"
side consumer_group cargo test "${lints[@]}" --release --locked -p adstream --test integration -- --test-threads 1 consumer_group::
side other_crates cargo test "${lints[@]}" --release --locked --workspace --exclude adstream
cargo test "${lints[@]}" --release --locked -p adstream -- --test-threads 5 --skip quiet:: --skip consumer_group::
finish_sides
cargo test "${lints[@]}" --release --locked -p adstream --test integration -- --test-threads 2 quiet::plugin_faults::
cargo test "${lints[@]}" --release --locked -p adstream --test integration -- --test-threads 4 quiet:: --skip quiet::plugin_faults::
step "all passed"
