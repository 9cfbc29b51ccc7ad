"""The PyTorch counterpart of the C runtime's training schedule, to compare like with like.

The library's fine-tuning loop (`methods.common.finetune`) augments a pseudo-query and takes one
optimizer step per pass over the support set, accumulating the gradient of every image. A device
streams images one at a time and steps after each, so the C harness runs this deterministic
schedule instead, and this module runs the same one on the sparse-update engine:

    for each epoch: prototypes <- class means of the training images under the current weights
                    for each training image: forward, cosine-prototype cross-entropy, backward,
                                             one optimizer step (batch 1, no augmentation)
    then: prototypes from the training images again; logits of the held-out images.

It is built from the library's public pieces (SparseEngine, make_optimizer, the cosine head),
so the engine itself is unchanged. For an int8 export the frozen prefix is `quant.integer_prefix`
(the integer arithmetic, which the C equals bit for bit), dequantised, and the engine runs the
suffix on a backbone whose frozen weights are the int8 ones dequantised (`quant.dequantised_backbone`).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data.transforms import normalize
from ..methods.base import AdaptConfig
from ..methods.common import frozen_head, make_optimizer
from ..models.head import class_prototypes
from ..sparse.engine import SparseEngine
from .export import CModel
from .quant import dequantise, dequantised_backbone, integer_prefix


@dataclass
class RunResult:
    """What a run of the schedule produced (the C harness's output parses into the same shape)."""

    losses: list[float]
    weights: dict[int, np.ndarray]     # layer -> trained slice, flattened as the runtime stores it
    shifts: dict[int, np.ndarray]      # layer -> trained BN shift
    logits: np.ndarray                 # (held-out images, classes)

    @property
    def predictions(self) -> np.ndarray:
        return self.logits.argmax(1)


def to_input(rgb: np.ndarray) -> torch.Tensor:
    """uint8 (N, R, R, 3) RGB -> normalised (N, 3, R, R), the same float32 steps as the runtime."""
    x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(0, 3, 1, 2)).astype(np.float32) / np.float32(255.0))
    return normalize(x)


def run_reference(cm: CModel, train_rgb: np.ndarray, train_labels: np.ndarray, test_rgb: np.ndarray,
                  epochs: int = 1) -> RunResult:
    """Run the device schedule on the PyTorch sparse-update engine."""
    adapted = cm.adapted
    k = len(adapted.classes)
    qn = cm.quant
    if qn is None:
        engine = SparseEngine(copy.deepcopy(adapted.predictor.backbone), cm.engine_plan)
        embed, inputs = engine, to_input
    else:
        engine = SparseEngine(dequantised_backbone(adapted.predictor.backbone, qn, cm.trained_channels()),
                              cm.engine_plan)
        first = min(l.index for l in engine.layers if l.block == engine.first_block)
        if first != qn.n_int8:
            raise RuntimeError(f"the int8 prefix ends at layer {qn.n_int8} but the engine's suffix starts at {first}")
        spec = adapted.predictor.backbone.spec
        embed = engine.suffix

        def inputs(rgb: np.ndarray) -> torch.Tensor:
            return dequantise(integer_prefix(rgb, qn, spec), qn.boundary)
    head = frozen_head(adapted.predictor.head)
    opt = make_optimizer(engine.trainable_parameters(), AdaptConfig(optimizer=cm.network.optimizer), cm.lr)
    x, y = inputs(train_rgb), torch.as_tensor(train_labels, dtype=torch.long)
    losses = []
    for _ in range(epochs):
        with torch.no_grad():
            protos = class_prototypes(embed(x), y, k)
        for i in range(len(x)):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(head(embed(x[i:i + 1]), protos), y[i:i + 1])
            loss.backward()
            opt.step()
            engine.sync()
            losses.append(float(loss.detach()))
    with torch.no_grad():
        protos = class_prototypes(embed(x), y, k)
        logits = head(embed(inputs(test_rgb)), protos).numpy()
    weights = {int(i): p.detach().numpy().ravel().copy() for i, p in engine.weight_params.items()}
    shifts = {int(i): p.detach().numpy().ravel().copy() for i, p in engine.bias_params.items()}
    return RunResult(losses, weights, shifts, logits)
