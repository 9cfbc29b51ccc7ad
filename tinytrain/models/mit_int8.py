"""MIT tiny-training's int8 ImageNet models (`.pkl`): safe reading, the architecture they describe, and a
float `Backbone` with a trainable parameterisation.

The files (tiny-training's `algorithm/assets/mcu_models/`, Lin et al., NeurIPS 2022) are `torch.save` zip
archives whose pickle holds a dict of numpy arrays: int8 weights with per-output-channel scales, int32
biases, and every conv's input/output scale and zero point, BatchNorm already folded in. They are read with
an unpickler that allows exactly four globals (numpy's array reconstruction, `ndarray`, `dtype` and
`_codecs.encode`) and nothing else: no code from the file ever runs.

Dequantised (weight = q * w_scale, bias = q_bias * x_scale * w_scale), a folded conv's weights are as large
as its folded BN scale made them: depthwise weights 10-30x larger than pointwise ones, which an optimizer
moves far less in relative terms. `to_backbone(..., bn_scale="rms")` (the default) moves each output
channel's RMS weight back into a BN scale (conv weight / r, gamma = r): the same function, features equal
up to rounding, with weights of comparable size in every layer. `bn_scale="folded"` keeps gamma = 1.
"""
from __future__ import annotations

import io
import pickle
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from .backbone import Backbone
from .specs import ZOO, ArchSpec, BlockSpec, conv_layers
from ..errors import BadInput

# [-1, 1] input: (x - 0.5) / 0.5 (the first conv's x_scale is 1/127.5 with zero point 0)
MIT_INPUT_NORM = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
BN_SCALES = ("rms", "folded")
RESOLUTION = 128        # the input size the three files were trained and quantised at
_EXPECT = ("a tiny-training int8 model (.pkl from mit-han-lab/tiny-training, algorithm/assets/mcu_models/: "
           "mcunet-5fps.pkl, mbv2-w0.35.pkl or proxyless-w0.3.pkl)")


class UnsafePickle(BadInput):
    """The file's pickle names a global outside the allow-list: it is refused, nothing of it runs."""


def _allowed_globals() -> dict[tuple[str, str], object]:
    import _codecs

    import numpy as np
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:                       # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return {("numpy.core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
            ("_codecs", "encode"): _codecs.encode}


class _AllowListUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, source: Path):
        super().__init__(io.BytesIO(data))
        self.allowed = _allowed_globals()
        self.source = source

    def find_class(self, module: str, name: str):
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise UnsafePickle(f"{self.source}: its pickle names the global {module}.{name}, which tinytrain does not "
                               f"load (allowed: numpy arrays only); it is not {_EXPECT}") from None

    def persistent_load(self, pid):
        raise UnsafePickle(f"{self.source}: it holds torch tensors, not the numpy arrays of {_EXPECT}; "
                           "for a PyTorch state dict use a .pth/.safetensors path")


def read_pickle(path: str | Path) -> dict:
    """The dict inside a tiny-training `.pkl`, read with the allow-list unpickler (one-line errors)."""
    path = Path(path)
    if path.is_dir():
        raise BadInput(f"{path} is a directory; pass {_EXPECT}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            data = z.read(names[0]) if len(names) == 1 else None
    except (zipfile.BadZipFile, EOFError, zlib.error):
        raise BadInput(f"{path} is not a readable torch.save archive (truncated or another format); "
                         f"re-download it; expected {_EXPECT}") from None
    if data is None:
        raise BadInput(f"{path} is a zip archive without one data.pkl; it is not {_EXPECT}")
    try:
        obj = _AllowListUnpickler(data, path).load()
    except UnsafePickle:
        raise
    except Exception as exc:
        raise BadInput(f"{path}: its pickle cannot be read ({type(exc).__name__}); the file is damaged or not "
                         f"{_EXPECT}") from None
    if not isinstance(obj, dict) or not {"first_conv", "blocks", "classifier"} <= set(obj):
        raise BadInput(f"{path} holds a {type(obj).__name__} without first_conv/blocks/classifier; "
                         f"it is not {_EXPECT}")
    return obj


# --- the typed view --------------------------------------------------------------------------------

@dataclass(frozen=True)
class QConv:
    """One quantised conv as stored: int8 weight (out, in/groups, k, k), int32 bias, per-channel weight
    scales, and the input/output activations' per-tensor scale and zero point."""

    weight: torch.Tensor
    bias: torch.Tensor
    w_scales: torch.Tensor
    x_scale: float
    x_zero: int
    y_scale: float
    y_zero: int
    stride: int
    groups: int

    @property
    def kernel(self) -> int:
        return int(self.weight.shape[-1])

    def float_weight(self) -> torch.Tensor:
        return self.weight.double() * self.w_scales.double().view(-1, 1, 1, 1)

    def float_bias(self) -> torch.Tensor:
        return self.bias.double() * self.x_scale * self.w_scales.double()

    def output_range(self) -> tuple[float, float]:
        """The float range its int8 output can represent (the runtime's clamp)."""
        return (-128 - self.y_zero) * self.y_scale, (127 - self.y_zero) * self.y_scale


@dataclass(frozen=True)
class QuantisedModel:
    """A tiny-training int8 model: the zoo spec it matches, its convs in `conv_layers` order (stem = 0), the
    1000-way classifier, and the residual adds' quantisation (block index -> (x_scale, x_zero, y_scale, y_zero))."""

    spec: ArchSpec
    convs: tuple[QConv, ...]
    classifier: QConv
    residuals: dict[int, tuple[float, int, float, int]]
    source: str


def _tensor(a, what: str, dtype: torch.dtype) -> torch.Tensor:
    import numpy as np

    if not isinstance(a, np.ndarray):
        raise BadInput(f"{what} is a {type(a).__name__}, not an array")
    t = torch.from_numpy(np.array(a, copy=True))
    if t.dtype != dtype:
        raise BadInput(f"{what} is {t.dtype}, expected {dtype}")
    return t


def _qconv(d, what: str) -> QConv:
    if not isinstance(d, dict) or not isinstance(d.get("params"), dict):
        raise BadInput(f"{what} is not a conv entry (a dict with 'params')")
    p = d["params"]
    try:
        w = _tensor(p["weight"], f"{what}.weight", torch.int8)
        conv = QConv(w, _tensor(p["bias"], f"{what}.bias", torch.int32),
                     _tensor(p["w_scales"], f"{what}.w_scales", torch.float32),
                     float(p["x_scale"]), int(p["x_zero"]), float(p["y_scale"]), int(p["y_zero"]),
                     int(d.get("stride", 1)), int(d.get("groups", 1)))
    except KeyError as exc:
        raise BadInput(f"{what} has no {exc.args[0]!r}") from None
    if w.dim() != 4 or conv.bias.shape != (w.shape[0],) or conv.w_scales.shape != (w.shape[0],):
        raise BadInput(f"{what}: weight {tuple(w.shape)}, bias {tuple(conv.bias.shape)} and scales "
                         f"{tuple(conv.w_scales.shape)} do not fit together")
    return conv


def _spec_of(first: QConv, blocks: list[tuple[QConv | None, QConv, QConv]]) -> tuple:
    """The architecture the stored convs describe, as comparable data."""
    rows = []
    for pw1, dw, pw2 in blocks:
        cin = pw1.weight.shape[1] if pw1 is not None else dw.weight.shape[0]
        hidden = dw.weight.shape[0]
        if hidden % cin:
            raise BadInput(f"a block expands {cin} to {hidden} channels, not a whole ratio")
        rows.append(BlockSpec(hidden // cin, dw.kernel, dw.stride, int(cin), int(pw2.weight.shape[0])))
    return int(first.weight.shape[0]), first.kernel, first.stride, tuple(rows)


def quantised_model(obj: dict, source: str) -> QuantisedModel:
    """Check the stored dict against the zoo and return its typed view (one-line errors naming the part)."""
    try:
        first = _qconv(obj["first_conv"], "first_conv")
        blocks, residuals = [], {}
        if not isinstance(obj["blocks"], list):
            raise BadInput("blocks is not a list")
        for b, blk in enumerate(obj["blocks"]):
            if not isinstance(blk, dict):
                raise BadInput(f"blocks[{b}] is not a dict")
            if blk.get("se") is not None:
                raise BadInput(f"blocks[{b}] has a squeeze-excite layer, which the zoo's blocks do not")
            pw1 = _qconv(blk["pointwise1"], f"blocks[{b}].pointwise1") if blk.get("pointwise1") else None
            blocks.append((pw1, _qconv(blk["depthwise"], f"blocks[{b}].depthwise"),
                           _qconv(blk["pointwise2"], f"blocks[{b}].pointwise2")))
            res = blk.get("residual")
            if res is not None:
                if not isinstance(res, dict) or "kernel_size" in res:
                    raise BadInput(f"blocks[{b}] has a conv shortcut, which the zoo's blocks do not")
                rp = res.get("params") or {}
                residuals[b] = (float(rp.get("x_scale", 0.0)), int(rp.get("x_zero", 0)),
                                float(rp.get("y_scale", 0.0)), int(rp.get("y_zero", 0)))
        if obj.get("feature_mix") is not None:
            raise BadInput("it has a feature-mix conv, which tiny-training's int8 models do not")
        classifier = _qconv(obj["classifier"], "classifier")
    except KeyError as exc:
        raise BadInput(f"{source}: entry {exc.args[0]!r} is missing; it is not {_EXPECT}") from None
    except ValueError as exc:
        raise BadInput(f"{source}: {exc}; it is not {_EXPECT}") from None
    stem_out, stem_kernel, stem_stride, rows = _spec_of(first, blocks)
    matches = [s for s in ZOO.values() if s.feature_mix is None and s.blocks == rows
               and (s.stem_out, s.stem_kernel, s.stem_stride) == (stem_out, stem_kernel, stem_stride)]
    if not matches:
        raise BadInput(f"{source}: its {len(rows)} blocks match no model of the zoo without a feature-mix conv "
                         f"({', '.join(s.name for s in ZOO.values() if s.feature_mix is None)})")
    spec = matches[0]
    bad = [b for b, blk in enumerate(spec.blocks) if blk.residual != (b in residuals)]
    if bad:
        raise BadInput(f"{source}: the shortcuts of blocks {bad} differ from {spec.name}'s")
    from dataclasses import replace

    spec = replace(spec, input_norm=MIT_INPUT_NORM)
    convs = (first,) + tuple(c for blk in blocks for c in blk if c is not None)
    return QuantisedModel(spec, convs, classifier, residuals, source)


def read_quantised(path: str | Path) -> QuantisedModel:
    return quantised_model(read_pickle(path), str(path))


def to_backbone(qm: QuantisedModel, bn_scale: str = "rms") -> Backbone:
    """The float network of `qm` (its spec carries the [-1, 1] input normalisation), with a 1000-way
    classifier. ReLU6 where the int8 model clamps to its calibrated range: the float architecture's own
    activation (the calibrated ranges are a quantisation artefact, at most 6 here)."""
    if bn_scale not in BN_SCALES:
        raise BadInput(f"bn_scale must be one of {', '.join(BN_SCALES)}, got {bn_scale!r}")
    backbone = Backbone(qm.spec, num_classes=1000)
    mods = backbone.conv_modules()
    layers = conv_layers(qm.spec)
    with torch.no_grad():
        for layer, mod, q in zip(layers, mods, qm.convs, strict=True):
            w, b = q.float_weight(), q.float_bias()
            if tuple(w.shape) != tuple(mod.conv.weight.shape) or q.groups != layer.groups or q.stride != layer.stride:
                raise BadInput(f"{qm.source}: {layer.name} is stored as {tuple(w.shape)} stride {q.stride}, "
                                 f"{qm.spec.name} has {tuple(mod.conv.weight.shape)} stride {layer.stride}")
            r = (w.pow(2).mean((1, 2, 3)).sqrt().clamp_min(1e-12) if bn_scale == "rms"
                 else torch.ones(w.shape[0], dtype=w.dtype))
            mod.conv.weight.copy_(w / r.view(-1, 1, 1, 1))
            mod.bn.weight.copy_(r)
            mod.bn.bias.copy_(b)
            mod.bn.running_mean.zero_()
            mod.bn.running_var.fill_(1.0 - mod.bn.eps)       # 1 / sqrt(var + eps) = 1
        c = qm.classifier
        backbone.classifier.weight.copy_(c.float_weight().flatten(1))
        backbone.classifier.bias.copy_(c.float_bias())
    return backbone.eval()


def check_model(model: str, qm: QuantisedModel) -> None:
    """Refuse a file that does not describe `model` (a feature-mix zoo model given a file without one is
    pointed to its `-nomix` entry)."""
    if model == qm.spec.name:
        return
    if ZOO.get(model) is not None and f"{model}-nomix" == qm.spec.name:
        raise BadInput(f"{qm.source} holds {model} without its final feature-mix conv (tiny-training's variant); "
                         f"pass --model {qm.spec.name} (loading it into {model} would need a random feature-mix)")
    raise BadInput(f"{qm.source} holds the weights of {qm.spec.name}, not {model}; pass --model {qm.spec.name}")


def checkpoint_meta(path: str | Path, bn_scale: str) -> dict:
    """The metadata a backbone from such a file carries (its resolution is the files' 128 px)."""
    return {"resolution": RESOLUTION, "imported_from": Path(path).name, "bn_scale": bn_scale,
            "source": "MIT tiny-training int8 ImageNet model (MIT licence), dequantised by tinytrain"}


def load_quantised(model: str, path: str | Path, bn_scale: str = "rms") -> Backbone:
    """`--model MODEL --checkpoint PATH.pkl`: the float backbone of a file that describes `model`."""
    qm = read_quantised(path)
    check_model(model, qm)
    return to_backbone(qm, bn_scale)
