"""`tinytrain pretrain`, `tinytrain metatrain` and `tinytrain checkpoint-eval`: the offline stage.

    tinytrain pretrain  --model mcunet-5fps --out runs/pretrain-mcunet-5fps
    tinytrain metatrain --model mcunet-5fps --init runs/pretrain-mcunet-5fps/best.safetensors \
                        --out runs/meta-mcunet-5fps [--nproc 2]
    tinytrain checkpoint-eval --model mcunet-5fps --checkpoints random runs/.../best.safetensors
    tinytrain distill   --student mcunet-5fps --out runs/distill-mcunet-5fps [--nproc 2]

Every run writes config.json, log.jsonl, best/last .safetensors and a resumable state into --out;
running the same command again resumes it.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..jsonfile import write_json_atomic
from ..errors import BadInput
from . import read_config_file, record_setting_defaults, refuse_settings_beside_config

DEFAULT_RESOLUTION = 64


def _default_source() -> str:
    from ..data.pocket import POCKET_SOURCE
    return POCKET_SOURCE


def _prepare_data(spec: str) -> str:
    """Build the pocket benchmark on first use; return the data version recorded in the run config."""
    from ..data.pocket import POCKET_DOMAINS, POCKET_VERSION, ensure_pocket
    if spec in POCKET_DOMAINS:
        ensure_pocket()
        return POCKET_VERSION
    return ""


CONFIG_HELP = ("every setting from a run's config.json (e.g. runs/{stage}-M/config.json), to reproduce that run; "
               "given with it only --out, --restart, --max-steps, --no-progress, --device, --nproc, --save-every and "
               "--log-every")


def _add_common(p, stage: str) -> None:
    p.add_argument("--config", metavar="FILE", help=CONFIG_HELP.format(stage=stage))
    p.add_argument("--model", default="mcunet-5fps", help="zoo model name (see `tinytrain models`)")
    p.add_argument("--data", default=None, help="source dataset: pocket domain name, '<source>:<path>' or a "
                   "class-per-folder tree (default: the pocket benchmark's source domain)")
    p.add_argument("--out", default=None, help=f"run folder (default: runs/{stage}-<model>)")
    p.add_argument("--resolution", type=int, default=DEFAULT_RESOLUTION, help="input size in pixels")
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--warmup-epochs", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--momentum", type=float, help="SGD momentum")
    p.add_argument("--ways", help="episode ways, e.g. 5 or 5-20 (validation episodes; also training for metatrain)")
    p.add_argument("--shots", help="support images per class, e.g. 5 or 1-10")
    p.add_argument("--queries", type=int, help="query images per class")
    p.add_argument("--val-episodes", type=int, help="validation episodes on held-out classes (0: none)")
    p.add_argument("--flip", action="store_true", default=None, help="add horizontal flips to augmentation")
    p.add_argument("--crop-scale", type=float, help="smallest area fraction kept by the random resized crop "
                   "(default 0.35; P>M>F uses 0.05 on MiniImageNet)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (GPU when available), cpu, cuda, cuda:1 ...")
    p.add_argument("--restart", action="store_true", help="discard an unfinished run in --out instead of resuming")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop after this many optimizer steps (resumable; for timing and smoke runs)")
    p.add_argument("--save-every", type=int, help="save the resumable state every N steps (and every epoch)")
    p.add_argument("--log-every", type=int, help="write a log record every N steps")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


_SAME_NAME = ("model", "resolution", "epochs", "lr", "warmup_epochs", "weight_decay", "ways", "shots", "queries",
              "val_episodes", "flip", "crop_scale", "seed", "device", "batch_size", "label_smoothing",
              "episodes_per_epoch", "batch_episodes", "momentum", "bn_mode", "init", "nproc", "frozen_blocks",
              "lite_residual",
              "warmup_lr", "min_lr")
_FIELDS = {**{name: name for name in _SAME_NAME}, "save_every": "save_every_steps", "log_every": "log_every_steps"}


# flags that may accompany --config: where and how the run goes, not what it computes
NOT_RUN_SETTINGS = {"config", "out", "restart", "max_steps", "no_progress", "device", "nproc", "save_every",
                    "log_every", "export"}
OPERATIONAL = {"device": "device", "nproc": "nproc", "save_every": "save_every_steps",
               "log_every": "log_every_steps"}


def _config_from_file(cls, args, stage: str):
    """--config FILE: the run config stored in FILE, with only the operational flags (--device, --nproc,
    --save-every, --log-every) taken from the command line; any other setting flag is refused."""
    import dataclasses
    refuse_settings_beside_config(args)
    path = Path(args.config)
    stored = read_config_file(path)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(stored) - known)
    if unknown:
        raise BadInput(f"--config {path} is not a {stage} run's config: it has {', '.join(map(repr, unknown[:4]))}, "
                       f"which {stage} does not take")
    values = dict(stored)
    for flag, field_name in OPERATIONAL.items():
        if getattr(args, flag, None) is not None and field_name in known:
            values[field_name] = getattr(args, flag)
    defaults = cls()
    for name in values:       # JSON types against the defaults' (a hand-edited file)
        default = getattr(defaults, name)
        if not _same_json_type(values[name], default):
            kind = {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
                    list: "a list", dict: "an object"}.get(type(default), type(default).__name__)
            raise BadInput(f"--config {path}: {name} must be {kind}, like the default {default!r} "
                           f"(got {values[name]!r})")
    return cls(**values)


def _same_json_type(value, default) -> bool:
    if default is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def _config_from_args(cls, args, stage: str):
    if args.config:
        config = _config_from_file(cls, args, stage)
        config.check()
        version = _prepare_data(config.data)
        if version != config.data_version:
            print(f"note: {args.config} was trained on {config.data} data version {config.data_version!r}; this "
                  f"machine has {version!r}", file=sys.stderr)
        return config, Path(args.out or Path(args.config).parent)
    values = {f: getattr(args, a) for a, f in _FIELDS.items() if getattr(args, a, None) is not None}
    values["data"] = args.data or _default_source()
    config = cls(**values)
    config.check()        # numbers and episode shapes, before any data is built or read
    config.data_version = _prepare_data(config.data)
    out = Path(args.out or f"runs/{stage}-{config.model}")
    return config, out


def _check_run_flags(args) -> None:
    """--device and --nproc, checked before any data or model is touched: a device this machine lacks, or
    fewer than one process, is a one-line error naming the flag."""
    nproc = getattr(args, "nproc", None)
    if nproc is not None and nproc < 1:
        raise BadInput(f"--nproc must be at least 1 (got {nproc}); 1 trains in this process")
    name = getattr(args, "device", None)
    if name is None or name == "auto":
        return
    import torch
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise BadInput(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise BadInput(f"--device {name}: this machine has no CUDA GPU that torch can use; use --device cpu "
                            "(or auto)")
        if device.index is not None and device.index >= count:
            raise BadInput(f"--device {name}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise BadInput(f"--device {name}: Apple's MPS is not available here; use --device cpu (or auto)")
    elif device.type != "cpu":
        raise BadInput(f"--device {name!r}: training runs on auto, cpu, cuda or cuda:N")


def _report(result, out: Path) -> int:
    if not result.completed:
        print(f"stopped at step {result.step}/{result.total_steps}; the same command resumes it ({out})")
        return 0
    if not (out / "best.safetensors").is_file():     # deleted after the run finished: never claim it
        from ..offline.rundir import RunDir
        RunDir(out).missing_best()
    best = "n/a" if result.best_val is None else f"{100 * result.best_val:.2f} %"
    print(f"done: {result.step} steps; best validation accuracy {best}; checkpoint {out / 'best.safetensors'}")
    return 0


def cmd_pretrain(args) -> int:
    from ..offline.pretrain import PretrainConfig, run_pretrain
    _check_run_flags(args)
    config, out = _config_from_args(PretrainConfig, args, "pretrain")
    result = run_pretrain(config, out, restart=args.restart, stop_at_step=args.max_steps,
                          progress=not args.no_progress)
    return _report(result, out)


def _metatrain_worker(config_dict: dict, out: str, restart: bool, max_steps: int | None, progress: bool) -> None:
    from ..offline.metatrain import MetaTrainConfig, run_metatrain
    run_metatrain(MetaTrainConfig.from_dict(config_dict), out, restart=restart, stop_at_step=max_steps,
                  progress=progress)


def _run_stage(config, out: Path, args, worker, run, from_log):
    """Run a training stage here, in `--nproc` spawned processes, or as one rank of torchrun. Ranks other
    than 0 leave inside (their work is done); `from_log(records)` rebuilds the result after spawned runs.
    Returns (result, under_torchrun): a torchrun rank 0 must leave through `exit_rank` after reporting."""
    from ..offline.distributed import exit_rank, init_from_env, launch
    from ..offline.rundir import RunDir
    progress = not args.no_progress
    if config.nproc > 1:
        launch(worker, config.nproc, (config.to_dict(), str(out), args.restart, args.max_steps, progress))
        return from_log(RunDir(out).read_log()), False
    if init_from_env():   # under torchrun: join its process group; the work is sharded over its ranks
        import torch.distributed as dist
        rank = dist.get_rank()
        try:
            result = run(config, out, restart=args.restart, stop_at_step=args.max_steps,
                         progress=progress and rank == 0)
        finally:
            dist.destroy_process_group()
        if rank != 0:
            exit_rank(0)
        return result, True
    return run(config, out, restart=args.restart, stop_at_step=args.max_steps, progress=progress), False


def cmd_metatrain(args) -> int:
    from ..offline.distributed import exit_rank
    from ..offline.metatrain import MetaTrainConfig, TrainResult, run_metatrain
    _check_run_flags(args)
    config, out = _config_from_args(MetaTrainConfig, args, "metatrain")
    config.check()
    if config.nproc > 1 and config.batch_episodes % config.nproc:
        raise BadInput(f"--batch-episodes ({config.batch_episodes}) must be a multiple of --nproc "
                        f"({config.nproc}); e.g. --batch-episodes {config.nproc}")

    def from_log(log):
        hist = [r for r in log if "val_acc" in r]
        return TrainResult(out, max((r.get("step", 0) for r in log), default=0), config.epochs * config.steps_per_epoch,
                           max((r["val_acc"] for r in hist), default=None), hist)

    result, torchrun = _run_stage(config, out, args, _metatrain_worker, run_metatrain, from_log)
    code = _report(result, out)
    if torchrun:
        exit_rank(code)
    return code


def _earlier_results(args, domains: list[str]):
    """The per-episode results in --json when it holds this exact evaluation (same model, checkpoints,
    domains, episodes, resolution and seed), so a table or a card can be rendered again without evaluating
    again; None otherwise. Checkpoint files are named, not hashed: change a file, delete the JSON."""
    from ..offline.evaluate import summarize
    if not args.json or not Path(args.json).is_file():
        return None
    try:
        old = json.loads(Path(args.json).read_text())
    except ValueError:
        return None
    same = (old.get("model") == args.model and old.get("checkpoints") == args.checkpoints
            and old.get("episodes") == args.episodes and old.get("resolution") == args.resolution
            and old.get("seed") == args.seed
            and list(old.get("results", {})) == domains + (["all"] if len(domains) > 1 else []))
    if not same:
        return None
    return {d: {c: summarize(s["accs"]) for c, s in row.items()} for d, row in old["results"].items()}


def run_checkpoint_eval(args, last: str | None = None) -> dict:
    """`checkpoint-eval`'s work, also used by the maintainers' release script (scripts/release.py): check
    --resolution, build the pocket data on first use, evaluate (or reuse an identical earlier --json), print
    the table and the paired table with `last` (one of --checkpoints; default: the last) as the last column,
    and write --json. Returns {domain: {checkpoint: AccuracySummary}} in that column order; args.domains
    (the default filled in) and args.resolution (a number unless 'native') are set in place."""
    from ..offline.evaluate import evaluate_checkpoints, format_table, paired_table
    from ..data.pocket import POCKET_TARGETS
    domains = args.domains = args.domains or list(POCKET_TARGETS)
    last = last or args.checkpoints[-1]
    if last not in args.checkpoints:
        raise BadInput(f"{last} is not one of --checkpoints")
    if args.resolution != "native":
        if not str(args.resolution).isdigit():
            raise BadInput(f"--resolution must be a number of pixels or 'native', got {args.resolution!r}")
        args.resolution = int(args.resolution)
    if args.json:        # written after the evaluation (an identical earlier one is reused): check it first
        from ..deploy.outputs import check_output_file
        check_output_file(args.json, "--json", overwrite=True)
    version = ""
    for d in domains:
        version = _prepare_data(d) or version
    results = _earlier_results(args, domains)
    if results is None:
        results = evaluate_checkpoints(args.model, args.checkpoints, domains, episodes=args.episodes,
                                       resolution=args.resolution, seed=args.seed, progress=not args.no_progress)
    else:
        print(f"results of an identical evaluation reused from {args.json} (delete it to evaluate again)")
    # the paired table compares the last column with the others: put `last` there
    results = {d: {c: row[c] for c in [*(c for c in row if c != last), last]} for d, row in results.items()}
    print(f"None accuracy (%), mean ± 95% CI, {args.model}, resolution {args.resolution}, seed {args.seed}")
    print(format_table(results))
    if len(args.checkpoints) > 1:
        print(f"\nPaired difference on the same episodes, {last} minus the others (points):")
        print(paired_table(results))
    if args.json:
        payload = {"model": args.model, "checkpoints": args.checkpoints, "episodes": args.episodes,
                   "resolution": args.resolution, "seed": args.seed, "data_version": version,
                   "results": {d: {c: s.to_dict(with_accs=True) for c, s in row.items()}
                               for d, row in results.items()}}
        write_json_atomic(args.json, payload)
    return results


def cmd_checkpoint_eval(args) -> int:
    run_checkpoint_eval(args)
    return 0


def _distill_config(args):
    from ..data.photos import DEFAULT_HELDOUT_PHOTOS, DEFAULT_TRAIN_PHOTOS, describe, resolve_images
    from ..offline.distill import DistillConfig
    if args.config:
        config = _config_from_file(DistillConfig, args, "distill")    # its photos: checked by run_distill
        if config.pocket_fraction > 0:
            config.data_version = _prepare_data(config.pocket_data)
        config.check()
        return config, Path(args.out or Path(args.config).parent)
    images = args.images or [f"skimage:{n}" for n in DEFAULT_TRAIN_PHOTOS]
    heldout = args.heldout if args.heldout is not None else [f"skimage:{n}" for n in DEFAULT_HELDOUT_PHOTOS]
    if heldout == ["none"]:
        heldout = []
    train_files = resolve_images(images, "--images")
    held_files = resolve_images(heldout, "--heldout") if heldout else []
    fields = ("init", "teacher", "teacher_checkpoint", "resolution", "batch_size", "epochs", "steps_per_epoch", "lr",
              "weight_decay", "warmup_epochs", "temperature", "feature_weight", "cutmix", "pocket_fraction", "pocket_loss", "pocket_data", "init_crop",
              "min_area", "rotation", "shear", "heldout_crops", "seed", "device", "nproc", "lite_residual")
    values = {f: getattr(args, f) for f in fields if getattr(args, f, None) is not None}
    values |= {"student": args.student, "images": describe(train_files), "heldout": describe(held_files)}
    if args.save_every is not None:
        values["save_every_steps"] = args.save_every
    if args.log_every is not None:
        values["log_every_steps"] = args.log_every
    config = DistillConfig(**values)
    if config.pocket_fraction > 0:
        config.data_version = _prepare_data(config.pocket_data)
    config.check()
    return config, Path(args.out or f"runs/distill-{config.student}")


def _distill_worker(config_dict: dict, out: str, restart: bool, max_steps: int | None, progress: bool) -> None:
    from ..offline.distill import DistillConfig, run_distill
    run_distill(DistillConfig.from_dict(config_dict), out, restart=restart, stop_at_step=max_steps, progress=progress)


def _distill_report(result, out: Path) -> int:
    if not result.completed:
        print(f"stopped at step {result.step}/{result.total_steps}; the same command resumes it ({out})")
        return 0
    last = result.history[-1] if result.history else {}
    agree = (f"; held-out top-1 agreement with the teacher {100 * last['agree_top1']:.1f} %, top-5 overlap "
             f"{100 * last['agree_top5_overlap']:.1f} %" if "agree_top1" in last else "")
    print(f"done: {result.step} steps, {last.get('images_seen', 0):,} images seen{agree}; student {out / 'last.safetensors'}"
          f"; curve {out / 'agreement.png'}")
    return 0


def cmd_distill(args) -> int:
    from ..offline.distill import TrainResult, export_features, run_distill
    from ..offline.distributed import exit_rank
    _check_run_flags(args)
    config, out = _distill_config(args)
    if args.export and Path(args.export).exists() and not args.restart:
        raise BadInput(f"--export {args.export} exists; choose another file or delete it")

    def from_log(log):
        return TrainResult(out, max((r.get("step", 0) for r in log), default=0), config.total_steps, None,
                           [r for r in log if "agree_top1" in r])

    result, torchrun = _run_stage(config, out, args, _distill_worker, run_distill, from_log)
    code = _distill_report(result, out)
    if args.export and result.completed:
        print(f"features (no ImageNet classifier) written to {export_features(out, args.export)}")
    if torchrun:
        exit_rank(code)
    return code


def register(sub) -> None:
    p = sub.add_parser("pretrain", help="supervised pretraining of a backbone on a source domain",
                       description="Train MODEL as a classifier on the training classes of the source domain; "
                       "keep the epoch with the best few-shot validation accuracy on held-out classes.")
    _add_common(p, "pretrain")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--label-smoothing", type=float)
    p.set_defaults(func=cmd_pretrain)
    record_setting_defaults(p, NOT_RUN_SETTINGS)

    p = sub.add_parser("metatrain", help="episodic ProtoNet meta-training (paper recipe), optionally distributed",
                       description="Meta-train MODEL with ProtoNet (cosine) episodes. Defaults: the paper's recipe "
                       "(SGD momentum 0.9; lr 1e-6 -> 5e-5 over 5 epochs, cosine to 1e-6; 100 x 2000 episodes; "
                       "5-way 5-shot 15-query). Distributed: --nproc N, or torchrun.")
    _add_common(p, "metatrain")
    p.add_argument("--init", help="starting weights: 'random', 'imagenet' (mobilenetv2-1.0), 'pocket' (shipped) "
                   "or a checkpoint path such as runs/pretrain-<model>/best.safetensors (default: random)")
    p.add_argument("--episodes-per-epoch", type=int)
    p.add_argument("--batch-episodes", type=int, help="episodes averaged per optimizer step, over all processes")
    p.add_argument("--warmup-lr", type=float, help="learning rate at the start of the linear warm-up")
    p.add_argument("--min-lr", type=float, help="learning rate at the end of the cosine decay")
    p.add_argument("--bn-mode", choices=["auto", "eval", "train"],
                   help="BatchNorm during meta-training (auto: eval from trained weights, train from random)")
    p.add_argument("--frozen-blocks", type=int, help="keep the stem and the first N blocks at their starting "
                   "weights (default 0: train everything)")
    p.add_argument("--lite-residual", action="store_true", default=None,
                   help="train only TinyTL lite-residual branches added to the (frozen) --init backbone, as TinyTL "
                   "pretrains them before transfer; the checkpoint then carries them for `--method tinytl`")
    p.add_argument("--nproc", type=int, help="local processes (gloo on CPU, NCCL on GPU)")
    p.set_defaults(func=cmd_metatrain)
    record_setting_defaults(p, NOT_RUN_SETTINGS)

    p = sub.add_parser("distill", help="distil an ImageNet teacher into a tiny backbone from patches of a few photos",
                       description="Train STUDENT to match the softened ImageNet outputs (KL at a temperature) of "
                       "TEACHER on heavily augmented, CutMixed patches of a few photographs (Asano & Saeed, ICLR "
                       "2023); logs the student-teacher agreement on crops of held-out photographs. Resumable; "
                       "--nproc N or torchrun for several processes.")
    p.add_argument("--config", metavar="FILE", help=CONFIG_HELP.format(stage="distill"))
    p.add_argument("--student", default="mcunet-5fps", help="zoo model to train")
    p.add_argument("--init", help="student's starting weights: random (default), a shipped name or a checkpoint")
    p.add_argument("--teacher", help="teacher model (default mobilenetv2-1.0)")
    p.add_argument("--teacher-checkpoint", help="teacher weights (default imagenet); must have a 1000-way classifier")
    p.add_argument("--images", nargs="+", help="training photographs: files, folders, skimage:NAME (default: seven "
                   "scikit-image photographs, docs/offline.md)")
    p.add_argument("--heldout", nargs="+", help="photographs for the agreement curve, never trained on "
                   "(default skimage:motorcycle_left; 'none' for no curve)")
    p.add_argument("--out", help="run folder (default runs/distill-<student>)")
    p.add_argument("--resolution", type=int, help="input size in pixels (default 128, the paper's)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--steps-per-epoch", type=int, help="optimizer steps between agreement checks and snapshots")
    p.add_argument("--lr", type=float, help="AdamW peak learning rate (warm-up, then cosine to 0)")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--warmup-epochs", type=float)
    p.add_argument("--temperature", type=float, help="softening temperature of the KL loss (default 8)")
    p.add_argument("--feature-weight", type=float, help="weight of an extra loss term matching the teacher's pooled "
                   "feature through a learnt linear map (1 - cosine; default 0: the KL on logits only)")
    p.add_argument("--cutmix", type=float, help="probability that a batch is CutMixed (default 1)")
    p.add_argument("--pocket-fraction", type=float, help="share of each batch taken from the pocket source's "
                   "training glyphs (default 0)")
    p.add_argument("--pocket-loss", choices=("ce", "kl"), help="what the glyphs learn: their own classes with a "
                   "glyph classifier (ce, default) or the teacher's outputs (kl: measured to erase glyph features)")
    p.add_argument("--pocket-data", help="where those glyphs come from: a source domain or class folders (default pocket-symbols)")
    p.add_argument("--init-crop", type=float, help="first crop, as a fraction of the photo's shorter side")
    p.add_argument("--min-area", type=float, help="smallest patch area as a fraction of that crop (default 0.002)")
    p.add_argument("--rotation", type=float, help="largest rotation in degrees (default 30)")
    p.add_argument("--shear", type=float, help="largest shear in degrees (default 30)")
    p.add_argument("--heldout-crops", type=int, help="number of held-out crops for the agreement check")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (GPU when available), cpu, cuda, cuda:1 ...")
    p.add_argument("--nproc", type=int, help="local processes (gloo on CPU, NCCL on GPU)")
    p.add_argument("--restart", action="store_true", help="discard an unfinished run in --out instead of resuming")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (resumable)")
    p.add_argument("--save-every", type=int)
    p.add_argument("--log-every", type=int)
    p.add_argument("--lite-residual", action="store_true", default=None,
                   help="train only TinyTL lite-residual branches added to the --init student, which stays frozen "
                   "(--init: a distill run's last.safetensors, with its ImageNet classifier); --export then writes "
                   "the backbone with its branches, which `tinytl` starts from")
    p.add_argument("--export", help="when finished, write the student without its ImageNet classifier here")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_distill)
    record_setting_defaults(p, NOT_RUN_SETTINGS)

    p = sub.add_parser("checkpoint-eval", help="None accuracy of several checkpoints on the same episodes",
                       description="ProtoNet nearest-centroid accuracy (no fine-tuning), mean and 95% CI over "
                       "EPISODES test episodes per domain, every checkpoint on identical episodes.")
    add_checkpoint_eval_arguments(p)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_checkpoint_eval)


def add_checkpoint_eval_arguments(p) -> None:
    """The evaluation's flags, shared with the maintainers' release script (scripts/release.py card)."""
    p.add_argument("--model", required=True)
    p.add_argument("--checkpoints", nargs="+", required=True, help="random | pocket | imagenet | PATH ...")
    p.add_argument("--domains", nargs="+", help="default: the pocket target domains")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--resolution", default=str(DEFAULT_RESOLUTION),
                   help="pixels for every checkpoint, or 'native': each at the resolution it was trained at "
                   "(NAME@RES sets one checkpoint's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the results (summaries and per-episode accuracies) to this file")
