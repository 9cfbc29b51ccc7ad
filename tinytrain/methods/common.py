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
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import progress
from ..models.head import CosineClassifier, class_prototypes
from ..sparse.engine import PrefixCache, SavedBytesCounter
from .base import AdaptConfig
from .options import MethodOptions
from ..errors import BadInput


class Trainable(Protocol):
    def trainable_parameters(self) -> list[nn.Parameter]: ...
    def sync(self) -> None: ...          # write the trained weights into the backbone (after training)
    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


def check_support(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a support set; returns (x (N,3,H,W) float, y (N,) long). Errors say what to change."""
    if isinstance(x, (list, tuple)):
        sizes = sorted({tuple(t.shape) for t in x})
        if len(sizes) > 1:
            raise BadInput(f"support images have mixed sizes {sizes}; resize them all to one resolution "
                             f"(e.g. with tinytrain.data.transforms.eval_transform)")
        x = torch.stack(list(x))
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
        raise BadInput(f"support images must be a tensor (N, 3, H, W); got shape {tuple(getattr(x, 'shape', ()))}")
    if x.shape[2] != x.shape[3]:
        raise BadInput(f"support images must be square (H == W); got {x.shape[2]}x{x.shape[3]}")
    if not x.is_floating_point():
        raise BadInput("support images must be float tensors (normalised), not integers")
    y = torch.as_tensor(y)
    if y.dim() != 1 or len(y) != len(x):
        raise BadInput(f"support labels must be a 1-D tensor with one label per image ({len(x)}); "
                         f"got shape {tuple(y.shape)}")
    y = y.long()
    if len(y) == 0:
        raise BadInput("the support set is empty; give at least one image for each of two classes")
    ways = int(y.max()) + 1
    if int(y.min()) < 0:
        raise BadInput("support labels must be 0..ways-1")
    present = torch.bincount(y, minlength=ways)
    if ways < 2 or int((present > 0).sum()) < 2:
        raise BadInput("the support set has a single class; few-shot adaptation needs at least two classes")
    if bool((present == 0).any()):
        missing = [int(i) for i in torch.nonzero(present == 0).flatten()]
        raise BadInput(f"support labels must be 0..ways-1 with every class present; classes {missing} have "
                         f"no image")
    if not torch.isfinite(x).all():
        raise BadInput("support images contain NaN or infinite values")
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
    raise BadInput(f"optimizer must be 'adam' or 'sgd' (got {config.optimizer!r})")


def shared_options(config: AdaptConfig) -> MethodOptions:
    """The options every method takes, from `config.options` (an options object, or a dict whose other,
    method-specific keys are left to the method), checked and converted like any method's."""
    opts = config.options
    if isinstance(opts, MethodOptions):
        return opts
    common = set(MethodOptions.keys())
    return MethodOptions.parse({k: v for k, v in dict(opts or {}).items() if k in common})


def _augmenter(config: AdaptConfig, p: float) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    if not config.augment:
        return lambda x, g: x
    from ..data.transforms import finetune_augment
    return lambda x, g: finetune_augment(x, g, p=p)


@dataclass
class CachePlan:
    """What the fine-tuning loop keeps between iterations besides the training state, and whether it
    fits the cache budget: the clean support set's prefix output (computed once per task) and an
    optional pool of augmented views of the support set, stored as their prefix outputs."""

    where: str                      # what is stored per image ("the input of blocks.10", "the images")
    block: int                      # the stage whose input is stored (-1: the images)
    images: int
    bytes_per_image: int
    support_cached: bool
    support_bytes: int              # extra bytes for the clean support set (0: the images themselves serve)
    pool_views: int                 # augmented views drawn once (0: fresh augmentation every iteration)
    pool_bytes: int
    budget_bytes: int | None        # None: unbounded
    note: str = ""

    @property
    def total_bytes(self) -> int:
        return (self.support_bytes if self.support_cached else 0) + self.pool_bytes

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("where", "block", "images", "bytes_per_image", "support_cached",
                                              "support_bytes", "pool_views", "pool_bytes", "budget_bytes",
                                              "note")} | {"total_bytes": self.total_bytes}


def plan_caches(model: Trainable, n: int, image_shape: tuple[int, ...], augment_pool: int = 0,
                iterations: int | None = None, budget: int | None = None) -> CachePlan:
    """Decide what the loop caches for `n` support images of `image_shape` under `budget` bytes.

    The support set's prefix output is cached when it fits (else it is recomputed every iteration and
    the note says so). A pool of `augment_pool` views (at most `iterations` are ever used) must fit
    beside it; if it does not, the error says how many views fit."""
    from ..costs.units import format_bytes
    from ..sparse.accounting import stage_input_elems, stage_name

    if augment_pool < 0:
        raise BadInput(f"augment_pool must be >= 0 views (got {augment_pool}); 0 = fresh augmentation")
    if budget is not None and budget < 0:
        raise BadInput(f"the cache budget cannot be negative (got {budget})")
    block = getattr(model, "first_block", -1) if hasattr(model, "prefix") else -1
    image_bytes = 4 * int(torch.Size(image_shape).numel())
    if block <= -1:
        where, per_image, support_bytes = "the images", image_bytes, 0
    else:
        spec, res = model.backbone.spec, int(image_shape[-1])
        where, per_image = stage_name(spec, block), 4 * stage_input_elems(spec, block, res)
        support_bytes = n * per_image
    fits = budget is None or support_bytes <= budget
    note = ""
    if not fits:
        note = (f"the support set's prefix ({format_bytes(support_bytes)} at {where}) exceeds the cache budget of "
                f"{format_bytes(budget)}: it is recomputed every iteration")
    views = min(int(augment_pool), int(iterations)) if (augment_pool and iterations is not None) else int(augment_pool)
    pool_bytes = views * n * per_image
    if views:
        if not fits:
            raise BadInput(f"an augmentation pool needs the support cache first, and that does not fit: {note}; "
                             f"raise cache_budget to at least {format_bytes(support_bytes + n * per_image)} "
                             f"(one view) or set augment_pool 0")
        if budget is not None and support_bytes + pool_bytes > budget:
            k = (budget - support_bytes) // (n * per_image)
            fix = (f"at most {k} view{'s' if k != 1 else ''} fit{'s' if k == 1 else ''}; lower augment_pool to {k}"
                   if k else "not even one view fits; set augment_pool 0")
            raise BadInput(f"augment_pool {augment_pool} needs {format_bytes(pool_bytes)} ({views} view"
                             f"{'s' if views != 1 else ''} x {n} images x {format_bytes(per_image)} "
                             f"{'as images' if block <= -1 else 'at ' + where}) beside the support cache "
                             f"({format_bytes(support_bytes)}), over the cache budget of {format_bytes(budget)}: "
                             f"{fix} or raise cache_budget to {format_bytes(support_bytes + pool_bytes)}")
    return CachePlan(where, block, n, per_image, fits, support_bytes, views, pool_bytes, budget, note)


class FineTuner:
    """P>M>F fine-tuning (the module docstring), one iteration per `step()`; `finetune` runs them all,
    `bench speed` interleaves the methods' steps.

    If `model` has `prefix`/`suffix` (the sparse engine), the clean support set's prefix is computed once
    (or continued from `support_cache`, the one the Fisher pass used) when it fits `cache_budget`, and
    reused for the prototypes every iteration; otherwise it is recomputed each time. The pseudo-query's
    prefix runs without autograd in chunks of `prefix_batch_size`. With `augment_pool` P > 0 the
    pseudo-queries are P augmented views drawn once at set-up (the same draws, in the same order, as
    the first P iterations of fresh augmentation) and stored as prefix outputs; iteration t uses view
    t mod P. So P >= iterations trains exactly as fresh augmentation does.
    """

    def __init__(self, model: Trainable, x: torch.Tensor, y: torch.Tensor, head: CosineClassifier,
                 config: AdaptConfig, lr: float, batch_size: int, exclude_storages: set[int] = frozenset(),
                 before_step: Callable[[], None] | None = None, prefix_batch_size: int = 64,
                 support_cache: PrefixCache | None = None, cache_budget: int | None = None, augment_pool: int = 0,
                 options: MethodOptions | None = None):
        if batch_size < 1:
            raise BadInput("batch_size must be at least 1")
        if prefix_batch_size < 1:
            raise BadInput("prefix_batch_size must be at least 1")
        t0 = time.perf_counter()
        self.model, self.x, self.y, self.config = model, x, y, config
        self.batch_size, self.chunk, self.before_step = batch_size, prefix_batch_size, before_step
        self.exclude = set(exclude_storages)
        opts = options if options is not None else shared_options(config)   # proto_grad, augment_p
        self.proto_grad = opts.proto_grad
        self.head = frozen_head(head)
        params = model.trainable_parameters()
        if not params:
            raise BadInput("nothing to train: the method's plan selects no parameter")
        self.opt = make_optimizer(params, config, lr)
        self.augment = _augmenter(config, opts.augment_p)
        self.gen = torch.Generator().manual_seed(int(config.seed))
        self.n = len(x)
        self.chunks = range(0, self.n, prefix_batch_size)
        self.has_prefix = hasattr(model, "prefix") and hasattr(model, "suffix")
        self.caches = plan_caches(model, self.n, tuple(x.shape[1:]), augment_pool, config.iterations, cache_budget)
        self.cached: torch.Tensor | None = None        # the support set's prefix output (or the images)
        t1 = time.perf_counter()
        if not self.has_prefix or self.caches.block <= -1:
            self.cached = x
        elif self.caches.support_cached:
            usable = support_cache is not None and support_cache.block <= model.first_block
            cache = model.prefix_from(support_cache, prefix_batch_size) if usable \
                else model.support_prefix(x, prefix_batch_size)
            self.cached = cache.h
        self.cache_seconds = time.perf_counter() - t1
        # the pool: view -> chunk -> pseudo-query prefix outputs, drawn in fresh augmentation's order
        self.pool: list[list[torch.Tensor]] = []
        for _ in range(self.caches.pool_views):
            self.pool.append([self._query_prefix(self.augment(x[c:c + self.chunk], self.gen)) for c in self.chunks])
        self.setup_seconds = time.perf_counter() - t0
        self.iteration = 0
        self.measured = 0
        self.times: list[float] = []
        self.losses: list[float] = []

    @torch.no_grad()
    def _query_prefix(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.prefix(z) if self.has_prefix else z

    @torch.no_grad()
    def features(self) -> torch.Tensor:
        """Features of the clean support set with the current weights (from the cache when there is one)."""
        m = self.model
        if self.cached is not None:
            run = m.suffix if self.has_prefix else m
            return torch.cat([run(self.cached[c:c + self.chunk]) for c in self.chunks])
        return torch.cat([m.suffix(m.prefix(self.x[c:c + self.chunk])) for c in self.chunks])

    def step(self) -> float:
        """One iteration: prototypes, pseudo-query loss and backward (micro-batched), optimizer step."""
        t0 = time.perf_counter()
        m, y, n, b = self.model, self.y, self.n, self.batch_size
        support = self.features()
        if self.proto_grad:     # P>M>F: the loss also reaches the weights through the prototypes (below)
            support.requires_grad_(True)
            with torch.enable_grad():
                protos = class_prototypes(support, y)
        else:
            protos = class_prototypes(support, y)
        self.opt.zero_grad(set_to_none=True)
        total = 0.0
        view = self.pool[self.iteration % len(self.pool)] if self.pool else None
        # Stream the pseudo-query chunk by chunk, so no whole-support-set tensor is built beyond the input:
        # augmentation draws depend on the chunking (prefix_batch_size), never on the micro-batch size.
        for k, c in enumerate(self.chunks):
            z = view[k] if view is not None else self._query_prefix(self.augment(self.x[c:c + self.chunk], self.gen))
            for j in range(0, len(z), b):
                counter = SavedBytesCounter(exclude=set(self.exclude))
                with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
                    zb = z[j:j + b].clone()   # its own buffer, as on a device (honest byte count)
                    f = m.suffix(zb) if self.has_prefix else m(zb)
                with torch.enable_grad():
                    loss = F.cross_entropy(self.head(f, protos), y[c + j:c + j + len(zb)], reduction="sum") / n
                    loss.backward(retain_graph=self.proto_grad)
                self.measured = max(self.measured, counter.bytes)
                total += float(loss.detach())
            del z
        if self.proto_grad:
            self._backward_through_prototypes(support.grad)
        if self.before_step is not None:
            self.before_step()
        self.opt.step()
        self.iteration += 1
        self.times.append(time.perf_counter() - t0)
        self.losses.append(total)
        progress.step("training", self.iteration, self.config.iterations)
        return total

    def _backward_through_prototypes(self, grad: torch.Tensor | None) -> None:
        """The prototypes' share of the gradient, in a second micro-batched pass over the support set:
        the query losses left dL/d(support feature) in `grad` (through the class means); re-running each
        support micro-batch with autograd and back-propagating that slice gives exactly the gradient of
        P>M>F's single graph, while keeping only one micro-batch's activations, as on a device."""
        if grad is None:
            return
        m, b = self.model, self.batch_size
        for c in self.chunks:
            if self.cached is not None:
                h = self.cached[c:c + self.chunk]
            else:
                with torch.no_grad():
                    h = m.prefix(self.x[c:c + self.chunk])
            run = m.suffix if self.has_prefix else m
            for j in range(0, len(h), b):
                counter = SavedBytesCounter(exclude=set(self.exclude))
                with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
                    f = run(h[j:j + b].clone())
                with torch.enable_grad():
                    f.backward(grad[c + j:c + j + len(f)])
                self.measured = max(self.measured, counter.bytes)

    @torch.no_grad()
    def prototypes(self) -> torch.Tensor:
        """Class prototypes of the clean support set with the current weights (used after training)."""
        return class_prototypes(self.features(), self.y)

    def stats(self) -> dict:
        return {"measured_saved_bytes": self.measured, "seconds_per_iteration": list(self.times),
                "losses": list(self.losses), "setup_seconds": self.setup_seconds, "caches": self.caches.to_dict()}


def finetune(model: Trainable, x: torch.Tensor, y: torch.Tensor, head: CosineClassifier, config: AdaptConfig,
             lr: float, batch_size: int, exclude_storages: set[int] = frozenset(),
             before_step: Callable[[], None] | None = None, prefix_batch_size: int = 64,
             support_cache: PrefixCache | None = None, cache_budget: int | None = None,
             augment_pool: int = 0) -> dict:
    """Run `config.iterations` P>M>F fine-tuning iterations in micro-batches of `batch_size` (see
    `FineTuner`), then write the trained weights into the model's backbone (`sync`).
    Returns measured saved bytes (largest micro-batch), per-iteration seconds, losses, the set-up time
    (caches and pool) and the cache plan."""
    tuner = FineTuner(model, x, y, head, config, lr, batch_size, exclude_storages, before_step, prefix_batch_size,
                      support_cache, cache_budget, augment_pool)
    for _ in range(config.iterations):
        tuner.step()
    model.sync()
    return tuner.stats()


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
        raise BadInput("automatic learning-rate choice needs a class with at least two support images; "
                         "set a learning rate instead (e.g. lr=1e-3)")
    return train, val
