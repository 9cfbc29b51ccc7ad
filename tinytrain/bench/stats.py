"""Statistics over result records: mean accuracy with a 95 % confidence interval, cost summaries,
and TinyTrain's layer-selection frequencies.

The confidence interval is the usual few-shot one (Meta-Dataset, P>M>F, TinyTrain Figs. 14-16):
mean +- t * s / sqrt(n), with s the sample standard deviation over tasks. We use Student's t quantile
(two-sided 95 %) rather than a fixed 1.96 so that small runs (the demo's few tasks) are not
over-confident; for n = 200 the two differ by under 1 %.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from ..errors import BadInput

# two-sided 95 % Student t quantiles t_{0.975, df} for df = 1..30; beyond 30 an expansion is used.
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
         2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
         2.052, 2.048, 2.045, 2.042]


def t_quantile_975(df: int) -> float:
    """Two-sided 95 % critical value of Student's t with `df` degrees of freedom."""
    if df < 1:
        raise BadInput(f"degrees of freedom must be >= 1 (got {df})")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    # Cornish-Fisher expansion of the t quantile around the normal one; accurate to ~1e-4 for df > 30.
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


@dataclass(frozen=True)
class MeanCI:
    mean: float
    ci95: float          # half-width; nan when fewer than two values
    n: int

    def fmt(self, scale: float = 100.0, digits: int = 1) -> str:
        """'66.9 ± 1.2' (percent by default); '-' for no data."""
        if self.n == 0:
            return "-"
        if math.isnan(self.ci95):
            return f"{self.mean * scale:.{digits}f}"
        return f"{self.mean * scale:.{digits}f} ± {self.ci95 * scale:.{digits}f}"


def mean_ci(values: list[float]) -> MeanCI:
    """Mean and 95 % confidence half-width of `values` (tasks are independent samples)."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(vals)
    if n == 0:
        return MeanCI(float("nan"), float("nan"), 0)
    mean = sum(vals) / n
    if n < 2:
        return MeanCI(mean, float("nan"), 1)
    var = sum((v - mean) ** 2 for v in vals) / (n - 1)
    return MeanCI(mean, t_quantile_975(n - 1) * math.sqrt(var / n), n)


def mean_over_domains(cells: list[MeanCI]) -> MeanCI:
    """The mean of the per-domain means (each domain counts once, as in the paper); its interval combines
    the per-domain standard errors in quadrature (independent domains). Domains without data are skipped."""
    have = [c for c in cells if c.n > 0]
    if not have:
        return MeanCI(float("nan"), float("nan"), 0)
    mean = sum(c.mean for c in have) / len(have)
    # half-widths are t*SE; combine them in quadrature, scaled by 1/len (mean of means)
    ci = math.sqrt(sum(c.ci95 ** 2 for c in have)) / len(have) if all(c.n >= 2 for c in have) else float("nan")
    return MeanCI(mean, ci, sum(c.n for c in have))


def ordered_unique(values) -> list:
    seen, out = set(), []
    for v in values:
        if v not in seen:
            seen.add(v)
            out.append(v)
    return out


def accuracy_table(records: list[dict], methods: list[str] | None = None,
                   domains: list[str] | None = None) -> dict:
    """Table-1 view: {method: {domain: MeanCI, ..., "average": MeanCI}}.

    The average is the mean of the per-domain means (each domain counts once, as in the paper); its
    interval combines the per-domain standard errors (independent domains).
    """
    methods = methods or ordered_unique(r["method"] for r in records)
    domains = domains or ordered_unique(r["domain"] for r in records)
    acc: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in records:
        acc[(r["method"], r["domain"])].append(r["accuracy"])
    table: dict[str, dict[str, MeanCI]] = {}
    for m in methods:
        row = {d: mean_ci(acc.get((m, d), [])) for d in domains}
        row["average"] = mean_over_domains([row[d] for d in domains])
        table[m] = row
    return table


def _mean(values) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def cost_table(records: list[dict], methods: list[str] | None = None) -> dict:
    """Table-2 view per method: mean predicted backward memory, measured saved bytes, backward MACs,
    wall seconds per task (selection + training + evaluation), and the ratios to the cheapest TinyTrain
    row (or the first row) as the paper prints them."""
    methods = methods or ordered_unique(r["method"] for r in records)
    by = defaultdict(list)
    for r in records:
        by[r["method"]].append(r)
    out = {}
    for m in methods:
        rs = by.get(m, [])
        out[m] = {
            "tasks": len(rs),
            "predicted_memory_bytes": _mean(r.get("predicted_memory_bytes") for r in rs),
            "measured_saved_bytes": _mean(r.get("measured_saved_bytes") for r in rs),
            "backward_macs": _mean(r.get("backward_macs") for r in rs),
            "selection_seconds": _mean(r.get("selection_seconds") for r in rs),
            "seconds": _mean(r.get("seconds") for r in rs),
        }
    ref = next((m for m in methods if m == "tinytrain"), methods[0] if methods else None)
    for m in methods:
        for field, ratio in (("predicted_memory_bytes", "memory_ratio"), ("backward_macs", "compute_ratio")):
            a, b = out[m][field], out[ref][field] if ref else None
            out[m][ratio] = (a / b) if a is not None and b else None
    return out


def layer_selection(records: list[dict], method: str = "tinytrain") -> dict[int, dict]:
    """How often each conv layer was updated across `method`'s tasks, the mean fraction of its
    channels updated, and its mean Fisher potential (when the method reports one)."""
    rs = [r for r in records if r.get("method") == method]
    counts: dict[int, int] = defaultdict(int)
    frac: dict[int, list[float]] = defaultdict(list)
    fisher: dict[int, list[float]] = defaultdict(list)
    for r in rs:
        for row in r.get("plan") or []:
            # compact [layer, channels_updated, channels_total] (results.jsonl) or AdaptReport's dict rows
            layer, updated, total = (row if isinstance(row, (list, tuple)) else
                                     (row["layer"], row.get("channels_updated", 1), row.get("channels_total", 0)))
            if updated:
                counts[int(layer)] += 1
                if total:
                    frac[int(layer)].append(updated / total)
        for layer, value in (r.get("fisher_potential") or {}).items():
            fisher[int(layer)].append(float(value))
    layers = sorted(set(counts) | set(fisher))
    return {l: {"selected": counts.get(l, 0), "frequency": counts.get(l, 0) / len(rs) if rs else 0.0,
                "mean_channel_fraction": _mean(frac.get(l, [])),
                "mean_fisher_potential": _mean(fisher.get(l, []))} for l in layers}


def plan_units(record: dict) -> frozenset:
    """What a task's plan trains, as a set of (layer, channel) weight units plus ('bias', layer) units."""
    units = {(int(l), int(c)) for l, chans in (record.get("plan_channels") or {}).items() for c in chans}
    units |= {("bias", int(l)) for l in record.get("plan_biases") or []}
    return frozenset(units)


def _jaccard(a: frozenset, b: frozenset) -> float:
    return 1.0 if not a and not b else len(a & b) / len(a | b)


def plan_variation(records: list[dict], method: str = "tinytrain", max_pairs: int = 20000) -> dict | None:
    """How much `method`'s plan changes between tasks: mean pairwise Jaccard similarity of the (layer,
    channel) sets within each domain and between tasks of different domains (1 = the same plan every
    time), the same at layer level, and the share of the budgets the plans use. None without plans."""
    import itertools
    import random as _random
    rs = [r for r in records if r.get("method") == method and r.get("plan_channels") is not None]
    if len(rs) < 2:
        return None
    by_domain: dict[str, list[dict]] = defaultdict(list)
    for r in rs:
        by_domain[r["domain"]].append(r)
    rng = _random.Random(0)

    def mean_j(pairs, layer_level: bool) -> float | None:
        pairs = list(pairs)
        if len(pairs) > max_pairs:
            pairs = rng.sample(pairs, max_pairs)
        if not pairs:
            return None
        key = (lambda r: frozenset(int(l) for l in r["plan_channels"])) if layer_level else plan_units
        return sum(_jaccard(key(a), key(b)) for a, b in pairs) / len(pairs)

    out = {"tasks": len(rs), "within": {}, "within_layers": {}}
    for d, rows in by_domain.items():
        out["within"][d] = mean_j(itertools.combinations(rows, 2), False)
        out["within_layers"][d] = mean_j(itertools.combinations(rows, 2), True)
    across = [(a, b) for d1, d2 in itertools.combinations(sorted(by_domain), 2)
              for a in by_domain[d1] for b in by_domain[d2]]
    out["across"] = mean_j(across, False)
    out["across_layers"] = mean_j(across, True)
    shares = [r["budget_share"] for r in rs if r.get("budget_share")]
    out["memory_share"] = _mean([s["memory"] for s in shares])
    out["compute_share"] = _mean([s["compute"] for s in shares])
    out["pair_matrix"] = {d1: {d2: mean_j([(a, b) for a in by_domain[d1] for b in by_domain[d2] if a is not b]
                                          if d1 != d2 else itertools.combinations(by_domain[d1], 2), False)
                               for d2 in sorted(by_domain)} for d1 in sorted(by_domain)}
    return out


def paired_differences(records: list[dict], reference: str = "tinytrain", methods: list[str] | None = None,
                       domains: list[str] | None = None) -> dict:
    """{method: {domain: MeanCI of accuracy(reference) - accuracy(method) on the same task, "average": ...}}.

    Every method runs on identical tasks, so the per-task difference removes the task's difficulty from
    the comparison: its interval is usually far tighter than the two methods' own intervals, and says
    whether one method beats the other rather than whether their means overlap. Tasks that only one of
    the two methods finished are left out. The average combines domains with `mean_over_domains`."""
    methods = [m for m in (methods or ordered_unique(r["method"] for r in records)) if m != reference]
    domains = domains or ordered_unique(r["domain"] for r in records)
    acc: dict[tuple[str, str, int], float] = {}
    for r in records:
        acc.setdefault((r["method"], r["domain"], int(r["task"])), float(r["accuracy"]))
    out: dict[str, dict[str, MeanCI]] = {}
    for m in methods:
        row = {}
        for d in domains:
            diffs = [a - acc[(m, d, t)] for (ref, dd, t), a in acc.items()
                     if ref == reference and dd == d and (m, d, t) in acc]
            row[d] = mean_ci(diffs)
        row["average"] = mean_over_domains([row[d] for d in domains])
        out[m] = row
    return out
