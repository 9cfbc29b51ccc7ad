"""`tinytrain export --format c`: an adapted model and its plan as a self-contained C99 source tree.

    OUT/tinytrain.h        the API (tt_init, tt_train_step, tt_predict, prototypes)
    OUT/tt_*.c, tt_*.h     the runtime: kernels (one family per file), the training step
    OUT/tt_model.c         generated: frozen weights (const, for flash), folded BatchNorm, the plan's
                           channel lists, exported prototypes, the layer table with every arena offset,
                           and the arena itself (one static float array, no malloc)
    OUT/tt_export.json     what was exported: model, classes, plan, memory plan, predicted arena
    OUT/README.md          how to build it

Class names are user text: they reach the C source only as escaped string literals (`tt_class_names`),
never in comments or identifiers. An existing OUT is replaced only with `overwrite` and only when it
holds nothing but what an export writes, so no file of the user's is ever deleted.

The trained slices start from the saved (adapted) weights and are trained further on the device
with the saved plan's channels, optimizer and learning rate.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from ..costs.model import RuntimeArena, runtime_arena
from ..jsonfile import give_normal_mode
from ..costs.plan import UpdatePlan
from ..deploy.adapted import AdaptedModel, load_adapted
from ..sparse.engine import EnginePlan
from . import codegen
from .memory import MemoryPlan, plan_memory
from .network import ADAM_BETAS, ADAM_EPS, RuntimeNetwork, engine_plan_of, runtime_network
from .quant import MIN_CALIBRATION_IMAGES, PRECISIONS, QuantisedNet, quantise
from ..errors import BadInput

FORMAT = "tinytrain-c-export"
FORMAT_VERSION = 1
META_FILE = "tt_export.json"
MODEL_FILE = "tt_model.c"
DEFAULT_LR = 1e-3


@dataclass
class CModel:
    """An adapted model prepared for the C runtime (nothing written yet)."""

    adapted: AdaptedModel
    engine_plan: EnginePlan
    network: RuntimeNetwork
    memory: MemoryPlan
    predicted: RuntimeArena
    lr: float
    quant: QuantisedNet | None = None      # int8 exports: the prefix's integers and the suffix's int8 weights

    @property
    def precision(self) -> str:
        return self.network.precision

    def trained_channels(self) -> dict[int, tuple[str, tuple[int, ...]]]:
        """layer -> (axis, channels) of every layer with trained weights."""
        return {l.index: (l.axis, l.channels) for l in self.network.layers if l.channels}

    @property
    def update_plan(self) -> UpdatePlan:
        return UpdatePlan.from_dict(self.adapted.update_plan)


def runtime_sources() -> list[Path]:
    """The runtime's C sources and headers shipped with the package."""
    root = Path(str(resources.files("tinytrain.mcu").joinpath("runtime")))
    files = sorted(p for p in root.iterdir() if p.suffix in (".c", ".h"))
    if not files:
        raise FileNotFoundError(f"the C runtime sources are missing from {root}; reinstall tinytrain")
    return files


def check_precision(precision: str, calibration) -> None:
    """Refuse an unknown precision, and an int8 export without a calibration set of two or more images."""
    if precision not in PRECISIONS:
        raise BadInput(f"--precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    if precision == "int8":
        if calibration is None:
            raise BadInput("--precision int8 needs calibration images for the activation ranges: give "
                             "--calibration DIR (the support images, at least two)")
        if len(calibration) < MIN_CALIBRATION_IMAGES:
            raise BadInput(f"--calibration holds {len(calibration)} image; int8 calibration needs at least "
                             f"{MIN_CALIBRATION_IMAGES} (one image's activation ranges do not represent the next): "
                             "give the support images")


def prepare(model_dir: str | Path | AdaptedModel, lr: float | None = None, precision: str = "float32",
            calibration: np.ndarray | None = None) -> CModel:
    """Load a saved model and check that the runtime covers it; plan its memory. An int8 export
    (`precision="int8"`) calibrates its activation ranges on `calibration`, uint8 RGB frames
    (N, R, R, 3) at the model's resolution (the support images; two or more)."""
    check_precision(precision, calibration)
    adapted = model_dir if isinstance(model_dir, AdaptedModel) else load_adapted(model_dir)
    spec = adapted.predictor.backbone.spec
    eplan, optimizer = engine_plan_of(adapted.update_plan, spec, adapted.resolution)
    net = runtime_network(spec, eplan, adapted.resolution, len(adapted.classes), optimizer, precision)
    if lr is None:
        lr = (adapted.report.get("extra") or {}).get("lr") or DEFAULT_LR
    if not lr > 0:
        raise BadInput(f"learning rate must be positive (got {lr})")
    memory = plan_memory(net)
    predicted = runtime_arena(spec, UpdatePlan.from_dict(adapted.update_plan), net.n_classes, precision)
    qn = None
    if precision == "int8":
        from .reference import to_input

        if calibration.dtype != np.uint8 or calibration.shape[1:] != (adapted.resolution, adapted.resolution, 3):
            raise BadInput(f"calibration images must be uint8 RGB frames of {adapted.resolution} x "
                             f"{adapted.resolution} x 3 (got {calibration.dtype} {tuple(calibration.shape[1:])})")
        qn = quantise(adapted.predictor.backbone, c_normalisation(adapted), to_input(calibration), net.n_int8,
                      adapted.resolution)
    return CModel(adapted, eplan, net, memory, predicted, float(lr), qn)


def check_device(cm: CModel, device: str | None, devices_file: str | None = None) -> None:
    """Refuse an arena larger than the device profile's RAM, saying the largest resolution that fits it."""
    if not device:
        return
    from ..costs.devices import get_device, resolution_advice
    from ..costs.units import format_bytes

    prof = get_device(device, devices_file)
    if cm.memory.arena_bytes > prof.ram_bytes:
        hint = ("" if cm.precision == "int8" or prof.frozen_activation_bits == 32 else
                f"; {prof.name} is sized for --precision int8")
        raise BadInput(f"the arena needs {cm.memory.arena_bytes:,} B ({format_bytes(cm.memory.arena_bytes)}) but "
                         f"{prof.name} has {format_bytes(prof.ram_bytes)} of RAM{hint}; adapt again with --device "
                         f"{prof.name} so that the plan is sized for it ("
                         + resolution_advice(cm.network.spec, prof, cm.network.resolution, cm.network.optimizer) + ")")


# ---------------------------------------------------------------------------------------------------
# tt_model.c

def _folded_bn(bn: torch.nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
    """Frozen BN as y = x * scale + shift, computed as the sparse engine does (float32)."""
    s = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    t = bn.bias.detach() - bn.running_mean * s
    return s.numpy(), t.numpy()


def _slot(channels: tuple[int, ...], size: int) -> list[int]:
    slot = [-1] * size
    for pos, c in enumerate(channels):
        slot[c] = pos
    return slot


def model_source(cm: CModel) -> str:
    """The text of tt_model.c."""
    net, mem, adapted = cm.network, cm.memory, cm.adapted
    mods = adapted.predictor.backbone.conv_modules()
    head = adapted.predictor.head
    # No user string (class names come from folder names or a dict's keys) ever goes into a comment or
    # into code: the names are C string literals in `tt_class_names`, escaped by codegen.c_string.
    out = [f"/* tt_model.c - generated by `tinytrain export --format c`; do not edit.\n"
           f" * {codegen.comment_text(net.spec.name)} at {net.resolution} px, {net.n_classes} classes "
           f"(names: tt_class_names below, in index order)\n"
           f" * trains {len(cm.engine_plan.weights)} weight slice(s) and {len(cm.engine_plan.biases)} BN shift(s) "
           f"from layer {net.earliest} up with {net.optimizer} (lr {cm.lr:g}); "
           f"arena {mem.arena_bytes} bytes. */\n",
           '#include "tt_model.h"\n\n']
    rows = []
    qn = cm.quant
    qlayers = {q.index: q for q in qn.layers} if qn else {}
    for l, o, mod in zip(net.layers, mem.layers, mods):
        i, c = l.index, l.conv
        extra: dict[str, object] = {}
        if i in qlayers:                 # int8 prefix: integers only, no float arrays
            out.append(_int8_layer_arrays(qlayers[i]))
            extra = _int8_layer_fields(qlayers[i])
            w_name = scale_name = shift_name = "0"
        else:
            scale, shift = _folded_bn(mod.bn)
            if qn:                       # int8 export: frozen weights int8, the trained slice's float master copy
                out.append(codegen.int_array("int8_t", f"L{i}_wq", qn.suffix_weights[i].ravel(), per_line=24))
                out.append(codegen.float_array(f"L{i}_wqs", qn.suffix_scales[i]))
                extra = {"wq": f"L{i}_wq", "wq_scale": f"L{i}_wqs"}
                if l.channels:
                    out.append(codegen.float_array(f"L{i}_w0", _slice_values(l, mod.conv.weight.detach().numpy())))
                    extra["w0"] = f"L{i}_w0"
                w_name = "0"
            else:
                out.append(codegen.float_array(f"L{i}_w", mod.conv.weight.detach().numpy()))
                w_name = f"L{i}_w"
            out.append(codegen.float_array(f"L{i}_scale", scale))
            out.append(codegen.float_array(f"L{i}_shift", shift))
            scale_name, shift_name = f"L{i}_scale", f"L{i}_shift"
        sel, slot = "0", "0"
        if l.channels:
            size = c.cin if (l.kind == "pw" and l.axis == "in") else c.cout
            out.append(codegen.int_array("uint16_t", f"L{i}_sel", l.channels))
            out.append(codegen.int_array("int16_t", f"L{i}_slot", _slot(l.channels, size)))
            sel, slot = f"L{i}_sel", f"L{i}_slot"
        fields = {"kind": {"conv": "TT_CONV", "pw": "TT_PW", "dw": "TT_DW"}[l.kind], "act": l.act,
                  "k": c.kernel, "stride": c.stride, "cin": c.cin, "cout": c.cout, "h_in": c.h_in,
                  "h_out": c.h_out, "w": w_name, "scale": scale_name, "shift": shift_name,
                  "train": l.train, "axis": "TT_AXIS_IN" if l.axis == "in" else "TT_AXIS_OUT",
                  "n_sel": len(l.channels), "sel": sel, "slot": slot}
        fields |= {k: getattr(o, k) for k in ("x", "y", "tmp", "res", "mask", "saved", "wt", "gw", "m", "v",
                                              "bt", "gb", "bm", "bv", "gy", "gc", "gx", "gres")}
        fields |= extra
        rows.append(f"    /* layer {i}: {codegen.comment_text(c.name)} */ " + codegen.struct_initializer(fields))
    protos = adapted.predictor.prototypes.detach().float().numpy()
    out.append(codegen.float_array("init_protos", protos))
    out.append("\n/* class names by index, UTF-8 (declare: extern const char *const tt_class_names[]) */\n")
    out.append(codegen.string_array("tt_class_names", adapted.classes))
    out.append(f"\nconst tt_layer tt_layers[{len(rows)}] = {{\n" + ",\n".join(rows) + "\n};\n\n")
    norm = c_normalisation(adapted)
    g = mem.globals
    net_fields = {"n_layers": len(net.layers), "earliest": net.earliest, "resolution": net.resolution,
                  "n_classes": net.n_classes, "feature_dim": net.feature_dim,
                  "optimizer": "TT_ADAM" if net.optimizer == "adam" else "TT_SGD",
                  "lr": repr(cm.lr), "beta1": repr(ADAM_BETAS[0]), "beta2": repr(ADAM_BETAS[1]),
                  "eps": repr(ADAM_EPS), "head_scale": float(head.scale.detach()),
                  "head_bias": float(head.bias.detach()),
                  "mean": "{" + ", ".join(codegen.float_literal(float(np.float32(v))) for v in norm["mean"]) + "}",
                  "std": "{" + ", ".join(codegen.float_literal(float(np.float32(v))) for v in norm["std"]) + "}"}
    net_fields |= {k: g[k] for k in ("image", "x0", "features", "gfeatures", "logits", "protos", "counts")}
    net_fields |= {"arena_floats": f"{mem.arena_floats}u", "init_protos": "init_protos"}
    if qn:
        out.append(codegen.int_array("int8_t", "input_lut", qn.lut.ravel(), per_line=24))
        net_fields |= {"n_int8": qn.n_int8, "lut": "input_lut", "deq_zero": qn.boundary.zero,
                       "deq_scale": codegen.float_literal(qn.boundary.scale)}
    out.append("const tt_net_t tt_net = " + codegen.struct_initializer(net_fields, indent="") + ";\n\n")
    out.append(f"float tt_arena[{mem.arena_floats}];\n")
    return "".join(out)


def _slice_values(l, w: np.ndarray) -> np.ndarray:
    """The trained slice of weight `w` laid out as the runtime stores it (rows; columns as cout x n)."""
    ch = list(l.channels)
    if l.kind == "pw" and l.axis == "in":
        return w.reshape(w.shape[0], -1)[:, ch]
    return w.reshape(w.shape[0], -1)[ch]


def _int8_layer_arrays(q) -> str:
    i = q.index
    return (codegen.int_array("int8_t", f"L{i}_wq", q.weight.ravel(), per_line=24)
            + codegen.int_array("int32_t", f"L{i}_bias", q.bias)
            + codegen.int_array("int32_t", f"L{i}_mult", q.mult)
            + codegen.int_array("int8_t", f"L{i}_rshift", q.shift, per_line=24))


def _int8_layer_fields(q) -> dict:
    i = q.index
    fields = {"q": 1, "qc": "{" + f".w = L{i}_wq, .bias = L{i}_bias, .mult = L{i}_mult, .shift = L{i}_rshift, "
              f".zero_in = {q.x.zero}, .zero_out = {q.y.zero}, .lo = {q.lo}, .hi = {q.hi}" + "}"}
    if q.res_out is not None:
        from .quant import ADD_SHIFT
        fields["qa"] = ("{" + f".zero_x = {q.res_in.zero}, .m_x = {q.res_m_in}, .zero_y = {q.y.zero}, "
                        f".m_y = {q.res_m_y}, .zero_out = {q.res_out.zero}, .shift = {ADD_SHIFT}" + "}")
    return fields


def c_normalisation(adapted) -> dict:
    """What the runtime normalises raw pixels with: the pipeline's statistics composed with the backbone's
    input map (models/backbone.py), i.e. the normalisation its weights expect (MIT's int8 models: [-1, 1])."""
    from ..models.backbone import input_normalisation

    if adapted.predictor.backbone.spec.input_norm is None:
        return adapted.normalisation
    return input_normalisation(adapted.predictor.backbone.spec)


def metadata(cm: CModel) -> dict:
    a = cm.adapted
    return {"format": FORMAT, "version": FORMAT_VERSION, "model": a.model, "resolution": a.resolution,
            "classes": a.classes, "normalisation": c_normalisation(a), "method": a.method,
            "update_plan": a.update_plan, "engine_plan": cm.engine_plan.to_dict(), "optimizer": cm.network.optimizer,
            "lr": cm.lr, "earliest_trained_layer": cm.network.earliest,
            "precision": cm.precision,
            **({"quantisation": cm.quant.to_dict()} if cm.quant else {}),
            "arena_bytes": cm.memory.arena_bytes, "predicted_arena": cm.predicted.to_dict(),
            "input": {"layout": "HWC RGB uint8", "shape": [a.resolution, a.resolution, 3],
                      "preprocess": f"resize shorter side to {a.resolution}, centre crop (as `tinytrain predict`)"},
            "memory_plan": cm.memory.to_dict()}


README = """# {model} for the tinytrain C runtime

Generated by `tinytrain export --format c`. Plain C99, no dynamic memory: add every `.c` file here to
your build and include `tinytrain.h`. On a host:

    cc -std=c99 -O2 -ffp-contract=off -c *.c

Input: {r} x {r} RGB bytes (HWC), resized and centre-cropped like `tinytrain predict`.
Classes (index order, as JSON): {classes}; in C: `extern const char *const tt_class_names[];` (UTF-8).
The arena (`tt_arena`, {arena} bytes) holds every mutable value; the weights are `const` (flash).
`tt_export.json` records the plan, the memory plan and the cost model's prediction.
A new export replaces these files only with `--overwrite`, and refuses while this folder holds files
of yours: keep your own sources elsewhere.
"""


def _is_export_dir(folder: Path) -> bool:
    try:
        return json.loads((folder / META_FILE).read_text()).get("format") == FORMAT
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def tree_files() -> list[str]:
    """The names an export writes into OUT (and nothing else)."""
    return sorted({src.name for src in runtime_sources()} | {MODEL_FILE, META_FILE, "README.md"})


def check_out_dir(out: str | Path, overwrite: bool = False, flag: str = "--out") -> Path:
    """Refuse, before anything is loaded, an OUT that cannot or must not be written: a file, a folder that
    is not an earlier C export, an earlier export without `overwrite`, or an earlier export that also holds
    files the export does not write (they are named: nothing of the user's is ever deleted)."""
    from ..deploy.outputs import check_output_dir

    how = "--overwrite" if flag.startswith("--") else "overwrite=True"
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BadInput(f"{flag} {out} is a file; give a directory for the C source tree")
    check_output_dir(out, flag)
    if not out.is_dir() or not any(out.iterdir()):
        return out
    if not _is_export_dir(out):
        raise BadInput(f"{flag} {out} is a non-empty directory that is not a tinytrain C export; "
                         "choose a new or empty directory")
    if not overwrite:
        raise BadInput(f"{flag} {out} already holds a C export; pass {how} to replace it, or choose another "
                         "directory")
    ours = set(tree_files())
    foreign = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir() if p.name not in ours or not p.is_file())
    if foreign:
        shown = ", ".join(foreign[:8]) + (f" and {len(foreign) - 8} more" if len(foreign) > 8 else "")
        raise BadInput(f"{flag} {out} holds files the export does not write ({shown}); move them out of the "
                         f"folder (or choose another {flag}): {how} replaces only an earlier export's own files")
    return out


def write_tree(cm: CModel, out: str | Path, overwrite: bool = False, flag: str = "--out") -> Path:
    """Write the source tree to `out` atomically: a new or empty directory, or, with `overwrite`, an earlier
    C export that holds nothing but the files an export writes (see `check_out_dir`)."""
    from ..deploy.adapted import exchange_dirs, recover_interrupted_save
    from ..deploy.outputs import missing_parents, remove_made_dirs

    recover_interrupted_save(out, _is_export_dir, "C export")   # a replacement killed between its renames
    out = check_out_dir(out, overwrite, flag)
    made = missing_parents(out.parent)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    try:
        for src in runtime_sources():
            shutil.copyfile(src, tmp / src.name)
        (tmp / MODEL_FILE).write_text(model_source(cm))
        (tmp / META_FILE).write_text(json.dumps(metadata(cm), indent=1))
        (tmp / "README.md").write_text(README.format(model=codegen.comment_text(cm.adapted.model),
                                                     r=cm.adapted.resolution,
                                                     classes=json.dumps(cm.adapted.classes, ensure_ascii=False),
                                                     arena=cm.memory.arena_bytes))
        give_normal_mode(tmp, directory=True)
        if out.exists():
            check_out_dir(out, overwrite, flag)        # again, right before the swap: nothing of the user's lost
            if exchange_dirs(tmp, out):                # one atomic step where the system offers it
                shutil.rmtree(tmp, ignore_errors=True)
            else:                                      # two renames; a kill between them is undone next time
                old = out.parent / f".{out.name}.old-{os.getpid()}"
                out.rename(old)
                tmp.rename(out)
                shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException as exc:
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        if old.exists() and not out.exists():
            old.rename(out)                            # stopped between the two renames: the old tree goes back
        shutil.rmtree(tmp, ignore_errors=True)
        remove_made_dirs(made)
        if isinstance(exc, OSError):     # never name the temporary folder
            raise BadInput(f"{flag} {out}: could not write the C source tree "
                             f"({(exc.strerror or str(exc)).lower()})") from None
        raise
    return out


def calibration_frames(folder: str | Path, resolution: int) -> np.ndarray:
    """uint8 RGB frames (N, R, R, 3) of every image under `folder`, resized and centre-cropped like
    `tinytrain predict` (the crop the runtime's frames get)."""
    from ..data.datasets import open_rgb
    from ..data.transforms import resize_crop
    from ..deploy.images import collect_image_paths

    if not Path(folder).is_dir():
        raise BadInput(f"--calibration {folder} is not a folder; give the folder of support images")
    paths, _ = collect_image_paths([folder])
    return np.stack([np.asarray(resize_crop(open_rgb(p), resolution), dtype=np.uint8) for p in sorted(paths)])


def export_c(model_dir: str | Path, out: str | Path, device: str | None = None, lr: float | None = None,
             devices_file: str | None = None, overwrite: bool = False, flag: str = "out",
             precision: str = "float32", calibration: np.ndarray | str | Path | None = None) -> CModel:
    """Check, plan and write the C source tree of a saved model; returns what was exported. An existing
    export at `out` is replaced only with `overwrite` (and never when it holds other files). An int8
    export calibrates on `calibration`: uint8 frames, or a folder of images (the support set)."""
    check_out_dir(out, overwrite, flag)          # before anything is loaded
    if precision not in PRECISIONS:
        check_precision(precision, calibration)
    if isinstance(calibration, (str, Path)):
        adapted = load_adapted(model_dir) if not isinstance(model_dir, AdaptedModel) else model_dir
        calibration = calibration_frames(calibration, adapted.resolution)
        model_dir = adapted
    cm = prepare(model_dir, lr, precision, calibration)
    check_device(cm, device, devices_file)
    write_tree(cm, out, overwrite, flag)
    return cm
