"""Checkpoint cards, for the maintainers' release script (scripts/release.py; not part of the package): a short
markdown file next to a shipped checkpoint saying how it was made (exact commands, data version, time,
hardware) and how well it does (None accuracy, mean and 95 % CI, on the same episodes as the pretrained-only
and random backbones), and the summaries of run folders that the cards and the shipped files' metadata record."""
from __future__ import annotations

import json
import os
import platform
import shlex
from pathlib import Path

from tinytrain.offline.evaluate import AccuracySummary, format_table, paired_table


def hardware() -> str:
    import torch
    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"


def run_summary(run_dir: str | Path) -> dict:
    """Config, wall time (first to last log record) and best validation accuracy of a run folder."""
    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    log = [json.loads(l) for l in (run_dir / "log.jsonl").read_text().splitlines() if l.strip()]
    times = [r["time"] for r in log if "time" in r]
    vals = [r for r in log if "val_acc" in r]
    best = max(vals, key=lambda r: r["val_acc"]) if vals else None
    return {"config": config, "wall_s": (max(times) - min(times)) if len(times) > 1 else None,
            "best_val": best, "first_val": vals[0] if vals else None}


def render_card(model: str, runs: dict[str, str | Path], commands: list[str],
                results: dict[str, dict[str, AccuracySummary]], episodes: int, resolution: int,
                labels: dict[str, str] | None = None, name: str = "pocket") -> str:
    """Markdown card. `runs` maps a stage name ('pretrain', 'metatrain') to its run folder."""
    labels = labels or {}
    lines = [f"# {model} — `{name}` meta-trained checkpoint", ""]
    lines += ["## How it was made", "", "```sh", *commands, "```", ""]
    for stage, path in runs.items():
        s = run_summary(path)
        c = s["config"]
        wall = f"{s['wall_s'] / 60:.1f} min" if s["wall_s"] else "n/a"
        best = s["best_val"]
        bv = (f"{100 * best['val_acc']:.2f} ± {100 * best['val_ci95']:.2f} % at epoch {best['epoch']:.2f}"
              if best else "n/a")
        lines.append(f"- **{stage}**: data `{c.get('data')}` ({c.get('data_version') or 'unversioned'}), "
                     f"resolution {c.get('resolution')}, {c.get('epochs')} epochs; wall time {wall}; "
                     f"best validation None accuracy {bv} ({c.get('val_episodes')} episodes, held-out classes)")
    lines += [f"- hardware: {hardware()}", ""]
    lines += ["## None accuracy on the pocket target domains", "",
              f"ProtoNet nearest-centroid, no fine-tuning; {episodes} test episodes per domain, identical for every "
              f"column; resolution {resolution}; mean ± 95 % CI (%).", ""]
    renamed = {d: {labels.get(k, k): v for k, v in row.items()} for d, row in results.items()}
    lines += [format_table(renamed), ""]
    if len(next(iter(renamed.values()))) > 1:
        lines += ["Paired difference on the same episodes (the last column minus each other one), mean ± 95 % CI "
                  "in points:", "", paired_table(renamed), ""]
    return "\n".join(lines)


def command_line(argv: list[str]) -> str:
    """A `tinytrain` command, quoted for the shell."""
    return "tinytrain " + " ".join(shlex.quote(a) for a in argv)


_SKIP = {"data_version", "save_every_steps", "log_every_steps", "device", "nproc"}


def config_command(stage: str, config: dict, out: str | Path) -> str:
    """The `tinytrain pretrain|metatrain` command that reproduces a run's config, every option explicit."""
    argv = [stage]
    for key, value in config.items():
        if key in _SKIP or value is None:
            continue
        if isinstance(value, bool):
            if value:
                argv.append("--" + key.replace("_", "-"))
            continue
        argv += ["--" + key.replace("_", "-"), str(value)]
    return command_line(argv + ["--out", str(out)])


def distill_command(config: dict, out: str | Path, export: str | Path | None = None) -> str:
    """The `tinytrain distill` command that reproduces a distillation run's config."""
    argv = ["distill", "--student", config["student"], "--images", *[i["source"] for i in config["images"]],
            "--heldout", *([h["source"] for h in config["heldout"]] or ["none"])]
    skip = _SKIP | {"student", "images", "heldout"}
    for key, value in config.items():
        if key in skip or value is None:
            continue
        argv += ["--" + key.replace("_", "-"), str(value)]
    argv += ["--out", str(out)]
    if export:
        argv += ["--export", str(export)]
    return command_line(argv)


def distill_summary(run_dir: str | Path) -> dict:
    """Images seen, wall time (summed over the logged intervals, so pauses between resumes do not count),
    mean images/s and the agreement curve of a distillation run folder."""
    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    log = [json.loads(l) for l in (run_dir / "log.jsonl").read_text().splitlines() if l.strip()]
    curve = [r for r in log if "agree_top1" in r]
    steps = [r for r in log if "images_per_s" in r]
    busy = 0.0
    last_step = 0
    for r in steps:
        busy += (r["step"] - last_step) * config["batch_size"] / max(r["images_per_s"], 1e-9)
        last_step = r["step"]
    return {"config": config, "curve": curve, "images_seen": curve[-1]["images_seen"] if curve else 0,
            "train_seconds": busy, "images_per_s": (last_step * config["batch_size"] / busy) if busy else None}


def render_distill_card(model: str, distill_run: str | Path, commands: list[str],
                        results: dict[str, dict[str, AccuracySummary]], episodes: int, shipped: str,
                        metatrain_run: str | Path | None = None, curve_accuracy: dict[int, float] | None = None,
                        notes: list[str] | None = None) -> str:
    """Markdown card of a distilled checkpoint: how it was made (commands, images seen, wall time,
    hardware), the held-out agreement with the teacher along the run, and None accuracy on the pocket
    targets beside the other shipped checkpoints (each at its own resolution), with the paired table."""
    d = distill_summary(distill_run)
    c = d["config"]
    last = d["curve"][-1] if d["curve"] else {}
    lines = [f"# {model} — `distilled` checkpoint", "",
             f"Shipped: **{shipped}**. Load with `--checkpoint distilled`; trained at {c['resolution']} px, which "
             "`adapt`, `plan` and `eval` use by default.", "", "## How it was made", "", "```sh", *commands, "```", ""]
    img = ", ".join(f"`{i['source']}` ({i['licence']})" for i in c["images"])
    wall = f"{d['train_seconds'] / 3600:.2f} h of training" if d["train_seconds"] else "n/a"
    lines += [f"- **distill**: student `{c['student']}` from `{c['init']}`, teacher `{c['teacher']}` "
              f"(`{c['teacher_checkpoint']}`); {d['images_seen']:,} images seen ({c['epochs']} x "
              f"{c['steps_per_epoch']} steps of {c['batch_size']}), {100 * c['pocket_fraction']:.0f} % of each batch "
              f"pocket-source glyphs; temperature {c['temperature']}, feature weight {c.get('feature_weight', 0)}; "
              f"{wall} at {d['images_per_s'] or 0:.0f} images/s on average",
              f"- photographs: {img}"]
    if metatrain_run:
        s = run_summary(metatrain_run)
        mc = s["config"]
        mwall = f"{s['wall_s'] / 60:.1f} min" if s["wall_s"] else "n/a"
        lines.append(f"- **metatrain** (the paper's stage 2): `{mc.get('data')}`, resolution {mc.get('resolution')}, "
                     f"{mc.get('epochs')} x {mc.get('episodes_per_epoch')} episodes, lr {mc.get('lr')}; wall time {mwall}")
    lines += [f"- hardware: {hardware()}", ""]
    if d["curve"]:
        lines += ["## Agreement with the teacher on held-out photographs", "",
                  f"{last.get('agree_n', 0)} fixed crops of {', '.join('`' + h['source'] + '`' for h in c['heldout'])} "
                  "(never trained on); top-1: the student's arg-max is the teacher's; top-5 overlap: "
                  "|student top-5 ∩ teacher top-5| / 5; teacher in top-5: the teacher's arg-max is among the "
                  "student's five best." + (" Pocket targets: None accuracy of that epoch's snapshot (mean of the "
                                            "three domains, the episodes of the curve column)." if curve_accuracy else ""),
                  "", "| images seen | top-1 agreement | top-5 overlap | teacher in top-5 |"
                  + (" pocket targets |" if curve_accuracy else ""),
                  "|---|---|---|---|" + ("---|" if curve_accuracy else "")]
        for r in d["curve"]:
            row = (f"| {r['images_seen']:,} | {100 * r['agree_top1']:.1f} % | {100 * r['agree_top5_overlap']:.1f} % | "
                   f"{100 * r['teacher_in_top5']:.1f} % |")
            if curve_accuracy:
                acc = curve_accuracy.get(r["images_seen"])
                row += f" {'-' if acc is None else f'{100 * acc:.1f} %'} |"
            lines.append(row)
        lines.append("")
    lines += ["## None accuracy on the pocket target domains", "",
              f"ProtoNet nearest-centroid, no fine-tuning; {episodes} test episodes per domain, identical for every "
              "column; each checkpoint at its own training resolution (NAME@PIXELS); mean ± 95 % CI (%).", "",
              format_table(results), ""]
    if len(next(iter(results.values()))) > 1:
        lines += ["Paired difference on the same episodes (the last column minus each other one), mean ± 95 % CI "
                  "in points:", "", paired_table(results), ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)
