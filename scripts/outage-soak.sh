#!/usr/bin/env bash
# Broker outages, again and again (not in CI): a host consumes a live stream while a broker of
# this script's own (its own KAFKA_HOME and ports, so the test broker is left alone) is stopped
# with SIGTERM or killed with SIGKILL, for OUTAGE seconds, then started again. For each cycle it
# prints how long after the broker answered the host was ready (/readyz 200) again, and how many
# times it started again from its last checkpoint. It fails if the host exits, or is not ready
# within the documented bound (45 s) of the broker's return.
#
# Usage: bash scripts/outage-soak.sh [CYCLES] [OUTAGE_SECONDS]   (defaults: 6, 30; the kinds
#        alternate SIGTERM and SIGKILL). `just outage-soak` builds first.
set -euo pipefail
cd "$(dirname "$0")/.."

cycles=${1:-6}
outage=${2:-30}
bound=45
rate=20000
export KAFKA_HOME="${OUTAGE_KAFKA_HOME:-$PWD/target/outage-soak/kafka}"
export KAFKA_PORT=19092 KAFKA_CONTROLLER_PORT=19093 KAFKA_SASL_SSL_PORT=19094 KAFKA_SSL_PORT=19095
brokers="127.0.0.1:$KAFKA_PORT"
work="$PWD/target/outage-soak"
mkdir -p "$work"
kafka() { bash scripts/kafka.sh "$@" >>"$work/kafka.log" 2>&1; }
now() { date +%s.%N; }
ready() { [[ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' http://127.0.0.1:18299/readyz 2>/dev/null || true)" == 200 ]]; }

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  kafka down || true
}
trap cleanup EXIT

kafka up
printf '%-6s %-8s %-8s %18s %10s\n' cycle kill outage "ready after up (s)" restarts
failed=0
for n in $(seq 1 "$cycles"); do
  kind=$([ $((n % 2)) = 1 ] && echo SIGTERM || echo SIGKILL)
  prefix="outage-$(date +%s)-$n."
  log="$work/cycle$n.log"
  target/release/adgen --brokers "$brokers" --partitions 3 --topic-prefix "$prefix" --start now \
    --rate "$rate" --events $((rate * (outage + 90))) --quiet >/dev/null 2>&1 &
  gen=$!
  pids+=("$gen")
  sleep 3
  ADSTREAM_LOG=info target/release/adstream run --brokers "$brokers" --topic-prefix "$prefix" \
    --group-id "${prefix}g" --idle-timeout 3s --commit-interval 500ms --http-addr 127.0.0.1:18299 \
    --plugin target/plugins/ctr.wasm --plugin target/plugins/engagement.wasm 2>"$log" &
  host=$!
  pids+=("$host")
  until ready; do sleep 0.2; done
  sleep 10 # mid-stream, committing every 500 ms
  if [ "$kind" = SIGTERM ]; then
    kafka down
  else
    pid=$(cat "$KAFKA_HOME/broker.pid")
    kill -9 "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  fi
  sleep "$outage"
  kafka up
  back=$(now)
  took=""
  while kill -0 "$host" 2>/dev/null; do
    if ready; then took=$(awk -v a="$back" -v b="$(now)" 'BEGIN {printf "%.2f", b - a}'); break; fi
    if awk -v a="$back" -v b="$(now)" -v l="$bound" 'BEGIN {exit !(b - a > l)}'; then break; fi
    sleep 0.2
  done
  restarts=$(grep -c "starting again from the last checkpoint" "$log" || true)
  kill -0 "$host" 2>/dev/null || { took="host exited"; failed=1; }
  [ -n "$took" ] || { took="over ${bound}"; failed=1; }
  printf '%-6s %-8s %-8s %18s %10s\n' "$n" "$kind" "${outage}s" "$took" "$restarts"
  kill "$host" "$gen" 2>/dev/null || true
  wait "$host" "$gen" 2>/dev/null || true
done
echo "host logs: $work/cycle*.log"
exit "$failed"
