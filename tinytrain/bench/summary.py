"""The run report: tables (Markdown/CSV/JSON) and plots (PNG) for one evaluation directory."""
from __future__ import annotations

import json
from pathlib import Path

from ..costs.units import format_bytes
from ..jsonfile import write_text_atomic
from . import plots
from .ablations import GROUP_TITLES
from .evalconfig import EvalConfig
from .report import (Table, accuracy_report, comparable_records, cost_report, layer_report, lr_table,
                     paired_report, plan_variation_report, render)
from .stats import accuracy_table, cost_table, layer_selection, plan_variation


def describe_episodes(config: EvalConfig) -> str:
    """The episode shape in words, as the report and the demo print it."""
    shape = config.episodes
    return (f"fixed {shape.ways}-way {shape.shots}-shot, {shape.queries} queries per class" if shape.mode == "fixed"
            else shape.describe())


def describe_lr(config: EvalConfig) -> str:
    """The learning-rate protocol in words (which data chose the rates), as the report and the demo print it."""
    return "auto (grid " + ", ".join(f"{x:g}" for x in config.lr_grid) + f" on {config.lr_episodes} validation " \
         "episodes per domain from held-out source classes; see the lr table)" if config.lr == "auto" else (
        "target-val (grid " + ", ".join(f"{x:g}" for x in config.lr_grid) + f" on {config.lr_episodes} held-out "
        "episodes of each target domain, P>M>F's protocol; see the lr table)" if config.lr == "target-val" else
        "chosen per task from " + ", ".join(f"{x:g}" for x in config.lr_grid) + " on a split of its support set"
        if config.lr == "support" else (
        ", ".join(f"{k} {v:g}" for k, v in config.lr.items()) + " (fixed per method)" if isinstance(config.lr, dict)
        else f"{config.lr:g} (fixed, all methods)"))


def _settings_lines(config: EvalConfig) -> list[str]:
    eps, lr = describe_episodes(config), describe_lr(config)
    return [f"- model: `{config.model}`, checkpoint: `{config.checkpoint}`, resolution {config.resolution}",
            f"- episodes: {config.tasks} per domain, {eps}, seed {config.seed}, split `{config.split}`",
            f"- iterations: {config.iterations}; learning rate: {lr}",
            f"- memory budget: {format_bytes(config.memory_budget) if config.memory_budget else 'method default'}; "
            f"compute budget: {config.compute_budget if config.compute_budget is not None else 'method default'}"]


def write_run_report(out_dir: str | Path, config: EvalConfig, records: list[dict],
                     lr_choices: dict | None = None) -> tuple[str, list[Path]]:
    """Write report.md, every table as .md/.csv/.json and the plots; returns (markdown, files written)."""
    out = Path(out_dir)
    if lr_choices is None and (out / "lr.json").exists():
        lr_choices = json.loads((out / "lr.json").read_text())
    domains = list(config.domains)
    groups: dict[str, list[str]] = {}
    for v in config.variants:
        groups.setdefault(v.group, []).append(v.label)
    main = groups.get("main", [])
    # every table compares methods over the same tasks: those all of them finished with an accuracy
    main_recs, main_notes = comparable_records(records, main, domains)
    files: list[Path] = []
    main_acc = accuracy_report(main_recs, main, domains)
    main_acc.notes += main_notes
    tables: list[Table | None] = [main_acc,
                                  paired_report(main_recs, main, domains), cost_report(main_recs, main),
                                  layer_report(main_recs), plan_variation_report(main_recs), lr_table(lr_choices or {})]
    acc = accuracy_table(main_recs, main, domains)
    costs = cost_table(main_recs, main)
    plot_paths = [plots.accuracy_vs_memory(acc, costs, out / "accuracy_vs_memory.png"),
                  plots.domain_bars(acc, domains, out / "accuracy_per_domain.png"),
                  plots.layer_selection_plot(layer_selection(main_recs), out / "layer_selection.png"),
                  plots.plan_similarity_plot(plan_variation(main_recs), out / "plan_similarity.png")]

    for group, labels in groups.items():
        if group == "main":
            continue
        ref = [m for m in ("tinytrain",) if m in main and group in ("score", "channels", "static", "options")]
        if group == "meta":
            ref = main
        names = ref + labels
        recs, group_notes = comparable_records(records, names, domains)
        title = GROUP_TITLES.get(group, group)
        group_acc = accuracy_report(recs, names, domains, name=f"ablation_{group}", title=title)
        group_acc.notes += group_notes
        tables.append(group_acc)
        if ref and group != "meta":
            tables.append(paired_report(recs, names, domains, name=f"ablation_{group}_paired"))
        if group in ("options", "static"):
            tables.append(cost_report(recs, names, name=f"ablation_{group}_costs",
                                      title=f"Backward memory and compute ({title.split(':')[0]})"))
        ga = accuracy_table(recs, names, domains)
        if group == "budget":
            budget_of = {v.label: v.memory_budget for v in config.variants if v.group == "budget"}
            method_of = {v.label: v.method for v in config.variants}
            pts: dict[str, list] = {}
            for label in labels:
                if ga[label]["average"].n:
                    pts.setdefault(method_of[label], []).append((budget_of[label], ga[label]["average"]))
            plot_paths.append(plots.budget_curve(pts, out / "ablation_budget.png"))
            tables.append(cost_report(recs, labels, name="ablation_budget_costs",
                                      title="Memory and compute at each budget (TinyTrain)"))
        else:
            plot_paths.append(plots.variant_bars(ga, out / f"ablation_{group}.png", title))

    for t in tables:
        if t is not None:
            files += t.write(out)
    plot_files = [p for p in plot_paths if p is not None]
    files += plot_files
    header = "\n".join(["# tinytrain evaluation report", ""] + _settings_lines(config) + [
        f"- results: `{out / 'results.jsonl'}` ({len(records)} records)", ""])
    text = render(tables, header)
    if plot_files:
        text += "\n### Plots\n\n" + "\n".join(f"![{p.stem}]({p.name})" for p in plot_files) + "\n"
    report = out / "report.md"
    write_text_atomic(report, text)
    return text, [report] + files
