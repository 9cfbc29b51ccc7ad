"""Accuracy against backward memory and against backward MACs, for columns of one or more `tinytrain eval` run
folders measured on the same episodes (e.g. the main table and a `--budget-sweep` run):

    python scripts/pareto.py OUT.png RUN_DIR[:PREFIX] [RUN_DIR[:PREFIX] ...]

Each column is one point: its average accuracy (mean of the per-domain means, 95 % CI) at its mean predicted
backward memory and mean backward MACs. Columns of later folders get PREFIX in front of their names, so that
equal names of two runs stay apart. Not part of the package: a helper for the README's plot.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tinytrain.bench.stats import accuracy_table, cost_table  # noqa: E402


def load(arg: str) -> list[dict]:
    folder, _, prefix = arg.partition(":")
    records = [json.loads(line) for line in (Path(folder) / "results.jsonl").read_text().splitlines() if line]
    # one point per method and budget: option variants ("tinytrain[...]") are left out to keep the plot legible
    records = [r for r in records if r.get("accuracy") is not None and r["method"] != "none" and "[" not in r["method"]]
    for r in records:
        r["method"] = prefix + r["method"]
    return records


def main(out: str, *runs: str) -> None:
    records = [r for arg in runs for r in load(arg)]
    acc, costs = accuracy_table(records), cost_table(records)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, field, label in ((axes[0], "predicted_memory_bytes", "predicted backward memory (KiB, log scale)"),
                             (axes[1], "backward_macs", "backward MACs (millions, log scale)")):
        scale = 1024 if field == "predicted_memory_bytes" else 1e6
        for m, row in acc.items():
            x = costs[m][field]
            if not x:
                continue
            c = row["average"]
            tiny = "tinytrain" in m
            ax.errorbar(x / scale, 100 * c.mean, yerr=100 * c.ci95, fmt="o" if tiny else "s", capsize=3,
                        color="tab:blue" if tiny else "tab:gray")
            ax.annotate(m, (x / scale, 100 * c.mean), textcoords="offset points", xytext=(5, 4), fontsize=7)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(label)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("average accuracy (%)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}: {len(acc)} columns")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], *sys.argv[2:])
