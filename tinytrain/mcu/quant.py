"""int8 for the C runtime: the frozen prefix in integer arithmetic, and its PyTorch reference.

`tinytrain export --format c --precision int8` splits the network at the block holding the earliest
trained layer (the sparse engine's `first_block`):

* the **prefix** (every stage below that block) runs as int8 inference: weights int8 per output
  channel (symmetric, BatchNorm folded in), activations int8 per tensor with a scale and a zero point,
  int32 accumulators and bias, and requantisation between layers by a fixed-point multiplier
  (`acc * M0 >> shift`, rounding half up, as CMSIS-NN and TinyEngine do). Fixed point rather than
  float scales: the arithmetic is then integers only, so the C on any core, the host build and this
  module's PyTorch reference agree bit for bit by construction (no dependence on float rounding,
  FMA contraction or the FPU), and a frozen prefix needs no FPU at all;
* at the boundary the int8 activation is dequantised once, `(q - zero) * scale` in float32;
* the **suffix** computes in float32 as the float runtime does (the gradient needs floats), but its
  frozen weights are int8 too (per output channel, BN not folded, dequantised on the fly as
  `q * scale[co]`); the trained channels are float master copies in RAM (initial values in flash).

Where the checkpoint carries no activation ranges (every shipped and generated model), they are
calibrated: the float model runs on the calibration images (the support set) and each tensor's
[min, max], widened to include 0, is mapped onto [-128, 127]. `integer_prefix` is the reference the
C must equal exactly; `dequantised_backbone` gives the float model the suffix must match within 1e-4.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from ..errors import BadInput

PRECISIONS = ("float32", "int8")
ADD_SHIFT = 20                  # fixed-point fraction bits of the residual add's two multipliers
MIN_CALIBRATION_IMAGES = 2


@dataclass(frozen=True)
class QParams:
    """A tensor's affine int8 quantisation: real = scale * (q - zero)."""

    scale: float
    zero: int

    def to_dict(self) -> dict:
        return {"scale": self.scale, "zero": self.zero}


def qparams_of_range(lo: float, hi: float) -> QParams:
    """Asymmetric int8 for [lo, hi] widened to include 0 (so that zero padding is exact)."""
    lo, hi = min(0.0, float(lo)), max(0.0, float(hi))
    span = hi - lo
    scale = span / 255.0 if span > 0 else 1.0
    scale = float(np.float32(scale))
    zero = int(round(-128 - lo / scale))
    return QParams(scale, max(-128, min(127, zero)))


def fixed_point(m: float) -> tuple[int, int]:
    """(M0, shift) with m ~= M0 * 2**-shift, M0 in [2**30, 2**31) and 1 <= shift <= 62 (M0 = 0 for a
    multiplier too small to move any int32 accumulator)."""
    if not m > 0 or not math.isfinite(m):
        raise BadInput(f"requantisation multiplier must be positive and finite (got {m})")
    frac, exp = math.frexp(m)               # m = frac * 2**exp, frac in [0.5, 1)
    m0 = int(round(frac * (1 << 31)))
    if m0 == 1 << 31:
        m0, exp = 1 << 30, exp + 1
    shift = 31 - exp
    if shift > 62:
        return 0, 1
    if shift < 1:
        raise BadInput(f"requantisation multiplier {m:g} is too large (over 2**30); the layer's activation "
                         "ranges are degenerate")
    return m0, shift


@dataclass
class QLayer:
    """One int8 layer of the prefix: int8 weights (BN folded), int32 bias, per-channel fixed-point
    requantisation, input and output zero points, and the clamp (ReLU6 in the int8 domain)."""

    index: int
    weight: np.ndarray          # int8, cout x cin/groups x k x k
    bias: np.ndarray            # int32, cout
    mult: np.ndarray            # int32, cout
    shift: np.ndarray           # int8, cout
    x: QParams
    y: QParams                  # the conv output (before a residual add)
    lo: int
    hi: int
    stride: int
    groups: int
    # residual add after this layer (the last layer of a residual block): out = add(block input, y)
    res_in: QParams | None = None       # the block input
    res_out: QParams | None = None      # the sum
    res_m_in: int = 0                   # block input's multiplier, 2**-ADD_SHIFT units
    res_m_y: int = 0                    # this layer's output multiplier

    @property
    def out(self) -> QParams:
        """What the next layer reads: the sum after a residual add, otherwise the conv output."""
        return self.res_out if self.res_out is not None else self.y


@dataclass
class QuantisedNet:
    """Everything int8 about an export: the prefix layers, the input table, the boundary, and the
    suffix's int8 frozen weights."""

    n_int8: int                           # layers 0 .. n_int8 - 1 run in int8
    image: QParams                        # the stem's input
    lut: np.ndarray                       # int8, 3 x 256: pixel value -> quantised normalised input
    layers: list[QLayer]
    boundary: QParams                     # the prefix's output, dequantised for the suffix
    suffix_weights: dict[int, np.ndarray] = field(default_factory=dict)   # layer -> int8 (BN not folded)
    suffix_scales: dict[int, np.ndarray] = field(default_factory=dict)    # layer -> float32 per out channel
    calibration_images: int = 0

    def to_dict(self) -> dict:
        """What tt_export.json records (no weights)."""
        return {"int8_layers": self.n_int8, "image": self.image.to_dict(), "boundary": self.boundary.to_dict(),
                "calibration_images": self.calibration_images,
                "requantisation": "fixed-point multiplier per output channel: (acc * M0 + 2**(shift-1)) >> shift",
                "activations": [{"layer": q.index, "input": q.x.to_dict(), "output": q.y.to_dict(),
                                 **({"residual_sum": q.res_out.to_dict()} if q.res_out else {})} for q in self.layers]}


# ---------------------------------------------------------------------------------------------------
# Where the split lies

def int8_layer_count(spec, earliest: int, resolution: int) -> int:
    """Layers below the block holding `earliest` (the stem is stage -1): the int8 prefix."""
    from ..models.specs import conv_layers

    layers = conv_layers(spec, resolution)
    block = layers[earliest].block
    return min(l.index for l in layers if l.block == block)


def _stages(spec, n_layers: int) -> list[tuple[list[int], bool]]:
    """(layer indices, residual) per stage: the stem, each block, the feature-mix conv."""
    out, idx = [([0], False)], 1
    for blk in spec.blocks:
        k = 3 if blk.expand != 1 else 2
        out.append((list(range(idx, idx + k)), bool(blk.residual)))
        idx += k
    if idx < n_layers:
        out.append(([idx], False))
    return out


# ---------------------------------------------------------------------------------------------------
# Calibration and quantisation

def _folded(mod) -> tuple[torch.Tensor, torch.Tensor]:
    """Conv weight with BN's scale folded in, and BN's shift (float64, for quantising)."""
    bn = mod.bn
    s = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
    t = bn.bias.detach().double() - bn.running_mean.double() * s
    return mod.conv.weight.detach().double() * s.view(-1, 1, 1, 1), t


def _weight_scales(w: torch.Tensor) -> torch.Tensor:
    """Symmetric per-output-channel scales (float32 values, held in float64): max |w| / 127."""
    m = w.abs().reshape(w.shape[0], -1).amax(1)
    m = torch.where(m > 0, m, torch.ones_like(m))
    return (m / 127.0).float().double()


def _quantise_weights(w: torch.Tensor, scales: torch.Tensor) -> np.ndarray:
    q = torch.round(w / scales.view(-1, *([1] * (w.dim() - 1)))).clamp(-127, 127)
    return q.to(torch.int8).numpy()


@torch.no_grad()
def calibrate_ranges(backbone, x: torch.Tensor, n_int8: int) -> tuple[dict[int, tuple[float, float]],
                                                                      dict[int, tuple[float, float]]]:
    """[min, max] of every prefix layer's output (after its activation) and of every residual sum in the
    prefix (keyed by the block's last layer), over the normalised images `x` (N, 3, R, R)."""
    mods = backbone.conv_modules()
    outs: dict[int, tuple[float, float]] = {}
    sums: dict[int, tuple[float, float]] = {}
    for start in range(0, len(x), 16):
        h = x[start:start + 16].float()
        for idx, residual in _stages(backbone.spec, len(mods)):
            if idx[0] >= n_int8:
                break
            y = h
            for i in idx:
                y = mods[i](y)
                lo, hi = outs.get(i, (math.inf, -math.inf))
                outs[i] = (min(lo, float(y.min())), max(hi, float(y.max())))
            if residual:
                y = h + y
                lo, hi = sums.get(idx[-1], (math.inf, -math.inf))
                sums[idx[-1]] = (min(lo, float(y.min())), max(hi, float(y.max())))
            h = y
    return outs, sums


def input_range(normalisation: dict) -> tuple[float, float]:
    """The normalised input's range over every channel (pixels 0..255)."""
    mean, std = normalisation["mean"], normalisation["std"]
    vals = [(v - m) / s for m, s in zip(mean, std) for v in (0.0, 1.0)]
    return min(vals), max(vals)


def image_lut(normalisation: dict, q: QParams) -> np.ndarray:
    """int8 (3, 256): pixel p of channel c -> clamp(round(((p/255 - mean_c)/std_c) / scale) + zero)."""
    p = np.arange(256, dtype=np.float64) / 255.0
    rows = []
    for m, s in zip(normalisation["mean"], normalisation["std"]):
        v = np.floor((p - m) / s / q.scale + 0.5) + q.zero
        rows.append(np.clip(v, -128, 127))
    return np.stack(rows).astype(np.int8)


def quantise(backbone, normalisation: dict, calib_x: torch.Tensor, n_int8: int, resolution: int,
             trained_layers: dict[int, tuple[str, tuple[int, ...]]] | None = None) -> QuantisedNet:
    """Quantise the prefix (layers < n_int8) with ranges calibrated on `calib_x` (normalised images, at
    least two), and the suffix's frozen weights per output channel."""
    if len(calib_x) < MIN_CALIBRATION_IMAGES:
        raise BadInput(f"int8 calibration needs at least {MIN_CALIBRATION_IMAGES} images (got {len(calib_x)}): "
                         "the activation ranges of one image do not represent the next; give the support images")
    from ..models.specs import conv_layers

    convs = conv_layers(backbone.spec, resolution)
    mods = backbone.conv_modules()
    outs, sums = calibrate_ranges(backbone, calib_x, n_int8)
    image = qparams_of_range(*input_range(normalisation))
    last_of_block = {}
    for idx, residual in _stages(backbone.spec, len(mods)):
        if residual:
            last_of_block[idx[-1]] = idx[0]
    layers: list[QLayer] = []
    block_in: dict[int, QParams] = {}
    cur = image
    for i in range(n_int8):
        c, mod = convs[i], mods[i]
        if i in last_of_block.values():
            block_in[i] = cur
        w, t = _folded(mod)
        # a channel whose weights are (near) zero but whose shift is not: widen its weight scale so that the
        # int32 bias, shift / (input scale x weight scale), stays within 2**30
        ws = torch.maximum(_weight_scales(w), (t.abs() / (cur.scale * 2.0 ** 30)).float().double())
        wq = _quantise_weights(w, ws)
        yq = qparams_of_range(*outs[i])
        bias = torch.round(t / (cur.scale * ws))
        mults, shifts = zip(*(fixed_point(float(cur.scale * float(s) / yq.scale)) for s in ws))
        act = c.kind != "pw2"
        lo = max(-128, yq.zero) if act else -128
        hi = min(127, yq.zero + int(math.floor(6.0 / yq.scale + 0.5))) if act else 127
        q = QLayer(i, wq, bias.to(torch.int64).numpy().astype(np.int32), np.array(mults, np.int32),
                   np.array(shifts, np.int8), cur, yq, lo, hi, c.stride, c.groups)
        if i in last_of_block:
            src = block_in[last_of_block[i]]
            out = qparams_of_range(*sums[i])
            q.res_in, q.res_out = src, out
            q.res_m_in, q.res_m_y = _add_multiplier(src.scale / out.scale), _add_multiplier(yq.scale / out.scale)
        layers.append(q)
        cur = q.out
    sw, ss = {}, {}
    for i in range(n_int8, len(convs)):
        w = mods[i].conv.weight.detach().double()
        s = _weight_scales(w)
        sw[i], ss[i] = _quantise_weights(w, s), s.float().numpy()
    return QuantisedNet(n_int8, image, image_lut(normalisation, image), layers, cur, sw, ss, len(calib_x))


def _add_multiplier(ratio: float) -> int:
    m = int(round(ratio * (1 << ADD_SHIFT)))
    if not 0 <= m < 2 ** 31:
        raise BadInput(f"residual add scale ratio {ratio:g} is out of range; the activation ranges are degenerate")
    return m


# ---------------------------------------------------------------------------------------------------
# The PyTorch reference of the integer arithmetic

def quantise_frames(rgb: np.ndarray, qn: QuantisedNet) -> torch.Tensor:
    """uint8 (N, R, R, 3) -> int64 (N, 3, R, R) through the input table, as the runtime does."""
    x = np.stack([qn.lut[c][rgb[..., c]] for c in range(3)], axis=1)
    return torch.from_numpy(x.astype(np.int64))


def requantise(acc: torch.Tensor, mult: np.ndarray, shift: np.ndarray) -> torch.Tensor:
    """(acc * M0 + 2**(shift-1)) >> shift per output channel (dim 1), in int64 as the C does."""
    m = torch.from_numpy(mult.astype(np.int64)).view(1, -1, 1, 1)
    s = torch.from_numpy(shift.astype(np.int64)).view(1, -1, 1, 1)
    return torch.bitwise_right_shift(acc * m + torch.bitwise_left_shift(torch.ones_like(s), s - 1), s)


def q_conv(x: torch.Tensor, q: QLayer) -> torch.Tensor:
    """One int8 layer on int64-held int8 values. The convolution runs in float64 on integers
    (|sum| < 2**31, exact), the rest in int64."""
    k = q.weight.shape[-1]
    acc = F.conv2d((x - q.x.zero).double(), torch.from_numpy(q.weight.astype(np.float64)), None, q.stride, k // 2,
                   1, q.groups)
    acc = acc.round().to(torch.int64) + torch.from_numpy(q.bias.astype(np.int64)).view(1, -1, 1, 1)
    return (requantise(acc, q.mult, q.shift) + q.y.zero).clamp(q.lo, q.hi)


def q_add(block_in: torch.Tensor, y: torch.Tensor, q: QLayer) -> torch.Tensor:
    v = (block_in - q.res_in.zero) * q.res_m_in + (y - q.y.zero) * q.res_m_y
    return (torch.bitwise_right_shift(v + (1 << (ADD_SHIFT - 1)), ADD_SHIFT) + q.res_out.zero).clamp(-128, 127)


def integer_prefix(rgb: np.ndarray, qn: QuantisedNet, spec) -> torch.Tensor:
    """The prefix's int8 output (int64 tensor) for uint8 frames: what the C computes, bit for bit."""
    h = quantise_frames(rgb, qn)
    by_index = {q.index: q for q in qn.layers}
    for idx, residual in _stages(spec, qn.n_int8 + len(qn.suffix_weights)):
        if idx[0] >= qn.n_int8:
            break
        y = h
        for i in idx:
            y = q_conv(y, by_index[i])
        h = q_add(h, y, by_index[idx[-1]]) if residual else y
    return h


def dequantise(q: torch.Tensor, p: QParams) -> torch.Tensor:
    """float32 (q - zero) * scale, one rounding, as the C's boundary does."""
    return (q - p.zero).to(torch.float32) * torch.tensor(p.scale, dtype=torch.float32)


def dequantised_backbone(backbone, qn: QuantisedNet, trained: dict[int, tuple[str, tuple[int, ...]]]):
    """A copy of `backbone` whose suffix frozen weights are the int8 ones dequantised (q * scale in
    float32, as the C reads them); the trained channels keep their float values (the master copies)."""
    bb = copy.deepcopy(backbone)
    mods = bb.conv_modules()
    with torch.no_grad():
        for i, q in qn.suffix_weights.items():
            w = mods[i].conv.weight
            deq = torch.from_numpy(q.astype(np.float32)) * torch.from_numpy(qn.suffix_scales[i]).view(-1, 1, 1, 1)
            if i in trained:
                axis, ch = trained[i]
                idx = torch.tensor(ch, dtype=torch.long)
                dim = 1 if (axis == "in" and mods[i].conv.groups == 1) else 0
                deq.index_copy_(dim, idx, w.index_select(dim, idx))
            w.copy_(deq)
    return bb
