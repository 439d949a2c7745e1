#!/usr/bin/env bash
# What each output codec (--output-compression) costs the host in CPU and saves on the broker's
# disk, on one input read five times (once per codec, each run writing its own output topics with
# --output-topic-prefix). The input has 1% late and 1% invalid messages, whose copies are most of
# the bytes the host writes besides the results.
#
# Usage: bash bench/output-compression.sh [EVENTS]      (default 1M; the local broker must be up:
#        `bash scripts/kafka.sh up`, and the binaries and plugins built: `just build build-plugins`)
set -euo pipefail
cd "$(dirname "$0")/.."

events=${1:-1M}
data="${KAFKA_HOME:-.kafka}/data"
prefix="comp-$(date +%s)-"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

target/release/adgen --partitions 3 --events "$events" --topic-prefix "$prefix" \
  --late-fraction 0.01 --malformed-fraction 0.01 --quiet --summary-json "$work/summary.json" 2>/dev/null
total=$(sed -n 's/.*"messages": *\([0-9]*\).*/\1/p' "$work/summary.json" | head -n1)
echo "input: $total messages in ${prefix}ad-impressions and ${prefix}ad-clicks"
printf '%-7s %14s %14s %12s\n' codec "output bytes" "vs none" "host CPU s"
none_bytes=""
for codec in none lz4 snappy zstd gzip; do
  out="${prefix}${codec}."
  target/release/adstream run --topic-prefix "$prefix" \
    --output-topic-prefix "$out" --group-id "${out}g" --idle-timeout 2s --http-addr 127.0.0.1:18181 \
    --output-compression "$codec" --plugin target/plugins/ctr.wasm --plugin target/plugins/engagement.wasm \
    2>"$work/$codec.log" &
  host=$!
  # Until every message is consumed, then a moment for the idle partitions to close the windows.
  until [[ "$(curl -s http://127.0.0.1:18181/metrics 2>/dev/null || true)" == *$'\n'"adstream_messages_consumed_total $total"$'\n'* ]]; do
    sleep 0.5
  done
  sleep 4
  # utime + stime of the host, in clock ticks (fields 14 and 15 of /proc/PID/stat).
  cpu=$(awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$host/stat")
  kill -TERM "$host"
  wait "$host"
  bytes=$(find "$data" -path "*/${out}*" -name '*.log' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
  [ -z "$none_bytes" ] && none_bytes=$bytes
  printf '%-7s %14s %13.1f%% %12s\n' "$codec" "$bytes" "$(awk -v b="$bytes" -v n="$none_bytes" 'BEGIN {print 100 * b / n}')" "$cpu"
done
