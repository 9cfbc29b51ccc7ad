"""The one interface every adaptation method implements.

    method = make_method("tinytrain", backbone, AdaptConfig(...))
    predictor = method.fit(support_x, support_y)       # tensors from a `Task`
    predictor.predict(query_x) -> logits;  method.report -> AdaptReport (what was updated, its cost)

The harness, the CLI and the reports only know this interface.
"""
from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, asdict
from typing import ClassVar

import torch

from ..models.backbone import Backbone
from ..models.head import CosineClassifier, class_prototypes
from .options import MethodOptions


@dataclass
class AdaptConfig:
    """Knobs shared by all methods. Budgets are in bytes / backward MACs (see tinytrain.costs)."""

    iterations: int = 40
    lr: float | None = 1e-3          # None: choose automatically on a split of the support set
    optimizer: str = "adam"          # adam | sgd
    batch_size: int | None = None    # None: the method's paper default (100 FullTrain/TinyTL, 1 others)
    memory_budget: int | None = None # bytes; None: the method's default
    compute_budget: float | None = None  # fraction of FullTrain backward MACs (<= 1) or absolute MACs
    augment: bool = True             # P>M>F pseudo-query augmentation
    seed: int = 0
    resolution: int = 128
    # method options: a dict {key: value} or the method's options object (methods/options.py); each method
    # checks and converts them with its options class when it is made (unknown keys are refused)
    options: dict | MethodOptions = field(default_factory=dict)


@dataclass
class AdaptReport:
    method: str
    plan: list[dict] = field(default_factory=list)  # {layer, name, channels_updated, channels_total, score}
    predicted_memory_bytes: int = 0
    backward_macs: int = 0
    measured_saved_bytes: int | None = None
    selection_seconds: float = 0.0
    train_seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class Predictor:
    """An adapted backbone plus class prototypes: images -> class scores."""

    def __init__(self, backbone: Backbone, prototypes: torch.Tensor, head: CosineClassifier,
                 class_names: list[str] | None = None):
        self.backbone = backbone.eval()
        self.prototypes = prototypes.detach()
        self.head = head
        self.class_names = class_names or [str(i) for i in range(len(prototypes))]

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        outs = [self.head(self.backbone(x[i:i + batch_size]), self.prototypes)
                for i in range(0, len(x), batch_size)]
        return torch.cat(outs)

    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        return float((self.predict(x).argmax(-1) == y).float().mean())


@torch.no_grad()
def support_prototypes(backbone: Backbone, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    backbone.eval()
    feats = torch.cat([backbone(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    return class_prototypes(feats, y)


class Method(ABC):
    """Base class: holds a private copy of the backbone so `fit` never alters the caller's model."""

    name: str = "base"
    options_class: ClassVar[type[MethodOptions]] = MethodOptions

    def __init__(self, backbone: Backbone, config: AdaptConfig | None = None,
                 head: CosineClassifier | None = None):
        self.source_backbone = backbone
        self.config = config or AdaptConfig()
        # every option read goes through this typed object (ValueError here for an unknown key or a bad value)
        self.opts = self.options_class.parse(self.config.options)
        self.head = head if head is not None else CosineClassifier()
        self.report = AdaptReport(method=self.name, extra={"options": self.applied_options()})

    def applied_options(self) -> dict:
        """The options this method runs with, as a plain dict (reported in `report.extra["options"]`)."""
        return self.opts.to_dict()

    def fresh_backbone(self) -> Backbone:
        return copy.deepcopy(self.source_backbone).eval()

    @abstractmethod
    def fit(self, support_x: torch.Tensor, support_y: torch.Tensor) -> Predictor:
        """Adapt to the support set; fills `self.report` (plan, predicted and measured costs, times)."""

    def plan(self, support_x: torch.Tensor, support_y: torch.Tensor) -> AdaptReport:
        """What `fit` would update and what it would cost, without training (a dry run)."""
        raise NotImplementedError(f"method {self.name!r} has no dry-run plan")
