"""The prepared check for a lent GPU (issues 22 and 26): one call on the device machine, tried on the CPU first.

Here, once per session (writes the ignored folder `carry/`: the MIT weight file and the three pocket targets'
arrays, about 15 MB; never commit it, it holds the MIT file):

    python scripts/device_check.py prepare --weights ../shared/weights/mit-tiny-training

On the device machine (the `run` tool, `carry=["carry"]`, one command under its time limit):

    TINYTRAIN_DATA=carry/data PYTHONPATH=. python scripts/device_check.py run --out "$OUT" --budget 420

It runs, each into its own folder under OUT:
  1. parity: the same small eval (pocket-digits, every method, 3 tasks, 10 iterations, lr 1e-3) with
     --device cpu, --device cuda, and --device cuda --nproc 2, then compares the records key by key
     (accuracy, plan, predicted memory, lr);
  2. protocol: the s100 protocol of docs/results/2026-12-05-imagenet-s100.md on cuda with --tasks N until the
     budget runs out (SIGTERM: the eval keeps what finished, so the folder resumes on a later call when it is
     carried back), then its throughput per method.
OUT/summary.json and OUT/summary.md say what was measured. `run --device cpu` does the same on a CPU
(cpu against cpu), which is how this script is tested before a GPU is spent on it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

CARRY = Path("carry")
TARGETS = ("pocket-scripts", "pocket-digits", "pocket-textures")


def prepare(weights: Path, data_root: Path | None) -> None:
    """Copy what the device machine cannot make: the weight file and the built pocket arrays."""
    from tinytrain.data.pocket import ensure_pocket, pocket_root
    src = weights.expanduser() / "mcunet-5fps.pkl"
    if not src.is_file():
        sys.exit(f"device_check: no {src}; give --weights the folder that holds MIT's mcunet-5fps.pkl")
    root = ensure_pocket(data_root or pocket_root())
    (CARRY / "weights").mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, CARRY / "weights" / src.name)
    dst = CARRY / "data" / "pocket"
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy2(root / "manifest.json", dst / "manifest.json")
    for t in TARGETS:           # the loader reads arrays.npz and domain.json only; the image folders stay here
        (dst / t).mkdir(exist_ok=True)
        for name in ("arrays.npz", "domain.json"):
            shutil.copy2(root / t / name, dst / t / name)
    size = sum(p.stat().st_size for p in CARRY.rglob("*") if p.is_file())
    print(f"device_check: {CARRY}/ holds {size / 2**20:.1f} MiB; pass carry=[\"carry\"] to the run tool")


def eval_command(out: Path, device: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tinytrain", "eval", "--model", "mcunet-5fps",
            "--checkpoint", str(CARRY / "weights" / "mcunet-5fps.pkl"), "--seed", "0", "--max-ways", "10",
            "--max-support", "100", "--device", device, "--no-progress", "--out", str(out), *extra]


def timed(cmd: list[str], deadline: float, log: Path) -> dict:
    """Run `cmd` until it ends or `deadline` (then SIGTERM, which an eval treats as Ctrl-C)."""
    t0 = time.time()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        try:
            rc = proc.wait(timeout=max(1.0, deadline - time.time()))
            stopped = False
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
            stopped = True
    return {"command": " ".join(cmd[1:]), "rc": rc, "wall_s": round(time.time() - t0, 1), "stopped": stopped}


def records(folder: Path) -> dict:
    from tinytrain.bench.results import ResultStore, record_key
    return {record_key(r): r for r in ResultStore(folder / "results.jsonl").load()}


def compare(a: dict, b: dict) -> dict:
    """Key-by-key agreement of two runs' records."""
    keys = sorted(set(a) & set(b))
    diffs = [abs((a[k]["accuracy"] or 0) - (b[k]["accuracy"] or 0)) for k in keys]
    return {"keys_a": len(a), "keys_b": len(b), "common": len(keys),
            "accuracy_equal": sum(d == 0 for d in diffs),
            "accuracy_max_abs_diff": max(diffs, default=None),
            "accuracy_mean_abs_diff": sum(diffs) / len(diffs) if diffs else None,
            "plans_equal": sum(a[k]["plan"] == b[k]["plan"] for k in keys),
            "plan_channels_equal": sum(a[k].get("plan_channels") == b[k].get("plan_channels") for k in keys),
            "memory_equal": sum(a[k]["predicted_memory_bytes"] == b[k]["predicted_memory_bytes"] for k in keys),
            "differing": [[*k, a[k]["accuracy"], b[k]["accuracy"]] for k, d in zip(keys, diffs) if d][:20]}


def throughput(folder: Path, wall_s: float) -> dict:
    by: dict[str, list[float]] = {}
    for r in records(folder).values():
        by.setdefault(r["method"], []).append(r["seconds"])
    rows = {m: {"tasks": len(s), "s_per_task": round(sum(s) / len(s), 2)} for m, s in sorted(by.items())}
    n = sum(len(s) for s in by.values())
    return {"per_method": rows, "records": n, "wall_s": wall_s,
            "records_per_min": round(60 * n / wall_s, 1) if wall_s else None}


def run(out: Path, budget: float, device: str, tasks: int, workers: int) -> None:
    import torch
    start = time.time()
    deadline = start + budget
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"device": device, "torch": torch.__version__, "cuda": torch.cuda.is_available(),
                     "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                     "cpus": os.cpu_count(), "steps": {}}

    def save() -> None:
        (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))

    small = ["--domains", "pocket-digits", "--methods", "all", "--tasks", "3", "--iterations", "10",
             "--lr", "1e-3", "--workers", "2"]
    parity = {"cpu": eval_command(out / "parity-cpu", "cpu", *small)}
    if device != "cpu":           # a CPU test of this script compares cpu with cpu --nproc 2 only
        parity[device] = eval_command(out / f"parity-{device}", device, *small)
    parity[f"{device}-nproc2"] = eval_command(out / f"parity-{device}-nproc2", device, *small, "--nproc", "2")
    for name, cmd in parity.items():
        summary["steps"][f"parity-{name}"] = timed(cmd, deadline, out / f"parity-{name}.log")
        save()
    ref = records(out / "parity-cpu")
    summary["parity"] = {name: compare(ref, records(out / f"parity-{name}")) for name in parity if name != "cpu"}
    save()

    protocol = eval_command(out / "protocol", device, "--domains", ",".join(TARGETS), "--methods", "all",
                            "--tasks", str(tasks), "--iterations", "40", "--lr", "target-val",
                            "--lr-grid", "0,1e-3,1e-2", "--lr-episodes", "5", "--ablate-static",
                            "--workers", str(workers))
    if deadline - time.time() > 60:
        step = timed(protocol, deadline, out / "protocol.log")
        summary["steps"]["protocol"] = step
        summary["protocol"] = throughput(out / "protocol", step["wall_s"])
    summary["wall_s"] = round(time.time() - start, 1)
    save()
    lines = [f"# device check ({summary['gpu'] or 'cpu'}, torch {summary['torch']})", ""]
    for name, step in summary["steps"].items():
        lines.append(f"- {name}: rc {step['rc']}, {step['wall_s']} s{' (stopped at the budget)' if step['stopped'] else ''}")
    for name, c in summary["parity"].items():
        lines.append(f"- cpu vs {name}: {c['common']} common records, accuracy equal {c['accuracy_equal']}, max |diff| "
                     f"{c['accuracy_max_abs_diff']}, plans equal {c['plans_equal']}, channels equal "
                     f"{c['plan_channels_equal']}")
    for m, r in summary.get("protocol", {}).get("per_method", {}).items():
        lines.append(f"- protocol {m}: {r['tasks']} tasks, {r['s_per_task']} s/task (one worker's wall time)")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("prepare", help="write carry/ (weights and pocket arrays) for the device machine")
    a.add_argument("--weights", type=Path, required=True, help="the folder holding MIT's mcunet-5fps.pkl")
    a.add_argument("--data", type=Path, default=None, help="a pocket root (default: the built one here)")
    r = sub.add_parser("run", help="the checks, on the device machine (or on a CPU to test this script)")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--budget", type=float, default=420, help="seconds for all steps (default: %(default)s)")
    r.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    r.add_argument("--tasks", type=int, default=50, help="protocol tasks per target (default: %(default)s)")
    r.add_argument("--workers", type=int, default=4, help="protocol worker processes (default: %(default)s)")
    args = p.parse_args()
    if args.cmd == "prepare":
        prepare(args.weights, args.data)
    else:
        run(args.out, args.budget, args.device, args.tasks, args.workers)


if __name__ == "__main__":
    main()
