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

from ..costs.plan import UpdatePlan
from ..models.backbone import Backbone
from ..models.head import CosineClassifier, class_prototypes
from ..models.specs import ArchSpec, conv_layers, lite_residual_branches
from ..sparse.engine import EnginePlan
from .options import MethodOptions
from ..errors import BadInput


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
    # how the plan's memory is priced: "int8" where the frozen prefix's activations are 1 byte, as the C
    # runtime runs them with `export --precision int8` (a device profile with frozen_activation_bits 8)
    precision: str = "float32"
    # method options: a dict {key: value} or the method's options object (methods/options.py); each method
    # checks and converts them with its options class when it is made (unknown keys are refused)
    options: dict | MethodOptions = field(default_factory=dict)


@dataclass(frozen=True)
class PlanRow:
    """One trained layer as a report shows it: `layer` None for modules outside the conv list (TinyTL's
    lite-residual branches); `score` is the selection's score where the method scores layers."""

    layer: int | None
    name: str
    channels_updated: int
    channels_total: int
    score: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def plan_rows(spec: ArchSpec, plan: UpdatePlan, scores: dict[int, float] | None = None) -> list[PlanRow]:
    """The rows a report shows for `plan`: one per conv layer with trained weights (channels along the
    layer's axis), and for TinyTL plans the BN shifts and the lite-residual branches."""
    layers = conv_layers(spec, plan.resolution)
    scores = scores or {}
    rows = []
    for u in plan.layers:
        layer = layers[u.index]
        total = layer.channels(u.axis)
        rows.append(PlanRow(u.index, layer.name, u.n_channels(total), total, scores.get(u.index)))
    if plan.kind == "tinytl":
        rows += [PlanRow(i, layers[i].name + " (BN shift)", layers[i].cout, layers[i].cout) for i in plan.bias_layers]
        rows += [PlanRow(None, f"lite.{b.block}", b.cout, b.cout) for b in lite_residual_branches(spec, plan.resolution)]
    return rows


def engine_form(plan: UpdatePlan | None) -> EnginePlan | None:
    """The sparse engine's form of `plan` (its layers name their channels); None for no plan, dense and TinyTL
    plans."""
    return EnginePlan.from_update_plan(plan) if plan is not None and plan.kind == "sparse" else None


@dataclass
class AdaptReport:
    """What one adaptation updated and what it cost. Typed fields are what consumers (CLI, harness, exports)
    read; `extra` holds diagnostics only (phases, caches, memory breakdown, method-specific notes)."""

    method: str
    rows: list[PlanRow] = field(default_factory=list)
    update_plan: UpdatePlan | None = None        # the one plan: every trained tensor, channels explicit
    predicted_memory_bytes: int = 0
    backward_macs: int = 0
    measured_saved_bytes: int | None = None
    selection_seconds: float = 0.0
    train_seconds: float = 0.0
    lr: float | None = None                      # the rate trained with (chosen or given); None: nothing trained
    final_loss: float | None = None
    memory_budget: int | None = None             # bytes / backward MACs the method worked to (its own
    compute_budget_macs: int | None = None       # defaults when none were given); None: it has no budget
    fisher_potential: dict[int, float] | None = None
    options: dict = field(default_factory=dict)  # every option the method ran with, plain values
    extra: dict = field(default_factory=dict)

    @property
    def engine_plan(self) -> EnginePlan | None:
        return engine_form(self.update_plan)

    def to_dict(self) -> dict:
        """The JSON layout saved in adapted.json and printed by `tinytrain adapt --json` (unchanged since the
        report was a dict: the typed fields other than the costs and times sit in "extra")."""
        eplan = self.engine_plan
        typed = {"update_plan": None if self.update_plan is None else self.update_plan.to_dict(),
                 "engine_plan": None if eplan is None else eplan.to_dict(), "lr": self.lr,
                 "final_loss": self.final_loss, "memory_budget": self.memory_budget,
                 "compute_budget_macs": self.compute_budget_macs,
                 "fisher_potential": None if self.fisher_potential is None
                 else {str(k): v for k, v in self.fisher_potential.items()},
                 "options": dict(self.options)}
        extra = {k: v for k, v in typed.items() if v is not None} | dict(self.extra)
        return {"method": self.method, "plan": [r.to_dict() for r in self.rows],
                "predicted_memory_bytes": self.predicted_memory_bytes, "backward_macs": self.backward_macs,
                "measured_saved_bytes": self.measured_saved_bytes, "selection_seconds": self.selection_seconds,
                "train_seconds": self.train_seconds, "extra": extra}


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
        from ..costs.model import PRECISIONS
        if self.config.precision not in PRECISIONS:
            raise BadInput(f"precision must be one of {', '.join(PRECISIONS)} (got {self.config.precision!r})")
        self.head = head if head is not None else CosineClassifier()
        self.report = AdaptReport(method=self.name, options=self.applied_options())

    def applied_options(self) -> dict:
        """The options this method runs with, as a plain dict (`report.options`)."""
        return self.opts.to_dict()

    def fresh_backbone(self) -> Backbone:
        return copy.deepcopy(self.source_backbone).eval()

    @abstractmethod
    def fit(self, support_x: torch.Tensor, support_y: torch.Tensor) -> Predictor:
        """Adapt to the support set; fills `self.report` (plan, predicted and measured costs, times)."""

    def plan(self, support_x: torch.Tensor, support_y: torch.Tensor) -> AdaptReport:
        """What `fit` would update and what it would cost, without training (a dry run)."""
        raise NotImplementedError(f"method {self.name!r} has no dry-run plan")
