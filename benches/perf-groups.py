#!/usr/bin/env python3
"""Groups a `perf record` profile of lockoutd by where the time goes.

Usage: benches/perf-groups.py FILE   (FILE from `lockout-bench --perf FILE`)

Runs `perf report` on FILE (self time per thread, shared object and symbol) and sums the
samples into a few groups: the allocator, the kernel, async-nats, tokio, sled's commit and its
own threads, decoding and checks, lockoutd's own fold, cache and store code, libc's memory
functions, and the rest. Prints one line per group, largest first.
"""
import collections
import re
import subprocess
import sys

GROUPS = [
    # (name, test on (thread, shared object, kind, symbol)); the first that matches wins.
    ("kernel (socket reads, thread switches)", lambda t, d, k, s: k == "k"),
    ("sled's threads", lambda t, d, k, s: t.startswith("sled") or t.startswith("log")),
    ("sled's commit", lambda t, d, k, s: "sled::" in s),
    ("async-nats", lambda t, d, k, s: "async_nats" in s),
    ("tokio", lambda t, d, k, s: "tokio" in s),
    ("allocator", lambda t, d, k, s: re.search(r"\bmi_|_mi_|mimalloc", s) is not None),
    ("decode, checks, subject parsing", lambda t, d, k, s: re.search(r"lockout_proto|serde|postcard|base64", s) is not None),
    ("lockoutd's fold, cache and store", lambda t, d, k, s: re.search(r"lockoutd|lockout_core|lockout_store|hashbrown|foldhash", s) is not None),
    ("libc (memcmp, memcpy, ...)", lambda t, d, k, s: d.startswith("libc")),
]


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    report = subprocess.run(
        ["perf", "report", "-i", sys.argv[1], "--no-children", "--sort", "comm,dso,symbol", "--stdio", "-g", "none"],
        check=True, capture_output=True, text=True,
    ).stdout
    total = collections.Counter()
    line = re.compile(r"\s+([\d.]+)%\s+(\S+)\s+(\S+)\s+\[(.)\]\s+(.*)")
    for text in report.splitlines():
        m = line.match(text)
        if not m:
            continue
        pct, thread, dso, kind, sym = float(m[1]), m[2], m[3], m[4], m[5].strip()
        group = next((name for name, test in GROUPS if test(thread, dso, kind, sym)), "other")
        total[group] += pct
    for group, pct in total.most_common():
        print(f"{pct:5.1f}%  {group}")


if __name__ == "__main__":
    main()
