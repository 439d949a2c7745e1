#!/usr/bin/env bash
# Result latency on a live stream: adgen writes at a steady rate (10k messages per second over 6
# partitions, 20 minutes of event time in 40 s) while one host consumes; at its clean stop the
# host's --stats-file has, per window, the time from every task's watermark passing the window's
# end (the last task handing it over to the merge stage) to its results being committed, which
# includes the partials' round trip through Kafka (issue 11). Prints p50, p99 and each window.
#
# Usage: bash bench/result-latency.sh [EVENTS] [RATE]   (default 400k at 10000/s; the local
#        broker must be up: `bash scripts/kafka.sh up`, and the binaries and plugins built)
# To look inside: LATENCY_HOST_FLAGS adds flags to the host's, LATENCY_HOST_LOG keeps its log
# there. The transactions of a run (BENCHMARKS "One transaction per window and host"):
#   LATENCY_HOST_FLAGS="--producer-property debug=eos,protocol" ADSTREAM_LOG=info,librdkafka=debug \
#   LATENCY_HOST_LOG=/tmp/latency.log bash bench/result-latency.sh
#   grep -c 'Sent EndTxn' /tmp/latency.log; grep -c CONCURRENT_TRANSACTIONS /tmp/latency.log
set -euo pipefail
cd "$(dirname "$0")/.."

events=${1:-400k}
rate=${2:-10000}
prefix="latency-$(date +%s)-"
work=$(mktemp -d)
trap 'if [ -n "${LATENCY_HOST_LOG:-}" ]; then cp "$work/host.log" "$LATENCY_HOST_LOG"; fi; rm -rf "$work"; kill $(jobs -p) 2>/dev/null || true' EXIT

# The topics first (one message), so that the host is consuming before the stream starts.
target/release/adgen --partitions 6 --events 1 --topic-prefix "$prefix" --quiet >/dev/null 2>&1
target/release/adstream run --topic-prefix "$prefix" --group-id "${prefix}g" --host-id latency \
  --idle-timeout 2s --http-addr off --stats-file "$work/stats.json" \
  --plugin target/plugins/ctr.wasm --plugin target/plugins/engagement.wasm ${LATENCY_HOST_FLAGS:-} 2>"$work/host.log" &
host=$!
sleep 3
target/release/adgen --partitions 6 --events "$events" --rate "$rate" --span 20m --topic-prefix "$prefix" \
  --late-fraction 0 --quiet >/dev/null 2>&1
sleep 5
kill -TERM "$host"
wait "$host"
python3 - "$work/stats.json" <<'PY'
import json, sys
latencies = sorted(json.load(open(sys.argv[1])).get("result_latencies_us", []))
if not latencies:
    sys.exit("no window was published: see the host's log")
pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] / 1000
in_order = [round(us / 1000, 1) for us in json.load(open(sys.argv[1]))["result_latencies_us"]]
print(f"{len(latencies)} windows: result latency p50 {pick(0.5):.1f} ms, p99 {pick(0.99):.1f} ms")
print("per window, ms (the last ones close as the stream ends and tasks turn idle):", in_order)
PY
