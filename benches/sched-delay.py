#!/usr/bin/env python3
"""Scheduling delay per thread name, from a `perf sched record` file.

Usage: benches/sched-delay.py FILE [MIN_RUNS]   (default 100)

Reads `perf sched timehist -i FILE` (every time a thread got a CPU: how long it had waited
runnable for one — the "sch delay" — and how long it then ran) and prints, per thread name
with at least MIN_RUNS runs (threads of one name together, e.g. all of nats-server's): runs,
sch delay p50 / p99 / max in ms, and % of one core. Then how busy the CPUs were. E.g.
`lockout-bench latency --sched FILE` records the machine while the `status`, ping and
echo round trips are measured (README "Performance").
"""
import re
import subprocess
import sys
from collections import defaultdict

# time  [cpu]  name[tid/pid] or name[tid]  wait  sch-delay  run
LINE = re.compile(r"^\s*([\d.]+)\s+\[(\d+)\]\s+(.+?)\[(\d+)(?:/\d+)?\]\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$")


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    min_runs = int(sys.argv[2]) if len(sys.argv) == 3 else 100
    out = subprocess.run(
        ["perf", "sched", "timehist", "-i", sys.argv[1]], capture_output=True, text=True, check=True
    ).stdout
    delays, run_ms, cpus = defaultdict(list), defaultdict(float), set()
    first = last = None
    for line in out.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        t, cpu, name = float(m[1]), m[2], m[3].strip()
        first, last = first if first is not None else t, t
        cpus.add(cpu)
        if name == "<idle>":
            continue
        delays[name].append(float(m[6]))
        run_ms[name] += float(m[7])
    if first is None:
        sys.exit("no scheduler events in the file")
    secs = max(last - first, 1e-9)
    print(f"{'thread':<18} {'runs':>7} {'delay p50':>9} {'p99':>7} {'max':>7} (ms)  cpu %")
    for name in sorted(delays, key=lambda n: -len(delays[n])):
        d = delays[name]
        if len(d) < min_runs:
            continue
        p50, p99 = percentile(d, 0.50), percentile(d, 0.99)
        pct = run_ms[name] / 1e3 / secs * 100
        print(f"{name:<18} {len(d):>7} {p50:>9.3f} {p99:>7.3f} {max(d):>7.3f}       {pct:5.1f}")
    busy = sum(run_ms.values()) / 1e3 / secs / len(cpus) * 100
    print(f"{secs:.1f} s on {len(cpus)} CPUs, {busy:.0f}% busy")


if __name__ == "__main__":
    main()
