#!/usr/bin/env bash
# Runs every test, as CI does: formatting, lints, the plugin builds, and the unit, property and
# end-to-end tests (against a real Apache Kafka broker on 127.0.0.1, started here and stopped
# at the end if this script started it).
#
# Needs only rustup, a JDK and Maven: the pinned toolchain, the wasm32-wasip2 target and the
# Kafka jars are installed on first use, and so are Debian's chromium and chromium-driver for the
# console's browser test (with apt-get, as root or through sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain (rust-toolchain.toml)"
rustup toolchain install

step "formatting"
cargo fmt --all --check

step "plugins (wasm32-wasip2 components)"
bash scripts/build-plugins.sh

step "host and generator (release)"
cargo build --release --locked -p adstream -p adgen

step "lints"
cargo clippy --release --locked --workspace --all-targets -- -D warnings
cargo clippy --profile plugin --locked --target wasm32-wasip2 $(for d in plugins/*/ test-plugins/*/; do printf -- '-p %s ' "$(basename "$d")"; done) -- -D warnings

step "browser for the console test (Debian's chromium and chromium-driver)"
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  if ! command -v apt-get >/dev/null; then
    echo "the console's browser test needs /usr/bin/chromium and /usr/bin/chromedriver (Debian: chromium chromium-driver)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null \
    || { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; }
fi
/usr/bin/chromium --version

step "Kafka broker"
started_kafka=0
if ! bash scripts/kafka.sh status >/dev/null 2>&1; then
  bash scripts/kafka.sh up
  started_kafka=1
fi
cleanup() { if [ "$started_kafka" = 1 ]; then bash scripts/kafka.sh down || true; fi; }
trap cleanup EXIT

step "tests"
ADSTREAM_TEST_BROKERS="${ADSTREAM_TEST_BROKERS:-127.0.0.1:9092}" cargo test --release --locked --workspace
