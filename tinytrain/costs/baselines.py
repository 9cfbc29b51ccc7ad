"""Predefined update plans for the paper's baselines, and the Table-2 style comparison of them.

FullTrain and TinyTL use batch 100, LastLayer and SparseUpdate batch 1 (paper section 3.2).
SparseUpdate's policies are the static ones published with MCUNetV3 (architectures.md): conv layer ->
input-channel ratio, plus the BN shifts of the last `n_bias` conv layers.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..models.specs import ArchSpec, conv_layers, get_spec
from .model import CostModel
from .plan import LayerUpdate, UpdatePlan
from ..errors import BadInput

# model -> budget in KB -> (n_bias, {layer: input-channel ratio})
SPARSEUPDATE_POLICIES: dict[str, dict[int, tuple[int, dict[int, float]]]] = {
    "mcunet-5fps": {
        49: (20, {23: 0, 24: .25, 27: .5, 30: .5, 33: 0, 39: 0}),
        74: (21, {21: 1, 23: 0, 24: 1, 26: 0, 27: .5, 30: 1}),
        99: (22, {21: 1, 24: 1, 27: 1, 30: 1, 36: .125, 39: .25}),
        124: (24, {21: .25, 24: 1, 27: 1, 30: 1, 33: .5, 39: .5}),
        148: (23, {21: 1, 24: 1, 27: 1, 30: 1, 36: 1, 39: .5}),
    },
    "mbv2-w0.35": {
        49: (16, {36: 1, 39: 1, 40: 0, 41: .25, 42: .125, 45: .125, 48: .125, 49: .125}),
        73: (20, {32: .125, 33: .5, 36: .5, 39: 1, 41: .25, 42: .125, 45: .125, 48: 1}),
        99: (25, {27: 1, 30: 1, 33: 1, 36: 1, 39: 1, 42: .125, 45: .5, 48: 1}),
        123: (31, {27: 1, 30: 1, 33: 1, 36: 1, 39: 1, 42: .5, 45: 1, 48: 1}),
        138: (34, {27: 1, 30: 1, 33: 1, 36: 1, 39: 1, 42: 1, 45: 1, 48: 1}),
    },
    "proxyless-w0.3": {
        49: (21, {39: .25, 42: 1, 44: 0, 45: 1, 50: 0, 51: .125, 54: .25, 57: .25}),
        74: (28, {33: .5, 36: .25, 39: 1, 42: 1, 45: 1, 51: .5, 54: .25, 57: .5}),
        98: (25, {36: 1, 39: .5, 42: 1, 45: 1, 48: .25, 51: .5, 54: 1, 57: 1}),
        120: (32, {36: 1, 39: 1, 42: 1, 45: 1, 48: .5, 51: 1, 54: 1, 57: 1}),
        148: (45, {36: 1, 39: 1, 42: 1, 45: 1, 48: 1, 51: 1, 54: 1, 57: 1}),
    },
}
# The "100 KB" scheme: the one that reproduces the paper's SparseUpdate row for MCUNet.
SPARSEUPDATE_DEFAULT_KB = {"mcunet-5fps": 99, "mbv2-w0.35": 99, "proxyless-w0.3": 98}

METHODS = ("fulltrain", "lastlayer", "tinytl", "sparseupdate")
METHOD_LABELS = {"fulltrain": "FullTrain", "lastlayer": "LastLayer", "tinytl": "TinyTL",
                 "sparseupdate": "SparseUpdate"}


def _spec(spec: ArchSpec | str) -> ArchSpec:
    return get_spec(spec) if isinstance(spec, str) else spec


def fulltrain_plan(spec: ArchSpec | str, resolution: int = 128, optimizer: str = "adam",
                   batch_size: int = 100) -> UpdatePlan:
    """Every weight and BN parameter trained."""
    spec = _spec(spec)
    layers = conv_layers(spec, resolution)
    return UpdatePlan(spec.name, [LayerUpdate(l.index) for l in layers], [l.index for l in layers],
                      batch_size, optimizer, "full", resolution)


def lastlayer_plan(spec: ArchSpec | str, resolution: int = 128, optimizer: str = "adam",
                   batch_size: int = 1) -> UpdatePlan:
    """Only the last conv layer's weights (b13.pw2 on MCUNet, the feature-mix conv on the others)."""
    spec = _spec(spec)
    last = conv_layers(spec, resolution)[-1].index
    return UpdatePlan(spec.name, [LayerUpdate(last)], [], batch_size, optimizer, "sparse", resolution)


def tinytl_plan(spec: ArchSpec | str, resolution: int = 128, optimizer: str = "adam", batch_size: int = 100,
                train_biases: bool = True) -> UpdatePlan:
    """Lite-residual branches on every block, plus every BN shift when `train_biases` (TinyTL's default)."""
    spec = _spec(spec)
    biases = [l.index for l in conv_layers(spec, resolution)] if train_biases else []
    return UpdatePlan(spec.name, [], biases, batch_size, optimizer, "tinytl", resolution)


def sparseupdate_plan(spec: ArchSpec | str, budget_kb: int | None = None, resolution: int = 128,
                      optimizer: str = "adam", batch_size: int = 1) -> UpdatePlan:
    """SparseUpdate's published static policy (input-channel ratios + last-n biases); default the 100 KB one."""
    spec = _spec(spec)
    policies = SPARSEUPDATE_POLICIES.get(spec.name)
    if policies is None:
        raise BadInput(f"SparseUpdate has no published policy for {spec.name!r}; it exists for "
                         f"{', '.join(SPARSEUPDATE_POLICIES)}")
    if budget_kb is None:
        budget_kb = SPARSEUPDATE_DEFAULT_KB[spec.name]
    if budget_kb not in policies:
        raise BadInput(f"no SparseUpdate policy of {budget_kb} KB for {spec.name}; choose one of "
                         f"{', '.join(str(k) for k in policies)}")
    n_bias, ratios = policies[budget_kb]
    n_layers = len(conv_layers(spec, resolution))
    updates = [LayerUpdate(i, float(r), "in") for i, r in ratios.items() if r > 0]
    biases = list(range(n_layers - n_bias, n_layers)) + [i for i, r in ratios.items() if r == 0]
    return UpdatePlan(spec.name, updates, biases, batch_size, optimizer, "sparse", resolution)


def baseline_plans(spec: ArchSpec | str, resolution: int = 128, optimizer: str = "adam") -> dict[str, UpdatePlan]:
    """The paper's Table-2 baselines (SparseUpdate only where a policy is published)."""
    spec = _spec(spec)
    plans = {
        "fulltrain": fulltrain_plan(spec, resolution, optimizer),
        "lastlayer": lastlayer_plan(spec, resolution, optimizer),
        "tinytl": tinytl_plan(spec, resolution, optimizer),
    }
    if spec.name in SPARSEUPDATE_POLICIES:
        plans["sparseupdate"] = sparseupdate_plan(spec, None, resolution, optimizer)
    return plans


@dataclass(frozen=True)
class MethodCost:
    """One row of a Table-2 style comparison (bytes and MACs)."""

    method: str
    batch_size: int
    memory_bytes: int
    backward_macs: int
    updated_weights_bytes: int
    optimizer_state_bytes: int
    activation_bytes: int
    bias_bytes: int
    memory_with_all_weights_bytes: int   # paper Table 8 view: plus every backbone weight in fp32
    memory_ratio: float = 1.0            # to the smallest memory in the comparison
    compute_ratio: float = 1.0           # to the smallest backward MACs in the comparison

    def to_dict(self) -> dict:
        return asdict(self)


def plan_cost(model: CostModel, method: str, plan: UpdatePlan) -> MethodCost:
    """Memory breakdown and backward MACs of one plan, as a comparison row."""
    mem = model.backward_memory(plan)
    return MethodCost(method, plan.batch_size, mem.total, model.backward_macs(plan), mem.updated_weights,
                      mem.optimizer_state, mem.activations, mem.biases, mem.total + model.all_weights_bytes())


def compare_plans(model: CostModel, plans: dict[str, UpdatePlan]) -> dict[str, MethodCost]:
    """Costs of several plans, with ratios to the smallest memory and compute among them."""
    rows = {name: plan_cost(model, name, plan) for name, plan in plans.items()}
    min_mem = min(r.memory_bytes for r in rows.values())
    min_macs = min(r.backward_macs for r in rows.values()) or 1
    return {name: MethodCost(**{**r.to_dict(), "memory_ratio": r.memory_bytes / min_mem,
                                "compute_ratio": r.backward_macs / min_macs}) for name, r in rows.items()}
