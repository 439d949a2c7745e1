#!/usr/bin/env bash
# The whole pipeline on this machine, nothing to install by hand but rustup, a JDK and Maven:
# a real Apache Kafka broker on 127.0.0.1 (started here, stopped at the end if started here),
# the generator writing 10 minutes of event time (with two anomalies injected from minute 6),
# the host running the ctr and engagement plugins and the anomaly detector (Python), and the
# results and alerts shown live as tables.
set -euo pipefail
cd "$(dirname "$0")/.."

events=${DEMO_EVENTS:-600000}
rate=${DEMO_RATE:-40000}

source scripts/packages.sh
rustup toolchain install
need_build_packages
bash scripts/build-plugins.sh
cargo build --release --locked -p adstream -p adgen

started_kafka=0
if ! bash scripts/kafka.sh status >/dev/null 2>&1; then
  bash scripts/kafka.sh up
  started_kafka=1
fi
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$started_kafka" = 1 ]; then bash scripts/kafka.sh down || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# Fresh topic names per run, so that a second demo does not show the first one's results.
prefix="demo-$(date +%s)."
brokers=127.0.0.1:9092
echo "demo: generating ${events} events (10 minutes of event time) at ${rate}/s into ${prefix}ad-impressions and ${prefix}ad-clicks"
target/release/adgen --brokers "$brokers" --partitions 3 --events "$events" --rate "$rate" \
  --impressions-topic "${prefix}ad-impressions" --clicks-topic "${prefix}ad-clicks" \
  --late-fraction 0.001 --malformed-fraction 0.001 --quiet \
  --anomaly traffic-halving:tablet@6m --anomaly click-burst:c7@7m+2m &
pids+=($!)

# The host needs its input topics; the generator creates them as it starts.
for _ in $(seq 1 50); do
  if bash scripts/kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$brokers" --list 2>/dev/null \
      | grep -qx "${prefix}ad-clicks"; then
    break
  fi
  sleep 0.2
done

echo "demo: starting the host with target/plugins/ctr.wasm, engagement.wasm and anomaly.wasm (log: host.log below)"
# The detector learns for 4 windows here (10 by default), so that the demo's 10 minutes show alerts.
target/release/adstream run --brokers "$brokers" --topic-prefix "$prefix" --group-id "${prefix}host" \
  --idle-timeout 3s --plugin target/plugins/ctr.wasm --plugin target/plugins/engagement.wasm \
  --plugin target/plugins/anomaly.wasm --plugin-setting anomaly:warm-up=4 \
  --stats-file "$work/stats.json" 2>"$work/host.log" &
host=$!
pids+=("$host")
echo "demo: the host's web console is at http://127.0.0.1:8081/ while the demo runs (metrics at /metrics)"

# Ten 1-minute windows, two result topics, and the alerts of minutes 6 to 9 (the tablet traffic
# halves from minute 6 on; campaign c7 gets a click-fraud burst in minutes 7 and 8): 24
# tables. Give up after two minutes.
sleep 1
timeout 120 target/release/adstream tail --brokers "$brokers" --topic-prefix "$prefix" --from-beginning \
  --topic campaign-ctr-results --topic device-engagement-results --topic ad-anomalies \
  --top 5 --max-windows 24 || echo "demo: tail stopped before it saw every window (see the host log below)"

kill -TERM "$host"
wait "$host" || true
echo
echo "demo: host log (last lines):"
tail -n 5 "$work/host.log"
echo
echo "demo: final counters of the host (consumed = impressions + clicks + late + dead-lettered):"
cat "$work/stats.json" 2>/dev/null || echo "(no counters: the host did not stop cleanly)"
echo
