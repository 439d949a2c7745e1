#!/usr/bin/env python3
"""CPU per thread of hosts catching up on the local broker: what bench/idle-cpu.sh measures for an
idle host, for a busy one.

EVENTS are written to topics of their own (one partition each); each HOST then consumes them from
the start (exactly-once, a consumer group of its own) while every thread's CPU time is read from
/proc/PID/task/*/stat twice a second. The busy part ends at the last half second in which the
host's CPU grew by more than a fifth of a core; the figures are each thread's CPU seconds then.
CPU time on this machine moves by 10-25% between identical runs: alternate the hosts and repeat.

    python3 bench/thread-cpu.py EVENTS [HOST...]      (HOST: target/release/adstream)
    e.g. python3 bench/thread-cpu.py 2M /tmp/adstream-old target/release/adstream

The local broker must be up (`bash scripts/kafka.sh up`), and target/release/adgen and the
plugins built (`just build build-plugins`).
"""

import glob
import json
import os
import subprocess
import sys
import tempfile
import time

os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
if len(sys.argv) < 2:
    sys.exit(__doc__)
events, hosts = sys.argv[1], sys.argv[2:] or ["target/release/adstream"]
brokers = subprocess.run(["bash", "scripts/kafka.sh", "bootstrap"], capture_output=True, text=True, check=True).stdout.strip()
run = f"threads{int(time.time())}"
work = tempfile.mkdtemp()
summary = os.path.join(work, "written.json")
subprocess.run(["target/release/adgen", "--brokers", brokers, "--topic-prefix", f"{run}.", "--partitions", "1",
                "--events", events, "--quiet", "--summary-json", summary], check=True, stdout=subprocess.DEVNULL)
messages = json.load(open(summary))["messages"]
# The plugins compiled into a cache of the run's own before anything is measured.
cache = os.path.join(work, "cache")
plugins = ["--plugin", "target/plugins/ctr.wasm", "--plugin", "target/plugins/engagement.wasm", "--plugin-cache", cache]
subprocess.run(["target/release/adgen", "--events", "1000", "--quiet", "--jsonl", os.path.join(work, "warm")],
               check=True, stdout=subprocess.DEVNULL)
for host in hosts:
    subprocess.run([host, "replay", "--input", os.path.join(work, "warm"), "--out", "/dev/null", *plugins],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
hz = os.sysconf("SC_CLK_TCK")


def ticks(pid):
    """CPU ticks per thread name (threads of one name summed)."""
    out = {}
    for stat in glob.glob(f"/proc/{pid}/task/*/stat"):
        try:
            text = open(stat).read()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        out[name] = out.get(name, 0) + int(fields[11]) + int(fields[12])
    return out


for i, host in enumerate(hosts):
    log_path = os.path.join(work, f"{i}.log")
    with open(log_path, "w") as log:
        host_process = subprocess.Popen(
            [host, "run", "--brokers", brokers, "--topic-prefix", f"{run}.", "--group-id", f"{run}-{i}",
             "--idle-timeout", "5s", "--http-addr", "127.0.0.1:0", *plugins],
            stdout=log, stderr=subprocess.STDOUT)
    snapshots = [(0.0, {})]
    started = time.time()
    while time.time() - started < 600:
        time.sleep(0.5)
        snapshots.append((time.time() - started, ticks(host_process.pid)))
        if f"progress consumed={messages} " in open(log_path).read():
            break
        if host_process.poll() is not None:
            sys.exit(f"thread-cpu: {host} ended; its log is {log_path}")
    host_process.terminate()
    host_process.wait()
    totals = [sum(s.values()) for _, s in snapshots]
    busy = [j for j in range(1, len(totals)) if totals[j] - totals[j - 1] > hz / 10]
    if not busy:
        sys.exit(f"thread-cpu: {host} never got busy; its log is {log_path}")
    seconds, per_thread = snapshots[busy[-1]]
    print(f"{host}: {messages} messages, busy for {seconds:.1f} s, {sum(per_thread.values()) / hz:.2f} CPU-s")
    for name, t in sorted(per_thread.items(), key=lambda kv: -kv[1]):
        if t:
            print(f"  {name:20} {t / hz:6.2f} s")
