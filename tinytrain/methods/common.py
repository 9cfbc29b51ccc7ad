"""Shared pieces of the trained methods: input checks, the P>M>F fine-tuning loop, learning-rate choice.

Fine-tuning (paper_spec 4.9, the same for every method): each iteration recomputes the prototypes
from the un-augmented support set with the current weights, builds a pseudo-query by augmenting the
support set (P>M>F DiffAugment), and minimises the cosine ProtoNet cross-entropy of the pseudo-query
against the prototypes with Adam; BatchNorm is frozen (eval statistics). Gradients do NOT flow
through the prototypes (they are recomputed each iteration without autograd): with micro-batches
(batch 1 on a device) they could only flow with a second pass, so the same rule is applied to every
method, and the result does not depend on the micro-batch size.
"""
from __future__ import annotations

import copy
import time
from typing import Callable, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import progress
from ..fewshot.protonet import CosineClassifier, class_prototypes
from ..sparse.engine import SavedBytesCounter
from .base import AdaptConfig


class Trainable(Protocol):
    def trainable_parameters(self) -> list[nn.Parameter]: ...
    def sync(self) -> None: ...
    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


def check_support(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a support set; returns (x (N,3,H,W) float, y (N,) long). Errors say what to change."""
    if isinstance(x, (list, tuple)):
        sizes = sorted({tuple(t.shape) for t in x})
        if len(sizes) > 1:
            raise ValueError(f"support images have mixed sizes {sizes}; resize them all to one resolution "
                             f"(e.g. with tinytrain.data.transforms.eval_transform)")
        x = torch.stack(list(x))
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"support images must be a tensor (N, 3, H, W); got shape {tuple(getattr(x, 'shape', ()))}")
    if x.shape[2] != x.shape[3]:
        raise ValueError(f"support images must be square (H == W); got {x.shape[2]}x{x.shape[3]}")
    if not x.is_floating_point():
        raise ValueError("support images must be float tensors (normalised), not integers")
    y = torch.as_tensor(y)
    if y.dim() != 1 or len(y) != len(x):
        raise ValueError(f"support labels must be a 1-D tensor with one label per image ({len(x)}); "
                         f"got shape {tuple(y.shape)}")
    y = y.long()
    if len(y) == 0:
        raise ValueError("the support set is empty; give at least one image for each of two classes")
    ways = int(y.max()) + 1
    if int(y.min()) < 0:
        raise ValueError("support labels must be 0..ways-1")
    present = torch.bincount(y, minlength=ways)
    if ways < 2 or int((present > 0).sum()) < 2:
        raise ValueError("the support set has a single class; few-shot adaptation needs at least two classes")
    if bool((present == 0).any()):
        missing = [int(i) for i in torch.nonzero(present == 0).flatten()]
        raise ValueError(f"support labels must be 0..ways-1 with every class present; classes {missing} have "
                         f"no image")
    if not torch.isfinite(x).all():
        raise ValueError("support images contain NaN or infinite values")
    return x.float(), y


def frozen_head(head: CosineClassifier) -> CosineClassifier:
    """P>M>F does not train the classifier scale/bias during fine-tuning."""
    h = copy.deepcopy(head).eval()
    for p in h.parameters():
        p.requires_grad_(False)
    return h


def make_optimizer(params: Sequence[nn.Parameter], config: AdaptConfig, lr: float) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr)
    raise ValueError(f"optimizer must be 'adam' or 'sgd' (got {config.optimizer!r})")


def _augmenter(config: AdaptConfig) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    if not config.augment:
        return lambda x, g: x
    from ..data.transforms import finetune_augment
    p = float(config.options.get("augment_p", 0.9))
    return lambda x, g: finetune_augment(x, g, p=p)


def finetune(model: Trainable, x: torch.Tensor, y: torch.Tensor, head: CosineClassifier, config: AdaptConfig,
             lr: float, batch_size: int, exclude_storages: set[int] = frozenset(),
             before_step: Callable[[], None] | None = None, prefix_batch_size: int = 64) -> dict:
    """Run `config.iterations` P>M>F fine-tuning iterations in micro-batches of `batch_size`.

    If `model` has `prefix`/`suffix` (the sparse engine), the constant prefix of the support set is
    computed once and reused for the prototypes, and the pseudo-query's prefix is computed without
    autograd in chunks of `prefix_batch_size` (time only: it keeps nothing for backward).
    Returns measured saved bytes (largest micro-batch) and per-iteration seconds.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    head = frozen_head(head)
    params = model.trainable_parameters()
    if not params:
        raise ValueError("nothing to train: the method's plan selects no parameter")
    opt = make_optimizer(params, config, lr)
    augment = _augmenter(config)
    gen = torch.Generator().manual_seed(int(config.seed))
    n = len(x)
    has_prefix = hasattr(model, "prefix") and hasattr(model, "suffix")
    chunks = range(0, n, prefix_batch_size)
    with torch.no_grad():
        cached = torch.cat([model.prefix(x[i:i + prefix_batch_size]) for i in chunks]) if has_prefix else x
    measured = 0
    times: list[float] = []
    losses: list[float] = []
    for _ in range(config.iterations):
        t0 = time.perf_counter()
        with torch.no_grad():
            run = model.suffix if has_prefix else model
            protos = class_prototypes(torch.cat([run(cached[i:i + prefix_batch_size]) for i in chunks]), y)
        opt.zero_grad(set_to_none=True)
        total = 0.0
        # Stream the pseudo-query chunk by chunk, so no whole-support-set tensor is built beyond the input:
        # augmentation draws depend on the chunking (prefix_batch_size), never on the micro-batch size.
        for c in chunks:
            z = augment(x[c:c + prefix_batch_size], gen)
            if has_prefix:
                with torch.no_grad():
                    z = model.prefix(z)
            for j in range(0, len(z), batch_size):
                counter = SavedBytesCounter(exclude=set(exclude_storages))
                with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
                    zb = z[j:j + batch_size].clone()   # its own buffer, as on a device (honest byte count)
                    f = model.suffix(zb) if has_prefix else model(zb)
                with torch.enable_grad():
                    loss = F.cross_entropy(head(f, protos), y[c + j:c + j + batch_size], reduction="sum") / n
                    loss.backward()
                measured = max(measured, counter.bytes)
                total += float(loss.detach())
            del z
        if before_step is not None:
            before_step()
        opt.step()
        model.sync()
        times.append(time.perf_counter() - t0)
        losses.append(total)
        progress.step("training", len(losses), config.iterations)
    return {"measured_saved_bytes": measured, "seconds_per_iteration": times, "losses": losses}


def storages_of(*modules: nn.Module) -> set[int]:
    """Storage pointers of parameters and buffers (excluded from measured saved bytes)."""
    return {t.untyped_storage().data_ptr() for m in modules for t in list(m.parameters()) + list(m.buffers())}


def split_support(y: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Half of each class's images for training, the rest for validation (classes with one image train only)."""
    g = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c in range(int(y.max()) + 1):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = max(1, len(idx) // 2)
        train.append(idx[:k]); val.append(idx[k:])
    train, val = torch.cat(train), torch.cat(val)
    if len(val) == 0:
        raise ValueError("automatic learning-rate choice needs a class with at least two support images; "
                         "set a learning rate instead (e.g. lr=1e-3)")
    return train, val
