#!/usr/bin/env bash
# Replay on several threads (issue 14, item 3): the same generated input replayed with ctr and
# engagement (WASM) over TASKS tasks on each thread count given (`adstream replay --tasks TASKS
# --threads N`). For each count: wall seconds, CPU seconds (user + system, every thread), events
# per wall-second and per CPU-second, peak RSS, the speed-up in events per wall-second over the
# first count, and whether the result records equal the first run's (they must: the records do
# not depend on how tasks are spread over threads). Each figure is the run with the least wall
# time of REPEAT.
#
# On this 2-core machine one thread more is all there is room for; on a bigger one:
#   bash bench/replay-threads.sh 1 2 4 8
#
# Usage: bash bench/replay-threads.sh [THREADS...]      (default: 1 2)
#   EVENTS   input size (default 5M, as `just bench`)
#   TASKS    tasks (default: 4, or the largest thread count if larger)
#   REPEAT   runs per thread count (default 3)
# Needs the binaries and plugins built: `just build build-plugins` (`just bench-threads` does it).
set -euo pipefail
cd "$(dirname "$0")/.."

counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(1 2)
events=${EVENTS:-5M}
repeat=${REPEAT:-3}
tasks=${TASKS:-4}
for n in "${counts[@]}"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "thread counts are positive integers: $n" >&2; exit 2; }
  (( n > tasks )) && [ -z "${TASKS:-}" ] && tasks=$n
done
for f in target/release/adstream target/release/adgen target/plugins/ctr.wasm target/plugins/engagement.wasm; do
  [ -f "$f" ] || { echo "$f is missing: run \`just build build-plugins\`" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
target/release/adgen --jsonl "$work/events" --events "$events" --seed 7 --quiet \
  --summary-json "$work/summary.json" 2>/dev/null
total=$(sed -n 's/.*"messages": *\([0-9]*\).*/\1/p' "$work/summary.json" | head -n1)
echo "input: $total messages (adgen --events $events --seed 7), $tasks tasks, ctr + engagement (WASM), best of $repeat"
printf '%-8s %8s %8s %14s %14s %8s %9s %s\n' threads "wall s" "CPU s" "events/wall-s" "events/CPU-s" "RSS MB" "speed-up" "same records"

first_rate=""
first_sum=""
for n in "${counts[@]}"; do
  best=""
  for r in $(seq 1 "$repeat"); do
    # GNU time: elapsed, user, system seconds and peak RSS (KiB).
    /usr/bin/time -f '%e %U %S %M' -o "$work/time" target/release/adstream replay \
      --input "$work/events" --tasks "$tasks" --threads "$n" --plugin-cache "$work/cache" \
      --plugin target/plugins/ctr.wasm --plugin target/plugins/engagement.wasm \
      --out "$work/out-$n.jsonl" 2>"$work/log-$n" || { tail -n 20 "$work/log-$n" >&2; exit 1; }
    read -r wall user sys rss < "$work/time"
    if [ -z "$best" ] || awk -v a="$wall" -v b="${best%% *}" 'BEGIN {exit !(a < b)}'; then
      best="$wall $user $sys $rss"
    fi
  done
  read -r wall user sys rss <<< "$best"
  # The result records, whatever their order (the windows' completeness records say when they
  # were published, which differs between runs by design).
  sum=$(grep -v '"topic":"adstream-window-completeness"' "$work/out-$n.jsonl" | sort | sha256sum | cut -c1-16)
  rate=$(awk -v n="$total" -v w="$wall" 'BEGIN {printf "%.0f", n / w}')
  [ -n "$first_rate" ] || { first_rate=$rate; first_sum=$sum; }
  same=$([ "$sum" = "$first_sum" ] && echo yes || echo "NO ($sum vs $first_sum)")
  awk -v t="$n" -v w="$wall" -v u="$user" -v s="$sys" -v m="$rss" -v n="$total" -v r="$rate" -v f="$first_rate" -v same="$same" \
    'BEGIN {printf "%-8s %8.2f %8.2f %14.0f %14.0f %8.0f %8.2fx %s\n", t, w, u + s, r, n / (u + s), m / 1024, r / f, same}'
done
