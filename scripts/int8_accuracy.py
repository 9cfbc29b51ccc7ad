"""Accuracy of the C runtime's int8 path against its float32 path, paired, on Meta-Dataset-style episodes:

    python scripts/int8_accuracy.py OUT.json [--checkpoint PATH.pkl] [--tasks 10] [--device mcu-256kb]

Per episode of each pocket target: `tinytrain.adapt` (TinyTrain, the given device's budgets) on the support
images, then the device schedule of the C runtime (`mcu.reference.run_reference`: prototypes, one step per
support image, prototypes again, scores of the query images), once with the float32 network and once with
the int8 prefix (calibrated on the support images; `mcu.quant`, which the C equals bit for bit). The two
accuracies are paired per episode. The PyTorch references are used instead of the emulated board because
they are what the board equals (bit for bit on the int8 part, within 1e-4 on the float part,
tests/mcu) and QEMU would take minutes per episode. Not part of the package: a helper for docs/mcu.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import tinytrain
from tinytrain.bench.stats import mean_ci
from tinytrain.data import open_dataset
from tinytrain.data.sampler import EpisodeSampler, load_task
from tinytrain.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from tinytrain.mcu.export import prepare
from tinytrain.mcu.reference import run_reference


def frames(x: torch.Tensor) -> np.ndarray:
    """Normalised (N, 3, R, R) images -> the uint8 (N, R, R, 3) RGB frames they were read from."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    rgb = ((x * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)
    return rgb.permute(0, 2, 3, 1).contiguous().numpy()


def one_task(backbone, task, device: str, iterations: int) -> dict:
    train_rgb, test_rgb = frames(task.support_x), frames(task.query_x)
    ys, yq = task.support_y.numpy(), task.query_y.numpy()
    support = {f"c{c}": [Image.fromarray(f) for f, y in zip(train_rgb, ys) if y == c] for c in sorted(set(ys))}
    adapted = tinytrain.adapt(backbone, support, method="tinytrain", device=device, iterations=iterations)
    order = {name: i for i, name in enumerate(adapted.classes)}          # class names sort as c0 < c1 < ...
    labels = np.array([order[f"c{y}"] for y in ys])
    want = np.array([order[f"c{y}"] for y in yq])
    out = {"support": len(ys), "query": len(yq), "ways": len(support)}
    for precision in ("float32", "int8"):
        cm = prepare(adapted, precision=precision, calibration=train_rgb if precision == "int8" else None)
        result = run_reference(cm, train_rgb, labels, test_rgb, epochs=1)
        out[precision] = float((result.predictions == want).mean())
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--checkpoint", default="../shared/weights/mit-tiny-training/mcunet-5fps.pkl")
    p.add_argument("--domains", default="pocket-scripts,pocket-digits,pocket-textures")
    p.add_argument("--tasks", type=int, default=10, help="episodes per domain")
    p.add_argument("--device", default="mcu-256kb")
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    backbone = tinytrain.load_backbone("mcunet-5fps", args.checkpoint)
    rows = []
    t0 = time.perf_counter()
    for domain in args.domains.split(","):
        ds = open_dataset(domain, "test")
        sampler = EpisodeSampler(ds, mode="metadataset", max_ways=10, max_support=25, seed=args.seed)
        for i in range(args.tasks):
            torch.manual_seed(args.seed * 100_003 + i)
            r = one_task(backbone, load_task(ds, sampler.episode(i), 128), args.device, args.iterations)
            rows.append({"domain": domain, "task": i} | r)
            print(json.dumps(rows[-1]), flush=True)
    f = [r["float32"] for r in rows]
    q = [r["int8"] for r in rows]
    summary = {"tasks": len(rows), "float32": asdict(mean_ci(f)), "int8": asdict(mean_ci(q)),
               "int8_minus_float32": asdict(mean_ci([b - a for a, b in zip(f, q)])),
               "same_predictions_tasks": sum(a == b for a, b in zip(f, q)), "seconds": time.perf_counter() - t0,
               "settings": vars(args)}
    Path(args.out).write_text(json.dumps({"summary": summary, "tasks": rows}, indent=1))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
