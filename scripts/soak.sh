#!/usr/bin/env bash
# Memory soak (issue 4, not in CI): the generator writes at a steady rate with event time
# following the wall clock, the host consumes it live, and the host's resident memory is sampled
# every 10 s. After warm-up (the join horizon, 10 minutes, plus a minute) it must stay flat:
# the join keeps at most a horizon of impressions, and closed windows are freed at once.
#
#   bash scripts/soak.sh [MINUTES (30)] [EVENTS PER SECOND (10000)]
#
# Writes target/soak/rss.csv (seconds, RSS MiB, consumed so far is in the host's log) and prints
# the RSS at the end of warm-up, at the end, and the largest after warm-up.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-30}"
rate="${2:-10000}"
brokers="${ADSTREAM_BROKERS:-127.0.0.1:9092}"
warmup_s=660
out=target/soak
mkdir -p "$out"
prefix="soak-$(date +%s)-"

target/release/adgen --quiet --brokers "$brokers" --impressions-topic "${prefix}ad-impressions" \
  --clicks-topic "${prefix}ad-clicks" --start now --rate "$rate" --duration "${minutes}m" \
  >"$out/adgen.log" 2>&1 &
gen=$!
trap 'kill $gen ${host:-} 2>/dev/null || true' EXIT
sleep 3 # adgen creates the topics

ADSTREAM_LOG=info target/release/adstream run --brokers "$brokers" --topic-prefix "$prefix" \
  --group-id "${prefix}host" --plugin target/plugins/ctr.wasm --plugin target/plugins/engagement.wasm \
  --stats-file "$out/stats.json" >"$out/host.log" 2>&1 &
host=$!

echo "seconds,rss_mib" >"$out/rss.csv"
start=$(date +%s)
end=$((start + minutes * 60))
while [ "$(date +%s)" -lt "$end" ]; do
  sleep 10
  kill -0 "$host" 2>/dev/null || { echo "soak: the host exited early, see $out/host.log" >&2; exit 1; }
  awk -v s=$(( $(date +%s) - start )) '/^VmRSS:/ {printf "%d,%.1f\n", s, $2 / 1024}' "/proc/$host/status" >>"$out/rss.csv"
done
kill -TERM "$host"
wait "$host" || true

awk -F, -v w="$warmup_s" 'NR > 1 {
    if ($1 <= w) at_warmup = $2
    if ($1 > w && $2 > peak) peak = $2
    last = $2; last_s = $1
  }
  END {
    if (at_warmup == "" || peak == "") { print "soak: too short to get past warm-up (" w " s)"; exit 1 }
    printf "soak: RSS %.0f MiB after warm-up (%d s), %.0f MiB at the end (%d s), at most %.0f MiB after warm-up: %+.1f%%\n",
      at_warmup, w, last, last_s, peak, (peak - at_warmup) / at_warmup * 100
  }' "$out/rss.csv"
echo "soak: samples in $out/rss.csv; host log in $out/host.log; final counters in $out/stats.json"
