#!/usr/bin/env bash
# CPU an idle host spends, per thread: a host that has consumed everything on the local broker
# (exactly-once, the default) is left alone for SECONDS, and each of its threads' CPU time over
# that span is read from /proc (utime + stime). What a host costs while its input is quiet.
#
# Usage: bash bench/idle-cpu.sh [SECONDS] [HOST_BINARY]   (30, target/release/adstream)
#        The local broker must be up (`bash scripts/kafka.sh up`), and the binaries and plugins
#        built (`just build build-plugins`). Writes 20k events to topics of its own first.
#        Before and after a change: `bash bench/idle-cpu.sh 30 /tmp/adstream-old`, then without.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
host=${2:-target/release/adstream}
brokers=$(bash scripts/kafka.sh bootstrap)
run="idle$(date +%s)"
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

events=20000
target/release/adgen --brokers "$brokers" --topic-prefix "$run." --partitions 2 --events "$events" >/dev/null
"$host" run --brokers "$brokers" --topic-prefix "$run." --group-id "$run" --idle-timeout 5s \
    --plugin target/plugins/ctr.wasm --plugin target/plugins/engagement.wasm \
    --http-addr 127.0.0.1:0 --plugin-cache "$work/cache" >"$work/log" 2>&1 &
pid=$!
# Caught up: every event consumed (the progress line, every 10 s, says so), then past the idle
# timeout, so that the last windows are closed and committed: nothing is left to do.
for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || { cat "$work/log"; echo "idle-cpu: the host ended" >&2; exit 1; }
    grep -q "progress consumed=$events " "$work/log" && break
    sleep 1
done
grep -q "progress consumed=$events " "$work/log" || { tail "$work/log"; echo "idle-cpu: the host did not catch up" >&2; exit 1; }
sleep 15

ticks() { # thread name and CPU ticks of every thread of $pid
    for stat in /proc/"$pid"/task/*/stat; do
        # The name is in parentheses and may hold spaces: split around them.
        sed -E 's/^[0-9]+ \((.*)\) (.*)$/\1\t\2/' "$stat" | awk -F'\t' '{ split($2, f, " "); print $1 "\t" f[12] + f[13] }'
    done | sort
}
before=$(ticks)
sleep "$seconds"
after=$(ticks)
hz=$(getconf CLK_TCK)
echo "idle host CPU over ${seconds} s, per thread name (ticks of 1/${hz} s; % of one core):"
join -t $'\t' -a 2 <(echo "$before" | awk -F'\t' '{ t[$1] += $2 } END { for (n in t) print n "\t" t[n] }' | sort) \
    <(echo "$after" | awk -F'\t' '{ t[$1] += $2 } END { for (n in t) print n "\t" t[n] }' | sort) |
    awk -F'\t' -v s="$seconds" -v hz="$hz" '
        { d = (NF == 3 ? $3 - $2 : $2); total += d; if (d > 0) printf "  %-28s %5d  %5.2f%%\n", $1, d, 100 * d / hz / s }
        END { printf "  %-28s %5d  %5.2f%%\n", "total", total, 100 * total / hz / s }'
