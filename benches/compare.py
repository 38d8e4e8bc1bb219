#!/usr/bin/env python3
"""Medians of several `make bench` results (target/bench/results.json files) of two builds,
as a Markdown table: `benches/compare.py --before A1.json A2.json A3.json --after B1.json ...`.
Run interleaved (before, after, before, after, ...) on a quiet machine; see benches/LOG.md."""
import argparse
import json
import statistics

KEYS = [
    "raw_consume_eps", "projector_eps", "projector_vs_raw_consume", "replay_eps",
    "replay_vs_raw_consume", "e2e_lock_notice_p50_ms", "e2e_lock_notice_p99_ms",
    "status_p50_ms", "status_p99_ms", "status_qps", "disk_bytes_per_user", "rss_bytes",
    "fold_postcard_eps", "fold_json_eps", "projector_cpu_us_per_event",
    "otlp_export_throughput_loss", "valid_with_invalid_vs_projector", "explain_10k_events_ms",
    "nats_echo_bare_p99_ms", "service_ping_p99_ms",
]


def fmt(x):
    return f"{x:,.2f}" if abs(x) < 100 else f"{x:,.0f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--before", nargs="+", required=True)
    ap.add_argument("--after", nargs="+", required=True)
    a = ap.parse_args()
    runs = {side: [json.load(open(f)) for f in files] for side, files in (("before", a.before), ("after", a.after))}
    print("| key | before: runs | median | after: runs | median |")
    print("|---|---|---|---|---|")
    for k in KEYS:
        b = [r[k] for r in runs["before"] if k in r]
        n = [r[k] for r in runs["after"] if k in r]
        if not b or not n:
            continue
        print(f"| `{k}` | {' / '.join(map(fmt, b))} | {fmt(statistics.median(b))} "
              f"| {' / '.join(map(fmt, n))} | {fmt(statistics.median(n))} |")


if __name__ == "__main__":
    main()
