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
so the engine itself is unchanged.
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
    engine = SparseEngine(copy.deepcopy(adapted.predictor.backbone), cm.engine_plan)
    head = frozen_head(adapted.predictor.head)
    opt = make_optimizer(engine.trainable_parameters(), AdaptConfig(optimizer=cm.network.optimizer), cm.lr)
    x, y = to_input(train_rgb), torch.as_tensor(train_labels, dtype=torch.long)
    losses = []
    for _ in range(epochs):
        with torch.no_grad():
            protos = class_prototypes(engine(x), y, k)
        for i in range(len(x)):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(head(engine(x[i:i + 1]), protos), y[i:i + 1])
            loss.backward()
            opt.step()
            engine.sync()
            losses.append(float(loss.detach()))
    with torch.no_grad():
        protos = class_prototypes(engine(x), y, k)
        logits = head(engine(to_input(test_rgb)), protos).numpy()
    weights = {int(i): p.detach().numpy().ravel().copy() for i, p in engine.weight_params.items()}
    shifts = {int(i): p.detach().numpy().ravel().copy() for i, p in engine.bias_params.items()}
    return RunResult(losses, weights, shifts, logits)
