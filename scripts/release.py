"""Release tooling for the maintainers: checkpoint cards and shipping checkpoints into tinytrain/zoo/. Not part
of the package (users evaluate checkpoints with `tinytrain checkpoint-eval`); run it from a checkout:

    python scripts/release.py card --model M --checkpoints random runs/pretrain-M/best.safetensors \\
        runs/metatrain-M/best.safetensors --pretrain-run runs/pretrain-M --metatrain-run runs/metatrain-M \\
        --json tinytrain/zoo/M-pocket-eval.json --out tinytrain/zoo/M-pocket.md
    python scripts/release.py ship --model M --checkpoint runs/distill-M/features.safetensors@128 \\
        --name distilled --distill-run runs/distill-M --out tinytrain/zoo/M-distilled.safetensors
    python scripts/release.py lite --into tinytrain/zoo/M-distilled.safetensors --run runs/lite-M \\
        --recipe "tinytrain distill ... --lite-residual ..."

card  evaluates like `tinytrain checkpoint-eval` (same episodes, same --json, reused when it holds the same
      evaluation) and writes the card: the exact commands of the runs (rebuilt from their config.json), wall
      time, hardware, the None-accuracy table and the paired table (with --distill-run: a distilled
      checkpoint's card, with the agreement curve and, with --curve-episodes, each snapshot's accuracy).
ship  writes one checkpoint as a zoo file, without any 1000-way classifier, with its provenance in the
      metadata: the name it ships as, its resolution, the recipe (the runs' commands and this one) and, with
      --distill-run, the images seen.
lite  writes the lite-residual branches of a finished `tinytrain distill --lite-residual` run into a shipped
      zoo file whose backbone is the run's frozen one (any other is refused); the metadata records them under
      `lite_residual`.

Every command recorded in a card or a file is exact: run again, it does the same.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:               # release_cards beside this file, also when imported by path
    sys.path.insert(0, str(HERE))

from release_cards import (config_command, distill_command, distill_summary, render_card,  # noqa: E402
                           render_distill_card)
from tinytrain.cli import one_line_errors, parse_command_line  # noqa: E402
from tinytrain.cli.train import add_checkpoint_eval_arguments, run_checkpoint_eval  # noqa: E402
from tinytrain.errors import BadInput  # noqa: E402

PROG = "python scripts/release.py"


def script_command(argv: list[str]) -> str:
    """This script's command line, quoted for the shell, as a card or a shipped file records it."""
    return f"{PROG} " + " ".join(shlex.quote(a) for a in argv)


def _runs(args) -> dict[str, str]:
    """The run folders named by --pretrain-run / --metatrain-run (--distill-run is checked too, and left out:
    it has its own place in the card and the recipe), each checked to hold config.json and log.jsonl before
    anything is evaluated or written."""
    runs = {"pretrain": args.pretrain_run, "metatrain": args.metatrain_run, "distill": args.distill_run}
    runs = {k: v for k, v in runs.items() if v}
    for stage, folder in runs.items():
        for name in ("config.json", "log.jsonl"):
            if not (Path(folder) / name).is_file():
                raise BadInput(f"--{stage}-run {folder} holds no {name}: give the run folder of `tinytrain {stage}`")
    return {k: v for k, v in runs.items() if k != "distill"}


def recipe(args, runs: dict[str, str]) -> list[str]:
    """The commands that made the checkpoint: the distillation (with its export), pretraining and
    meta-training runs, each rebuilt from its config.json."""
    commands = [config_command(k, json.loads((Path(v) / "config.json").read_text()), v) for k, v in runs.items()]
    if args.distill_run:
        dconf = json.loads((Path(args.distill_run) / "config.json").read_text())
        commands.insert(0, distill_command(dconf, args.distill_run, Path(args.distill_run) / "features.safetensors"))
    return commands


def _provenance_argv(args) -> list[str]:
    argv = []
    for flag in ("pretrain_run", "metatrain_run", "distill_run"):
        if getattr(args, flag):
            argv += ["--" + flag.replace("_", "-"), getattr(args, flag)]
    return argv


# --- card ---------------------------------------------------------------------------------------------------

def snapshot_accuracy(args, domains: list[str]) -> dict[int, float]:
    """None accuracy (mean over `domains`) of every snapshot of --distill-run, keyed by images seen: the
    card's curve of accuracy against compute, on --curve-episodes episodes per domain."""
    from tinytrain.models.weights import read_checkpoint_header
    from tinytrain.offline.evaluate import evaluate_checkpoints
    snaps = sorted((Path(args.distill_run) / "snapshots").glob("step-*.safetensors"))
    if not snaps:
        return {}
    results = evaluate_checkpoints(args.model, [str(p) for p in snaps], domains, episodes=args.curve_episodes,
                                   resolution="native", seed=args.seed, progress=not args.no_progress)
    out = {}
    for p in snaps:
        seen = int(read_checkpoint_header(p)["meta"].get("images_seen", 0))
        out[seen] = sum(results[d][str(p)].mean for d in domains) / len(domains)
    return out


def card_argv(args) -> list[str]:
    """The `card` command that writes this card again (--json and --no-progress left out: they change
    nothing in it)."""
    argv = ["card", "--model", args.model, "--checkpoints", *args.checkpoints, "--domains", *args.domains,
            "--episodes", str(args.episodes), "--resolution", str(args.resolution), "--seed", str(args.seed)]
    if args.ship_checkpoint:
        argv += ["--ship-checkpoint", args.ship_checkpoint]
    if args.curve_episodes:
        argv += ["--curve-episodes", str(args.curve_episodes)]
    argv += _provenance_argv(args)
    if args.distill_run:
        if args.shipped:
            argv += ["--shipped", args.shipped]
    else:
        argv += ["--name", args.name]
    return argv + ["--out", args.out]


def cmd_card(args) -> int:
    if args.ship_checkpoint and args.ship_checkpoint not in args.checkpoints:
        raise BadInput(f"--ship-checkpoint {args.ship_checkpoint} is not one of --checkpoints")
    if (args.curve_episodes or args.shipped) and not args.distill_run:
        raise BadInput("--curve-episodes and --shipped are for a distilled checkpoint's card: give --distill-run")
    runs = _runs(args)
    shipped = args.ship_checkpoint or args.checkpoints[-1]
    results = run_checkpoint_eval(args, last=shipped)          # sets args.domains and args.resolution
    commands = recipe(args, runs) + [script_command(card_argv(args))]
    if args.distill_run:
        curve = snapshot_accuracy(args, args.domains) if args.curve_episodes else None
        card = render_distill_card(args.model, args.distill_run, commands, results, args.episodes,
                                   args.shipped or shipped, metatrain_run=args.metatrain_run, curve_accuracy=curve)
    else:
        card = render_card(args.model, runs, commands, results, args.episodes, args.resolution, name=args.name)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(card)
    print(f"card written to {args.out}")
    return 0


# --- ship ---------------------------------------------------------------------------------------------------

def ship(args, commands: list[str]) -> Path:
    """Write --checkpoint to --out (a zoo file), without any 1000-way classifier, with its provenance in the
    metadata: the name it ships as, its resolution, the recipe and the images seen."""
    from tinytrain.models.weights import load_backbone, save_checkpoint
    from tinytrain.offline.evaluate import split_resolution
    from tinytrain.offline.metatrain import strip_classifier
    name, res = split_resolution(args.checkpoint)
    backbone = load_backbone(args.model, name)
    info = backbone.checkpoint_info
    extra = {"shipped_as": args.name, "recipe": commands, "resolution": res or info.meta.get("resolution")}
    if args.distill_run:
        d = distill_summary(args.distill_run)
        extra |= {"images_seen": d["images_seen"], "distill_config": d["config"],
                  "distill_train_seconds": round(d["train_seconds"], 1)}
    meta = dict(info.meta) | extra
    return save_checkpoint(args.out, strip_classifier(backbone), meta)


def cmd_ship(args) -> int:
    if Path(args.out).exists():
        raise BadInput(f"--out {args.out} exists; delete it or choose another path (nothing was written)")
    runs = _runs(args)
    argv = ["ship", "--model", args.model, "--checkpoint", args.checkpoint, "--name", args.name,
            *_provenance_argv(args), "--out", args.out]
    print(f"shipped {args.checkpoint} as {ship(args, recipe(args, runs) + [script_command(argv)])}")
    return 0


# --- lite ---------------------------------------------------------------------------------------------------

def add_lite_branches(shipped: str | Path, lite_run: str | Path, command: str = "") -> Path:
    """Write the lite-residual branches of a finished `distill --lite-residual` run into the shipped checkpoint
    `shipped` (a zoo file), whose backbone must be the run's frozen one: the backbone tensors stay as they are
    and the metadata gains the branches' provenance (`lite_residual`). Refused for any other backbone."""
    import torch
    from tinytrain.models.weights import load_checkpoint, save_checkpoint
    from tinytrain.offline.metatrain import strip_classifier
    backbone, meta = load_checkpoint(shipped)
    trained, _ = load_checkpoint(Path(lite_run) / "last.safetensors")
    if trained.checkpoint_info.lite is None:
        raise BadInput(f"{lite_run} holds no lite-residual branches; run `tinytrain distill --lite-residual` there")
    theirs = trained.state_dict()
    if any(not torch.equal(v, theirs[k]) for k, v in backbone.state_dict().items()):
        raise BadInput(f"{shipped} is not the backbone the branches of {lite_run} were trained beside")
    run = distill_summary(lite_run)
    meta = dict(meta) | {"lite_residual": {"recipe": command, "images_seen": run["images_seen"],
                                           "train_seconds": round(run["train_seconds"], 1),
                                           "resolution": trained.checkpoint_info.lite.resolution}}
    return save_checkpoint(shipped, strip_classifier(trained), meta)     # = the shipped backbone + the branches


def cmd_lite(args) -> int:
    print(f"lite-residual branches of {args.run} written into {add_lite_branches(args.into, args.run, args.recipe)}")
    return 0


# --- the command line ---------------------------------------------------------------------------------------

def _add_provenance(p, what: str) -> None:
    p.add_argument("--pretrain-run", help=f"the pretraining run folder ({what})")
    p.add_argument("--metatrain-run", help=f"the meta-training run folder ({what})")
    p.add_argument("--distill-run", help=f"the distillation run folder ({what}; its images seen)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Release tooling for the maintainers: checkpoint "
                                     "cards and shipping checkpoints into tinytrain/zoo/ (not part of the package).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("card", help="evaluate checkpoints (as `tinytrain checkpoint-eval`) and write a checkpoint card",
                       description="None accuracy of --checkpoints on the same episodes, as `tinytrain "
                       "checkpoint-eval` (same --json, reused when it holds the same evaluation), written as a "
                       "markdown card with the runs' exact commands, wall time and hardware.")
    add_checkpoint_eval_arguments(p)
    p.add_argument("--ship-checkpoint", help="which of --checkpoints ships: the card's last column, which the paired "
                   "table compares with the others (default: the last)")
    p.add_argument("--name", default="pocket", help="the shipped name the card describes (--checkpoint NAME), "
                   "for its title")
    _add_provenance(p, "its config and log")
    p.add_argument("--curve-episodes", type=int, default=0,
                   help="with --distill-run: also the None accuracy of each snapshot on this many episodes per domain")
    p.add_argument("--shipped", help="with --distill-run: which checkpoint ships and why (one sentence)")
    p.add_argument("--out", required=True, help="the card (markdown), e.g. tinytrain/zoo/MODEL-NAME.md")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_card)

    p = sub.add_parser("ship", help="write a checkpoint into the zoo with its recipe in the metadata",
                       description="Write --checkpoint as a zoo file without any 1000-way classifier; the metadata "
                       "records the name it ships as, its resolution, the recipe (the runs' commands and this "
                       "one) and, with --distill-run, the images seen. An existing --out is never replaced.")
    p.add_argument("--model", required=True)
    p.add_argument("--checkpoint", required=True, help="pocket | PATH, NAME@RES to record its resolution")
    p.add_argument("--name", required=True, help="the name it ships as (--checkpoint NAME)")
    _add_provenance(p, "its command goes into the recipe")
    p.add_argument("--out", required=True, help="the zoo file, e.g. tinytrain/zoo/MODEL-NAME.safetensors")
    p.set_defaults(func=cmd_ship)

    p = sub.add_parser("lite", help="add a `distill --lite-residual` run's TinyTL branches to a shipped zoo file",
                       description="Write the lite-residual branches of a finished `tinytrain distill "
                       "--lite-residual` run into --into, whose backbone must be the run's frozen one (any other "
                       "is refused); the backbone tensors stay as they are and the metadata records the branches "
                       "under `lite_residual`.")
    p.add_argument("--into", required=True, help="the shipped zoo file, e.g. tinytrain/zoo/MODEL-distilled.safetensors")
    p.add_argument("--run", required=True, help="the finished `tinytrain distill --lite-residual` run folder")
    p.add_argument("--recipe", required=True, help="the commands that made the run, recorded in the metadata")
    p.set_defaults(func=cmd_lite)
    return one_line_errors(parser)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_command_line(parser, list(sys.argv[1:] if argv is None else argv))
    try:
        return int(args.func(args) or 0)
    except (BadInput, FileNotFoundError) as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
