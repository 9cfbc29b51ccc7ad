"""The evaluation harness: every method on identical stored episodes, results appended as they finish,
resumable, over K worker processes.

Run directory layout (everything JSON, a user can read and diff it):

    DIR/config.json              the run's settings; a resume into DIR must use the same ones
    DIR/episodes/<domain>.json   test episodes, sampled once (with the sampler settings in "meta")
    DIR/episodes/<domain>.val.json  validation episodes used by `--lr auto` (held-out classes of the source)
    DIR/episodes/<domain>.tval.json held-out episodes of the target domain itself, used by `--lr target-val`
    DIR/lr.json                  learning rates chosen on validation episodes (with `--lr auto` / `target-val`)
    DIR/lr_search.jsonl          the search's records as they finish (same format as results.jsonl), so a killed
                                 search resumes where it stopped
    DIR/static_plan.json         the one TinyTrain plan of `--ablate-static`, chosen on validation episodes
    DIR/results.jsonl            one record per (domain, task, method), append-only (see results.py); while
                                 ranks of a torch.distributed run write, rank R > 0 appends to results.rankR.jsonl
    DIR/eval.lock                while a launch runs: its pid and host (distributed.py), so a second one refuses
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import multiprocessing as mp
import re
import time
import traceback
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from ..jsonfile import write_json_atomic
from ..methods.base import AdaptConfig
from .distributed import Ranks, rank_device, run_lock
from .results import ResultStore, record_key, shard_paths

TRAINING_FREE = {"none"}                 # methods whose result does not depend on the learning rate
LR_PROTOCOLS = ("auto", "target-val", "support")
STATIC_PLAN = "validation"               # `fixed_plan` placeholder: the plan chosen once on validation episodes
DEFAULT_LR = 1e-3                       # the fixed lr when --lr auto is not used (Adam; paper_spec 12.8)
DEFAULT_LR_GRID = (0.0, 1e-4, 1e-3, 1e-2)   # P>M>F's per-domain grid, plus 0 (no update: a valid choice);
                                            # the CLI's --lr-grid default is this constant
MAX_LR = 100.0                          # larger rates are refused up front: Adam moves a weight by about lr per
                                        # step, so no rate near this trains (P>M>F's grid tops at 1e-2)


def check_rate(value, flag: str, zero_ok: bool) -> float:
    """One learning rate of --lr / --lr-grid / METHOD=LR: a finite number in (0, MAX_LR] ([0, MAX_LR] where
    0, no update, is a valid choice). A ValueError names the flag and what to change."""
    import math
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{flag} takes numbers, got {value!r}")
    low = "0 or more (0 = no update)" if zero_ok else "positive"
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        raise ValueError(f"{flag} got {value!r}; a learning rate must be a finite number, {low}, e.g. 1e-3")
    if value > MAX_LR:
        raise ValueError(f"{flag} got {value:g}; rates above {MAX_LR:g} only diverge (Adam moves each weight by "
                         "about lr per step): use e.g. 1e-3, or --lr auto to choose from a grid")
    return float(value)


@dataclass
class Variant:
    """One column of results: a method with optional overrides (ablations). `label` is the record key."""

    label: str
    method: str
    options: dict = field(default_factory=dict)
    checkpoint: str | None = None        # None: the run's checkpoint
    memory_budget: int | None = None     # None: the run's budget
    group: str = "main"                  # main | meta | score | channels | static | budget | options


@dataclass
class EpisodeShape:
    """How test and validation episodes are sampled (see tinytrain.data.sampler.EpisodeSampler)."""

    mode: str = "metadataset"            # metadataset (variable way/shot) | fixed
    ways: int | None = None
    shots: int | None = None
    queries: int | None = None
    max_ways: int = 50
    max_support: int = 500

    def sampler_kwargs(self) -> dict:
        if self.mode == "fixed":
            return {"mode": "fixed", "ways": self.ways, "shots": self.shots, "queries": self.queries}
        return {"mode": "metadataset", "max_ways": self.max_ways, "max_support": self.max_support}


def _whole(value, name: str, low: int | None = None, none_ok: bool = False) -> None:
    """A setting that must be a whole number (not a bool, not 2.5), at least `low`."""
    if value is None and none_ok:
        return
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
        floor = f" >= {low}" if low is not None else ""
        raise ValueError(f"{name} must be a whole number{floor} (got {value!r})")


@dataclass
class EvalConfig:
    model: str = "mcunet-5fps"
    checkpoint: str = "pocket"
    domains: list[str] = field(default_factory=list)
    variants: list[Variant] = field(default_factory=list)
    tasks: int = 200
    seed: int = 0
    memory_budget: int | None = None
    compute_budget: float | int | None = None
    resolution: int = 128
    iterations: int = 40
    lr: float | str | dict = DEFAULT_LR  # a number, "auto" (chosen per domain and method on validation data),
                                         # "target-val" (the same, on held-out episodes of the target domain),
                                         # "support" (chosen per task on a split of its support set),
                                         # or {method: lr, "default": lr} (values an earlier `auto` run chose)
    lr_grid: tuple[float, ...] = DEFAULT_LR_GRID
    lr_episodes: int = 3
    lr_domain: str | None = None         # validation data for domains without a validation split
    variant_lr: str = "method"           # auto/target-val: --variant columns use their method's rate, or "own"
    split: str = "test"
    episodes: EpisodeShape = field(default_factory=EpisodeShape)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lr_grid"] = list(self.lr_grid)
        return d

    @staticmethod
    def from_dict(d: dict) -> "EvalConfig":
        d = dict(d)
        d["variants"] = [Variant(**v) for v in d.get("variants", [])]
        d["episodes"] = EpisodeShape(**d.get("episodes", {}))
        d["lr_grid"] = tuple(d.get("lr_grid", DEFAULT_LR_GRID))
        return EvalConfig(**d)

    def _check_types(self) -> None:
        """Every setting of the right type and range, whether it came from the command line, a stored
        config.json or Python (`EvalConfig(...)`): a wrong one is refused here, not misused later."""
        for name in ("model", "split"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty text (got {getattr(self, name)!r})")
        if not isinstance(self.domains, list) or not all(isinstance(d, str) and d for d in self.domains):
            raise ValueError(f"domains must be a list of non-empty texts (got {self.domains!r})")
        _whole(self.tasks, "--tasks", 1)
        _whole(self.seed, "--seed", 0)
        _whole(self.resolution, "--resolution", 8)
        _whole(self.iterations, "--iterations", 0)
        _whole(self.lr_episodes, "--lr-episodes", 0)
        _whole(self.memory_budget, "--memory-budget (bytes)", 1, none_ok=True)
        cb = self.compute_budget
        if cb is not None and (isinstance(cb, bool) or not isinstance(cb, (int, float)) or not math.isfinite(cb)
                               or cb <= 0):
            raise ValueError(f"--compute-budget must be a positive share (<= 1) or MAC count (got {cb!r})")
        if not isinstance(self.lr, (str, dict)) and (isinstance(self.lr, bool) or not isinstance(self.lr, (int, float))):
            raise ValueError(f"--lr must be a number, a protocol name or METHOD=LR pairs (got {self.lr!r})")
        if any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in self.lr_grid):
            raise ValueError(f"--lr-grid must hold numbers (got {list(self.lr_grid)!r})")
        for v in self.variants:
            if v.method not in available_methods():
                raise ValueError(f"variant {v.label!r} names the unknown method {v.method!r}; methods: "
                                 f"{', '.join(available_methods())}")
            if not isinstance(v.options, dict):
                raise ValueError(f"variant {v.label!r}: options must be a {{key: value}} object (got {v.options!r})")
            _whole(v.memory_budget, f"variant {v.label!r} memory_budget", 1, none_ok=True)
        e = self.episodes
        if e.mode not in ("metadataset", "fixed"):
            raise ValueError(f"episodes mode must be metadataset or fixed (got {e.mode!r})")
        for name in ("ways", "shots", "queries"):
            _whole(getattr(e, name), f"--{name}", 1, none_ok=e.mode != "fixed")
        _whole(e.max_ways, "--max-ways", 2)
        _whole(e.max_support, "--max-support", 1)

    def validate(self) -> None:
        self._check_types()
        if not self.domains:
            raise ValueError("no domains to evaluate; pass --domains (pocket target names, SOURCE:PATH or folders)")
        if not self.variants:
            raise ValueError("no methods to evaluate; pass --methods")
        from ..deploy.session import check_iterations
        check_iterations(self.iterations)
        labels = [v.label for v in self.variants]
        dup = sorted({l for l in labels if labels.count(l) > 1})
        if dup:
            raise ValueError(f"methods listed twice: {', '.join(dup)}; list each once")
        if isinstance(self.lr, str) and self.lr not in LR_PROTOCOLS:
            raise ValueError(f"--lr must be a number, 'auto', 'target-val', 'support' or METHOD=LR pairs "
                             f"(got {self.lr!r})")
        if any(isinstance(x, (int, float)) and x < 0 for x in self.lr_grid):
            raise ValueError(f"--lr-grid holds a negative rate ({', '.join(f'{x:g}' for x in self.lr_grid)}); use "
                             "rates >= 0 (0 = no update)")
        for x in self.lr_grid:
            check_rate(x, "--lr-grid", zero_ok=True)
        if isinstance(self.lr, dict):
            for k, v in self.lr.items():
                check_rate(v, f"--lr {k}=", zero_ok=False)
        elif not isinstance(self.lr, str):
            check_rate(self.lr, "--lr", zero_ok=False)
        if isinstance(self.lr, dict):
            bad = [k for k in self.lr if k != "default" and k not in available_methods()]
            if bad:
                raise ValueError(f"--lr names unknown method(s) {', '.join(bad)}; use METHOD=LR with methods "
                                 f"from {', '.join(available_methods())}, or default=LR")
        if self.variant_lr not in ("method", "own"):
            raise ValueError(f"--variant-lr must be method or own (got {self.variant_lr!r})")
        if self.variant_lr == "own" and self.lr not in ("auto", "target-val"):
            raise ValueError("--variant-lr own chooses each --variant's rate on validation episodes; it needs --lr auto "
                             "or --lr target-val")
        if self.lr == "support" and not self.lr_grid:
            raise ValueError("--lr support chooses from --lr-grid, which is empty; give rates such as 0,1e-4,1e-3")
        if self.lr in ("auto", "target-val") and (not self.lr_grid or self.lr_episodes < 1):
            raise ValueError(f"--lr {self.lr} needs a non-empty --lr-grid and --lr-episodes >= 1")


def config_differences(old: dict, new: dict) -> list[str]:
    """Human-readable differences between two stored configs (for refusing a mismatched resume). A setting
    added after a run was stored matches when the new config holds its default: older runs stay resumable."""
    out = []
    defaults = EvalConfig().to_dict()
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a == b or (k not in old and k in defaults and b == defaults[k]):
            continue
        if k == "variants" and [v["label"] for v in a or []] != [v["label"] for v in b or []]:
            a, b, k = [v["label"] for v in a or []], [v["label"] for v in b or []], "methods"
        out.append(f"{k}: stored {json.dumps(a)[:160]} vs now {json.dumps(b)[:160]}")
    return out


def domain_file_stem(domain: str) -> str:
    """A safe, stable file name for a domain spec (which may be a path)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", domain).strip("._") or "domain"
    if stem != domain:
        stem = f"{stem[-40:]}-{hashlib.sha1(domain.encode()).hexdigest()[:8]}"
    return stem


# --- data and methods, resolved through the other areas' public APIs --------------------------------

def open_domain(spec: str, split: str):
    """A domain spec -> dataset of one split (pocket name, 'SOURCE:PATH' or a class-per-folder path)."""
    from .. import data
    if split == "test" and Path(spec).expanduser().is_dir():
        split = "all"                    # a plain folder has no class splits: all of it is test data
    return data.open_dataset(spec, split)


def make_method(name: str, backbone, config: AdaptConfig, head=None):
    from ..methods import make_method as factory
    return factory(name, backbone, config, head)


def available_methods() -> list[str]:
    from ..methods import METHODS
    return list(METHODS)


def checkpoint_resolution(model: str, checkpoint: str, default: int = 128) -> int:
    """The input size a checkpoint was trained at (its metadata), else `default`."""
    from ..models.weights import load_backbone_with_meta
    meta = load_backbone_with_meta(model, checkpoint)[1]
    res = meta.get("resolution") or (meta.get("config") or {}).get("resolution")
    return int(res) if res else default


def validation_source(domain: str) -> str | None:
    """The domain whose validation split stands in when `domain` has none (pocket targets -> source)."""
    try:
        from ..data import pocket
    except ImportError:
        return None
    targets = list(getattr(pocket, "POCKET_TARGETS", []))
    if domain in targets or domain == getattr(pocket, "POCKET_SOURCE", None):
        return pocket.POCKET_SOURCE
    return None


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
            from ..models.head import checkpoint_head
            from ..models.weights import load_backbone_with_meta
            # building a backbone draws its initial weights (all of them for `random`) from torch's global
            # generator: draw them from the run's seed in a forked generator, so that they do not depend on which
            # job this process ran first (workers, ranks, resumes) and every job starts from its own seed alone.
            # seed * 100_003 is what a fresh single-process run had drawn them from (task 0's seed).
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.config.seed * 100_003)
                backbone, meta = load_backbone_with_meta(self.config.model, ckpt)
            head = checkpoint_head(meta)
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
            split = self.config.split if kind in ("test", "tval") else _val_split_of(self.out_dir, domain)
            ds_domain = domain if kind in ("test", "tval") else _val_domain_of(self.out_dir, domain)
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


def _val_info(out_dir: Path) -> dict:
    path = out_dir / "episodes" / "validation.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _val_split_of(out_dir: Path, domain: str) -> str:
    return _val_info(out_dir)[domain]["split"]


def _val_domain_of(out_dir: Path, domain: str) -> str:
    return _val_info(out_dir)[domain]["domain"]


# --- worker processes -----------------------------------------------------------------------------------

_WORKER: dict = {}     # per-process cache of the Runner (set once by the pool initializer; never shared)


class Terminated(KeyboardInterrupt):
    """SIGTERM reached the parent of an evaluation: stop as Ctrl-C does (finished records are kept, the
    same command resumes; `tinytrain` prints one line)."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def _exit_with_parent(parent: int) -> None:
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
        threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
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


def _run_jobs(config: EvalConfig, out_dir: Path, jobs: list[tuple], workers: int,
              on_result: Callable[[dict], None], desc: str, progress: bool, device: str = "cpu") -> None:
    import os
    import signal
    import threading

    from tqdm import tqdm
    bar = tqdm(total=len(jobs), desc=desc, unit="job", disable=not progress, dynamic_ncols=True)
    old_term = None
    if threading.current_thread() is threading.main_thread():
        old_term = signal.signal(signal.SIGTERM, _raise_terminated)   # leave the pool's `with` cleanly
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


# --- the run ------------------------------------------------------------------------------------------

CONFIG_DIGEST = "config.sha256"
LR_SEARCH = "lr_search.jsonl"            # the lr search's records, kept as they finish          # beside config.json: the digest of the settings the results were made with


def config_digest(d: dict) -> str:
    """SHA-256 of a stored config's content (key order and whitespace do not matter)."""
    return hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_json(path: Path, what: str):
    """A JSON file of a run folder; a damaged one is a one-line ValueError naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} ({what}) is not valid JSON ({exc}); restore it, or use a new --out") from None
    except RecursionError:
        raise ValueError(f"{path} ({what}) is nested too deeply to be a tinytrain file; restore it, or use a "
                         "new --out") from None


def _write_config(out: Path, new: dict) -> None:
    write_json_atomic(out / "config.json", new)
    (out / CONFIG_DIGEST).write_text(config_digest(new) + "\n", encoding="utf-8")


def read_stored_config(out: Path) -> dict:
    """DIR/config.json, checked against DIR/config.sha256 (written with it): settings edited after the run
    began would make every report claim settings the results were not made with, so that is refused. A
    folder from before the digest existed gets one now."""
    path = out / "config.json"
    stored = read_json(path, "the run's settings")
    if not isinstance(stored, dict):
        raise ValueError(f"{path} must hold a JSON object of settings; restore it, or use a new --out")
    digest = out / CONFIG_DIGEST
    if digest.exists():
        if digest.read_text(encoding="utf-8", errors="replace").strip() != config_digest(stored):
            raise ValueError(f"{path} was edited after the run began (it no longer matches {digest.name}), so its "
                             "settings are not the ones the results were made with; restore it, or rerun into a "
                             "new --out")
    else:
        digest.write_text(config_digest(stored) + "\n", encoding="utf-8")
    return stored


def config_from_stored(d: dict, path: Path) -> "EvalConfig":
    """EvalConfig of a stored config.json; a field of the wrong type or value is a one-line ValueError."""
    try:
        config = EvalConfig.from_dict(d)
        config.validate()
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise ValueError(f"{path} holds settings this tinytrain cannot read ({exc}); restore it, or rerun into a "
                         "new --out") from None
    return config


def prepare_run_dir(config: EvalConfig, out_dir: str | Path) -> Path:
    """Create DIR with config.json, or check that an existing DIR was made by the same settings."""
    config.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.json"
    new = json.loads(json.dumps(config.to_dict()))
    if path.exists():
        old = read_stored_config(out)
        diff = config_differences(old, new)
        if diff and ResultStore(out / "results.jsonl").load():
            raise ValueError(f"{out} holds a run with different settings ({'; '.join(diff)}); "
                             "use a new --out, or repeat the original settings to resume")
        if diff:       # nothing was evaluated yet (e.g. the first attempt failed early): start over
            import shutil
            shutil.rmtree(out / "episodes", ignore_errors=True)
            (out / "lr.json").unlink(missing_ok=True)
            for stale in [out / LR_SEARCH, *shard_paths(out / LR_SEARCH)]:
                stale.unlink(missing_ok=True)
            _write_config(out, new)
    else:
        _write_config(out, new)
    return out


def _sampler(dataset, shape: EpisodeShape, seed: int):
    from ..data.sampler import EpisodeSampler
    return EpisodeSampler(dataset, seed=seed, **shape.sampler_kwargs())


def ensure_episodes(config: EvalConfig, out: Path, log: Callable[[str], None] = print) -> None:
    """Sample each domain's test episodes once and store them; later runs (and all methods) reuse them."""
    from ..data.types import load_episodes, save_episodes
    ep_dir = out / "episodes"
    ep_dir.mkdir(exist_ok=True)
    for domain in config.domains:
        path = ep_dir / (domain_file_stem(domain) + ".json")
        dataset = open_domain(domain, config.split)
        if path.exists():
            episodes, meta = load_episodes(path)
            if meta.get("classes") is not None and list(meta["classes"]) != list(dataset.classes):
                raise ValueError(f"{path} was sampled from a different class list than {domain!r} has now; "
                                 "use a new --out (the data changed)")
            if len(episodes) != config.tasks:
                raise ValueError(f"{path} holds {len(episodes)} episodes, not --tasks {config.tasks}; use a new --out")
            continue
        episodes = _sampler(dataset, config.episodes, config.seed).sample(config.tasks)
        meta = {"domain": domain, "split": config.split, "seed": config.seed, "tasks": config.tasks,
                "sampler": asdict(config.episodes), "dataset": dataset.name, "classes": list(dataset.classes)}
        tmp = path.with_suffix(".tmp")
        save_episodes(tmp, episodes, meta)
        tmp.replace(path)
        log(f"sampled {len(episodes)} {config.episodes.mode} episodes of {domain} ({len(dataset.classes)} classes) "
            f"-> {path}")


def check_support_split(config: EvalConfig, out: Path) -> None:
    """`--lr support` validates each rate on the support images left over after half of every class's trains;
    an episode whose classes all have one support image has none left. Refuse such a run before any training
    (naming the protocols that work) rather than fail those jobs and compare methods over unequal tasks."""
    if config.lr != "support" or all(v.method in TRAINING_FREE for v in config.variants):
        return
    from ..data.types import load_episodes
    for domain in config.domains:
        episodes, _ = load_episodes(out / "episodes" / (domain_file_stem(domain) + ".json"))
        bad = [i for i, e in enumerate(episodes) if max(e.shots(), default=0) < 2]
        if bad:
            raise ValueError(f"--lr support validates each rate on a split of the task's support set, but {len(bad)} "
                             f"of the {len(episodes)} episodes of {domain} (first: task {bad[0]}) have one support "
                             "image per class, nothing to validate on; use --lr target-val (held-out episodes of "
                             "the same domain), --lr auto with --lr-domain, or a fixed rate such as --lr 1e-3")


def ensure_validation_episodes(config: EvalConfig, out: Path, log: Callable[[str], None] = print,
                               flag: str = "--lr auto") -> None:
    """Validation episodes for `--lr auto`: from the domain's 'val' split, else from `lr_domain` or the
    pocket source's 'val' split. Never from the test classes."""
    from ..data.types import save_episodes
    info = _val_info(out)
    for domain in config.domains:
        path = out / "episodes" / (domain_file_stem(domain) + ".val.json")
        if domain in info and path.exists():
            continue
        candidates = [domain] + [d for d in (config.lr_domain, validation_source(domain)) if d and d != domain]
        dataset, used, errors = None, None, []
        for cand in candidates:
            try:
                dataset, used = open_domain(cand, "val"), cand
                break
            except (ValueError, FileNotFoundError, KeyError) as exc:
                errors.append(f"{cand}: {exc}")
        if dataset is None:
            raise ValueError(f"{flag} needs validation classes for {domain!r} but found none ({'; '.join(errors)}); "
                             "pass --lr-domain with a domain that has a 'val' split"
                             + (", or a fixed --lr" if flag == "--lr auto" else ""))
        shape = config.episodes
        if shape.mode == "fixed" and len(dataset.classes) < (shape.ways or 0):
            shape = EpisodeShape("fixed", len(dataset.classes), shape.shots, shape.queries)
        episodes = _sampler(dataset, shape, config.seed + 7919).sample(config.lr_episodes)
        save_episodes(path, episodes, {"domain": used, "split": "val", "for": domain, "sampler": asdict(shape)})
        info[domain] = {"domain": used, "split": "val"}
        write_json_atomic(out / "episodes" / "validation.json", info)
        log(f"validation episodes for {domain}: {len(episodes)} from {used} (val split)")


def ensure_target_val_episodes(config: EvalConfig, out: Path, log: Callable[[str], None] = print) -> None:
    """Held-out episodes of each target domain for `--lr target-val` (P>M>F's protocol): drawn from the same
    split as the test episodes with another seed, and never equal to one of them. They share classes with
    the test episodes (as in P>M>F); `--lr auto`, on the source's held-out classes, is the strict protocol."""
    from ..data.types import load_episodes, save_episodes
    for domain in config.domains:
        path = out / "episodes" / (domain_file_stem(domain) + ".tval.json")
        if path.exists():
            continue
        test, _ = load_episodes(out / "episodes" / (domain_file_stem(domain) + ".json"))
        seen = {(tuple(e.classes), tuple(e.support), tuple(e.query)) for e in test}
        dataset = open_domain(domain, config.split)
        sampler = _sampler(dataset, config.episodes, config.seed + 104_729)
        picked, tries = [], 0
        while len(picked) < config.lr_episodes and tries < 20 * config.lr_episodes:
            e = sampler.episode(tries)
            tries += 1
            key = (tuple(e.classes), tuple(e.support), tuple(e.query))
            if key not in seen:
                seen.add(key)
                picked.append(e)
        if len(picked) < config.lr_episodes:
            raise ValueError(f"--lr target-val: {domain!r} ({len(dataset.classes)} classes, {dataset.num_images} "
                             f"images) is too small to hold out {config.lr_episodes} episodes that differ from the "
                             "test episodes; use --lr auto, --lr support or a fixed --lr")
        save_episodes(path, picked, {"domain": domain, "split": config.split, "for": domain, "held_out_of": "test",
                                     "sampler": asdict(config.episodes)})
        log(f"held-out target episodes for {domain}: {len(picked)} (for --lr target-val)")


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
        return _val_info(out)

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
        _run_jobs(config, out, mine, workers, keep, "lr search (validation)", progress, device)
    gathered = done + [rec for part in ranks.gather(got) for rec in part]

    def decide() -> dict:
        failures = [rec for rec in gathered if "error" in rec]
        if failures:     # one line (exit 2); the tracebacks go to a file, never to the terminal
            (out / "failures.json").write_text(json.dumps(failures, indent=1))
            again = ("a rerun repeats it: change the settings" if any(f.get("recurs") for f in failures)
                     else "rerun the same command to retry")
            raise ValueError(f"the lr search failed on {len(failures)} jobs (details in {out / 'failures.json'}); "
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
                raise ValueError(f"--lr {config.lr}: {m} diverged at every --lr-grid rate "
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


def ensure_static_plan(config: EvalConfig, out: Path, log: Callable[[str], None] = print) -> None:
    """`--ablate-static`: one TinyTrain plan for every test task, chosen once on validation episodes of
    held-out classes (the source's, as for `--lr auto`), stored in DIR/static_plan.json."""
    if not any(v.options.get("fixed_plan") == STATIC_PLAN for v in config.variants):
        return
    path = out / "static_plan.json"
    if path.exists():
        return
    ensure_validation_episodes(config, out, log, flag="--ablate-static")
    from ..methods.tinytrain import static_plan
    runner = Runner(config, out)
    variant = next(v for v in config.variants if v.options.get("fixed_plan") == STATIC_PLAN)
    backbone, head = runner.backbone(variant.checkpoint)
    options = {k: v for k, v in variant.options.items() if k != "fixed_plan"}
    acfg = AdaptConfig(iterations=config.iterations, resolution=config.resolution, options=options,
                       memory_budget=variant.memory_budget if variant.memory_budget is not None else config.memory_budget,
                       compute_budget=config.compute_budget, seed=config.seed)
    tasks, sources = [], []
    for d in config.domains:
        src = _val_domain_of(out, d)
        if src in sources:
            continue
        sources.append(src)
        tasks += [runner.task(d, i, "val")[1] for i in range(config.lr_episodes)]
    plan = static_plan(backbone, head, tasks, acfg)
    write_json_atomic(path, {"plan": plan, "validation": sources, "episodes": len(tasks)})
    log(f"static TinyTrain plan chosen on {len(tasks)} validation episodes of {', '.join(sources)}: layers "
        f"{[u['index'] for u in plan['layers']]} -> {path}")


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
            _run_jobs(config, out, jobs, workers, collect, "evaluate", progress, device)
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
            (out / "failures.json").write_text(json.dumps(failures, indent=1))
            recurring = [f for f in failures if f.get("recurs")]
            if recurring:
                log(f"{len(failures)} jobs failed (details in {out / 'failures.json'}); {len(recurring)} with an "
                    f"error that a rerun repeats, first: {recurring[0]['error']}; change the settings, then rerun")
            else:
                log(f"{len(failures)} jobs failed (details in {out / 'failures.json'}); rerun the same command to "
                    "retry them")

        ranks.rank0(finish)
    return records
