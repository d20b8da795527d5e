"""Draws docs/benchmarks.png from vouch-bench's JSON: requests/s and p99 against
concurrency, one line per scenario.

    python3 crates/bench/chart.py bench.json docs/benchmarks.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src, dst):
    report = json.load(open(src))
    points = report["sweep"]
    scenarios = sorted({p["scenario"] for p in points}, key=lambda s: [p["scenario"] for p in points].index(s))
    fig, (rate, p99) = plt.subplots(1, 2, figsize=(12, 4.8))
    for s in scenarios:
        rows = sorted((p for p in points if p["scenario"] == s), key=lambda p: p["concurrency"])
        xs = [p["concurrency"] for p in rows]
        rate.plot(xs, [p["requests_per_second"] for p in rows], marker="o", label=s)
        p99.plot(xs, [p["p99_ms"] for p in rows], marker="o", label=s)
    for ax, title, unit in ((rate, "Throughput", "requests/s"), (p99, "Latency (p99)", "ms")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks([1, 4, 16, 64])
        ax.set_xticklabels(["1", "4", "16", "64"])
        ax.set_xlabel("concurrency")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    rate.legend(fontsize=8)
    fig.suptitle(f"vouch-bench on {report['cores']} cores, {report['database']}, {report['duration_seconds']} s per point")
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
