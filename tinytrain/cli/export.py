"""`tinytrain export`: an adapted model as one ONNX or TorchScript file (image -> class scores)."""
from __future__ import annotations

from pathlib import Path
from ..errors import BadInput


def register(sub) -> None:
    p = sub.add_parser("export", help="export a model saved by `tinytrain adapt --save` to ONNX, TorchScript or C")
    p.add_argument("--model-dir", required=True, metavar="OUT", help="directory written by `adapt --save`")
    p.add_argument("--format", choices=("onnx", "torchscript", "c"), default="onnx",
                   help="c: a C99 source tree that trains the plan's channels on a microcontroller (docs/mcu.md)")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="output file (a FILE.json sidecar is written too); a directory for --format c")
    p.add_argument("--opset", type=int, default=13, help="ONNX opset (default 13, loads in most runtimes)")
    p.add_argument("--device", help="with --format c: refuse an arena larger than this device profile's memory budget")
    p.add_argument("--precision", choices=("float32", "int8"), default=None,
                   help="with --format c: int8 runs the frozen layers in int8 and keeps every frozen weight in int8 "
                        "(default float32); needs --calibration DIR, the support images (docs/mcu.md)")
    p.add_argument("--calibration", metavar="DIR", help="with --precision int8: images whose activation ranges set "
                   "the int8 scales (the support images, at least two)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing FILE and FILE.json; with --format c, an earlier C export in --out "
                        "(refused while that folder holds other files)")
    p.set_defaults(func=run_export)


def run_export(args) -> int:
    if args.format != "c" and (args.precision or args.calibration):
        raise BadInput("--precision and --calibration are for --format c")
    if args.format == "c":
        return run_export_c(args)
    from ..deploy.adapted import load_adapted
    from ..deploy.export import export_model

    from ..deploy.export import prepare_export_target

    # before loading anything; finishes an export that a kill interrupted (its files may then be replaced)
    overwrite = prepare_export_target(args.out, args.overwrite)
    adapted = load_adapted(args.model_dir)
    out = export_model(adapted, args.format, Path(args.out), args.opset, overwrite=overwrite)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB) and {out.name}.json: input 'image' "
          f"(N, 3, {adapted.resolution}, {adapted.resolution}) RGB in [0, 1] -> 'scores' (N, {len(adapted.classes)})")
    return 0


def run_export_c(args) -> int:
    """The `--format c` branch: write the tree (tinytrain.mcu.export.export_c) and say what is in it."""
    from ..costs.units import format_bytes
    from ..mcu.export import META_FILE, MODEL_FILE, check_precision, export_c, runtime_sources

    precision = args.precision or "float32"
    if args.calibration is not None and precision != "int8":
        raise BadInput("--calibration is for --precision int8 (a float32 export needs no calibration)")
    if precision == "int8" and args.calibration is None:
        check_precision(precision, None)
    cm = export_c(args.model_dir, args.out, args.device, overwrite=args.overwrite, flag="--out",
                  precision=precision, calibration=args.calibration)
    n_w = sum(layer.trained_weights for layer in cm.network.layers)
    int8 = (f"; layers 0-{cm.network.n_int8 - 1} in int8 (calibrated on {cm.quant.calibration_images} images)"
            if cm.quant else "")
    print(f"wrote {args.out}/: {len(runtime_sources())} runtime files, {MODEL_FILE} and {META_FILE}; "
          f"{cm.adapted.model} at {cm.network.resolution} px ({cm.precision}) trains {n_w:,} weights from layer "
          f"{cm.network.earliest} up{int8}; arena {cm.memory.arena_bytes:,} B ({format_bytes(cm.memory.arena_bytes)}), "
          f"cost model {cm.predicted.total:,} B. Input: {cm.network.resolution}x{cm.network.resolution} RGB bytes; "
          f"see {args.out}/README.md")
    return 0
