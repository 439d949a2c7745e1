#!/usr/bin/env bash
# Scale-out: the same input (6 partitions) read by 1 host with 1 pipeline thread, 1 host with 2
# threads (--threads 2) and 2 hosts with 1 thread each, every run a consumer group of its own.
# For each run: the wall time from the first host's start until every message is consumed (the
# group's rebalances included), the hosts' CPU seconds, and from those, events per wall-second
# and per CPU-second. Each run writes its own output topics (--output-topic-prefix) under its
# own group.
#
# On a 2-core machine two threads or two hosts share the cores with the broker and each other:
# the series shows what the group costs (rebalances, the partials' round trip, more clients)
# rather than a speed-up, which needs a core per thread and more for librdkafka and the broker.
#
# Usage: bash bench/scale-out.sh [EVENTS]      (default 1M; the local broker must be up:
#        `bash scripts/kafka.sh up`, and the binaries and plugins built: `just build build-plugins`)
set -euo pipefail
cd "$(dirname "$0")/.."

events=${1:-1M}
prefix="scale-$(date +%s)-"
work=$(mktemp -d)
trap 'rm -rf "$work"; kill $(jobs -p) 2>/dev/null || true' EXIT

target/release/adgen --partitions 6 --events "$events" --topic-prefix "$prefix" \
  --late-fraction 0 --malformed-fraction 0.001 --quiet --summary-json "$work/summary.json" 2>/dev/null
total=$(sed -n 's/.*"messages": *\([0-9]*\).*/\1/p' "$work/summary.json" | head -n1)
echo "input: $total messages in ${prefix}ad-impressions and ${prefix}ad-clicks (6 partitions each)"
printf '%-7s %-8s %10s %12s %16s %16s\n' hosts threads "wall s" "host CPU s" "events/wall-s" "events/CPU-s"

consumed() { # the counter of the host on port $1
  curl -s "http://127.0.0.1:$1/metrics" 2>/dev/null | sed -n 's/^adstream_messages_consumed_total \([0-9]*\)$/\1/p'
}

for run in 1x1 1x2 2x1; do
  hosts=${run%x*}
  threads=${run#*x}
  out="${prefix}${hosts}h${threads}t."
  pids=()
  start=$(date +%s.%N)
  for h in $(seq 1 "$hosts"); do
    target/release/adstream run --topic-prefix "$prefix" --output-topic-prefix "$out" \
      --group-id "${out}g" --host-id "h$h" --threads "$threads" --idle-timeout 2s --http-addr "127.0.0.1:1818$h" \
      --plugin target/plugins/ctr.wasm --plugin target/plugins/engagement.wasm 2>"$work/$run-$h.log" &
    pids+=($!)
  done
  # Until the hosts have consumed every message (re-reads after rebalances count too) and stopped
  # consuming.
  last=-1
  while true; do
    sum=0
    for h in $(seq 1 "$hosts"); do sum=$((sum + $(consumed "1818$h" || echo 0))); done
    if (( sum >= total && sum == last )); then break; fi
    last=$sum
    sleep 1
  done
  end=$(date +%s.%N)
  cpu=0
  for pid in "${pids[@]}"; do
    cpu=$(awk -v hz="$(getconf CLK_TCK)" -v c="$cpu" '{printf "%.2f", c + ($14 + $15) / hz}' "/proc/$pid/stat")
  done
  for pid in "${pids[@]}"; do kill -TERM "$pid"; done
  for pid in "${pids[@]}"; do wait "$pid"; done
  # The wall time counts the last second of polling that saw no change.
  wall=$(awk -v s="$start" -v e="$end" 'BEGIN {printf "%.1f", e - s - 1}')
  awk -v h="$hosts" -v t="$threads" -v w="$wall" -v c="$cpu" -v n="$total" \
    'BEGIN {printf "%-7s %-8s %10s %12s %16.0f %16.0f\n", h, t, w, c, n / w, n / c}'
done
