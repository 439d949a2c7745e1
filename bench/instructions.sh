#!/usr/bin/env bash
# Instructions per event of a replay (ctr + engagement, WebAssembly), counted by valgrind's
# cachegrind. CPU time on a shared 2-core machine moves by ±25% between identical runs; the
# instruction count of the same binary on the same input does not move at all, so two versions
# can be told apart by changes of a few percent. It is not CPU time: a cache miss costs one
# instruction here and hundreds of cycles on the machine, so read it beside `just bench`.
#
#   bash bench/instructions.sh [EVENTS] [HOST...]     (defaults: 1M, target/release/adstream)
#
# HOST paths are taken from the repository's root (or give them absolute).
# Several hosts are measured one after the other on the same input (an A/B: copy the old binary
# aside first). PLUGINS overrides the plugins (default: target/plugins/ctr.wasm and
# engagement.wasm). Each host's compiled plugins are cached first on a tiny input: under valgrind
# the CPU looks different, so the cache of normal runs does not serve it. About a minute per host
# and million events.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/packages.sh
need_packages "command -v valgrind" valgrind

events="${1:-1M}"
shift || true
hosts=("$@")
[ ${#hosts[@]} -gt 0 ] || hosts=(target/release/adstream)
read -r -a plugins <<< "${PLUGINS:-target/plugins/ctr.wasm target/plugins/engagement.wasm}"
plugin_flags=()
for p in "${plugins[@]}"; do plugin_flags+=(--plugin "$p"); done

for f in target/release/adgen "${hosts[@]}" "${plugins[@]}"; do
  [ -e "$f" ] || { echo "instructions: $f not found (just build build-plugins)" >&2; exit 1; }
done

base=target/bench/instructions
# Generated into a temporary directory and moved into place: an interrupted run leaves no half input.
generate() {
  [ -f "$2/ad-clicks.jsonl" ] && return
  rm -rf "$2.part"
  target/release/adgen --events "$1" --quiet --jsonl "$2.part"
  mv "$2.part" "$2"
}
data="$base/$events"
warm="$base/warm-up"
generate "$events" "$data"
generate 1000 "$warm"
consumed=$(($(wc -l < "$data/ad-impressions.jsonl") + $(wc -l < "$data/ad-clicks.jsonl")))

out="$base/runs"
mkdir -p "$out"
# A compile cache of its own: under valgrind the CPU looks different, and its compiled plugins
# would only crowd the user's.
plugin_flags+=(--plugin-cache "$base/cache")
failed() { echo "instructions: $1 failed; the end of its log:" >&2; tail -n 20 "$2" >&2; exit 1; }
printf '%-40s %16s %12s\n' host instructions per-event
for i in "${!hosts[@]}"; do
  host="${hosts[$i]}"
  valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
    "$host" replay --input "$warm" --out /dev/null "${plugin_flags[@]}" >/dev/null 2>"$out/$i.log" \
    || failed "$host (warm-up)" "$out/$i.log"
  valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file="$out/$i.cg" \
    "$host" replay --input "$data" --out "$out/$i.jsonl" "${plugin_flags[@]}" >/dev/null 2>"$out/$i.log" \
    || failed "$host" "$out/$i.log"
  total=$(grep -a 'I *refs' "$out/$i.log" | tr -d ', ' | sed 's/.*refs://') || failed "$host (no count)" "$out/$i.log"
  printf '%-40s %16s %12s\n' "$host" "$total" "$((total / consumed))"
done
echo
echo "where the last host's instructions go (its own functions; the plugins' compiled code is ???):"
cg_annotate --show=Ir "$out/$((${#hosts[@]} - 1)).cg" 2>/dev/null | sed -n '/file:function/,$p' | sed -n 3,22p
