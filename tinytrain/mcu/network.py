"""What the C runtime runs: the conv layers of an adapted model with what each one trains.

Built from a directory written by `tinytrain adapt --save` (its backbone, update plan and head).
This is where a model the C kernels do not cover is refused, with a message that says what to do.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..costs.plan import UpdatePlan
from ..models.specs import ArchSpec, ConvLayer, conv_layers
from ..sparse.engine import EnginePlan
from ..errors import BadInput

OPTIMIZERS = ("adam", "sgd")      # what tt_optim.c implements
ADAM_BETAS = (0.9, 0.999)         # torch.optim.Adam defaults, as methods.common.make_optimizer uses
ADAM_EPS = 1e-8


@dataclass(frozen=True)
class RuntimeLayer:
    """One conv layer as the runtime executes it."""

    conv: ConvLayer
    kind: str                      # conv (the stem) | pw (1x1) | dw (depthwise)
    act: bool                      # ReLU6 after the affine map
    train: bool                    # at or above the earliest trained layer: keeps masks, gradient flows
    axis: str = "out"              # axis of `channels` ("out" for depthwise convs)
    channels: tuple[int, ...] = () # trained weight channels (empty: weights frozen)
    bias: bool = False             # BN shift trained
    block_first: int | None = None # last layer of a residual block: the block's first layer

    @property
    def index(self) -> int:
        return self.conv.index

    @property
    def weights_per_channel(self) -> int:
        """Trained weights per selected channel (a row, a column, or a k x k kernel)."""
        c = self.conv
        if self.kind == "dw":
            return c.kernel * c.kernel
        return c.cin if self.axis == "out" else c.cout

    @property
    def trained_weights(self) -> int:
        return len(self.channels) * self.weights_per_channel

    @property
    def saved_floats(self) -> int:
        """Input floats kept for the weight gradient."""
        if not self.channels:
            return 0
        hw = self.conv.h_in * self.conv.h_in
        return self.conv.cin * hw if (self.kind == "pw" and self.axis == "out") else len(self.channels) * hw


@dataclass(frozen=True)
class RuntimeNetwork:
    spec: ArchSpec
    resolution: int
    layers: tuple[RuntimeLayer, ...]
    earliest: int
    n_classes: int
    optimizer: str
    n_int8: int = 0                # int8 export: layers below this index run in int8 (tinytrain.mcu.quant)

    @property
    def precision(self) -> str:
        return "int8" if self.n_int8 else "float32"

    @property
    def feature_dim(self) -> int:
        return self.spec.feature_dim

    def identity_gradient(self, last: RuntimeLayer) -> bool:
        """Whether the backward pass needs the identity path of `last`'s residual block: only if
        the gradient must reach the block's input (its first layer is above the earliest)."""
        return last.block_first is not None and last.train and last.block_first > self.earliest


def _kind(c: ConvLayer) -> str:
    if c.kind == "stem":
        return "conv"
    if c.is_depthwise:
        return "dw"
    if c.kernel == 1 and c.groups == 1:
        return "pw"
    if c.kernel > 7:
        raise BadInput(f"layer {c.index} ({c.name}) has a {c.kernel}x{c.kernel} kernel; the C kernels go up to 7x7")
    raise BadInput(f"layer {c.index} ({c.name}) is a {c.kernel}x{c.kernel} conv with {c.groups} groups; "
                     "the C kernels cover the stem, 1x1 and depthwise convs only")


def engine_plan_of(update_plan: dict | None, spec: ArchSpec, resolution: int) -> tuple[EnginePlan, str]:
    """(the engine plan, the optimizer) of a saved model's update plan, refusing what the runtime cannot run."""
    if not update_plan:
        raise BadInput("the model directory has no update plan (it was adapted with a method that trains "
                         "nothing); adapt it with `--method tinytrain` (or sparseupdate/lastlayer) first")
    plan = UpdatePlan.from_dict(update_plan)
    if plan.kind != "sparse":
        raise BadInput(f"the model's plan is a {plan.kind!r} plan; the C runtime runs sparse plans only "
                         "(adapt with --method tinytrain, sparseupdate or lastlayer)")
    if plan.optimizer not in OPTIMIZERS:
        raise BadInput(f"the plan's optimizer {plan.optimizer!r} is not in the C runtime; it has "
                         f"{' and '.join(OPTIMIZERS)}")
    if plan.model != spec.name:
        raise BadInput(f"the update plan is for {plan.model!r} but the model is {spec.name!r}")
    layers = conv_layers(spec, resolution)
    if any(u.index >= len(layers) for u in plan.layers) or any(b >= len(layers) for b in plan.bias_layers):
        raise BadInput(f"the update plan names layers beyond {spec.name}'s {len(layers)} conv layers")
    # axis sizes, for layers the plan trains in full without listing their channels
    sizes = {u.index: (layers[u.index].cin if u.axis == "in" and layers[u.index].groups == 1
                       else layers[u.index].cout) for u in plan.layers}
    try:
        eplan = EnginePlan.from_update_plan(plan, layer_channels=sizes)
    except ValueError as exc:
        raise BadInput(f"{exc}; the C runtime trains listed channels (plans saved by `adapt --method tinytrain` "
                         "list them)") from None
    if not eplan.weights and not eplan.biases:
        raise BadInput("the model's update plan is empty (no weights or biases to train); adapt it with "
                         "`--method tinytrain` first")
    return eplan, plan.optimizer


def runtime_network(spec: ArchSpec, eplan: EnginePlan, resolution: int, n_classes: int,
                    optimizer: str, precision: str = "float32") -> RuntimeNetwork:
    """The runtime's view of `spec` training `eplan`; a ValueError for what it does not cover. With
    precision "int8" the stages below the block of the earliest trained layer run in int8."""
    if optimizer not in OPTIMIZERS:
        raise BadInput(f"optimizer {optimizer!r} is not in the C runtime; use {' or '.join(OPTIMIZERS)}")
    if n_classes < 2:
        raise BadInput(f"the model has {n_classes} class(es); the runtime needs at least two")
    convs = conv_layers(spec, resolution)
    if any(c.h_out < 1 for c in convs):
        raise BadInput(f"{resolution} px is too small for {spec.name}: a feature map shrinks to nothing")
    if max(max(c.cin, c.cout, c.h_in) for c in convs) > 32767:
        raise BadInput(f"{spec.name} at {resolution} px has a dimension over 32767; the runtime's layer table "
                         "stores channels and sizes in 16 bits")
    earliest = eplan.earliest
    if earliest == 0:
        what = "the int8 runtime runs the stem in int8 and" if precision == "int8" else "the C runtime"
        raise BadInput(f"the plan trains the stem (layer 0); {what} trains layers 1 and up only: "
                         "drop layer 0 from the plan (adapt again with a plan that leaves the stem frozen)")
    sel = {w.index: w for w in eplan.weights}
    last_of_block = {}
    for b, blk in enumerate(spec.blocks):
        if blk.residual:
            idx = [c.index for c in convs if c.block == b]
            last_of_block[max(idx)] = min(idx)
    layers = []
    for c in convs:
        kind = _kind(c)
        w = sel.get(c.index)
        axis = "out" if (w is None or kind == "dw") else w.axis
        layers.append(RuntimeLayer(c, kind, c.kind != "pw2", c.index >= earliest, axis,
                                   tuple(w.channels) if w else (), c.index in eplan.biases,
                                   last_of_block.get(c.index)))
    if precision not in ("float32", "int8"):
        raise BadInput(f"precision must be float32 or int8 (got {precision!r})")
    n_int8 = min(c.index for c in convs if c.block == convs[earliest].block) if precision == "int8" else 0
    return RuntimeNetwork(spec, resolution, tuple(layers), earliest, n_classes, optimizer, n_int8)
