"""PNG plots of evaluation results (matplotlib, object API: no pyplot state, no display needed)."""
from __future__ import annotations

import io
import math
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..costs.units import format_bytes
from ..jsonfile import write_bytes_atomic
from .stats import MeanCI


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120, bbox_inches="tight")
    write_bytes_atomic(path, png.getvalue())       # a kill mid-report leaves the former plot whole
    return path


def _err(c: MeanCI) -> float:
    return 0.0 if math.isnan(c.ci95) else 100 * c.ci95


def _yerr(cs: list[MeanCI]) -> list[list[float]]:
    """Asymmetric error bars clipped to the possible accuracy range [0, 100] %."""
    lo = [min(_err(c), 100 * c.mean) if c.n else 0.0 for c in cs]
    hi = [min(_err(c), 100 - 100 * c.mean) if c.n else 0.0 for c in cs]
    return [lo, hi]


def accuracy_vs_memory(acc: dict[str, dict[str, MeanCI]], costs: dict[str, dict], path: str | Path) -> Path | None:
    """The paper's Figure-1 view: average accuracy against predicted backward memory, one point per method."""
    pts = [(m, costs[m]["predicted_memory_bytes"], acc[m]["average"]) for m in acc
           if m in costs and costs[m].get("predicted_memory_bytes") and acc[m]["average"].n]
    if not pts:
        return None
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for i, (m, mem, c) in enumerate(sorted(pts, key=lambda p: p[1])):
        ax.errorbar(mem / 1024, 100 * c.mean, yerr=_yerr([c]), fmt="o", capsize=3, label=m,
                    color=f"C{list(acc).index(m) % 10}")    # same colour as in the per-domain bars
        ax.annotate(m, (mem / 1024, 100 * c.mean), textcoords="offset points", fontsize=8,
                    xytext=(5, 6 if i % 2 == 0 else -12))     # alternate so neighbours do not overlap
    ax.set_xscale("log")
    ax.set_xlabel("predicted backward memory (KiB, log scale)")
    ax.set_ylabel("average accuracy (%)")
    ax.set_title("Accuracy vs backward memory")
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def domain_bars(acc: dict[str, dict[str, MeanCI]], domains: list[str], path: str | Path,
                title: str = "Accuracy per domain (95 % CI)") -> Path | None:
    """Grouped bars: one group per domain (and the average), one bar per method, CI as error bars."""
    methods = list(acc)
    if not methods or not domains:
        return None
    cols = list(domains) + ["average"]
    fig = Figure(figsize=(max(6, 1.2 * len(cols) * max(1, len(methods)) / 3), 4))
    ax = fig.add_subplot()
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        xs = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(cols))]
        cs = [acc[m][d] for d in cols]
        ax.bar(xs, [100 * c.mean if c.n else 0 for c in cs], width, yerr=_yerr(cs), capsize=2, label=m,
               color=f"C{i % 10}")
    ax.set_xticks(range(len(cols)), cols, rotation=20, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.set_ylim(0, 102)
    ax.legend(fontsize=7, ncol=min(6, len(methods)), loc="upper center", bbox_to_anchor=(0.5, -0.22))
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, path)


def layer_selection_plot(sel: dict[int, dict], path: str | Path, method: str = "tinytrain") -> Path | None:
    """Bars: fraction of tasks in which each layer was updated; line: its mean Fisher potential."""
    if not sel:
        return None
    layers = sorted(sel)
    fig = Figure(figsize=(max(6, 0.25 * len(layers)), 4))
    ax = fig.add_subplot()
    ax.bar(layers, [100 * sel[l]["frequency"] for l in layers], color="tab:blue", alpha=0.7)
    ax.set_xlabel("conv layer index")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("selected in % of tasks", color="tab:blue")
    fp = [(l, sel[l]["mean_fisher_potential"]) for l in layers if sel[l]["mean_fisher_potential"] is not None]
    if fp:
        ax2 = ax.twinx()
        ax2.plot([l for l, _ in fp], [v for _, v in fp], "o-", color="tab:red", markersize=3)
        ax2.set_ylabel("mean Fisher potential", color="tab:red")
    ax.set_title(f"{method}: layer selection across tasks")
    return _save(fig, path)


def variant_bars(acc: dict[str, dict[str, MeanCI]], path: str | Path, title: str,
                 labels: dict[str, str] | None = None) -> Path | None:
    """One bar per variant (its average accuracy over domains, with CI): ablation comparisons."""
    names = [m for m in acc if acc[m]["average"].n]
    if not names:
        return None
    labels = labels or {}
    fig = Figure(figsize=(max(5, 1.1 * len(names)), 4))
    ax = fig.add_subplot()
    cs = [acc[m]["average"] for m in names]
    ax.bar(range(len(names)), [100 * c.mean for c in cs], yerr=_yerr(cs), capsize=3,
           color="tab:green", alpha=0.8)
    ax.set_xticks(range(len(names)), [labels.get(m, m) for m in names], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("average accuracy (%)")
    lo = min(100 * c.mean - _err(c) for c in cs)
    ax.set_ylim(max(0.0, lo - 10), 102)
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, path)


def budget_curve(points: dict[str, list[tuple[float, MeanCI]]], path: str | Path,
                 title: str = "Accuracy vs memory budget") -> Path | None:
    """Accuracy against memory budget (bytes), one line per method."""
    points = {m: sorted(p) for m, p in points.items() if p}
    if not points:
        return None
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for m, p in points.items():
        ax.errorbar([b / 1024 for b, _ in p], [100 * c.mean for _, c in p], yerr=_yerr([c for _, c in p]),
                    fmt="o-", capsize=3, label=m)
    ax.set_xscale("log")
    budgets = sorted({b for p in points.values() for b, _ in p})
    ax.set_xticks([b / 1024 for b in budgets], [format_bytes(b) for b in budgets], fontsize=8)
    ax.minorticks_off()
    ax.set_xlabel("memory budget (KiB, log scale)")
    ax.set_ylabel("average accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def plan_similarity_plot(variation: dict | None, path: str | Path, method: str = "tinytrain") -> Path | None:
    """Domain x domain matrix of mean pairwise plan Jaccard similarity (diagonal: within a domain)."""
    if not variation or not variation.get("pair_matrix"):
        return None
    doms = list(variation["pair_matrix"])
    m = [[variation["pair_matrix"][a][b] if variation["pair_matrix"][a][b] is not None else float("nan")
          for b in doms] for a in doms]
    fig = Figure(figsize=(2.2 + 1.1 * len(doms), 1.8 + 0.9 * len(doms)))
    ax = fig.add_subplot()
    im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
    for i in range(len(doms)):
        for j in range(len(doms)):
            ax.text(j, i, f"{m[i][j]:.2f}", ha="center", va="center", color="w" if m[i][j] < 0.6 else "k", fontsize=8)
    ax.set_xticks(range(len(doms)), doms, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(doms)), doms, fontsize=8)
    fig.colorbar(im, ax=ax, label="mean Jaccard of (layer, channel) sets")
    ax.set_title(f"{method}: plan similarity between tasks", fontsize=9)
    return _save(fig, path)
