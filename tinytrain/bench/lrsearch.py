"""The learning rate each test job trains with. A fixed rate or METHOD=LR pairs need no search; `--lr auto` and
`--lr target-val` choose every trained column's rate per domain from the grid, by mean accuracy on held-out
validation episodes (never a test episode) and by the same procedure for every method, store the choices in
DIR/lr.json and the search's records in DIR/lr_search.jsonl (a killed search resumes); `--lr support` leaves
the choice to each task. Kept apart from the run's order (harness.py) because it is a protocol of its own,
with its own jobs, files and distributed gathering."""
from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

from ..jsonfile import write_json_atomic
from .distributed import Ranks
from .episodes import ensure_target_val_episodes, ensure_validation_episodes, val_info
from .evalconfig import DEFAULT_LR, TRAINING_FREE, EvalConfig, Variant
from .results import ResultStore, record_key
from .rundir import LR_SEARCH
from .runner import run_jobs
from ..errors import BadInput


def choose_learning_rates(config: EvalConfig, out: Path, workers: int, progress: bool,
                          log: Callable[[str], None] = print, ranks: Ranks | None = None,
                          device: str = "cpu") -> dict:
    """`--lr auto` / `--lr target-val`: per domain and method, the grid lr with the best mean accuracy on
    validation episodes (ties: the smaller lr): the source's held-out classes (auto) or held-out episodes of
    the target itself (target-val). The same procedure for every method; stored in DIR/lr.json and reused
    on resume. Distributed (`ranks`): the search jobs are shared out, their scores gathered, rank 0 chooses
    and writes, and every rank returns the same choices (so every rank's test jobs train at the same rates)."""
    ranks = ranks or Ranks()
    path = out / "lr.json"
    choices = ranks.rank0(lambda: json.loads(path.read_text()) if path.exists() else {}, share=True)
    # lr key -> the column its rate is searched with, options included (e.g. a given SparseUpdate policy):
    # the method's main column, or an own-lr --variant
    searched = {}
    for v in config.variants:
        key = lr_key(config, v)
        if v.method not in TRAINING_FREE and (key != v.method or v.group == "main"):
            searched.setdefault(key, replace(v, label=key))
    methods = sorted(searched)
    todo = [(d, m) for d in config.domains for m in methods if m not in choices.get(d, {}).get("chosen", {})]
    if not todo:
        return choices
    kind = "tval" if config.lr == "target-val" else "val"

    def episodes() -> dict:
        if kind == "tval":
            ensure_target_val_episodes(config, out, log)
            return {d: {"domain": f"{d} (held-out target episodes)", "split": config.split} for d in config.domains}
        ensure_validation_episodes(config, out, log)
        return val_info(out)

    info = ranks.rank0(episodes, share=True)
    # domains whose validation episodes come from the same data (e.g. all pocket targets -> the pocket
    # source) share identical validation episodes: search once and copy the choice
    first_of = {}
    for d in config.domains:
        first_of.setdefault(info[d]["domain"], d)
    run_todo = [(d, m) for d, m in todo if first_of[info[d]["domain"]] == d]
    jobs = [(d, i, asdict(replace(searched[m], label=f"{m}|lr={lr:g}")), lr, kind)
            for d, m in run_todo for lr in config.lr_grid for i in range(config.lr_episodes)]
    # records of an earlier, interrupted search are kept (lr_search.jsonl): only the missing jobs run
    store = ResultStore(out / LR_SEARCH, rank=ranks.rank)
    done = ranks.rank0(store.load, share=True)
    have = {record_key(r) for r in done}
    jobs = [j for j in jobs if (j[0], j[1], j[2]["label"]) not in have]
    mine, got = ranks.share(jobs), []

    def keep(rec: dict) -> None:
        got.append(rec)
        if "error" not in rec:         # failures are not kept: a rerun retries them
            store.append(rec)

    if mine:
        store.repair()
        run_jobs(config, out, mine, workers, keep, "lr search (validation)", progress, device)
    gathered = done + [rec for part in ranks.gather(got) for rec in part]

    def decide() -> dict:
        failures = [rec for rec in gathered if "error" in rec]
        if failures:     # one line (exit 2); the tracebacks go to a file, never to the terminal
            write_json_atomic(out / "failures.json", failures)
            again = ("a rerun repeats it: change the settings" if any(f.get("recurs") for f in failures)
                     else "rerun the same command to retry")
            raise BadInput(f"the lr search failed on {len(failures)} jobs (details in {out / 'failures.json'}); "
                             f"first: {failures[0]['error']}; {again}")
        scores: dict[tuple[str, str, float], list[float]] = {}
        # in episode order, whoever ran them: the means do not depend on workers or ranks
        for rec in sorted(gathered, key=lambda r: (r["domain"], r["method"], r["task"])):
            m, lr = rec["method"].rsplit("|lr=", 1)
            scores.setdefault((rec["domain"], m, float(lr)), []).append(rec["accuracy"])   # None: diverged
        for d, m in todo:
            src = first_of[info[d]["domain"]]
            if (src, m, config.lr_grid[0]) not in scores:     # chosen by an earlier run: copy it
                scores.update({(src, m, lr): [choices[src]["scores"][m][f"{lr:g}"]] for lr in config.lr_grid})
            # a candidate that diverged on any validation episode is never chosen (its score is stored as null)
            means = {lr: None if any(a is None for a in scores[(src, m, lr)])
                     else sum(scores[(src, m, lr)]) / len(scores[(src, m, lr)]) for lr in config.lr_grid}
            usable = sorted(lr for lr in means if means[lr] is not None)
            if not usable:
                raise BadInput(f"--lr {config.lr}: {m} diverged at every --lr-grid rate "
                                 f"({', '.join(f'{lr:g}' for lr in config.lr_grid)}) on the validation episodes of "
                                 f"{d}; add smaller rates (e.g. 0,1e-4,1e-3) to --lr-grid")
            best = min(usable, key=lambda lr: -round(means[lr], 6))   # float noise is a tie: smaller lr
            label = info[d]["domain"] if kind == "tval" else f"{info[d]['domain']} (val)"
            entry = choices.setdefault(d, {"split": label, "chosen": {}, "scores": {}})
            entry["chosen"][m] = best
            entry["scores"][m] = {f"{lr:g}": means[lr] for lr in sorted(means)}
        write_json_atomic(path, choices)
        return choices

    return ranks.rank0(decide, share=True)


def lr_key(config: EvalConfig, variant: Variant) -> str:
    """Whose validated rate a column trains with: its method's, or (`--variant-lr own`, a `--variant` column)
    its own, searched on the same validation episodes with its options."""
    return variant.label if config.variant_lr == "own" and variant.group == "options" else variant.method


def lr_for(config: EvalConfig, choices: dict, domain: str, method: str) -> float | None:
    """The lr a method trains with: chosen on validation (auto), per method (a dict), or one fixed value;
    None with "support": each task chooses its own from the grid on a split of its support set."""
    if config.lr == "support":
        return None
    if config.lr in ("auto", "target-val"):
        return float(choices.get(domain, {}).get("chosen", {}).get(method, DEFAULT_LR))
    if isinstance(config.lr, dict):
        return float(config.lr.get(method, config.lr.get("default", DEFAULT_LR)))
    return float(config.lr)
