"""`tinytrain bench mcu`: the command line of tinytrain.mcu.bench (measure_mcu)."""
from __future__ import annotations

import argparse
import json

from .bench import bench_library

DEFAULT_DEVICE = "mcu-1mb"      # = tinytrain.mcu.bench.DEFAULT_DEVICE


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-dir", required=True, metavar="DIR", help="a model saved by `tinytrain adapt --save`")
    p.add_argument("--support", metavar="DIR",
                   help="training images, DIR/<class>/<image> with the model's class names (default: crops of "
                        "scikit-image photographs labelled as the model's classes in turn)")
    p.add_argument("--query", metavar="DIR", help="held-out images to predict (default: the last training image "
                   "of each class is held out instead)")
    p.add_argument("--epochs", type=int, default=1, help="passes over the training images (default 1)")
    p.add_argument("--precision", choices=("float32", "int8"), default="float32",
                   help="float32 (default), or int8: the frozen prefix in int8 and every frozen weight int8, "
                        "calibrated on the training images (docs/mcu.md)")
    p.add_argument("--device", default=DEFAULT_DEVICE,
                   help=f"device profile whose RAM and flash the measurement is checked against (default {DEFAULT_DEVICE})")
    p.add_argument("--out", metavar="DIR", help="keep the exported tree and builds here (default: a temporary folder)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds allowed for the emulated run (default 1800)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args) -> int:
    with bench_library("mcu"):
        from ..mcu.bench import McuSettings, measure_mcu
    result = measure_mcu(McuSettings(
        model_dir=args.model_dir, support=args.support, query=args.query, epochs=args.epochs,
        precision=args.precision, device=args.device, out=args.out, timeout=args.timeout))
    print(json.dumps(result.to_dict(), indent=1) if args.json else result.table())
    return 0
