#!/usr/bin/env python3
"""Per-thread wake-ups and CPU of a running process, from /proc.

Usage: benches/thread-wakeups.py PID [SECONDS]   (default 3)

Reads every thread's `voluntary_ctxt_switches` (from /proc/PID/task/TID/status) and CPU time
(utime + stime from .../stat) twice, SECONDS apart, and prints per thread: name, voluntary
context switches per second (each one a sleep, so about the wake-ups) and % of one core, then
the totals. E.g. during `lockout-bench latency`'s latency phase:
`benches/thread-wakeups.py $(pgrep -x lockoutd) 3` (README "Performance").
"""
import os
import sys
import time

TICKS = os.sysconf("SC_CLK_TCK")


def snapshot(pid):
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        base = f"/proc/{pid}/task/{tid}"
        try:
            with open(f"{base}/comm") as f:
                name = f.read().strip()
            with open(f"{base}/status") as f:
                vol = next(int(l.split()[1]) for l in f if l.startswith("voluntary_ctxt_switches"))
            with open(f"{base}/stat") as f:
                # Fields after the ")" that ends the name: utime and stime are the 12th and 13th.
                rest = f.read().rsplit(")", 1)[1].split()
            out[tid] = (name, vol, int(rest[11]) + int(rest[12]))
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue  # a thread that ended between the listing and the reads
    return out


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    pid, secs = sys.argv[1], float(sys.argv[2]) if len(sys.argv) == 3 else 3.0
    before = snapshot(pid)
    time.sleep(secs)
    after = snapshot(pid)
    total_wakeups = total_cpu = 0.0
    for tid in sorted(after, key=int):
        if tid not in before:
            continue
        name, vol, cpu = after[tid]
        wakeups = (vol - before[tid][1]) / secs
        pct = (cpu - before[tid][2]) / TICKS / secs * 100
        total_wakeups += wakeups
        total_cpu += pct
        print(f"{tid:>8} {name:<18} wake-ups/s {wakeups:8.0f}  cpu % {pct:5.1f}")
    print(f"{'total':>8} {'':<18} wake-ups/s {total_wakeups:8.0f}  cpu % {total_cpu:5.1f}")


if __name__ == "__main__":
    main()
