"""Tables from result records, written as Markdown, CSV and JSON (the same numbers in all three).

`Table` keeps two views of one table: `rows` (display strings, for Markdown and the terminal) and
`data` (flat dicts of raw numbers, for CSV and JSON), so a user can diff or re-plot the JSON without
parsing formatted text.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..costs.units import format_bytes, format_macs
from ..jsonfile import write_text_atomic
from .stats import accuracy_table, cost_table, layer_selection, ordered_unique, paired_differences


@dataclass
class Table:
    name: str                      # file stem: <out>/<name>.md|.csv|.json
    title: str
    columns: list[str]
    rows: list[list[str]]
    data: list[dict]
    notes: list[str] = field(default_factory=list)

    def to_markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "|".join("---" if i == 0 else "---:" for i in range(len(self.columns))) + "|"]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in self.rows]
        if self.notes:
            lines += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str | Path) -> list[Path]:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        md, cs, js = (out / f"{self.name}.{ext}" for ext in ("md", "csv", "json"))
        write_text_atomic(md, self.to_markdown())      # atomic: a kill mid-report leaves the former tables
        keys = ordered_unique(k for d in self.data for k in d)
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=keys)
        writer.writeheader()
        writer.writerows({k: _csv_value(d.get(k)) for k in keys} for d in self.data)
        write_text_atomic(cs, buffer.getvalue())
        write_text_atomic(js, json.dumps({"title": self.title, "notes": self.notes, "rows": _json_safe(self.data)},
                                         indent=1))
        return [md, cs, js]


def _csv_value(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return v


def _json_safe(obj):
    """NaN is not JSON: write null instead."""
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


def comparable_records(records: list[dict], methods: list[str], domains: list[str]) -> tuple[list[dict], list[str]]:
    """The records of `methods` restricted, in each domain, to the tasks every one of them finished with an
    accuracy, so that no table compares methods over different tasks; plus notes saying what was left out.
    A method with no accuracy at all in a domain (every job failed or diverged) shows '-' there and does not
    shrink the others' tasks. Diverged records (`accuracy` null) are never an accuracy: they are named."""
    wanted = set(methods)
    recs = [r for r in records if r.get("method") in wanted]
    scored = [r for r in recs if r.get("accuracy") is not None]
    notes: list[str] = []
    diverged: dict[tuple[str, str], int] = {}
    for r in recs:
        if r.get("accuracy") is None:
            diverged[(r["method"], r["domain"])] = diverged.get((r["method"], r["domain"]), 0) + 1
    if diverged:
        notes.append("diverged, no accuracy (training loss or weights became non-finite or blew up; lower --lr): "
                     + ", ".join(f"{m} on {d} ({n} task{'s' if n > 1 else ''})" for (m, d), n in diverged.items()))
    keep: list[dict] = []
    for d in domains:
        tasks = {m: {int(r["task"]) for r in scored if r["domain"] == d and r["method"] == m} for m in methods}
        present = {m: t for m, t in tasks.items() if t}
        if not present:
            continue
        common = set.intersection(*present.values())
        left = sum(len(t - common) for t in present.values())
        if left:
            notes.append(f"{d}: only the {len(common)} tasks that every method finished are compared "
                         f"({left} results of other tasks left out)")
        missing = [m for m in methods if m not in present]
        if missing:
            notes.append(f"{d}: no accuracy for {', '.join(missing)}")
        keep += [r for r in scored if r["domain"] == d and int(r["task"]) in common]
    return keep, notes


def accuracy_report(records: list[dict], methods: list[str] | None = None, domains: list[str] | None = None,
                    name: str = "accuracy", title: str = "Accuracy (%), mean ± 95 % CI over tasks") -> Table:
    """Table-1 view: one row per method, one column per domain, plus the average over domains."""
    methods = methods or ordered_unique(r["method"] for r in records)
    domains = domains or ordered_unique(r["domain"] for r in records)
    table = accuracy_table(records, methods, domains)
    rows, data = [], []
    for m in methods:
        row = table[m]
        rows.append([m] + [row[d].fmt() for d in domains + ["average"]])
        for d in domains + ["average"]:
            c = row[d]
            data.append({"method": m, "domain": d, "accuracy": c.mean, "ci95": c.ci95, "tasks": c.n})
    n_tasks = sorted({row[d].n for row in table.values() for d in domains if row[d].n})
    notes = [f"tasks per (domain, method): {', '.join(map(str, n_tasks)) or 'none'}; "
             "average = mean of the per-domain means"]
    return Table(name, title, ["method"] + domains + ["average"], rows, data, notes)


def paired_report(records: list[dict], methods: list[str] | None = None, domains: list[str] | None = None,
                  reference: str = "tinytrain", name: str = "paired") -> Table | None:
    """Per-task accuracy difference of `reference` minus each other method (same tasks), mean ± 95 % CI
    in percentage points: an interval that excludes 0 is a real difference on these tasks."""
    methods = methods or ordered_unique(r["method"] for r in records)
    domains = domains or ordered_unique(r["domain"] for r in records)
    if reference not in methods or len(methods) < 2:
        return None
    diffs = paired_differences(records, reference, methods, domains)
    rows, data = [], []
    for m, row in diffs.items():
        cells = []
        for d in domains + ["average"]:
            c = row[d]
            cells.append("-" if c.n == 0 else ("+" if c.mean >= 0 else "") + c.fmt())
            data.append({"method": m, "reference": reference, "domain": d, "difference": c.mean, "ci95": c.ci95,
                         "tasks": c.n})
        rows.append([m] + cells)
    notes = [f"positive: {reference} more accurate than the row's method on the same tasks; "
             "differences in percentage points"]
    return Table(name, f"Paired accuracy difference, {reference} minus method (points, mean ± 95 % CI)",
                 ["method"] + domains + ["average"], rows, data, notes)


def cost_report(records: list[dict], methods: list[str] | None = None, name: str = "costs",
                title: str = "Backward memory and compute per method (mean over tasks)") -> Table:
    """Table-2 view: predicted backward memory (analytic), measured saved-for-backward bytes, backward
    MACs, their ratios to TinyTrain, and wall time per task."""
    methods = methods or ordered_unique(r["method"] for r in records)
    costs = cost_table(records, methods)

    def b(v):
        return "-" if v is None else format_bytes(v)

    def r(v):
        return "-" if v is None else f"{v:,.2f}×"

    rows, data = [], []
    for m in methods:
        c = costs[m]
        rows.append([m, b(c["predicted_memory_bytes"]), r(c["memory_ratio"]), b(c["measured_saved_bytes"]),
                     "-" if c["backward_macs"] is None else format_macs(c["backward_macs"]), r(c["compute_ratio"]),
                     "-" if c["seconds"] is None else f"{c['seconds']:.2f}", str(c["tasks"])])
        data.append({"method": m, **c})
    notes = ["memory: analytic backward memory (paper accounting, batch as the method trains); "
             "measured: bytes autograd saved for backward in one training step",
             "ratios are to the tinytrain row (or the first row); seconds: wall time per task "
             "(selection + training + evaluation) in one worker process with 1 thread"]
    return Table(name, title,
                 ["method", "memory (pred.)", "ratio", "memory (measured)", "backward MACs", "ratio",
                  "s / task", "tasks"], rows, data, notes)


def layer_report(records: list[dict], method: str = "tinytrain", name: str = "layers") -> Table | None:
    """How often TinyTrain updated each layer, with its mean Fisher potential; None without data."""
    sel = layer_selection(records, method)
    if not sel:
        return None
    rows, data = [], []
    for layer, s in sel.items():
        fp = s["mean_fisher_potential"]
        frac = s["mean_channel_fraction"]
        rows.append([str(layer), f"{100 * s['frequency']:.0f} %", "-" if frac is None else f"{100 * frac:.0f} %",
                     "-" if fp is None else f"{fp:.3g}"])
        data.append({"layer": layer, **s})
    return Table(name, f"Layers selected by {method} across tasks",
                 ["layer", "selected in", "channels updated", "mean Fisher potential"], rows, data)


def plan_variation_report(records: list[dict], method: str = "tinytrain", name: str = "plan_variation") -> Table | None:
    """Mean pairwise Jaccard similarity of the plans (1 = the same plan in every task) within each domain
    and across domains, at (layer, channel) level and at layer level, and the budget share used."""
    from .stats import plan_variation
    v = plan_variation(records, method)
    if v is None:
        return None
    f = lambda x: "-" if x is None else f"{x:.2f}"
    rows = [[d, f(v["within"][d]), f(v["within_layers"][d])] for d in v["within"]]
    rows.append(["across domains", f(v["across"]), f(v["across_layers"])])
    data = [{"scope": d, "jaccard_units": v["within"][d], "jaccard_layers": v["within_layers"][d]} for d in v["within"]]
    data.append({"scope": "across", "jaccard_units": v["across"], "jaccard_layers": v["across_layers"],
                 "memory_share": v["memory_share"], "compute_share": v["compute_share"], "tasks": v["tasks"]})
    pct = lambda x: "-" if x is None else f"{100 * x:.0f} %"
    notes = [f"mean over {v['tasks']} tasks of the share of the budgets the plan uses: memory {pct(v['memory_share'])}, "
             f"compute {pct(v['compute_share'])}",
             "units: (layer, channel) weight slices and BN-shift layers; 1.00 = every task trains the same units"]
    return Table(name, f"How much {method}'s plan varies between tasks (mean pairwise Jaccard similarity)",
                 ["tasks compared", "(layer, channel) units", "layers"], rows, data, notes)


def lr_table(lr_choices: dict, name: str = "learning_rates") -> Table | None:
    """The learning rates `--lr auto` chose on validation episodes: {domain: {method: lr}}."""
    if not lr_choices:
        return None
    methods = ordered_unique(m for d in lr_choices.values() for m in d.get("chosen", {}))
    rows, data = [], []
    for domain, info in lr_choices.items():
        chosen = info.get("chosen", {})
        rows.append([domain, info.get("split", "-")] + [f"{chosen[m]:g}" if m in chosen else "-" for m in methods])
        data += [{"domain": domain, "validation": info.get("split"), "method": m, "lr": chosen[m],
                  "val_accuracy": info.get("scores", {}).get(m)} for m in methods if m in chosen]
    return Table(name, "Learning rates chosen on validation episodes (never on test episodes)",
                 ["domain", "validation data"] + methods, rows, data)


def render(tables: list[Table | None], header: str = "") -> str:
    parts = [header] if header else []
    parts += [t.to_markdown() for t in tables if t is not None]
    return "\n".join(parts)
