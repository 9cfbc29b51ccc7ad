"""Jobs and the processes that run them. A job is one (domain, task, column, lr, kind) tuple; a Runner turns
it into a result record (adapt on the episode's support set, score on its query set), caching what repeated
jobs share, and run_jobs runs a list of jobs in this process or over a pool of spawned worker processes,
handing each record to a callback as it finishes. A failed job comes back as a record with an error, never
stops the others; SIGTERM and a parent killed outright are handled here, so an interrupted run keeps what it
finished. The learning-rate search and the test jobs both run through this module."""
from __future__ import annotations

import copy
import json
import multiprocessing as mp
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from ..methods import make_method
from ..methods.base import AdaptConfig
from .episodes import domain_file_stem, open_domain, val_domain_of, val_split_of
from .evalconfig import STATIC_PLAN, TRAINING_FREE, EvalConfig, Variant


# --- one worker's view: cached datasets, episodes and backbones --------------------------------------

class Runner:
    """Runs single (domain, task, variant) jobs; caches what repeated jobs share. One per process. `device`:
    where the backbone and the task tensors live (a rank's GPU with `--device cuda`)."""

    def __init__(self, config: EvalConfig, out_dir: str | Path, device: str = "cpu"):
        self.config, self.out_dir, self.device = config, Path(out_dir), device
        self._datasets: dict[tuple[str, str], object] = {}
        self._episodes: dict[str, list] = {}
        self._backbones: dict[str, object] = {}
        self._task_cache: dict[tuple, object] = {}

    def dataset(self, domain: str, split: str):
        key = (domain, split)
        if key not in self._datasets:
            self._datasets[key] = open_domain(domain, split)
        return self._datasets[key]

    def backbone(self, checkpoint: str | None):
        """(backbone, head): the head carries the checkpoint's meta-trained cosine scale and bias, if any,
        so every method starts from the same classifier."""
        ckpt = checkpoint or self.config.checkpoint
        if ckpt not in self._backbones:
            from ..models.weights import load_backbone
            # building a backbone draws its initial weights (all of them for `random`) from torch's global
            # generator: draw them from the run's seed in a forked generator, so that they do not depend on which
            # job this process ran first (workers, ranks, resumes) and every job starts from its own seed alone.
            # seed * 100_003 is what a fresh single-process run had drawn them from (task 0's seed).
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.config.seed * 100_003)
                backbone = load_backbone(self.config.model, ckpt)
            head = backbone.checkpoint_info.head()
            self._backbones[ckpt] = (backbone.eval().to(self.device), head.to(self.device))
        return self._backbones[ckpt]

    def episodes(self, domain: str, kind: str = "test") -> list:
        key = f"{domain}|{kind}"
        if key not in self._episodes:
            from ..data.types import load_episodes
            suffix = {"test": ".json", "val": ".val.json", "tval": ".tval.json"}[kind]
            path = self.out_dir / "episodes" / (domain_file_stem(domain) + suffix)
            self._episodes[key], _ = load_episodes(path)
        return self._episodes[key]

    def task(self, domain: str, index: int, kind: str = "test"):
        key = (domain, index, kind)
        if key not in self._task_cache:
            from ..data.sampler import load_task
            if len(self._task_cache) >= 2:
                self._task_cache.pop(next(iter(self._task_cache)))
            split = self.config.split if kind in ("test", "tval") else val_split_of(self.out_dir, domain)
            ds_domain = domain if kind in ("test", "tval") else val_domain_of(self.out_dir, domain)
            ep = self.episodes(domain, kind)[index]
            task = load_task(self.dataset(ds_domain, split), ep, self.config.resolution)
            if self.device != "cpu":
                task = replace(task, **{k: getattr(task, k).to(self.device)
                                        for k in ("support_x", "support_y", "query_x", "query_y")
                                        if getattr(task, k) is not None})
            self._task_cache[key] = (ep, task)
        return self._task_cache[key]

    def adapt_config(self, variant: Variant, lr: float, task_index: int) -> AdaptConfig:
        c = self.config
        options = dict(variant.options)
        if options.get("fixed_plan") == STATIC_PLAN:
            options["fixed_plan"] = json.loads((self.out_dir / "static_plan.json").read_text())["plan"]
        if lr is None:     # per-task choice on a split of the support set, over the run's grid
            options["lr_candidates"] = list(c.lr_grid)
        return AdaptConfig(iterations=c.iterations, lr=lr, resolution=c.resolution, options=options,
                           memory_budget=variant.memory_budget if variant.memory_budget is not None else c.memory_budget,
                           compute_budget=c.compute_budget, seed=c.seed * 100_003 + task_index)

    def run(self, domain: str, index: int, variant: Variant, lr: float, kind: str = "test") -> dict:
        """Adapt `variant` on one episode's support set and score it on the query set -> a result record."""
        ep, task = self.task(domain, index, kind)
        acfg = self.adapt_config(variant, lr, index)
        torch.manual_seed(acfg.seed)
        backbone, head = self.backbone(variant.checkpoint)
        method = make_method(variant.method, backbone, acfg, copy.deepcopy(head))
        t0 = time.perf_counter()
        predictor = method.fit(task.support_x, task.support_y)
        fit_s = time.perf_counter() - t0
        accuracy = predictor.accuracy(task.query_x, task.query_y)
        total_s = time.perf_counter() - t0
        rep = method.report
        trained_lr = lr if rep.lr is None else rep.lr
        diverged = None      # adapt's check: a fit whose loss or weights blew up has no accuracy
        if variant.method not in TRAINING_FREE and trained_lr != 0:
            from ..deploy.session import divergence_reason
            diverged = divergence_reason(backbone, predictor, task.support_x, task.support_y, rep.final_loss)
        fisher, eplan = rep.fisher_potential, rep.engine_plan
        mem_budget, comp_budget = rep.memory_budget, rep.compute_budget_macs
        return {
            "domain": domain, "task": index, "method": variant.label, "base_method": variant.method,
            "checkpoint": variant.checkpoint or self.config.checkpoint,
            "accuracy": None if diverged else accuracy, "diverged": diverged,
            "predicted_memory_bytes": int(rep.predicted_memory_bytes or 0),
            "measured_saved_bytes": None if rep.measured_saved_bytes is None else int(rep.measured_saved_bytes),
            "backward_macs": int(rep.backward_macs or 0), "seconds": total_s, "fit_seconds": fit_s,
            "selection_seconds": float(rep.selection_seconds or 0.0), "train_seconds": float(rep.train_seconds or 0.0),
            "lr": trained_lr, "memory_budget": acfg.memory_budget, "options": variant.options,
            "ways": ep.ways, "support": len(ep.support), "query": len(ep.query),
            "plan": [[r.layer, r.channels_updated, r.channels_total]
                     for r in rep.rows if r.layer is not None and r.channels_updated],
            "fisher_potential": None if fisher is None else {str(k): float(v) for k, v in fisher.items()},
            "plan_channels": {str(w.index): list(w.channels) for w in eplan.weights} or None if eplan else None,
            "plan_biases": list(eplan.biases) if eplan else None,
            "budget_share": ({"memory": int(rep.predicted_memory_bytes or 0) / mem_budget,
                              "compute": int(rep.backward_macs or 0) / comp_budget}
                             if mem_budget and comp_budget else None),
        }


# --- worker processes -----------------------------------------------------------------------------------

_WORKER: dict = {}     # per-process cache of the Runner (set once by the pool initializer; never shared)


class Terminated(KeyboardInterrupt):
    """SIGTERM reached the parent of an evaluation: stop as Ctrl-C does (finished records are kept, the
    same command resumes; `tinytrain` prints one line)."""


def raise_terminated(signum, frame) -> None:
    raise Terminated()


def exit_with_parent(parent: int) -> None:
    """A pool worker whose parent died (SIGKILL, SIGTERM) exits at once and quietly, instead of finishing
    its job and failing with BrokenPipeError on a pipe nobody reads."""
    import os
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(0)


def _worker_init(config_dict: dict, out_dir: str, parent: int | None = None, device: str = "cpu") -> None:
    torch.set_num_threads(1)
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    if parent is not None:       # a pool worker: the parent handles Ctrl-C and SIGTERM, and terminates us
        import signal
        import threading
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        threading.Thread(target=exit_with_parent, args=(parent,), daemon=True).start()
    _WORKER["runner"] = Runner(EvalConfig.from_dict(config_dict), out_dir, device)


def _job(job: tuple) -> dict:
    """Run one job; a failure comes back as {'error': ...} so one bad task never stops the run."""
    domain, index, variant_dict, lr, kind = job
    variant = Variant(**variant_dict)
    try:
        rec = _WORKER["runner"].run(domain, index, variant, lr, kind)
        if _WORKER["runner"].device != "cpu":     # CPU records stay as they always were
            rec["device"] = _WORKER["runner"].device
        return rec
    except Exception as exc:  # noqa: BLE001 - reported to the parent with its traceback
        return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(),
                "recurs": isinstance(exc, ValueError),    # bad settings or data: a rerun fails the same way
                "domain": domain, "task": index, "method": variant.label, "kind": kind}


def run_jobs(config: EvalConfig, out_dir: Path, jobs: list[tuple], workers: int,
             on_result: Callable[[dict], None], desc: str, progress: bool, device: str = "cpu") -> None:
    """Run `jobs` here (one worker, or one job) or over `workers` spawned processes, and hand each record
    (or error record) to `on_result` as it finishes."""
    import os
    import signal
    import threading

    from tqdm import tqdm
    bar = tqdm(total=len(jobs), desc=desc, unit="job", disable=not progress, dynamic_ncols=True)
    old_term = None
    if threading.current_thread() is threading.main_thread():
        old_term = signal.signal(signal.SIGTERM, raise_terminated)   # leave the pool's `with` cleanly
    try:
        if workers <= 1 or len(jobs) <= 1:
            threads = torch.get_num_threads()
            _worker_init(config.to_dict(), str(out_dir), None, device)   # one thread, like a pool worker
            try:
                for job in jobs:
                    on_result(_job(job))
                    bar.update(1)
            finally:
                _WORKER.clear()
                torch.set_num_threads(threads)
            return
        ctx = mp.get_context("spawn")
        with ctx.Pool(min(workers, len(jobs)), initializer=_worker_init,
                      initargs=(config.to_dict(), str(out_dir), os.getpid(), device)) as pool:
            for rec in pool.imap_unordered(_job, jobs, chunksize=1):
                on_result(rec)
                bar.update(1)
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        bar.close()
