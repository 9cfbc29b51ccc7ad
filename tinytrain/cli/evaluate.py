"""`tinytrain eval`: every method on identical stored episodes of each domain, resumable, in parallel (worker
processes, and torch.distributed ranks: torchrun or --nproc), with Table-1/Table-2 style reports, plots and
ablations."""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path

from ..errors import BadInput
from . import read_config_file, record_setting_defaults, refuse_settings_beside_config
from .adapt import add_policy_argument


def _csv(text: str) -> list[str]:
    return [t.strip() for t in str(text).split(",") if t.strip()]


def _lr(text: str):
    """'auto', 'target-val', 'support', a number, or per-method values 'fulltrain=1e-4,default=1e-3'. Every
    rate is checked (finite, positive, at most evalconfig.MAX_LR); a BadInput names the flag."""
    text = str(text).strip()
    if text in ("auto", "target-val", "support"):
        return text
    usage = f"--lr takes a number, 'auto', 'target-val', 'support' or METHOD=LR pairs, got {text!r}"
    try:
        if "=" in text:
            pairs = [item.split("=", 1) for item in _csv(text)]
            if any(len(p) != 2 for p in pairs):
                raise ValueError
            values = {}
            for k, v in pairs:
                k = k.strip()
                if not k:
                    raise BadInput(f"--lr {text!r}: a pair '={v.strip()}' names no method; write METHOD=LR, "
                                    "e.g. fulltrain=1e-4,default=1e-3")
                if k in values:
                    raise BadInput(f"--lr {text!r}: {k} is given twice; give each method one rate")
                values[k] = float(v)
        else:
            values = {"": float(text)}
    except BadInput:
        raise
    except ValueError:          # float() of a word
        raise BadInput(usage) from None
    from ..bench.evalconfig import check_rate
    try:
        for k, v in values.items():
            check_rate(v, f"--lr {k}=" if k else "--lr", zero_ok=False)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    return values[""] if "" in values else values


def add_run_arguments(p: argparse.ArgumentParser, defaults: dict) -> None:
    """Arguments shared by `eval` and `demo` (the demo only changes their defaults)."""
    g = p.add_argument_group("what to evaluate")
    g.add_argument("--model", default=defaults["model"], help="zoo model id (default: %(default)s)")
    g.add_argument("--checkpoint", default=defaults["checkpoint"],
                   help="'default' (the model's best shipped checkpoint: `tinytrain models`), 'pocket', 'pocket-long' or 'distilled' (shipped), 'random', 'imagenet' (mobilenetv2-1.0) or a checkpoint path (default: %(default)s)")
    g.add_argument("--domains", default=defaults["domains"],
                   help="comma-separated pocket domains, SOURCE:PATH Meta-Dataset sources or class-per-folder paths "
                        "(default: %(default)s)")
    g.add_argument("--methods", default=defaults["methods"],
                   help="comma-separated methods, or 'all' (default: %(default)s)")
    g.add_argument("--tasks", type=int, default=defaults["tasks"], help="episodes per domain (default: %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="fixes episodes and training (default: %(default)s)")
    g = p.add_argument_group("budgets and training")
    g.add_argument("--memory-budget", default=None, help="backward memory budget, e.g. 1MB, 512KB (default: per method)")
    g.add_argument("--compute-budget", default=None, help="compute budget: '15%%' of FullTrain backward MACs or MACs "
                   "such as 6.5M (default: per method)")
    g.add_argument("--resolution", type=int, default=None,
                   help="input size (default: the checkpoint's training resolution, else 128)")
    g.add_argument("--iterations", type=int, default=defaults["iterations"],
                   help="fine-tuning iterations per task, at most 100,000 (default: %(default)s)")
    g.add_argument("--lr", default=defaults["lr"],
                   help="learning rate: a number for every method; 'auto' to pick per domain and method from "
                        "--lr-grid on validation episodes of held-out source classes (never test episodes); "
                        "'target-val' to pick it on held-out episodes of each target domain (P>M>F's protocol); "
                        "'support' to pick per task from "
                        "--lr-grid on a split of that task's own support set; or METHOD=LR pairs such as "
                        "fulltrain=1e-4,default=1e-3 (default: %(default)s)")
    g.add_argument("--lr-grid", default=defaults.get("lr_grid"),
                   help="candidates for --lr auto / target-val / support; 0 = no update (default: 0,1e-4,1e-3,1e-2, "
                        "tinytrain.bench.evalconfig.DEFAULT_LR_GRID, the same for the Python harness)")
    g.add_argument("--lr-episodes", type=int, default=3, help="validation episodes per lr candidate (default: %(default)s)")
    g.add_argument("--lr-domain", default=None,
                   help="domain with a 'val' split to choose lr on when a domain has none (pocket targets use "
                        "the pocket source automatically)")
    add_policy_argument(g)
    g = p.add_argument_group("episodes")
    g.add_argument("--mode", choices=["metadataset", "fixed"], default=defaults["mode"],
                   help="Meta-Dataset variable way/shot episodes, or fixed N-way K-shot (default: %(default)s)")
    g.add_argument("--ways", type=int, default=defaults.get("ways"), help="fixed mode: classes per episode")
    g.add_argument("--shots", type=int, default=defaults.get("shots"), help="fixed mode: support images per class")
    g.add_argument("--queries", type=int, default=defaults.get("queries"), help="fixed mode: query images per class")
    g.add_argument("--max-ways", type=int, default=defaults.get("max_ways", 50),
                   help="metadataset mode: most classes per episode (default: %(default)s)")
    g.add_argument("--max-support", type=int, default=defaults.get("max_support", 500),
                   help="metadataset mode: largest support set (default: %(default)s)")
    g = p.add_argument_group("ablations (each adds its own table and plot)")
    g.add_argument("--ablate-meta", metavar="CHECKPOINT", default=None,
                   help="also run every method on this second checkpoint (e.g. the one without meta-training)")
    g.add_argument("--ablate-score", action="store_true", help="TinyTrain with each layer-selection score variant")
    g.add_argument("--ablate-channels", action="store_true", help="TinyTrain with Fisher, L2-norm and random channels")
    g.add_argument("--ablate-static", action="store_true",
                   help="TinyTrain with one plan for every task, chosen once on validation episodes of held-out "
                        "classes (isolates task adaptivity)")
    g.add_argument("--variant", action="append", default=[], metavar="METHOD[key=value,...]",
                   help="an extra column: METHOD with these options, e.g. "
                        "'tinytrain[ratio_policy=fisher-mass,stop_rule=skip]' (repeatable; docs/engine.md lists "
                        "the options)")
    g.add_argument("--variant-lr", choices=("method", "own"), default="method",
                   help="with --lr auto/target-val: each --variant trains at its method's validated rate (method, "
                        "default) or at its own, searched on the same validation episodes (own; a fair comparison "
                        "of options, at the cost of one more search per variant)")
    g.add_argument("--budget-sweep", default=None, metavar="SIZES",
                   help="TinyTrain at these memory budgets, e.g. 128KB,256KB,512KB,1MB")
    g = p.add_argument_group("running")
    g.add_argument("--workers", type=int, default=defaults["workers"],
                   help="worker processes, one thread each (default: %(default)s)" if defaults["workers"] else
                   "worker processes per rank, one thread each (default: the CPUs per rank on this node, at most 4)")
    g.add_argument("--out", default=defaults["out"], help="run directory (default: %(default)s)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def check_domains(domains: list[str], flag: str = "--domains") -> None:
    """Every domain opens as a dataset, before anything is written or chosen for it (one line naming it)."""
    from ..data import open_dataset
    if not domains:
        raise BadInput(f"{flag} is empty; give pocket target names, SOURCE:PATH or class-per-folder paths")
    for d in domains:
        try:
            open_dataset(d, "all")
        except (ValueError, OSError) as exc:
            raise BadInput(f"{flag} {d}: {exc}") from None


def config_from_file(args: argparse.Namespace):
    """`--config FILE`: every run setting from a JSON file in config.json's layout, checked as a stored one."""
    from ..bench.evalconfig import EvalConfig
    refuse_settings_beside_config(args)
    path = Path(args.config).expanduser()
    d = read_config_file(path)
    try:
        config = EvalConfig.from_dict(d)
        config.validate()
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise BadInput(f"--config {path}: {exc}") from None
    check_domains(config.domains, f"--config {path}: domain")
    return config


def config_from_args(args: argparse.Namespace):
    """argparse namespace -> EvalConfig (validates every value with a message naming the flag)."""
    if getattr(args, "config", None):
        return config_from_file(args)
    from ..bench.ablations import build_variants
    from ..bench.evalconfig import EvalConfig, available_methods, checkpoint_resolution
    from ..data.episodes import EpisodeSpec
    from ..costs.units import parse_bytes, parse_compute_budget

    check_domains(_csv(args.domains))
    known = available_methods()
    methods = known if args.methods == "all" else _csv(args.methods)
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise BadInput(f"unknown method(s) {', '.join(unknown)}; --methods takes 'all' or some of {', '.join(known)}")
    if args.mode == "fixed" and None in (args.ways, args.shots, args.queries):
        raise BadInput("--mode fixed needs --ways, --shots and --queries")
    if args.mode == "metadataset" and (args.ways, args.shots, args.queries) != (None, None, None):
        # never ignore them silently: Meta-Dataset episodes draw their own way and shot
        raise BadInput("--ways, --shots and --queries shape fixed episodes: add --mode fixed, or drop them for "
                        "Meta-Dataset-style episodes (--max-ways and --max-support cap those)")
    if args.workers is None:
        args.workers = default_workers(getattr(args, "nproc", 1))
    if args.workers < 1:
        raise BadInput(f"--workers must be >= 1 (got {args.workers})")
    from ..deploy.session import check_iterations
    try:
        check_iterations(args.iterations)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    lr = _lr(args.lr)
    from ..bench.evalconfig import DEFAULT_LR_GRID
    try:
        grid = DEFAULT_LR_GRID if args.lr_grid is None else tuple(float(x) for x in _csv(args.lr_grid))
    except ValueError:
        raise BadInput(f"--lr-grid must be comma-separated numbers, got {args.lr_grid!r}") from None
    def flagged(parse, flag: str, value):
        try:
            return parse(value)
        except ValueError as exc:
            raise BadInput(f"{flag}: {exc}") from None

    budgets = [flagged(parse_bytes, "--budget-sweep", b) for b in _csv(args.budget_sweep)] if args.budget_sweep \
        else None
    memory_budget = flagged(parse_bytes, "--memory-budget", args.memory_budget) if args.memory_budget else None
    compute_budget = (flagged(parse_compute_budget, "--compute-budget", args.compute_budget)
                      if args.compute_budget else None)
    if any(x < 0 for x in grid):
        raise BadInput(f"--lr-grid holds a negative rate ({args.lr_grid}); use rates >= 0 (0 = no update)")
    from ..bench.evalconfig import check_rate
    try:
        for x in grid:
            check_rate(x, "--lr-grid", zero_ok=True)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    try:
        variants = build_variants(methods, args.ablate_meta, args.ablate_score, args.ablate_channels, budgets,
                                  static=getattr(args, "ablate_static", False),
                                  options=getattr(args, "variant", None))
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    if getattr(args, "sparseupdate_policy", None):
        from ..methods.sparseupdate_policy import read_policy
        if "sparseupdate" not in methods:
            raise BadInput("--sparseupdate-policy needs sparseupdate in --methods")
        policy, _ = read_policy(args.sparseupdate_policy, args.model)   # embedded: the run stays reproducible
        policy = {"n_bias": policy["n_bias"], "ratios": {str(k): v for k, v in policy["ratios"].items()}}
        variants = [replace(v, options={**v.options, "policy": policy}) if v.method == "sparseupdate" else v
                    for v in variants]
    if args.checkpoint == "default":     # stored by its concrete name: a resumed run never changes weights
        from ..models.weights import default_checkpoint
        args.checkpoint = default_checkpoint(args.model)
    resolution = args.resolution or checkpoint_resolution(args.model, args.checkpoint,
                                                          getattr(args, "resolution_fallback", 128))
    if resolution < 8:
        raise BadInput(f"--resolution must be at least 8 (got {resolution})")
    shape = EpisodeSpec(args.mode, args.ways, args.shots, args.queries, args.max_ways, args.max_support)
    return EvalConfig(model=args.model, checkpoint=args.checkpoint, domains=_csv(args.domains), variants=variants,
                      tasks=args.tasks, seed=args.seed,
                      memory_budget=memory_budget, compute_budget=compute_budget,
                      resolution=resolution, iterations=args.iterations, lr=lr, lr_grid=grid,
                      lr_episodes=args.lr_episodes, lr_domain=args.lr_domain, episodes=shape,
                      variant_lr=getattr(args, "variant_lr", "method"))


def print_summary(text: str, files: list[Path], out: Path) -> None:
    print(text)
    pngs = [f for f in files if f.suffix == ".png"]
    print(f"report: {out / 'report.md'}")
    print(f"results: {out / 'results.jsonl'}")
    if pngs:
        print("plots: " + ", ".join(str(p) for p in pngs))


def run(args: argparse.Namespace) -> int:
    """One process (as always), `--nproc N` local ranks, or one rank of torchrun. The folder is locked for the
    whole launch (OUT/eval.lock), so a second launch on it refuses; the report is written once, when every
    rank is done."""
    from ..bench import distributed as dist_eval
    from ..bench.runner import raise_terminated

    if args.nproc < 1:
        raise BadInput(f"--nproc must be at least 1 (got {args.nproc}); 1 evaluates in this process")
    if args.nproc > 1 and dist_eval.under_torchrun():
        raise BadInput("--nproc starts its own ranks; under torchrun leave it out (torchrun's --nproc-per-node "
                        "and --nnodes set the ranks)")
    try:
        device = dist_eval.check_device(args.device)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    if args.workers is None:
        args.workers = default_workers(args.nproc)
    old = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (Slurm's time limit, torchrun stopping a launch) ends a launch as Ctrl-C does: the lock is
        # released and finished results are kept
        old = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        if dist_eval.under_torchrun():
            return _torchrun_rank(args, device)
        return _run_here(args, device)
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


def _run_here(args: argparse.Namespace, device: str) -> int:
    """One process, or `--nproc N` ranks started from here; this process holds the lock and writes the report."""
    from ..bench import distributed as dist_eval
    from ..bench.harness import run_eval

    config = lr_protocol_for_domains(config_from_args(args))
    config.validate()                    # bad settings: refused before the folder (and its lock) exist
    out = Path(args.out)
    progress = not args.no_progress
    with dist_eval.run_lock(out):
        if args.nproc == 1:
            records = run_eval(config, out, workers=args.workers, progress=progress, device=device, lock=False)
        else:
            code = _launch_ranks(config, out, args.nproc, args.workers, progress, device)
            if code:
                return code
            from ..bench.harness import in_job_order
            from ..bench.results import ResultStore
            records = in_job_order(config, ResultStore(out / "results.jsonl").load())
        return finish(config, out, records)


def default_workers(nproc: int = 1) -> int:
    """Worker processes per rank: this node's CPUs shared by its ranks, at most 4 (the default of old)."""
    from ..bench.distributed import local_world_size
    return max(1, min(4, (os.cpu_count() or 1) // local_world_size(nproc)))


def _eval_rank(config_dict: dict, out: str, workers: int, progress: bool, device: str) -> None:
    """One rank of `--nproc N` (a spawned process): its share of the jobs. Rank 0 prints a refusal once;
    the exit status tells the launcher (2: bad input, said already)."""
    from ..bench.distributed import RankStopped
    from ..bench.evalconfig import EvalConfig
    from ..bench.harness import run_eval
    from ..bench.runner import exit_with_parent
    from ..offline.distributed import exit_rank
    # a launcher killed outright (SIGKILL) takes its ranks with it: none may write on without the lock
    threading.Thread(target=exit_with_parent, args=(os.getppid(),), daemon=True).start()
    try:
        run_eval(EvalConfig.from_dict(config_dict), out, workers=workers, progress=progress, device=device,
                 lock=False)
    except RankStopped:
        exit_rank(2)
    except (BadInput, FileNotFoundError) as exc:
        print(f"tinytrain eval: error: {exc}", file=sys.stderr)
        exit_rank(2)


def _launch_ranks(config, out: Path, nproc: int, workers: int, progress: bool, device: str) -> int:
    """`--nproc N`: N local ranks over gloo; 0 when all finished, else the exit status after one line."""
    import torch.multiprocessing as tmp

    from ..bench.distributed import launch
    try:
        launch(_eval_rank, nproc, (config.to_dict(), str(out), workers, progress, device))
    except tmp.ProcessExitedException as exc:
        if exc.exit_code == 2:       # a refusal, printed by the rank
            return 2
        how = f"was killed ({exc.signal_name})" if exc.signal_name else f"exited with status {exc.exit_code}"
        print(f"tinytrain eval: rank {exc.error_index} {how}; the other ranks were stopped. Finished results are "
              f"kept in {out}; the same command resumes (with any number of ranks)", file=sys.stderr)
        return 1
    except tmp.ProcessRaisedException as exc:
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        print(f"tinytrain eval: internal error in rank {exc.error_index}: {last} (a bug in tinytrain; finished "
              f"results are kept in {out} and the same command resumes)", file=sys.stderr)
        return 1
    return 0


def _torchrun_rank(args: argparse.Namespace, device: str) -> int:
    """One rank of torchrun: rank 0 reads the settings (building data on first use) and holds the lock while
    every rank runs its share; rank 0 writes the report. Ranks leave through exit_rank (gloo's threads can
    abort a normal interpreter exit)."""
    from contextlib import ExitStack

    from ..bench.distributed import Ranks, RankStopped, init_from_env, run_lock
    from ..bench.harness import run_eval
    from ..offline.distributed import exit_rank

    init_from_env()
    ranks = Ranks.current()
    try:
        config = ranks.rank0(lambda: lr_protocol_for_domains(config_from_args(args)), share=True)
        config.validate()
        out = Path(args.out)
        with ExitStack() as held:
            ranks.rank0(lambda: held.enter_context(run_lock(out)))
            records = run_eval(config, out, workers=args.workers, progress=not args.no_progress, device=device,
                               lock=False, ranks=ranks)
            code = finish(config, out, records) if ranks.rank == 0 else 0
    except RankStopped:
        exit_rank(2)
    except (BadInput, FileNotFoundError) as exc:
        print(f"tinytrain eval: error: {exc}", file=sys.stderr)
        exit_rank(2)
    except KeyboardInterrupt:
        if ranks.rank == 0:
            print("interrupted; finished work is kept and the same command resumes it", file=sys.stderr)
        exit_rank(130)
    exit_rank(code)


def finish(config, out: Path, records: list[dict]) -> int:
    """Write the report of a finished launch, print where it is, and the exit status (diverged or missing
    jobs are not a success)."""
    from ..bench.summary import write_run_report

    text, files = write_run_report(out, config, records)
    print_summary(text, files, out)
    expected = len(config.domains) * config.tasks * len(config.variants)
    diverged = [r for r in records if r.get("accuracy") is None]
    if diverged:
        counts: dict[str, int] = {}
        for r in diverged:
            counts[r["method"]] = counts.get(r["method"], 0) + 1
        rates = sorted({f"{r['lr']:g}" for r in diverged if isinstance(r.get("lr"), (int, float))})
        print(f"{len(diverged)} of {expected} jobs diverged ({', '.join(f'{m}: {n}' for m, n in counts.items())}"
              f"{', at lr ' + ', '.join(rates) if rates else ''}): recorded as diverged, never as accuracies, and "
              "left out of every table; lower --lr (e.g. 1e-3) and rerun into a new --out")
        return 2
    if len(records) < expected:
        import json
        failures = json.loads((out / "failures.json").read_text()) if (out / "failures.json").exists() else []
        recurring = [f for f in failures if f.get("recurs")]
        if recurring:
            print(f"{expected - len(records)} of {expected} results are missing; {len(recurring)} jobs failed with an "
                  f"error that a rerun repeats, first: {recurring[0]['error']}; change the settings, then rerun")
            return 2
        print(f"{expected - len(records)} of {expected} results are missing (failed jobs); "
              "rerun the same command to retry them")
        return 1
    return 0


def lr_protocol_for_domains(config):
    """`--lr auto` chooses on validation classes, which a plain class-per-folder domain does not have. When no
    domain has any, choose per domain and method on held-out episodes of the same folders (`--lr
    target-val`, P>M>F's protocol) and say so: it works for every episode Meta-Dataset sampling can draw,
    where a per-task split of the support set (`--lr support`) fails on episodes whose classes all have one
    support image. When only some domains lack them, stop before sampling and name the options that work."""
    if config.lr != "auto":
        return config
    from ..bench.episodes import open_domain, validation_source

    def has_val(domain: str) -> bool:
        for cand in [domain] + [d for d in (config.lr_domain, validation_source(domain)) if d and d != domain]:
            try:
                open_domain(cand, "val")
                return True
            except (ValueError, FileNotFoundError, KeyError):
                continue
        return False

    lacking = [d for d in config.domains if not has_val(d)]
    if not lacking:
        return config
    if len(lacking) < len(config.domains):
        raise BadInput(f"--lr auto needs validation classes, and {', '.join(lacking)} has none (a plain folder has "
                        "no class splits); pass --lr-domain with a domain that has a 'val' split, --lr target-val "
                        "(choose on held-out episodes of each domain) or a fixed rate such as --lr 1e-3")
    print(f"note: {', '.join(lacking)} {'has' if len(lacking) == 1 else 'have'} no validation classes for --lr auto; choosing the learning rate per "
          "domain and method on held-out episodes of the same folders, never a test episode (--lr target-val); "
          "pass --lr 1e-3 for a fixed rate, or --lr-domain")
    return replace(config, lr="target-val")


def report(args: argparse.Namespace) -> int:
    from ..bench.rundir import config_from_stored, read_stored_config
    from ..bench.results import ResultStore
    from ..bench.summary import write_run_report

    out = Path(args.dir)
    if not (out / "config.json").is_file():
        raise BadInput(f"{out} is not an evaluation directory (no config.json); pass the --out of a `tinytrain eval` run")
    config = config_from_stored(read_stored_config(out), out / "config.json")
    store = ResultStore(out / "results.jsonl")
    from ..bench.harness import in_job_order
    records = in_job_order(config, store.load())
    labels, domains = {v.label for v in config.variants}, set(config.domains)
    strangers = sorted({f"{r['method']} on {r['domain']}" for r in records
                        if r["method"] not in labels or r["domain"] not in domains})
    if strangers:
        raise BadInput(f"{out / 'results.jsonl'} holds results ({', '.join(strangers[:3])}) that {out / 'config.json'} "
                        "does not list; the settings were edited: restore config.json, or rerun into a new --out")
    text, files = write_run_report(out, config, records)
    print_summary(text, files, out)
    note_skipped(store)
    return 0


def note_skipped(store) -> None:
    if store.skipped:
        print(f"note: {store.skipped} line(s) of {store.path} are not complete results (e.g. no accuracy) and were "
              "left out; `tinytrain eval` with the same settings runs those jobs again")


NOT_RUN_SETTINGS = {"config", "out", "workers", "no_progress", "nproc", "device"}   # how, not what, to run
EVAL_DEFAULTS = {"model": "mcunet-5fps", "checkpoint": "default",
                 "domains": "pocket-scripts,pocket-digits,pocket-textures", "methods": "all", "tasks": 200,
                 "iterations": 40, "lr": "auto", "mode": "metadataset",
                 "workers": None, "out": "tinytrain-eval"}    # workers: per rank, resolved in run()


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate methods on few-shot episodes (Table 1/2 style reports, plots, ablations)",
                       description="Run every method on identical stored episodes of each domain. Results are "
                                   "appended to OUT/results.jsonl as they finish; rerunning the same command resumes.")
    add_run_arguments(p, EVAL_DEFAULTS)
    p.add_argument("--config", metavar="FILE",
                   help="take every run setting from FILE, a JSON object in the layout of a run's OUT/config.json "
                        "(copy one, or write your own); no other run setting may be given with it")
    record_setting_defaults(p, NOT_RUN_SETTINGS)
    g = p.add_argument_group("distributed (docs/distributed.md)")
    g.add_argument("--nproc", type=int, default=1,
                   help="ranks on this machine, each with its own --workers, over torch.distributed (gloo); under "
                        "torchrun leave it out (default: %(default)s)")
    g.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="where each rank trains: cpu, or cuda (the rank's local GPU) (default: cuda when torch sees "
                        "a GPU, else cpu)")
    p.set_defaults(func=run)
    r = sub.add_parser("eval-report", help="rebuild the tables and plots of an evaluation directory")
    r.add_argument("dir", help="the --out directory of a `tinytrain eval` run")
    r.set_defaults(func=report)
