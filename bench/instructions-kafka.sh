#!/usr/bin/env bash
# Instructions per message of `adstream run` on the local broker, counted by valgrind's cachegrind:
# the broker path's counterpart of bench/instructions.sh, for changes of a few hundred
# instructions per message that CPU time on this machine cannot show. EVENTS are written to topics
# of their own (one partition each); each host consumes them from the start (exactly-once, a
# consumer group of its own) until its progress line says all are consumed, then gets SIGTERM.
# The count includes the start-up and up to 10 s of idling (the progress line comes every 10 s):
# compare hosts by the functions cg_annotate lists as much as by the total.
#
#   bash bench/instructions-kafka.sh [EVENTS] [HOST...]   (defaults: 200k, target/release/adstream)
#
# Needs the broker (`bash scripts/kafka.sh up`), target/release/adgen and the plugins. An A/B:
# copy the old binary aside first, e.g. `bash bench/instructions-kafka.sh 200k /tmp/adstream-old
# target/release/adstream`. Under a minute per host for 200k events.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/packages.sh
need_packages "command -v valgrind" valgrind

events="${1:-200k}"
shift || true
hosts=("$@")
[ ${#hosts[@]} -gt 0 ] || hosts=(target/release/adstream)
for f in target/release/adgen "${hosts[@]}" target/plugins/ctr.wasm target/plugins/engagement.wasm; do
  [ -e "$f" ] || { echo "instructions-kafka: $f not found (just build build-plugins)" >&2; exit 1; }
done
brokers=$(bash scripts/kafka.sh bootstrap)
run="cg$(date +%s)"
base=target/bench/instructions-kafka
out="$base/$run"
mkdir -p "$out"
plugins=(--plugin target/plugins/ctr.wasm --plugin target/plugins/engagement.wasm --plugin-cache "$base/cache")

target/release/adgen --brokers "$brokers" --topic-prefix "$run." --partitions 1 --events "$events" --quiet \
  --summary-json "$out/written.json" >/dev/null
messages=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["messages"])' "$out/written.json")
target/release/adgen --events 1000 --quiet --jsonl "$out/warm" >/dev/null

printf '%-40s %16s %12s\n' host instructions per-message
for i in "${!hosts[@]}"; do
  host="${hosts[$i]}"
  # The plugins compiled under valgrind first (its CPU looks different: the normal cache does not serve it).
  valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
    "$host" replay --input "$out/warm" --out /dev/null "${plugins[@]}" >/dev/null 2>"$out/$i.log"
  valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file="$out/$i.cg" \
    "$host" run --brokers "$brokers" --topic-prefix "$run." --group-id "$run-$i" --idle-timeout 5s \
    --http-addr 127.0.0.1:0 "${plugins[@]}" >"$out/$i.log" 2>&1 &
  pid=$!
  until grep -aq "progress consumed=$messages " "$out/$i.log"; do
    kill -0 "$pid" 2>/dev/null || { tail -n 20 "$out/$i.log" >&2; echo "instructions-kafka: $host ended" >&2; exit 1; }
    sleep 1
  done
  kill -TERM "$pid"
  wait "$pid" || { tail -n 20 "$out/$i.log" >&2; echo "instructions-kafka: $host failed" >&2; exit 1; }
  total=$(grep -a 'I *refs' "$out/$i.log" | tr -d ', ' | sed 's/.*refs://')
  printf '%-40s %16s %12s\n' "$host" "$total" "$((total / messages))"
done
echo
echo "where the last host's instructions go (cg_annotate of $out/$((${#hosts[@]} - 1)).cg; the plugins' code is ???):"
cg_annotate --show=Ir "$out/$((${#hosts[@]} - 1)).cg" 2>/dev/null | sed -n '/file:function/,$p' | sed -n 3,22p
