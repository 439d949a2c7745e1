# adstream recipes. `just --list` shows them; each is a thin wrapper around a script or a
# binary, so everything also works without just (see README.md).

brokers := env_var_or_default("ADSTREAM_BROKERS", "127.0.0.1:9092")
plugins := "--plugin target/plugins/ctr.wasm --plugin target/plugins/engagement.wasm"

# List the recipes
default:
    @just --list

# Build the plugins under plugins/ (Rust crates and Python app.py) into target/plugins/<name>.wasm;
# name some to build only those (`just build-plugins engagement-py`)
build-plugins *NAMES:
    bash scripts/build-plugins.sh {{NAMES}}

# Build the host (adstream) and the generator (adgen), release
build:
    rustup toolchain install
    bash -c 'source scripts/packages.sh && need_build_packages'
    cargo build --release --locked -p adstream -p adgen

# The whole pipeline on a local Kafka broker, with live result tables
demo:
    bash scripts/demo.sh

# Every test, as CI runs them (fmt, clippy, plugins, unit, property and end-to-end tests)
test:
    bash scripts/test.sh

# Run the host against Kafka with the ctr and engagement plugins; extra flags pass through
run *FLAGS: build build-plugins
    target/release/adstream run --brokers {{brokers}} {{plugins}} {{FLAGS}}

# Run the pipeline over JSONL files in DIR (as `just generate-jsonl DIR` writes them)
replay DIR *FLAGS: build build-plugins
    target/release/adstream replay --input {{DIR}} {{plugins}} {{FLAGS}}

# Write events to Kafka; extra flags pass through (see `target/release/adgen --help`)
generate *FLAGS: build
    target/release/adgen --brokers {{brokers}} {{FLAGS}}

# Write events to JSONL files in DIR instead of Kafka
generate-jsonl DIR *FLAGS: build
    target/release/adgen --jsonl {{DIR}} {{FLAGS}}

# Show the result topics as live tables
tail *FLAGS: build
    target/release/adstream tail --brokers {{brokers}} {{FLAGS}}

# Start the local Apache Kafka broker (KRaft, 127.0.0.1:9092); safe to run twice
kafka-up:
    bash scripts/kafka.sh up

# Stop the local broker (add --wipe to delete its data)
kafka-down *FLAGS:
    bash scripts/kafka.sh down {{FLAGS}}

# The benchmark (issue 4): CPU per event, throughput, peak RSS, result latency and start-up, for
# replay and the real broker, WebAssembly against native; prints a table and writes
# target/bench/results.{md,json}. Flags pass through (`--no-scaling`, `--repeat 1`, `--events 1M`...)
bench *FLAGS: build-plugins kafka-up
    rustup toolchain install
    bash -c 'source scripts/packages.sh && need_build_packages'
    cargo build --release --locked -p adstream -p adgen -p adbench
    target/release/adbench {{FLAGS}}
    bash bench/scale-out.sh
    bash bench/replay-threads.sh
    bash bench/idle-cpu.sh

# Replay's tasks on 1 thread and on more (THREADS, default 1 2): events per wall- and CPU-second,
# speed-up, same records. On a bigger machine: `just bench-threads 1 2 4 8`
bench-threads *THREADS: build build-plugins
    bash bench/replay-threads.sh {{THREADS}}

# Instructions per replayed event, counted by valgrind (the same on every run, unlike CPU time
# on a shared machine): `just bench-instructions 1M /tmp/adstream-old target/release/adstream`
bench-instructions EVENTS="1M" *HOSTS: build build-plugins
    bash bench/instructions.sh {{EVENTS}} {{HOSTS}}

# The same on the broker path: instructions per message of `adstream run` consuming EVENTS from
# the local broker: `just bench-instructions-kafka 200k /tmp/adstream-old target/release/adstream`
bench-instructions-kafka EVENTS="200k" *HOSTS: build build-plugins kafka-up
    bash bench/instructions-kafka.sh {{EVENTS}} {{HOSTS}}

# Scale-out alone: 1 host against 2 hosts of one group over the same 6-partition input
bench-scale-out EVENTS="1M": build build-plugins kafka-up
    bash bench/scale-out.sh {{EVENTS}}

# CPU of an idle host (all input consumed) over SECONDS, per thread: what a quiet input costs
bench-idle SECONDS="30" *HOST: build build-plugins kafka-up
    bash bench/idle-cpu.sh {{SECONDS}} {{HOST}}

# CPU per thread of hosts catching up on EVENTS from the local broker (bench/idle-cpu.sh's busy
# counterpart): `just bench-threads-cpu 2M /tmp/adstream-old target/release/adstream`
bench-threads-cpu EVENTS="2M" *HOSTS: build build-plugins kafka-up
    python3 bench/thread-cpu.py {{EVENTS}} {{HOSTS}}

# Result latency on a live stream (10k messages/s), the partials' round trip included
bench-latency EVENTS="400k" RATE="10000": build build-plugins kafka-up
    bash bench/result-latency.sh {{EVENTS}} {{RATE}}

# Longer run of the scale-out kill test (not in CI): KILLS SIGKILLs among three hosts
scale-soak KILLS="30": build build-plugins kafka-up
    ADSTREAM_SCALE_KILLS={{KILLS}} cargo test --release --locked -p adstream --test integration consumer_group::hosts_killed -- --nocapture

# Memory soak (not in CI): MINUTES (30) at a steady RATE (10000 events/s); RSS must stay flat
# after warm-up. Samples in target/soak/rss.csv
soak MINUTES="30" RATE="10000": build build-plugins kafka-up
    bash scripts/soak.sh {{MINUTES}} {{RATE}}

# Longer run of the crash test (not in CI): 100 SIGKILLs mid-stream, exactly-once checked
crash-soak: build build-plugins kafka-up
    ADSTREAM_CRASH_KILLS=100 cargo test --release --locked -p adstream --test integration crash_recovery:: -- --nocapture

# Broker outages again and again (not in CI): CYCLES outages of SECONDS each, SIGTERM and SIGKILL
# in turn, on a broker of its own; prints how soon after each the host was ready again
outage-soak CYCLES="6" SECONDS="30": build build-plugins
    bash scripts/outage-soak.sh {{CYCLES}} {{SECONDS}}

# Fuzz the decoder and the pipeline with a million random and mutated messages
fuzz:
    ADSTREAM_FUZZ_CASES=1000000 cargo test --release --locked -p adstream --test integration hostile_input::
