"""The sparse-update engine: trains selected conv channels (and BN shifts) with real savings.

Savings are structural, not simulated by masking gradients after a full backward:

* layers below the earliest updated layer run under ``torch.no_grad()``: their output is a constant, and
  for images that do not change (the clean support set) it is computed once per task (`PrefixCache`);
* a frozen conv and its frozen BatchNorm (eval mode: the per-channel map ``y = x * s + t``) are folded once
  into one conv with weight ``W * s`` and bias ``t``; it keeps nothing but a reference to the folded weight
  and computes only ``grad_input``;
* ReLU6 keeps a 1-bit mask per element (packed 8 to a byte) instead of its fp32 input (and clamps in place);
* a partially updated conv owns a trainable tensor holding only its K selected channels (rows for axis
  "out", columns for axis "in"), computes the weight gradient only for them, and keeps only the input slice
  those channels need (``x`` for "out", ``x[:, sel]`` for "in" and for depthwise convs). Its BN scale is
  folded into a working weight whose selected slice is rewritten from the trainable tensor once per
  optimizer step (detected by the tensor's version counter); the frozen slices are never copied again;
  when every channel is selected nothing is sliced at all;
* the optimizer only ever sees those small tensors.

The engine's forward never reads the backbone's weights; :meth:`SparseEngine.sync` writes the trained
slices and shifts into the (private) backbone, which then is a plain ``Backbone`` holding the adapted
weights. `sync` is idempotent and cheap; the fine-tuning loop calls it once, after the last step.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.grad import conv2d_weight

from ..models.backbone import Backbone, ConvBNAct
from ..errors import BadInput


# --------------------------------------------------------------------------------------------
# What to train

@dataclass(frozen=True)
class LayerSelection:
    """Weight channels of one conv layer to train. `channels` are sorted indices along `axis`."""

    index: int
    channels: tuple[int, ...]
    axis: str = "out"          # out: rows of W (output channels) | in: columns (input channels)

    def __post_init__(self):
        if self.axis not in ("out", "in"):
            raise BadInput(f"axis must be 'out' or 'in', got {self.axis!r}")
        if not self.channels:
            raise BadInput(f"layer {self.index}: select at least one channel (or drop the layer)")


@dataclass(frozen=True)
class EnginePlan:
    """Everything the engine trains: weight slices plus whole-layer BN shifts ("biases")."""

    weights: tuple[LayerSelection, ...] = ()
    biases: tuple[int, ...] = ()

    @property
    def earliest(self) -> int:
        idx = [w.index for w in self.weights] + list(self.biases)
        if not idx:
            raise BadInput("the update plan is empty: select at least one layer or bias to train")
        return min(idx)

    def to_dict(self) -> dict:
        return {"weights": [{"index": w.index, "axis": w.axis, "channels": list(w.channels)} for w in self.weights],
                "biases": list(self.biases)}

    @staticmethod
    def from_update_plan(plan, channel_lists: dict[int, list[int]] | None = None,
                         layer_channels: dict[int, int] | None = None) -> "EnginePlan":
        """Convert a `tinytrain.costs.plan.UpdatePlan`: each LayerUpdate needs explicit `channels`,
        or an entry in `channel_lists`, or ratio 1 with `layer_channels` giving the axis size."""
        sels = []
        for lu in plan.layers:
            ch = lu.channels if lu.channels is not None else (channel_lists or {}).get(lu.index)
            if ch is None:
                if lu.ratio < 1.0 or layer_channels is None:
                    raise BadInput(f"layer {lu.index}: the plan gives a ratio but no channel indices")
                ch = range(layer_channels[lu.index])
            if len(ch):
                sels.append(LayerSelection(lu.index, tuple(sorted(int(c) for c in ch)), lu.axis))
        return EnginePlan(tuple(sels), tuple(sorted(int(b) for b in plan.bias_layers)))


def engine_plan(plan, backbone: Backbone) -> EnginePlan:
    """The engine form of a sparse `UpdatePlan` (layers at ratio 1 without channel lists train every channel)."""
    if getattr(plan, "kind", "sparse") != "sparse":
        raise BadInput(f"the sparse engine trains sparse plans, not {plan.kind!r} ones")
    layers = backbone.conv_layers()
    totals = {u.index: layers[u.index].channels(u.axis) for u in plan.layers if 0 <= u.index < len(layers)}
    return EnginePlan.from_update_plan(plan, layer_channels=totals)


# --------------------------------------------------------------------------------------------
# Memory-light autograd functions

# Packing 8 bools into a byte with 64-bit arithmetic on 8-byte words, so that both directions run over an
# eighth of the elements: one multiply gathers a word's 8 flag bytes into its top byte (each flag lands on its
# own bit, and no two partial products share a bit below it), and a 256-entry table spreads a byte back.
_GATHER = 0x0102040810204080
_SPREAD: dict[torch.device, torch.Tensor] = {}


def _memory_order(t: torch.Tensor) -> torch.Tensor:
    """A view of `t` whose logical order is its memory order (NHWC for channels-last maps), so that packing
    and unpacking never copy the map into another layout."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return t.permute(0, 2, 3, 1)
    return t


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A bool tensor as uint8 bytes, 8 elements per byte in memory order (the last byte zero-padded)."""
    flat = _memory_order(mask).reshape(-1).view(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return ((flat.view(torch.int64) * _GATHER) >> 56).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The bool tensor `pack_bits` packed, with the shape and memory layout of `like`."""
    spread = _SPREAD.get(packed.device)
    if spread is None:
        bits = (torch.arange(256).unsqueeze(1) >> torch.arange(8)) & 1
        spread = _SPREAD[packed.device] = bits.to(torch.uint8).view(torch.int64).view(-1).to(packed.device)
    order = _memory_order(like)
    out = spread.index_select(0, packed.long()).view(torch.uint8)[:order.numel()].view(torch.bool).view(order.shape)
    return out.permute(0, 3, 1, 2) if order is not like else out


class ReLU6Mask(torch.autograd.Function):
    """ReLU6 that keeps a 1-bit mask per element (the paper's accounting) instead of its fp32 input; clamps
    in place (its input is always a fresh conv output that nothing else keeps)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(pack_bits((x > 0) & (x < 6)))
        ctx.like = torch.empty_strided(x.shape, x.stride(), dtype=torch.bool, device="meta")
        ctx.mark_dirty(x)
        return x.clamp_(0.0, 6.0)

    @staticmethod
    def backward(ctx, g):
        (packed,) = ctx.saved_tensors
        return g * unpack_bits(packed, ctx.like)


def conv_input_grad(x_shape: torch.Size, weight: torch.Tensor, g: torch.Tensor, stride, padding, groups: int
                    ) -> torch.Tensor:
    """Gradient of a conv's input from its output gradient: the transposed conv with the same weight.

    Equal to ``torch.nn.grad.conv2d_input``, which hands oneDNN a stand-in input; this form needs none and
    ran MCUNet's last six blocks' input gradients 4x faster (docs/engine.md)."""
    kh, kw = weight.shape[2:]
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    out_pad = (x_shape[2] - ((g.shape[2] - 1) * sh - 2 * ph + kh), x_shape[3] - ((g.shape[3] - 1) * sw - 2 * pw + kw))
    return F.conv_transpose2d(g, weight, None, (sh, sw), (ph, pw), out_pad, groups)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class FrozenConv(torch.autograd.Function):
    """A frozen conv (BN folded in): keeps only the weight reference, returns only grad_input."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, groups):
        ctx.weight, ctx.conf, ctx.x_shape = weight, (stride, padding, groups), x.shape
        return F.conv2d(x, weight, bias, stride, padding, 1, groups)

    @staticmethod
    def backward(ctx, g):
        stride, padding, groups = ctx.conf
        gx = conv_input_grad(ctx.x_shape, ctx.weight, g, stride, padding, groups)
        return gx, None, None, None, None, None


def depthwise_weight_grad(x: torch.Tensor, g: torch.Tensor, kernel: tuple[int, int], stride, padding
                          ) -> torch.Tensor:
    """Weight gradient (C, 1, kh, kw) of a depthwise conv from its input `x` (N, C, H, W) and output
    gradient `g` (N, C, Ho, Wo): ``dW[c, a, b] = sum_n,h,w x_pad[n, c, s*h + a, s*w + b] * g[n, c, h, w]``.

    Computed as one depthwise conv of every (image, channel) plane of `x` with its own `g` plane as the
    kernel (dilated by the stride), then summed over images. PyTorch's CPU kernel for this gradient
    (oneDNN) is slow for 5x5 and 7x7 kernels; this form was 14-30x faster for MCUNet's at batch 25
    (docs/engine.md) and equal for 3x3."""
    n, c, h, w = x.shape
    ho, wo = g.shape[2:]
    kh, kw = kernel
    out = F.conv2d(x.reshape(1, n * c, h, w), g.reshape(n * c, 1, ho, wo), None, 1, padding, stride, n * c)
    return out[0, :, :kh, :kw].reshape(n, c, kh, kw).sum(0).unsqueeze(1)


class SparseConv(torch.autograd.Function):
    """A conv with K trainable channels and its BN scale folded in: ``y = conv(x, W * s) (+ t)``.

    `weight` is the folded working weight (its selected slice equals ``w_sel * s``); the gradient is
    computed for `w_sel` only, from the kept input slice: ``dL/dW[o, i] = s[o] * (g[o] * x[i])``, so the
    weight gradient of the selected slice is scaled by `row_scale` (s of the slice's output rows).
    `sel` is None when every channel is trained (then nothing is sliced)."""

    @staticmethod
    def forward(ctx, x, w_sel, weight, bias, row_scale, sel, axis, stride, padding, groups):
        depthwise = groups > 1
        ctx.weight, ctx.row_scale, ctx.sel, ctx.w_shape = weight, row_scale, sel, w_sel.shape
        ctx.conf = (axis, stride, padding, groups, depthwise)
        ctx.x_shape = x.shape
        keep = x.index_select(1, sel) if (sel is not None and (axis == "in" or depthwise)) else x
        ctx.save_for_backward(keep)
        return F.conv2d(x, weight, bias, stride, padding, 1, groups)

    @staticmethod
    def backward(ctx, g):
        (keep,) = ctx.saved_tensors
        axis, stride, padding, groups, depthwise = ctx.conf
        sel = ctx.sel
        gx = None
        if ctx.needs_input_grad[0]:
            gx = conv_input_grad(ctx.x_shape, ctx.weight, g, stride, padding, groups)
        g_rows = g.index_select(1, sel) if (sel is not None and (axis == "out" or depthwise)) else g
        if depthwise:
            gw = depthwise_weight_grad(keep, g_rows, ctx.w_shape[2:], stride, padding)
        else:
            gw = conv2d_weight(keep, ctx.w_shape, g_rows, stride, padding, 1, 1)
        gw.mul_(ctx.row_scale.view(-1, 1, 1, 1))
        return gx, gw, None, None, None, None, None, None, None, None


# --------------------------------------------------------------------------------------------
# Measuring what autograd keeps

@dataclass
class SavedBytesCounter:
    """Counts bytes that autograd keeps for backward, excluding parameters/buffers, deduped by storage."""

    exclude: set[int] = field(default_factory=set)
    seen: set[int] = field(default_factory=set)
    bytes: int = 0

    def pack(self, t: torch.Tensor):
        try:
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr not in self.exclude and ptr not in self.seen:
                self.seen.add(ptr)
                self.bytes += storage.nbytes()
        except (RuntimeError, NotImplementedError):
            pass
        return t

    @staticmethod
    def unpack(t: torch.Tensor) -> torch.Tensor:
        return t


@contextmanager
def count_saved_bytes(*modules: nn.Module, extra: list[torch.Tensor] | tuple = ()):
    """Context manager yielding a `SavedBytesCounter` for the autograd graph built inside it."""
    exclude = {t.untyped_storage().data_ptr() for m in modules for t in list(m.parameters()) + list(m.buffers())}
    exclude |= {t.untyped_storage().data_ptr() for t in extra}
    counter = SavedBytesCounter(exclude=exclude)
    with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
        yield counter


# --------------------------------------------------------------------------------------------
# The engine

def private_backbone(module: nn.Module) -> nn.Module:
    """A copy of a module tree that shares no tensor and no mutable container with the original, as
    ``copy.deepcopy`` makes one, in a fraction of its time (measured 1.7 ms against 11-16 ms for MCUNet):
    every adaptation makes two (the Fisher pass's engine and the model it trains), so it is on the
    critical path of the selection. Immutable attributes (the spec, flags) are shared."""
    new = module.__class__.__new__(module.__class__)
    d = {}
    for k, v in module.__dict__.items():
        if k == "_parameters":
            d[k] = OrderedDict((n, None if p is None else _clone_parameter(p)) for n, p in v.items())
        elif k == "_buffers":
            d[k] = OrderedDict((n, None if b is None else b.detach().clone()) for n, b in v.items())
        elif k == "_modules":
            d[k] = OrderedDict((n, None if m is None else private_backbone(m)) for n, m in v.items())
        elif isinstance(v, torch.Tensor):
            d[k] = v.detach().clone()
        elif isinstance(v, (dict, list, set)):
            d[k] = v.copy()           # hook tables and the like: own containers, same entries
        else:
            d[k] = v
    new.__dict__ = d
    return new


def _clone_parameter(p: nn.Parameter) -> nn.Parameter:
    q = nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad)
    if p.grad is not None:
        q.grad = p.grad.detach().clone()
    return q


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    s = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    return s, bn.bias.detach() - bn.running_mean * s


@dataclass
class PrefixCache:
    """The frozen prefix's output for a fixed set of images (the clean support set): the activations at
    the input of stage `block` (-1: the images themselves, b >= 0: the output of block b - 1, the
    stem's for b = 0), as `SparseEngine.first_block` numbers stages. An engine whose `first_block` is
    at or after `block` continues from it (`SparseEngine.prefix_from`) instead of recomputing it."""

    block: int
    h: torch.Tensor
    seconds: float = 0.0          # time spent computing it

    @property
    def nbytes(self) -> int:
        return self.h.numel() * self.h.element_size()


class SparseEngine(nn.Module):
    """Forward/backward over a `Backbone` that trains exactly `plan`, keeping only what it needs.

    The engine works on the backbone it is given (callers pass a private copy); the backbone's frozen
    weights are never touched, the trained slices are written into it by `sync()`. Public interface
    (used by the methods, the Fisher pass and the benches): `trainable_parameters()`, `sync()`,
    `prefix(x)`, `suffix(h)`, `forward(x)`, `support_prefix(x)` / `prefix_from(cache)`, `first_block`,
    `taps`. The trainable tensors must be changed in place through the Parameter (as optimizers do),
    not through `.data`, so that the engine sees the new version (or call `refresh()`).
    """

    def __init__(self, backbone: Backbone, plan, channels_last: bool = True, owns_backbone: bool = True):
        """`plan`: an `UpdatePlan` of kind "sparse" (the methods' one plan; every layer names its channels
        or trains them all) or its engine form `EnginePlan`."""
        super().__init__()
        if not isinstance(plan, EnginePlan):
            plan = engine_plan(plan, backbone)
        # activations and folded weights in channels-last layout: oneDNN's CPU convolutions ran MCUNet's
        # prefix in half the time of the default layout here (docs/engine.md); results equal up to rounding
        self.layout = torch.channels_last if channels_last else torch.contiguous_format
        # owns_backbone=False: the engine only reads the backbone (at construction) and never changes it,
        # not even its flags, so a caller's backbone needs no private copy; sync() is then refused
        self.owns_backbone = owns_backbone
        self.backbone = backbone.eval() if owns_backbone else backbone
        if owns_backbone:
            for p in backbone.parameters():
                p.requires_grad_(False)
        self.plan = plan
        self.layers = backbone.conv_layers()
        self.mods: list[ConvBNAct] = backbone.conv_modules()
        n = len(self.mods)
        self.earliest = plan.earliest
        for w in plan.weights:
            if not 0 <= w.index < n:
                raise BadInput(f"layer {w.index} does not exist; {backbone.spec.name} has layers 0..{n - 1}")
        for b in plan.biases:
            if not 0 <= b < n:
                raise BadInput(f"bias layer {b} does not exist; {backbone.spec.name} has layers 0..{n - 1}")
        self.sel: dict[int, LayerSelection] = {w.index: w for w in plan.weights}
        # on the weights' device: index_select / index_copy_ take no index from another device (a GPU run)
        self.sel_index = {i: torch.tensor(w.channels, dtype=torch.long, device=self.mods[i].conv.weight.device)
                          for i, w in self.sel.items()}
        self.weight_params = nn.ParameterDict()
        self._full: dict[int, bool] = {}
        for i, w in self.sel.items():
            conv = self.mods[i].conv
            size = conv.weight.shape[0] if self._rows(i) else conv.weight.shape[1]
            if max(w.channels) >= size or min(w.channels) < 0:
                raise BadInput(f"layer {i}: channel indices must be in 0..{size - 1}")
            self._full[i] = len(w.channels) == size
            self.weight_params[str(i)] = nn.Parameter(self._slice(i).clone())
        scale_shift = [_bn_affine(m.bn) for m in self.mods]
        self._scale = [s for s, _ in scale_shift]
        self._shift = [t for _, t in scale_shift]
        self.bias_params = nn.ParameterDict()
        self._bias0: dict[int, torch.Tensor] = {}
        for b in plan.biases:
            self._bias0[b] = self.mods[b].bn.bias.detach().clone()
            self.bias_params[str(b)] = nn.Parameter(self._shift[b].clone())
        # frozen conv + BN folded once: weight W * s (the BN shift t is the conv's bias)
        self._folded: list[torch.Tensor | None] = [
            None if i in self.sel else self._fold(i) for i in range(n)]
        # trained convs: a folded working weight; its selected slice follows the trainable tensor
        self._work = {i: self._fold(i) for i in self.sel}
        self._work_version: dict[int, int] = {}
        self._row_scale = {i: (self._scale[i] if not self._rows(i) or self._full[i]
                               else self._scale[i].index_select(0, self.sel_index[i])) for i in self.sel}
        # blocks whose layers are all below the earliest updated layer form the constant prefix
        self.first_block = self.layers[self.earliest].block   # -1 stem, len(blocks) feature-mix
        # stage (-1 stem, blocks, len(blocks) feature-mix) -> (its layer indices, residual)
        self._stages: list[tuple[int, list[int], bool]] = [(-1, [0], False)]
        idx = 1
        for b, blk in enumerate(backbone.blocks):
            k = 3 if blk.pw1 is not None else 2
            self._stages.append((b, list(range(idx, idx + k)), bool(blk.residual)))
            idx += k
        if backbone.feature_mix is not None:
            self._stages.append((len(backbone.blocks), [idx], False))
        # layer index -> callback(index, output) called on layer outputs that carry autograd
        # (the Fisher pass taps activations this way)
        self.taps: dict[int, Callable[[int, torch.Tensor], None]] = {}

    # -- parameters ------------------------------------------------------------------------
    def _fold(self, i: int) -> torch.Tensor:
        w = self.mods[i].conv.weight.detach() * self._scale[i].view(-1, 1, 1, 1)
        return w.contiguous(memory_format=self.layout)

    def _rows(self, i: int) -> bool:
        """Whether layer i's selection indexes weight rows (axis "out", and any depthwise conv)."""
        return self.sel[i].axis == "out" or self.mods[i].conv.groups > 1

    def _slice(self, i: int) -> torch.Tensor:
        w, idx = self.mods[i].conv.weight.detach(), self.sel_index[i]
        return w.index_select(0, idx) if self._rows(i) else w.index_select(1, idx)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.weight_params.values()) + list(self.bias_params.values())

    def trainable_count(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    def _working_weight(self, i: int) -> torch.Tensor:
        """Layer i's folded working weight, its selected slice rewritten if the trainable tensor changed."""
        p = self.weight_params[str(i)]
        if self._work_version.get(i) != p._version:
            with torch.no_grad():
                w, s = self._work[i], self._scale[i]
                if self._full[i]:
                    torch.mul(p, s.view(-1, 1, 1, 1), out=w)
                elif self._rows(i):
                    w.index_copy_(0, self.sel_index[i], p * self._row_scale[i].view(-1, 1, 1, 1))
                else:
                    w.index_copy_(1, self.sel_index[i], p * s.view(-1, 1, 1, 1))
            self._work_version[i] = p._version
        return self._work[i]

    def refresh(self) -> None:
        """Rebuild the working weights from the trainable tensors (needed only after writes via `.data`)."""
        self._work_version.clear()

    @torch.no_grad()
    def sync(self) -> None:
        """Write the trained slices and shifts into the backbone (idempotent; call before reading it)."""
        if not self.owns_backbone:
            raise BadInput("this engine was built on a backbone it does not own (owns_backbone=False); "
                             "build it on a private copy to write trained weights back")
        for key, p in self.weight_params.items():
            i = int(key)
            w = self.mods[i].conv.weight
            if self._full[i]:
                w.copy_(p)
            else:
                w.index_copy_(0 if self._rows(i) else 1, self.sel_index[i], p)
        for key, p in self.bias_params.items():
            b = int(key)
            self.mods[b].bn.bias.copy_(self._bias0[b] + (p - self._shift[b]))

    @torch.no_grad()
    def reselect(self, new: dict[int, tuple[int, ...]]) -> None:
        """Train other channels of the layers in `new` from now on, as many per layer as before (a dynamic
        channel choice such as TraDy's): the current slices are written back into the backbone (once), each
        trainable tensor takes its new channels' weights. Their optimizer state belongs to the old channels:
        the caller resets it."""
        for i, channels in new.items():
            if len(set(channels)) != len(channels) or len(channels) != len(self.sel[i].channels):
                raise BadInput(f"layer {i}: reselect needs {len(self.sel[i].channels)} distinct channels")
        self.sync()
        for i, channels in new.items():
            channels = tuple(sorted(int(c) for c in channels))
            self.sel[i] = LayerSelection(i, channels, self.sel[i].axis)
            self.sel_index[i] = torch.tensor(channels, dtype=torch.long, device=self.mods[i].conv.weight.device)
            self.weight_params[str(i)].copy_(self._slice(i))
            self._work[i] = self._fold(i)
            if self._rows(i) and not self._full[i]:
                self._row_scale[i] = self._scale[i].index_select(0, self.sel_index[i])
            self._work_version.pop(i, None)

    # -- forward ---------------------------------------------------------------------------
    def _layer(self, i: int, x: torch.Tensor) -> torch.Tensor:
        conv = self.mods[i].conv
        if i == 0:
            x = self.mods[0].map_input(x)     # weights with their own input normalisation (identity otherwise)
        stride, padding, groups = conv.stride, conv.padding, conv.groups
        shift = self.bias_params[str(i)] if i in self._bias0 else None
        bias = self._shift[i] if shift is None else None
        grad = torch.is_grad_enabled()
        if i in self.sel:
            w = self._working_weight(i)
            if grad:
                y = SparseConv.apply(x, self.weight_params[str(i)], w, bias, self._row_scale[i],
                                     None if self._full[i] else self.sel_index[i], self.sel[i].axis,
                                     stride, padding, groups)
            else:
                y = F.conv2d(x, w, bias, stride, padding, 1, groups)
        elif grad and x.requires_grad:
            y = FrozenConv.apply(x, self._folded[i], bias, stride, padding, groups)
        else:
            with torch.no_grad():
                y = F.conv2d(x, self._folded[i], bias, stride, padding, 1, groups)
        if shift is not None:
            y = y + shift.view(1, -1, 1, 1)
        if self.mods[i].act is not None:
            y = ReLU6Mask.apply(y) if y.requires_grad else y.clamp_(0.0, 6.0)
        if i in self.taps and y.requires_grad:
            self.taps[i](i, y)
        return y

    def _run(self, x: torch.Tensor, start: int, stop: int | None = None) -> torch.Tensor:
        """Run stages `start` .. `stop` - 1 (-1 = stem; None = to the end) on the input of stage `start`."""
        x = x.contiguous(memory_format=self.layout)
        for stage, idx, residual in self._stages:
            if stage < start or (stop is not None and stage >= stop):
                continue
            y = x
            for i in idx:
                y = self._layer(i, y)
            if residual:
                x = y.add_(x) if not (y.requires_grad or x.requires_grad) else x + y
            else:
                x = y
        return x

    @torch.no_grad()
    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        """The constant part of the network: everything before the block holding the earliest
        updated layer. Its output can be cached for inputs that do not change (the support set)."""
        return x if self.first_block <= -1 else self._run(x, -1, self.first_block)

    def suffix(self, h: torch.Tensor) -> torch.Tensor:
        """Pooled features from a `prefix` output (with autograd where the plan needs it)."""
        return self._run(h, self.first_block).mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.suffix(self.prefix(x))

    # -- cached prefix ---------------------------------------------------------------------
    @torch.no_grad()
    def support_prefix(self, x: torch.Tensor, chunk: int = 64) -> PrefixCache:
        """The prefix output of fixed images `x`, computed once (in chunks of `chunk` images)."""
        t0 = time.perf_counter()
        h = x if self.first_block <= -1 else torch.cat([self.prefix(x[i:i + chunk]) for i in range(0, len(x), chunk)])
        return PrefixCache(self.first_block, h, time.perf_counter() - t0)

    @torch.no_grad()
    def prefix_from(self, cache: PrefixCache, chunk: int = 64) -> PrefixCache:
        """`cache` continued to this engine's `first_block` (the stages in between are frozen here)."""
        if cache.block > self.first_block:
            raise BadInput(f"a prefix cached at stage {cache.block} cannot feed an engine whose trained part "
                             f"starts at stage {self.first_block}; recompute it from the images")
        if cache.block == self.first_block:
            return cache
        t0 = time.perf_counter()
        h = torch.cat([self._run(cache.h[i:i + chunk], cache.block, self.first_block)
                       for i in range(0, len(cache.h), chunk)])
        return PrefixCache(self.first_block, h, cache.seconds + time.perf_counter() - t0)
