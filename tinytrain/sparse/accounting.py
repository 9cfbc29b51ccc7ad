"""The bytes THIS engine keeps for backward: the quantity `count_saved_bytes` measures.

This is not the paper's Table 2 accounting (that lives in tinytrain.costs); it is an exact
model of `SparseEngine`, so that the measured figure can be checked against a prediction:

* layers below the earliest updated layer: nothing (run without autograd);
* from the earliest updated layer up, per conv layer i
  - ReLU6 (every layer but pw2): a 1-bit mask per output element, as the paper counts it (packed 8 to
    a byte over the micro-batch, the last byte padded);
  - frozen conv and every BN: nothing (weights and BN constants are not activations);
  - updated conv, axis "out" (not depthwise): the full fp32 input;
  - updated conv, axis "in", or a depthwise conv: the fp32 input of the K selected channels;
* residual adds and global pooling keep nothing.
"""
from __future__ import annotations

from ..models.specs import ArchSpec, conv_layers
from .engine import EnginePlan
from ..errors import BadInput

FP32 = 4


def predicted_saved_bytes(spec: ArchSpec, plan: EnginePlan, batch_size: int = 1,
                          resolution: int | None = None) -> int:
    """Bytes kept for backward by `SparseEngine` for one micro-batch of `batch_size` images."""
    if batch_size < 1:
        raise BadInput("batch_size must be at least 1")
    layers = conv_layers(spec, resolution)
    sel = {w.index: w for w in plan.weights}
    total = 0
    for layer in layers[plan.earliest:]:
        if layer.kind != "pw2":
            total += -(-batch_size * layer.output_elems // 8)      # the packed mask of the whole micro-batch
        w = sel.get(layer.index)
        if w is not None:
            kept = layer.cin if (w.axis == "out" and not layer.groups > 1) else len(w.channels)
            total += FP32 * kept * layer.h_in * layer.h_in * batch_size
    return total


def engine_backward_macs(spec: ArchSpec, plan: EnginePlan, resolution: int | None = None) -> int:
    """Backward MACs this engine performs per image: input gradients above the earliest updated
    layer plus weight gradients of the selected channels (bias gradients are free)."""
    layers = conv_layers(spec, resolution)
    sel = {w.index: w for w in plan.weights}
    macs = sum(l.macs for l in layers[plan.earliest + 1:])
    for i, w in sel.items():
        layer = layers[i]
        size = layer.cout if (w.axis == "out" or layer.groups > 1) else layer.cin
        macs += layer.macs * len(w.channels) // size
    return macs


def stage_input_elems(spec: ArchSpec, stage: int, resolution: int | None = None) -> int:
    """Elements per image at the input of `stage` (-1: the image; b: the input of block b, the
    feature-mix conv for b = len(blocks)): what a cached prefix output holds per image."""
    layers = conv_layers(spec, resolution)
    if stage <= -1:
        return layers[0].input_elems
    first = next((l for l in layers if l.block == stage), None)
    if first is None:
        raise BadInput(f"{spec.name} has no stage {stage}")
    return first.input_elems


def stage_name(spec: ArchSpec, stage: int) -> str:
    """A readable name for the input of `stage` ("the images", "the input of blocks.10")."""
    if stage <= -1:
        return "the images"
    first = next(l for l in conv_layers(spec) if l.block == stage)
    return f"the input of {first.name.rsplit('.', 1)[0] if first.kind != 'feature-mix' else first.name}"
