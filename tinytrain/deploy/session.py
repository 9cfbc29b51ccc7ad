"""One adaptation from the user's folders: load, check, fit, report (what `tinytrain adapt` runs).

Inputs are checked before any training, and nothing is written until the adapted model exists,
so a bad input never leaves a half-written model directory behind. A fit that diverged (non-finite
loss or features, or every image scored alike where the classes were told apart before) is an error,
never a saved model.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.datasets import WHITE
from ..data.folders import ClassFolders
from ..methods import METHODS, make_method
from ..methods.base import AdaptConfig, Predictor, support_prototypes
from ..models.backbone import Backbone
from ..models.head import CosineClassifier
from .adapted import AdaptedModel
from .images import LabeledImages, load_class_folder, normalisation
from ..errors import BadInput

# The methods the CLI offers: the registry in tinytrain.methods.
METHOD_NAMES = tuple(METHODS)
DEFAULT_RESOLUTION = 128     # the paper's, for checkpoints that do not record their own


MAX_ITERATIONS = 100_000    # fine-tuning iterations per adaptation: the paper uses 40; more is refused up front


def check_iterations(value, flag: str = "--iterations") -> int:
    """Fine-tuning iterations: an integer in [0, MAX_ITERATIONS] (a float such as 2.5 or 1e20 is refused,
    not rounded); the ValueError names `flag`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadInput(f"{flag} must be a whole number of iterations (got {value!r}); e.g. 40, as the paper")
    if not 0 <= value <= MAX_ITERATIONS:
        raise BadInput(f"{flag} must be between 0 and {MAX_ITERATIONS:,} (got {value:,}); the paper uses 40")
    return value


class TrainingDiverged(BadInput):
    """Fine-tuning blew up; the message names the learning rate to lower."""


def resolve_resolution(trained: int | None, given: int | None = None) -> tuple[int, str]:
    """(pixels, where they came from): --resolution when given, else the resolution the checkpoint was
    trained at (`CheckpointInfo.resolution`), else 128. A model is most accurate at the size it was trained at."""
    if given is not None:
        if given < 8:
            raise BadInput(f"--resolution must be at least 8 pixels (got {given})")
        return int(given), "--resolution"
    if trained:
        return int(trained), "the checkpoint's training resolution"
    return DEFAULT_RESOLUTION, "the default; the checkpoint records none"


@dataclass
class Budgets:
    """Resolved budgets: bytes, and a compute budget as a fraction (<= 1) or a MAC count, plus the
    device they came from (if any)."""

    memory_bytes: int | None = None
    compute: float | int | None = None
    device: object | None = None       # costs.devices.DeviceProfile

    def compute_macs(self, spec, resolution: int) -> int | None:
        """The compute budget in MACs (a fraction is of FullTrain's backward MACs at `resolution`); None
        when no compute budget was given."""
        if self.compute is None:
            return None
        from ..costs.model import compute_budget_macs
        return int(compute_budget_macs(spec, self.compute, resolution))

    def to_dict(self) -> dict:
        d = {"memory_budget_bytes": self.memory_bytes, "compute_budget": self.compute}
        if self.device is not None:
            d["device"] = getattr(self.device, "name", str(self.device))
        return d


def resolve_budgets(memory: str | int | None = None, compute: str | float | None = None,
                    device: str | None = None, devices_file: str | Path | None = None) -> Budgets:
    """Budgets from --memory-budget / --compute-budget / --device; explicit budgets override the device's."""
    from ..costs.units import parse_bytes, parse_compute_budget

    profile = None
    mem = comp = None
    if device:
        try:
            from ..costs.devices import get_device
        except ImportError:
            raise BadInput("device profiles are not available in this installation; "
                             "give --memory-budget and --compute-budget instead") from None
        profile = get_device(device, devices_file)
        mem = getattr(profile, "memory_budget_bytes", None)
        comp = getattr(profile, "compute_budget", None)
    for flag, value, e_g in (("--memory-budget", memory, "1MB or 512KB"), ("--compute-budget", compute, "15% or 6.5M")):
        if value is not None and (str(value).strip().startswith("-") or str(value).strip() in ("0", "0%")):
            raise BadInput(f"{flag} must be positive (got {value!r}); e.g. {e_g}")
    try:
        if memory is not None:
            mem = parse_bytes(memory)
            if mem <= 0:
                raise BadInput(f"must be positive (got {memory!r})")
    except ValueError as exc:
        raise BadInput(f"--memory-budget: {exc}") from None
    if compute is not None:
        try:
            comp = parse_compute_budget(compute)
        except ValueError as exc:
            raise BadInput(f"--compute-budget: {exc}") from None
    return Budgets(mem, comp, profile)


def check_support_classes(support: LabeledImages, where: str = "support") -> None:
    """Few-shot adaptation needs at least two classes, each with at least one image."""
    if len(support.classes) < 2:
        raise BadInput(f"the {where} set has a single class ({support.classes[0]!r}); few-shot adaptation "
                         "needs at least two class folders")


def load_task_folders(support_dir: str | Path | ClassFolders, query_dir: str | Path | ClassFolders | None,
                      resolution: int, background: tuple[int, int, int] = WHITE
                      ) -> tuple[LabeledImages, LabeledImages | None]:
    """The support and query images of a task: folders, or the trees `check_task_folders` read."""
    support = load_class_folder(support_dir, resolution, background=background)
    check_support_classes(support)
    query = (load_class_folder(query_dir, resolution, classes=support.classes, background=background)
             if query_dir else None)
    return support, query


def check_within_budgets(report_dict: dict, budgets: Budgets, compute_macs: int | None) -> None:
    """The method promised to respect the budgets; refuse to save a model that does not."""
    mem, macs = report_dict.get("predicted_memory_bytes"), report_dict.get("backward_macs")
    if budgets.memory_bytes is not None and mem and mem > budgets.memory_bytes:
        raise BadInput(f"method {report_dict['method']} predicts {mem} bytes, over the memory budget of "
                         f"{budgets.memory_bytes} bytes; raise --memory-budget or choose --method tinytrain")
    if compute_macs is not None and macs and macs > compute_macs:
        raise BadInput(f"method {report_dict['method']} needs {macs} backward MACs, over the compute budget "
                         f"of {compute_macs}; raise --compute-budget or choose --method tinytrain")


def _scores_collapsed(logits: torch.Tensor) -> bool:
    """Every image gets the same class scores: the model no longer tells anything apart."""
    return float((logits.max(0).values - logits.min(0).values).abs().max()) < 1e-4


def weight_growth(before: Backbone, after: Backbone) -> tuple[float, float]:
    """(largest |weight| before, after) over the tensors the fit changed."""
    old = dict(before.state_dict())
    top_before = top_after = 0.0
    for name, t in after.state_dict().items():
        o = old.get(name)
        if o is None or not t.is_floating_point() or o.shape != t.shape or torch.equal(o, t):
            continue
        top_before = max(top_before, float(o.abs().max()))
        top_after = max(top_after, float(t.abs().max()) if bool(torch.isfinite(t).all()) else math.inf)
    return top_before, top_after


def divergence_reason(untrained: Backbone, after: Predictor, support_x: torch.Tensor, support_y: torch.Tensor,
                      final_loss) -> str | None:
    """Why a fit counts as diverged (see the module docstring), or None; `untrained` is the backbone before
    the fit. Weights that grew a thousandfold past max(1, their largest value) count as diverged too: Adam
    moves a weight by at most about lr per iteration, so only an absurd learning rate does that. `adapt`
    and every `tinytrain eval` job apply this same check."""
    with torch.no_grad():
        logits = after.predict(support_x)
    top_before, top_after = weight_growth(untrained, after.backbone)
    if final_loss is not None and not math.isfinite(final_loss):
        return f"the training loss became {final_loss}"
    if not bool(torch.isfinite(logits).all()) or not math.isfinite(top_after):
        return "the weights or features became infinite or NaN"
    if top_after > 1e3 * max(top_before, 1.0):
        return f"the trained weights grew to {top_after:.3g}, from at most {top_before:.3g}"
    if _scores_collapsed(logits):
        with torch.no_grad():
            before = Predictor(untrained, support_prototypes(untrained, support_x, support_y), after.head)
            if not _scores_collapsed(before.predict(support_x)):
                return "every support image now gets the same scores"
    return None


def check_not_diverged(untrained: Backbone, after: Predictor, support: LabeledImages, final_loss, lr) -> None:
    """Refuse a degenerate fit (`divergence_reason`) with a message naming the learning rate to lower."""
    rate = f"learning rate {lr:g}" if isinstance(lr, (int, float)) else "the chosen learning rate"
    why = divergence_reason(untrained, after, support.x, support.y, final_loss)
    if why:
        raise TrainingDiverged(f"training diverged ({why}) with {rate}; lower --lr (e.g. 1e-3, the default) "
                               "and run again; nothing was saved")


def adapt_to_support(backbone: Backbone, model: str, support: LabeledImages, query: LabeledImages | None,
                     method: str, config: AdaptConfig, budgets: Budgets | None = None,
                     info: dict | None = None, head: CosineClassifier | None = None,
                     background: tuple[int, int, int] = WHITE) -> tuple[AdaptedModel, dict]:
    """Fit `method` on the support images; returns the adapted model and the summary `adapt` prints.
    `head` is the checkpoint's cosine classifier (`CheckpointInfo.head()`); default scale 10, bias 0."""
    check_iterations(config.iterations)
    budgets = budgets or Budgets()
    config.memory_budget = budgets.memory_bytes if budgets.memory_bytes is not None else config.memory_budget
    config.compute_budget = budgets.compute if budgets.compute is not None else config.compute_budget
    config.precision = device_precision(budgets, config.precision)
    head = head if head is not None else CosineClassifier()
    torch.manual_seed(config.seed)
    m = make_method(method, backbone, config, head)
    with resolution_advice_on_failure(backbone.spec, budgets, config):
        predictor = m.fit(support.x, support.y)
    predictor.class_names = list(support.classes)
    report = m.report
    rd = report.to_dict()
    rd["method"] = rd.get("method") or method
    if method != "none":
        check_not_diverged(backbone, predictor, support, report.final_loss,
                           config.lr if report.lr is None else report.lr)
    given_macs = budgets.compute_macs(backbone.spec, config.resolution)
    check_within_budgets(rd, budgets, given_macs)
    summary = {k: rd.get(k) for k in ("method", "plan", "predicted_memory_bytes", "measured_saved_bytes",
                                      "backward_macs", "selection_seconds", "train_seconds")}
    summary |= {"model": model, "resolution": config.resolution, "classes": list(support.classes),
                "support_images": len(support.y), "mixed_image_sizes": support.mixed_sizes,
                "seed": config.seed} | budgets.to_dict() | applied_budgets(report, budgets, given_macs)
    if support.ignored_metadata:
        summary["ignored_metadata_files"] = support.ignored_metadata
    if query is not None:
        acc = predictor.accuracy(query.x, query.y)
        summary |= {"query_accuracy": acc, "query_images": len(query.y)}
    adapted = AdaptedModel(predictor, model, config.resolution, list(support.classes), normalisation(),
                           rd["method"], rd, None if report.update_plan is None else report.update_plan.to_dict(),
                           (info or {}) | {k: summary[k] for k in summary if k in ("seed", "query_accuracy")},
                           tuple(background))
    return adapted, summary


def device_precision(budgets: Budgets, default: str = "float32") -> str:
    """The precision plans for the budgets' device are priced at (int8 where the device profile runs the
    frozen prefix in int8, e.g. mcu-256kb), else `default`."""
    if budgets.device is None or not hasattr(budgets.device, "frozen_activation_bits"):
        return default
    from ..costs.devices import precision_of
    return precision_of(budgets.device)


@contextmanager
def resolution_advice_on_failure(spec, budgets: Budgets, config: AdaptConfig):
    """A plan that cannot fit a device profile's budget says at which resolution one would."""
    from ..sparse.selection import BudgetTooSmall
    try:
        yield
    except BudgetTooSmall as exc:
        if budgets.device is None or not hasattr(budgets.device, "frozen_activation_bits"):
            raise
        from ..costs.devices import resolution_advice
        raise BudgetTooSmall(f"{exc}; {resolution_advice(spec, budgets.device, config.resolution, config.optimizer)}"
                             ) from None


def applied_budgets(report, budgets: Budgets, given_macs: int | None) -> dict:
    """The budgets the method actually worked to: the given ones, or the method's own defaults (TinyTrain:
    1 MiB and 15 % of FullTrain's backward MACs), in bytes and MACs; None only where no budget applies."""
    mem = budgets.memory_bytes if report.memory_budget is None else report.memory_budget
    macs = given_macs if report.compute_budget_macs is None else report.compute_budget_macs
    if budgets.memory_bytes is not None or budgets.compute is not None:
        source = f"device {getattr(budgets.device, 'name', budgets.device)}" if budgets.device is not None else "given"
    elif mem is not None or macs is not None:
        source = f"{report.method}'s defaults"
    else:
        source = None
    return {"memory_budget_bytes": None if mem is None else int(mem),
            "compute_budget_macs": None if macs is None else int(macs), "budgets_from": source}
