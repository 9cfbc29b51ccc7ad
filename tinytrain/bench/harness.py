"""The evaluation harness: every method on identical stored episodes, results appended as they finish,
resumable, over K worker processes and torch.distributed ranks. This module is the order of a run, run_eval:
prepare the run folder and sample its episodes (rundir.py, episodes.py), choose learning rates and the static
plan on validation episodes (lrsearch.py, staticplan.py), then run the test jobs not done yet (runner.py) and
append their records (results.py); the settings are an EvalConfig (evalconfig.py), and rundir.py lists the
folder's files."""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from ..jsonfile import write_json_atomic
from .distributed import Ranks, rank_device, run_lock
from .episodes import check_support_split, ensure_episodes
from .evalconfig import EvalConfig
from .lrsearch import choose_learning_rates, lr_for, lr_key
from .results import ResultStore
from .rundir import prepare_run_dir
from .runner import run_jobs
from .staticplan import ensure_static_plan


def in_job_order(config: EvalConfig, records: list[dict]) -> list[dict]:
    """Records in the order one process runs the jobs (task-major, then domain, then column), whatever
    workers or ranks finished them in: reports sum in one order, so their numbers do not depend on either.
    Records of other domains or columns keep their place at the end."""
    domains = {d: i for i, d in enumerate(config.domains)}
    labels = {v.label: i for i, v in enumerate(config.variants)}
    last = (len(domains), len(labels))

    def key(r: dict):
        d, m = domains.get(r["domain"]), labels.get(r["method"])
        return (1, 0, *last) if d is None or m is None else (0, r["task"], d, m)
    return sorted(records, key=key)


def _silent(_: str) -> None:
    pass


def _prepare(config: EvalConfig, out_dir: str | Path, log: Callable[[str], None]) -> Path:
    """Rank 0's set-up: the run folder, rank files of an earlier launch merged, episodes sampled."""
    out = prepare_run_dir(config, out_dir)
    moved = ResultStore(out / "results.jsonl").fold_shards()
    if moved:
        log(f"merged {moved} result(s) of an earlier distributed launch into {out / 'results.jsonl'}")
    ensure_episodes(config, out, log)
    check_support_split(config, out)
    return out


def run_eval(config: EvalConfig, out_dir: str | Path, workers: int = 1, progress: bool = True,
             log: Callable[[str], None] = print, max_jobs: int | None = None, device: str = "cpu",
             lock: bool = True, ranks: Ranks | None = None) -> list[dict]:
    """Evaluate every variant on every stored episode; returns all records of DIR (old and new), in job order.

    Safe to interrupt at any point: rerunning with the same settings skips finished (domain, task,
    method) keys. `max_jobs` stops after that many new results (per rank; tests use it to simulate a kill).
    `lock`: hold DIR/eval.lock for the run, so that a second launch on DIR refuses (pass False when the
    caller holds it). `device`: cpu, or cuda (each rank's local GPU).

    Under torch.distributed (an initialised process group: torchrun, `tinytrain eval --nproc`) every rank
    calls this with the same arguments and gets the same records; `ranks` defaults to the process group's
    (distributed.py says how the work is divided). The records do not depend on the number of ranks.
    """
    ranks = ranks or Ranks.current()
    if ranks.rank != 0:
        log, progress = _silent, False
    config.validate()
    device = rank_device(device, ranks)
    with ExitStack() as held:
        if lock:
            ranks.rank0(lambda: held.enter_context(run_lock(out_dir, log)))
        out = Path(ranks.rank0(lambda: str(_prepare(config, out_dir, log)), share=True))
        choices = (choose_learning_rates(config, out, workers, progress, log, ranks, device)
                   if config.lr in ("auto", "target-val") else {})
        ranks.rank0(lambda: ensure_static_plan(config, out, log))

        def snapshot() -> set:
            store = ResultStore(out / "results.jsonl")
            done = store.keys()
            if store.skipped:
                log(f"note: {store.skipped} line(s) of {store.path} are not complete results (e.g. no accuracy); "
                    "running those jobs again")
            return done

        done = ranks.rank0(snapshot, share=True)
        jobs = [(d, t, asdict(v), lr_for(config, choices, d, lr_key(config, v)), "test")
                for t in range(config.tasks) for d in config.domains for v in config.variants
                if (d, t, v.label) not in done]    # task-major: a partial run covers every domain and method evenly
        if done:
            log(f"resuming: {len(done)} results already in {out / 'results.jsonl'}, {len(jobs)} to run")
        if ranks.distributed:
            log(f"{len(jobs)} jobs over {ranks.world} ranks, {workers} worker process(es) each, on {device}")
        jobs = ranks.share(jobs)
        if max_jobs is not None:
            jobs = jobs[:max_jobs]
        store = ResultStore(out / "results.jsonl", rank=ranks.rank)
        failures: list[dict] = []

        def collect(rec: dict) -> None:
            if "error" in rec:
                failures.append(rec)
                if not ranks.distributed:
                    log(f"FAILED {rec['domain']} task {rec['task']} {rec['method']}: {rec['error']}")
            else:
                store.append(rec)

        if jobs:
            run_jobs(config, out, jobs, workers, collect, "evaluate", progress, device)
        failures = [f for part in ranks.gather(failures) for f in part]    # also: every rank has stopped writing
        records = in_job_order(config, ResultStore(out / "results.jsonl").load())
        ranks.barrier()                                                    # every rank has read the rank files

        def finish() -> None:
            ResultStore(out / "results.jsonl").fold_shards()
            if not failures:
                return
            if ranks.distributed:
                for f in failures:
                    log(f"FAILED {f['domain']} task {f['task']} {f['method']}: {f['error']}")
            write_json_atomic(out / "failures.json", failures)
            recurring = [f for f in failures if f.get("recurs")]
            if recurring:
                log(f"{len(failures)} jobs failed (details in {out / 'failures.json'}); {len(recurring)} with an "
                    f"error that a rerun repeats, first: {recurring[0]['error']}; change the settings, then rerun")
            else:
                log(f"{len(failures)} jobs failed (details in {out / 'failures.json'}); rerun the same command to "
                    "retry them")

        ranks.rank0(finish)
    return records
