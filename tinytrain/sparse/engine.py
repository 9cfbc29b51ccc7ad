"""The sparse-update engine: trains selected conv channels (and BN shifts) with real savings.

Savings are structural, not simulated by masking gradients after a full backward:

* layers below the earliest updated layer run under ``torch.no_grad()`` (their output is a constant);
* frozen BatchNorm (eval mode) is the per-channel affine map ``y = x * s + t`` and keeps no activation;
* ReLU6 keeps a 1-byte bool mask per element instead of its fp32 input;
* a frozen conv keeps nothing but a reference to its weight and computes only ``grad_input``;
* a partially updated conv owns a trainable tensor holding only its K selected channels (rows for
  axis "out", columns for axis "in"), computes the weight gradient only for them, and keeps only the
  input slice those channels need (``x`` for "out", ``x[:, sel]`` for "in" and for depthwise convs);
* the optimizer only ever sees those small tensors.

After every optimizer step :meth:`SparseEngine.sync` scatters the trained slices into the (private)
backbone, so the backbone is always a plain ``Backbone`` holding the current weights.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.grad import conv2d_input, conv2d_weight

from ..models.backbone import Backbone, ConvBNAct


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
            raise ValueError(f"axis must be 'out' or 'in', got {self.axis!r}")
        if not self.channels:
            raise ValueError(f"layer {self.index}: select at least one channel (or drop the layer)")


@dataclass(frozen=True)
class EnginePlan:
    """Everything the engine trains: weight slices plus whole-layer BN shifts ("biases")."""

    weights: tuple[LayerSelection, ...] = ()
    biases: tuple[int, ...] = ()

    @property
    def earliest(self) -> int:
        idx = [w.index for w in self.weights] + list(self.biases)
        if not idx:
            raise ValueError("the update plan is empty: select at least one layer or bias to train")
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
                    raise ValueError(f"layer {lu.index}: the plan gives a ratio but no channel indices")
                ch = range(layer_channels[lu.index])
            if len(ch):
                sels.append(LayerSelection(lu.index, tuple(sorted(int(c) for c in ch)), lu.axis))
        return EnginePlan(tuple(sels), tuple(sorted(int(b) for b in plan.bias_layers)))


# --------------------------------------------------------------------------------------------
# Memory-light autograd functions

class ChannelAffine(torch.autograd.Function):
    """Frozen BN: y = x * s + t. Keeps no activation (s is a constant per-channel vector)."""

    @staticmethod
    def forward(ctx, x, scale, shift):
        ctx.scale = scale
        return torch.addcmul(shift[None, :, None, None], x, scale[None, :, None, None])

    @staticmethod
    def backward(ctx, g):
        gx = g * ctx.scale[None, :, None, None] if ctx.needs_input_grad[0] else None
        gt = g.sum((0, 2, 3)) if ctx.needs_input_grad[2] else None
        return gx, None, gt


class ReLU6Mask(torch.autograd.Function):
    """ReLU6 that keeps a bool mask (1 byte per element) instead of its fp32 input."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward((x > 0) & (x < 6))
        return x.clamp(0.0, 6.0)

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return g * mask


class FrozenConv(torch.autograd.Function):
    """A conv whose weight is frozen: keeps only the weight reference, returns only grad_input."""

    @staticmethod
    def forward(ctx, x, weight, stride, padding, groups):
        ctx.weight, ctx.conf, ctx.x_shape = weight, (stride, padding, groups), x.shape
        return F.conv2d(x, weight, None, stride, padding, 1, groups)

    @staticmethod
    def backward(ctx, g):
        stride, padding, groups = ctx.conf
        return conv2d_input(ctx.x_shape, ctx.weight, g, stride, padding, 1, groups), None, None, None, None


class SparseConv(torch.autograd.Function):
    """A conv with K trainable channels. `weight` is the full working weight (kept in sync with
    `w_sel` by the engine); the gradient is computed for `w_sel` only, from the kept input slice."""

    @staticmethod
    def forward(ctx, x, w_sel, weight, sel, axis, stride, padding, groups):
        depthwise = groups > 1
        ctx.weight, ctx.sel, ctx.conf = weight, sel, (axis, stride, padding, groups, depthwise)
        ctx.x_shape = x.shape
        keep = x.index_select(1, sel) if (axis == "in" or depthwise) else x
        ctx.save_for_backward(keep, w_sel)
        return F.conv2d(x, weight, None, stride, padding, 1, groups)

    @staticmethod
    def backward(ctx, g):
        keep, w_sel = ctx.saved_tensors
        axis, stride, padding, groups, depthwise = ctx.conf
        sel = ctx.sel
        gx = None
        if ctx.needs_input_grad[0]:
            gx = conv2d_input(ctx.x_shape, ctx.weight, g, stride, padding, 1, groups)
        if depthwise:
            gw = conv2d_weight(keep, w_sel.shape, g.index_select(1, sel), stride, padding, 1, len(sel))
        elif axis == "out":
            gw = conv2d_weight(keep, w_sel.shape, g.index_select(1, sel), stride, padding, 1, 1)
        else:
            gw = conv2d_weight(keep, w_sel.shape, g, stride, padding, 1, 1)
        return gx, gw, None, None, None, None, None, None


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

def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    s = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    return s, bn.bias.detach() - bn.running_mean * s


class SparseEngine(nn.Module):
    """Forward/backward over a `Backbone` that trains exactly `plan`, keeping only what it needs.

    The engine works on the backbone it is given (callers pass a private copy); the backbone's frozen
    weights are never touched, the trained slices are written into it by `sync()`.
    """

    def __init__(self, backbone: Backbone, plan: EnginePlan):
        super().__init__()
        self.backbone = backbone.eval()
        for p in backbone.parameters():
            p.requires_grad_(False)
        self.plan = plan
        self.layers = backbone.conv_layers()
        self.mods: list[ConvBNAct] = backbone.conv_modules()
        n = len(self.mods)
        self.earliest = plan.earliest
        for w in plan.weights:
            if not 0 <= w.index < n:
                raise ValueError(f"layer {w.index} does not exist; {backbone.spec.name} has layers 0..{n - 1}")
        for b in plan.biases:
            if not 0 <= b < n:
                raise ValueError(f"bias layer {b} does not exist; {backbone.spec.name} has layers 0..{n - 1}")
        self.sel: dict[int, LayerSelection] = {w.index: w for w in plan.weights}
        self.sel_index = {i: torch.tensor(w.channels, dtype=torch.long) for i, w in self.sel.items()}
        self.weight_params = nn.ParameterDict()
        for i, w in self.sel.items():
            conv = self.mods[i].conv
            size = conv.weight.shape[0] if (w.axis == "out" or conv.groups > 1) else conv.weight.shape[1]
            if max(w.channels) >= size or min(w.channels) < 0:
                raise ValueError(f"layer {i}: channel indices must be in 0..{size - 1}")
            self.weight_params[str(i)] = nn.Parameter(self._slice(i).clone())
        self.bias_params = nn.ParameterDict()
        self._affine: list[tuple[torch.Tensor, torch.Tensor]] = [_bn_affine(m.bn) for m in self.mods]
        self._shift0: dict[int, torch.Tensor] = {}
        for b in plan.biases:
            self._shift0[b] = self._affine[b][1].clone()
            self.bias_params[str(b)] = nn.Parameter(self._affine[b][1].clone())
        # blocks whose layers are all below the earliest updated layer form the constant prefix
        self.first_block = self.layers[self.earliest].block   # -1 stem, len(blocks) feature-mix
        # layer index -> callback(index, output) called on layer outputs that carry autograd
        # (the Fisher pass taps activations this way)
        self.taps: dict[int, Callable[[int, torch.Tensor], None]] = {}

    # -- parameters ------------------------------------------------------------------------
    def _slice(self, i: int) -> torch.Tensor:
        w, idx = self.mods[i].conv.weight.data, self.sel_index[i]
        if self.sel[i].axis == "out" or self.mods[i].conv.groups > 1:
            return w.index_select(0, idx)
        return w.index_select(1, idx)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.weight_params.values()) + list(self.bias_params.values())

    def trainable_count(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    @torch.no_grad()
    def sync(self) -> None:
        """Write the trained slices and shifts into the backbone (call after each optimizer step)."""
        for i, p in self.weight_params.items():
            i = int(i)
            w, idx = self.mods[i].conv.weight.data, self.sel_index[i]
            if self.sel[i].axis == "out" or self.mods[i].conv.groups > 1:
                w.index_copy_(0, idx, p.data)
            else:
                w.index_copy_(1, idx, p.data)
        for b, p in self.bias_params.items():
            b = int(b)
            bn = self.mods[b].bn
            bn.bias.data.add_(p.data - self._shift0[b])
            self._shift0[b] = p.data.clone()

    # -- forward ---------------------------------------------------------------------------
    def _layer(self, i: int, x: torch.Tensor) -> torch.Tensor:
        m = self.mods[i]
        if i < self.earliest:
            with torch.no_grad():
                return m(x)
        conv = m.conv
        stride, padding, groups = conv.stride, conv.padding, conv.groups
        if i in self.sel:
            y = SparseConv.apply(x, self.weight_params[str(i)], conv.weight.data, self.sel_index[i],
                                 self.sel[i].axis, stride, padding, groups)
        elif x.requires_grad:
            y = FrozenConv.apply(x, conv.weight.data, stride, padding, groups)
        else:
            with torch.no_grad():
                y = F.conv2d(x, conv.weight, None, stride, padding, 1, groups)
        scale, shift = self._affine[i]
        if str(i) in self.bias_params:
            shift = self.bias_params[str(i)]
        y = ChannelAffine.apply(y, scale, shift) if (y.requires_grad or shift.requires_grad) else \
            torch.addcmul(shift[None, :, None, None], y, scale[None, :, None, None])
        if m.act is not None:
            y = ReLU6Mask.apply(y) if y.requires_grad else y.clamp(0.0, 6.0)
        if i in self.taps and y.requires_grad:
            self.taps[i](i, y)
        return y

    def _blocks_from(self, x: torch.Tensor, start_block: int) -> torch.Tensor:
        """Run from the input of block `start_block` (-1 = image) to the final feature map."""
        bb = self.backbone
        idx = 0
        if start_block <= -1:
            x = self._layer(0, x)
        idx = 1
        for b, blk in enumerate(bb.blocks):
            n_layers = 3 if blk.pw1 is not None else 2
            if b < start_block:
                idx += n_layers
                continue
            y = x
            for j in range(n_layers):
                y = self._layer(idx + j, y)
            idx += n_layers
            x = x + y if blk.residual else y
        if bb.feature_mix is not None:
            x = self._layer(idx, x)
        return x

    @torch.no_grad()
    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        """The constant part of the network: everything before the block holding the earliest
        updated layer. Its output can be cached for inputs that do not change (the support set)."""
        bb = self.backbone
        if self.first_block <= -1:
            return x
        x = bb.stem(x)
        for b, blk in enumerate(bb.blocks):
            if b >= self.first_block:
                break
            x = blk(x)
        return x

    def suffix(self, h: torch.Tensor) -> torch.Tensor:
        """Pooled features from a `prefix` output (with autograd where the plan needs it)."""
        return self._blocks_from(h, self.first_block).mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.suffix(self.prefix(x))
