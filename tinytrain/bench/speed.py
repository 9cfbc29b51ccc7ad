"""`tinytrain bench speed`: one task, side by side in one run — training-iteration wall time and measured
saved-for-backward bytes of FullTrain, SparseUpdate, TinyTrain and a masked TinyTrain reference (same
channels, dense model, full backward, gradients of other channels zeroed: how peers do it).

Every method runs the same P>M>F iteration (prototypes, augmented pseudo-query, Adam) on the same
images with the same micro-batch, so the ratios isolate what the update scheme costs.
"""
from __future__ import annotations

import argparse
import json
import statistics

import torch

from ..methods.base import AdaptConfig
from ..methods.common import check_support, finetune, storages_of
from ..methods.fulltrain import FullTrainMethod
from ..methods.sparseupdate import SparseUpdateMethod
from ..methods.tinytrain import TinyTrainMethod
from ..models.backbone import build_backbone
from ..sparse.accounting import predicted_saved_bytes
from ..sparse.reference import MaskedReference
from ..methods.trained import private_copy


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="mcunet-5fps", help="zoo model (default mcunet-5fps)")
    p.add_argument("--resolution", type=int, default=128, help="image size in pixels (default 128)")
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=None,
                   help="micro-batch for every method (default: the whole support set)")
    p.add_argument("--iterations", type=int, default=6, help="timed iterations per method (first is warm-up)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def _task(ways: int, shots: int, res: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if ways < 2 or shots < 1:
        raise ValueError("bench speed needs --ways >= 2 and --shots >= 1")
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(ways).repeat_interleave(shots)
    x = torch.randn(ways, 1, 3, res, res, generator=g).repeat(1, shots, 1, 1, 1).flatten(0, 1)
    x = x + 0.5 * torch.randn(x.shape, generator=g)
    return x, y


def run(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.iterations < 2:
        raise ValueError("--iterations must be at least 2 (the first one is a warm-up)")
    torch.manual_seed(args.seed)
    backbone = build_backbone(args.model)
    x, y = check_support(*_task(args.ways, args.shots, args.resolution, args.seed))
    batch = args.batch_size or len(x)
    cfg = AdaptConfig(iterations=args.iterations, lr=1e-3, batch_size=batch, seed=args.seed,
                      resolution=args.resolution)
    results: dict[str, dict] = {}

    def measure(name: str, model, built_plan=None, before_step=None, predicted=None) -> None:
        stats = finetune(model, x, y, TinyTrainMethod(backbone, cfg).head, cfg, 1e-3, batch,
                         exclude_storages=storages_of(model), before_step=before_step)
        sp = stats["seconds_per_iteration"][1:]
        results[name] = {"seconds_per_iteration": statistics.median(sp),
                         "measured_saved_bytes": int(stats["measured_saved_bytes"]),
                         "predicted_saved_bytes": predicted}

    tt = TinyTrainMethod(backbone, cfg)
    tt_built = tt._build(x, y)
    su_built = SparseUpdateMethod(backbone, cfg)._build(x, y)
    ft_built = FullTrainMethod(backbone, cfg)._build(x, y)
    spec, res, nb = backbone.spec, args.resolution, min(batch, len(x))
    measure("fulltrain", ft_built.model)
    measure("sparseupdate", su_built.model, predicted=predicted_saved_bytes(spec, su_built.engine_plan, nb, res))
    measure("tinytrain", tt_built.model, predicted=predicted_saved_bytes(spec, tt_built.engine_plan, nb, res))
    ref = MaskedReference(private_copy(backbone), tt_built.engine_plan)
    measure("tinytrain-masked", ref, before_step=ref.mask_gradients)
    t = results["tinytrain"]
    ratios = {
        "fulltrain_over_tinytrain_time": results["fulltrain"]["seconds_per_iteration"] / t["seconds_per_iteration"],
        "sparseupdate_over_tinytrain_time": results["sparseupdate"]["seconds_per_iteration"] / t["seconds_per_iteration"],
        "masked_over_tinytrain_time": results["tinytrain-masked"]["seconds_per_iteration"] / t["seconds_per_iteration"],
        "fulltrain_over_tinytrain_saved_bytes": results["fulltrain"]["measured_saved_bytes"] / max(1, t["measured_saved_bytes"]),
        "masked_over_tinytrain_saved_bytes": results["tinytrain-masked"]["measured_saved_bytes"] / max(1, t["measured_saved_bytes"]),
        "tinytrain_measured_over_predicted_saved_bytes": t["measured_saved_bytes"] / max(1, t["predicted_saved_bytes"]),
    }
    out = {"model": args.model, "resolution": res, "support": len(x), "batch_size": batch,
           "iterations": args.iterations, "threads": torch.get_num_threads(),
           "tinytrain_plan": tt_built.rows, "methods": results, "ratios": ratios}
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{args.model} @ {res}px, support {len(x)}, micro-batch {batch}, {torch.get_num_threads()} threads; "
          f"median of {args.iterations - 1} iterations")
    print(f"{'method':<18}{'s/iter':>10}{'saved bytes':>14}{'predicted':>12}")
    for name, r in results.items():
        pred = "" if r["predicted_saved_bytes"] is None else str(r["predicted_saved_bytes"])
        print(f"{name:<18}{r['seconds_per_iteration']:>10.4f}{r['measured_saved_bytes']:>14}{pred:>12}")
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}x")
    return 0
