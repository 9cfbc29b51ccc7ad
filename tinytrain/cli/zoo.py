"""`tinytrain models`, `tinytrain profile` and `tinytrain devices`."""
from __future__ import annotations

import json

from ..models.specs import ZOO, conv_layers, get_spec
from .adapt import MAX_RESOLUTION, one_line_errors, whole_number
from ..errors import BadInput


def cmd_models(args) -> int:
    from ..models.weights import ZOO_DIR, default_checkpoint

    for name, spec in ZOO.items():
        layers = conv_layers(spec)
        print(f"{name:20s} {len(layers):3d} conv layers  {sum(l.params for l in layers)/1e6:6.3f} M conv weights  "
              f"{sum(l.macs for l in layers)/1e6:7.2f} M MACs @{spec.resolution}px  feature {spec.feature_dim}-d  "
              f"{spec.description}")
        shipped = sorted(p.name[len(name) + 1:-len(".safetensors")] for p in ZOO_DIR.glob(f"{name}-*.safetensors"))
        if name == "mobilenetv2-1.0":
            shipped.append("imagenet")
        if shipped:
            print(f"{'':20s} checkpoints: {', '.join(shipped)} (default: {default_checkpoint(name)})")
    return 0


def cmd_profile(args) -> int:
    from ..costs.devices import get_device
    from ..costs.report import format_profile, profile

    spec = get_spec(args.model)
    device = get_device(args.device, args.devices_file) if args.device else None
    p = profile(spec, args.resolution or 128, args.optimizer, device)
    print(json.dumps(p, indent=1) if args.json else format_profile(p))
    return 0


def cmd_devices(args) -> int:
    from ..costs.devices import list_devices
    from ..costs.units import format_bytes

    devices = list_devices(args.devices_file)
    if args.json:
        print(json.dumps([d.to_dict() for d in devices], indent=1))
        return 0
    for d in devices:
        flash = format_bytes(d.flash_bytes) if d.flash_bytes else "-"
        where = "frozen weights in flash" if d.frozen_weights_in_flash else "all weights in RAM"
        print(f"{d.name:12s} RAM {format_bytes(d.ram_bytes):>8}  flash {flash:>8}  budget "
              f"{format_bytes(d.memory_budget_bytes):>8} / {d.compute_budget:.0%} MACs  {where}  {d.description}")
    return 0


def cmd_import(args) -> int:
    """A tiny-training int8 `.pkl` -> a float tinytrain checkpoint (for users who want a local copy)."""
    from pathlib import Path

    from ..models.mit_int8 import check_model, checkpoint_meta, read_quantised, to_backbone
    from ..models.weights import save_checkpoint

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise BadInput(f"--out {out}: name the file *.safetensors (it is a tinytrain checkpoint)")
    if out.is_dir():
        raise BadInput(f"--out {out} is a directory; name a .safetensors file")
    if out.exists() and not args.overwrite:
        raise BadInput(f"--out {out} exists; pass --overwrite to replace it, or choose another name")
    qm = read_quantised(args.file)
    if args.model:
        check_model(args.model, qm)
    backbone = to_backbone(qm, args.bn_scale)
    meta = checkpoint_meta(args.file, args.bn_scale)
    save_checkpoint(out, backbone, meta)
    print(f"{qm.spec.name}: {len(qm.convs)} convs + 1000-way classifier, input normalisation [-1, 1] "
          f"(mean/std 0.5), BN scale {args.bn_scale} -> {out}")
    return 0


def register(sub) -> None:
    p = one_line_errors(sub.add_parser("import", help="convert an MIT tiny-training int8 .pkl into a float tinytrain checkpoint"))
    p.add_argument("file", help="the .pkl (mcunet-5fps.pkl, mbv2-w0.35.pkl or proxyless-w0.3.pkl)")
    p.add_argument("--out", required=True, help="the .safetensors file to write")
    p.add_argument("--model", default=None, help="refuse the file unless it holds this model")
    p.add_argument("--bn-scale", choices=["rms", "folded"], default="rms",
                   help="rms (default): each conv's per-channel weight RMS moved into its BN scale, so that "
                        "every layer's weights have comparable size; folded: as stored (BN scale 1)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=cmd_import)

    p = one_line_errors(sub.add_parser("models", help="list the model zoo"))
    p.set_defaults(func=cmd_models)

    p = one_line_errors(sub.add_parser("profile", help="per-layer costs and the Table-2 style backward-pass "
                                                       "comparison of a model"))
    p.add_argument("model", help=f"one of: {', '.join(ZOO)}")
    p.add_argument("--resolution", type=whole_number("--resolution", 16, MAX_RESOLUTION, "e.g. 128, the paper's"),
                   default=None, help="input size in pixels (default 128, the paper's)")
    p.add_argument("--optimizer", choices=["adam", "sgd", "sgdm"], default="adam",
                   help="optimizer state counted per trained weight: adam 3x, sgd 1x (gradient only), sgdm 2x")
    p.add_argument("--device", default=None, help="also say which methods fit this device profile")
    p.add_argument("--devices-file", default=None, help="JSON file with extra device profiles")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.set_defaults(func=cmd_profile)

    p = one_line_errors(sub.add_parser("devices", help="list the device profiles (built in, $TINYTRAIN_DEVICES, "
                                                       "--devices-file)"))
    p.add_argument("--devices-file", default=None, help="JSON file with extra device profiles")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_devices)
