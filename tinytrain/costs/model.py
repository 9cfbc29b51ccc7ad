"""The analytic cost model: forward MACs, inference buffer, and backward memory/compute of an update plan.

It follows the paper's accounting (paper_spec.md section 5), which is TinyTL's memory profiler
(Cai et al. 2020) applied to the conv/BN/ReLU6 ops of the backbone:

* everything is fp32 (4 bytes);
* the forward pass walks the ops in order; at each op the live memory is the op's own temporary buffer
  (conv: input + output/groups, so a depthwise conv works in place; BN and ReLU6: their input), plus the
  activations already saved for backward, plus a residual block's input while inside that block;
  the activation memory is the peak of that walk, times the batch size;
* saved for backward: the input of a conv whose weights are trained (for an input-channel or depthwise
  partial update only the selected channels), the input of a BN whose affine parameters are trained,
  and for every ReLU6 above the earliest trained parameter its input (fp32 in the batch-100 FullTrain /
  TinyTL accounting, which is how the paper's 906 MB is reproduced and what PyTorch's ReLU6 keeps) or a
  1-bit mask (sparse plans, as in the paper's Table 11);
* parameters: only trained ones count (frozen weights live in flash on an MCU): the weights themselves
  plus gradient and optimizer state, i.e. (1 + 3) x 4 bytes each with Adam, (1 + 1) x 4 with plain SGD;
* backward MACs: the input gradients of every layer above the earliest weight-updated layer plus the
  weight gradients of the updated layers scaled by their channel fraction; bias gradients are free;
  FullTrain is 2x the forward MACs (paper A.4).

Bias / BN-shift parameters of a *sparse* plan are reported (`MemoryBreakdown.biases`) but, like the
paper's Table 2, not added to `total`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Mapping

from ..models.specs import ArchSpec, ConvLayer, conv_layers, get_spec, lite_residual_branches
from .plan import LayerUpdate, UpdatePlan
from ..errors import BadInput

BYTES = 4                                             # fp32 everywhere
OPTIMIZER_STATE = {"adam": 3, "sgd": 1, "sgdm": 2}    # gradient (+ momentum) (+ second moment), x weights
BATCH_RELU_BITS = 32                                  # full/TinyTL accounting: ReLU6 keeps its fp32 input
SPARSE_RELU_BITS = 1                                  # sparse accounting: a 1-bit mask per ReLU6 output


# ---------------------------------------------------------------------------------------------------------
# Forward-pass figures

def forward_macs(spec: ArchSpec, resolution: int | None = None) -> int:
    """Total conv MACs of one image (the paper's MAC figure)."""
    return sum(l.macs for l in conv_layers(spec, resolution))


def conv_params(spec: ArchSpec) -> int:
    """Conv weight count (the paper's parameter figure; BN parameters not included)."""
    return sum(l.params for l in conv_layers(spec))


def bn_params(spec: ArchSpec) -> int:
    """BN scale + shift count of the backbone."""
    return sum(2 * l.cout for l in conv_layers(spec))


def fulltrain_backward_macs(spec: ArchSpec, resolution: int | None = None) -> int:
    """FullTrain's backward MACs = 2x forward (paper A.4); compute budgets given as a fraction refer to it."""
    return 2 * forward_macs(spec, resolution)


def compute_budget_macs(spec: ArchSpec, budget: float | int, resolution: int | None = None) -> int:
    """A compute budget in MACs: a float in (0, 1] is a fraction of FullTrain's backward MACs."""
    if isinstance(budget, float) and 0 < budget <= 1:
        return int(budget * fulltrain_backward_macs(spec, resolution))
    if budget <= 0:
        raise BadInput(f"compute budget must be positive (got {budget})")
    return int(budget)


def layer_buffer_bytes(layer: ConvLayer) -> int:
    """Inference buffer of one conv: input + output, the output of a depthwise conv counted in place."""
    out = layer.output_elems // layer.groups if layer.groups > 1 else layer.output_elems
    return BYTES * (layer.input_elems + out)


def peak_inference_buffer_bytes(layers: Iterable[ConvLayer]) -> int:
    """Largest input+output buffer over the conv layers (the paper's 640/896/512 KB)."""
    return max(layer_buffer_bytes(l) for l in layers)


def layer_rows(spec: ArchSpec, resolution: int | None = None) -> list[dict]:
    """Per-layer table rows (JSON-ready): shape, params, MACs, activation sizes, later-layer MACs."""
    layers = conv_layers(spec, resolution)
    later = 0
    rows: list[dict] = []
    for l in reversed(layers):
        d = l.to_dict()
        d.update(input_bytes=BYTES * l.input_elems, output_bytes=BYTES * l.output_elems,
                 buffer_bytes=layer_buffer_bytes(l), later_macs=later)
        rows.append(d)
        later += l.macs
    return rows[::-1]


def saved_activation_bytes_last_k_blocks(spec: ArchSpec, k: int, resolution: int | None = None) -> float:
    """Bytes saved to back-propagate through the last k blocks (paper Table 11).

    fp32 input of every conv on the path plus a 1-bit mask per ReLU6 output; the feature-mix conv
    belongs to the last block.
    """
    n_blocks = len(spec.blocks)
    if not 1 <= k <= n_blocks:
        raise BadInput(f"k must be between 1 and {n_blocks} (the blocks of {spec.name}); got {k}")
    path = [l for l in conv_layers(spec, resolution) if l.block >= n_blocks - k]
    return (sum(BYTES * l.input_elems for l in path)
            + sum(l.output_elems for l in path if _has_act(l)) / 8)


def _has_act(layer: ConvLayer) -> bool:
    return layer.kind != "pw2"   # the projection conv of an MBConv block is linear


# ---------------------------------------------------------------------------------------------------------
# The forward walk used for activation memory

@dataclass(frozen=True)
class _Op:
    kind: str            # conv | bn | act | pool | up
    layer: int           # conv layer index; -1 inside a TinyTL branch
    block: int           # block of the op (-1 stem, n_blocks feature-mix)
    in_elems: int
    out_elems: int
    groups: int = 1
    residual_elems: int = 0
    branch: bool = False
    nbytes: int = BYTES      # bytes per element (1 in an int8 prefix)

    @property
    def tmp_bytes(self) -> int:
        if self.kind == "conv":
            return self.nbytes * (self.in_elems + self.out_elems // self.groups)
        if self.kind in ("bn", "act"):
            return self.nbytes * self.in_elems
        if self.kind == "dequant":       # int8 in, fp32 out
            return self.in_elems + BYTES * self.out_elems
        return 0


def _timeline(spec: ArchSpec, resolution: int | None, with_branches: bool, n_int8: int = 0) -> list[_Op]:
    """The forward ops; with `n_int8` the layers below it are int8 (1 byte per element) and a dequant op
    takes the prefix's output to fp32 before layer `n_int8`."""
    layers = conv_layers(spec, resolution)
    branches = {br.block: br for br in lite_residual_branches(spec, resolution)} if with_branches else {}
    ops: list[_Op] = []
    for i, l in enumerate(layers):
        res = 0
        if 0 <= l.block < len(spec.blocks) and spec.blocks[l.block].residual:
            res = next(x for x in layers if x.block == l.block).input_elems
        nb = 1 if i < n_int8 else BYTES
        if n_int8 and i == n_int8:
            ops.append(_Op("dequant", -1, l.block, l.input_elems, l.input_elems))
        ops.append(_Op("conv", l.index, l.block, l.input_elems, l.output_elems, l.groups, res, nbytes=nb))
        ops.append(_Op("bn", l.index, l.block, l.output_elems, l.output_elems, 1, res, nbytes=nb))
        if _has_act(l):
            ops.append(_Op("act", l.index, l.block, l.output_elems, l.output_elems, 1, res, nbytes=nb))
        block_ends = l.block >= 0 and (i + 1 == len(layers) or layers[i + 1].block != l.block)
        if block_ends and l.block in branches:
            br = branches[l.block]
            pooled, mid_e, out_e = br.cin * br.h_pool ** 2, br.mid * br.h_mid ** 2, br.cout * br.h_mid ** 2
            ops += [
                _Op("pool", -1, br.block, br.cin * br.h_in ** 2, pooled, 1, res, True),
                _Op("conv", -1, br.block, pooled, mid_e, br.groups, res, True),
                _Op("bn", -1, br.block, mid_e, mid_e, 1, res, True),
                _Op("act", -1, br.block, mid_e, mid_e, 1, res, True),
                _Op("conv", -1, br.block, mid_e, out_e, 1, res, True),
                _Op("bn", -1, br.block, out_e, out_e, 1, res, True),
                _Op("up", -1, br.block, out_e, br.cout * br.h_out ** 2, 1, res, True),
            ]
    return ops


def _peak(ops: list[_Op], saved: Callable[[int, _Op], float]) -> float:
    """Peak of (op buffer + residual + activations saved so far) over the forward walk."""
    acc = 0.0
    peak = 0.0
    for pos, op in enumerate(ops):
        peak = max(peak, op.tmp_bytes + op.nbytes * op.residual_elems + acc)
        acc += saved(pos, op)
    return peak


# ---------------------------------------------------------------------------------------------------------
# Backward memory and compute of an update plan

@dataclass(frozen=True)
class MemoryBreakdown:
    """Backward-pass memory in bytes (paper Table 7 columns).

    updated_weights: the trained weights; optimizer_state: their gradient and optimizer buffers;
    activations: peak activation memory (inference buffer reused for backward, times the batch);
    biases: trained bias/BN parameters with their gradient and state (in `total` for full/TinyTL plans,
    reported but not in `total` for sparse plans, as in the paper's Table 2).
    """

    updated_weights: int
    optimizer_state: int
    activations: int
    biases: int
    total: int

    def to_dict(self) -> dict:
        return asdict(self)


def _channel_fraction(layer: ConvLayer, update: LayerUpdate) -> tuple[float, float]:
    """(fraction of weights trained, fraction of the input that must be saved) for one layer update."""
    if layer.is_depthwise:
        n = update.n_channels(layer.cout)
        return n / layer.cout, n / layer.cout
    if update.axis == "in":
        n = update.n_channels(layer.cin)
        return n / layer.cin, n / layer.cin
    n = update.n_channels(layer.cout)
    return n / layer.cout, (1.0 if n else 0.0)


def _check_plan(spec: ArchSpec, plan: UpdatePlan, layers: list[ConvLayer]) -> None:
    n = len(layers)
    bad = [u.index for u in plan.layers if u.index >= n] + [i for i in plan.bias_layers if i >= n]
    if bad:
        raise BadInput(f"plan names layer(s) {bad} but {spec.name} has conv layers 0..{n - 1}")


PRECISIONS = ("float32", "int8")


def int8_prefix_layers(layers: list[ConvLayer], earliest: int) -> int:
    """Layers of an int8 export's int8 prefix: every stage below the block holding `earliest`."""
    block = layers[earliest].block
    return min(l.index for l in layers if l.block == block)


class CostModel:
    """Costs of one backbone at one resolution; build once, query many plans cheaply (greedy selection).

    `precision="int8"` prices an int8 deployment (`tinytrain export --format c --precision int8`): the
    frozen stages below the block of a plan's earliest trained layer hold int8 activations (1 byte), the
    rest fp32; Table-2 activation memory (`sparse_activation_bytes`, `sparse_memory_bytes`) then walks
    those sizes. Trained weights, gradients and optimizer state stay fp32."""

    def __init__(self, spec: ArchSpec | str, resolution: int | None = None, precision: str = "float32"):
        if precision not in PRECISIONS:
            raise BadInput(f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
        self.precision = precision
        self._walks: dict[int, tuple[list[_Op], dict[int, int], dict[int, int]]] = {}
        self.spec = get_spec(spec) if isinstance(spec, str) else spec
        self.resolution = resolution or self.spec.resolution
        self.layers = conv_layers(self.spec, self.resolution)
        self.forward_macs = sum(l.macs for l in self.layers)
        self.peak_buffer = peak_inference_buffer_bytes(self.layers)
        self._later = [0] * len(self.layers)
        for i in range(len(self.layers) - 2, -1, -1):
            self._later[i] = self._later[i + 1] + self.layers[i + 1].macs
        self._ops = _timeline(self.spec, self.resolution, with_branches=False)
        self._ops_tinytl: list[_Op] | None = None
        self._conv_pos = {op.layer: p for p, op in enumerate(self._ops) if op.kind == "conv"}
        self._bn_pos = {op.layer: p for p, op in enumerate(self._ops) if op.kind == "bn"}

    # -- sparse plans (fast path) ------------------------------------------------------------------------
    def sparse_weights(self, updates: Iterable[LayerUpdate]) -> float:
        """Number of trained weights of a set of layer updates."""
        return sum(self.layers[u.index].params * _channel_fraction(self.layers[u.index], u)[0] for u in updates)

    def sparse_activation_bytes(self, updates: Iterable[LayerUpdate], bias_layers: Iterable[int] = ()) -> int:
        """Peak activation memory (batch 1) of a sparse plan: the walk with 1-bit ReLU masks."""
        save_in = {}
        for u in updates:
            wfrac, sfrac = _channel_fraction(self.layers[u.index], u)
            if wfrac > 0:
                save_in[u.index] = sfrac
        bias_layers = list(bias_layers)
        trained = [u.index for u in updates] + bias_layers
        if not trained:
            return self.peak_buffer_walk()
        ops, conv_pos, bn_pos = self._walk(min(trained))
        starts = [conv_pos[i] for i in save_in] + [bn_pos[i] for i in bias_layers]
        starts += [bn_pos[u.index] for u in updates if u.index not in save_in]
        first = min(starts)

        def saved(pos: int, op: _Op) -> float:
            if op.kind == "conv" and op.layer in save_in:
                return BYTES * op.in_elems * save_in[op.layer]
            if op.kind == "act" and pos > first:
                return op.in_elems * SPARSE_RELU_BITS / 8
            return 0.0

        return int(round(_peak(ops, saved)))

    def _walk(self, earliest: int) -> tuple[list[_Op], dict[int, int], dict[int, int]]:
        """(ops, conv op positions, BN op positions) of a plan whose earliest trained layer is `earliest`:
        the fp32 walk, or with precision int8 the walk with the int8 prefix below its block."""
        if self.precision != "int8":
            return self._ops, self._conv_pos, self._bn_pos
        n8 = int8_prefix_layers(self.layers, earliest)
        if n8 not in self._walks:
            ops = _timeline(self.spec, self.resolution, False, n8)
            self._walks[n8] = (ops, {op.layer: p for p, op in enumerate(ops) if op.kind == "conv"},
                               {op.layer: p for p, op in enumerate(ops) if op.kind == "bn"})
        return self._walks[n8]

    def peak_buffer_walk(self) -> int:
        """Peak of the forward walk with nothing saved (inference, residual inputs included)."""
        return int(_peak(self._ops, lambda pos, op: 0.0))

    def sparse_memory_bytes(self, updates: Iterable[LayerUpdate], optimizer: str = "adam",
                            bias_layers: Iterable[int] = ()) -> int:
        """Table-2 memory of a sparse plan at batch 1: activations + (trained weights + trained BN shifts) x
        (1 + optimizer state)."""
        updates, bias_layers = list(updates), sorted(set(bias_layers))
        weights = self.sparse_weights(updates) + sum(self.layers[i].cout for i in bias_layers)
        return int(round(self.sparse_activation_bytes(updates, bias_layers)
                         + BYTES * weights * (1 + OPTIMIZER_STATE[optimizer])))

    def sparse_backward_macs(self, updates: Iterable[LayerUpdate], bias_layers: Iterable[int] = ()) -> int:
        """Input gradients above the earliest weight-updated layer + scaled weight gradients."""
        updates = list(updates)
        weighted = [(u, _channel_fraction(self.layers[u.index], u)[0]) for u in updates]
        weighted = [(u, f) for u, f in weighted if f > 0]
        if weighted:
            l_min = min(u.index for u, _ in weighted)
        else:   # a bias-only plan still needs the input gradients down to its earliest bias
            idx = list(bias_layers) + [u.index for u in updates]
            if not idx:
                return 0
            l_min = min(idx)
        return int(round(self._later[l_min] + sum(self.layers[u.index].macs * f for u, f in weighted)))

    # -- any plan -------------------------------------------------------------------------------------
    def backward_memory(self, plan: UpdatePlan) -> MemoryBreakdown:
        """Backward-pass memory of `plan` (paper Table 2 / Table 7 accounting)."""
        _check_plan(self.spec, plan, self.layers)
        m = OPTIMIZER_STATE[plan.optimizer]
        if plan.kind == "sparse":
            bias_set = sorted(set(plan.bias_layers) | {u.index for u in plan.layers if u.ratio == 0
                                                       and not u.channels})
            weights = self.sparse_weights(plan.layers)
            acts = plan.batch_size * self.sparse_activation_bytes(plan.layers, bias_set)
            bias_params = sum(self.layers[i].cout for i in bias_set)
            w = int(round(BYTES * weights))
            b = BYTES * bias_params * (1 + m)
            return MemoryBreakdown(w, m * w, acts, b, acts + w * (1 + m))
        if plan.kind == "full":
            weights = sum(l.params for l in self.layers)
            bias_params = sum(2 * l.cout for l in self.layers)

            def saved(pos: int, op: _Op) -> float:
                return BYTES * op.in_elems * (BATCH_RELU_BITS / 32 if op.kind == "act" else 1)

            acts = plan.batch_size * int(_peak(self._ops, saved))
        else:   # tinytl
            if self._ops_tinytl is None:
                self._ops_tinytl = _timeline(self.spec, self.resolution, with_branches=True)
            ops = self._ops_tinytl
            branches = lite_residual_branches(self.spec, self.resolution)
            save_in = {u.index: _channel_fraction(self.layers[u.index], u) for u in plan.layers}
            biases = set(plan.bias_layers)
            starts = [p for p, op in enumerate(ops) if op.branch and op.kind == "conv"]
            starts += [p for p, op in enumerate(ops) if not op.branch and op.layer in biases | set(save_in)
                       and op.kind in ("conv", "bn")]
            first = min(starts)

            def saved(pos: int, op: _Op) -> float:
                if op.branch:
                    if op.kind in ("conv", "bn"):
                        return BYTES * op.in_elems
                    return BYTES * op.in_elems * BATCH_RELU_BITS / 32 if op.kind == "act" else 0.0
                if op.kind == "conv" and op.layer in save_in and save_in[op.layer][0] > 0:
                    return BYTES * op.in_elems * save_in[op.layer][1]
                if op.kind == "bn" and op.layer in biases:
                    return BYTES * op.in_elems
                if op.kind == "act" and pos > first:
                    return BYTES * op.in_elems * BATCH_RELU_BITS / 32
                return 0.0

            acts = plan.batch_size * int(_peak(ops, saved))
            weights = sum(br.params for br in branches) + self.sparse_weights(plan.layers)
            bias_params = sum(self.layers[i].cout for i in biases)
        w = int(round(BYTES * weights))
        b = BYTES * bias_params * (1 + m)
        return MemoryBreakdown(w, m * w, acts, b, acts + w * (1 + m) + b)

    def backward_macs(self, plan: UpdatePlan) -> int:
        """Backward MACs of `plan` (paper_spec 5.2 ComputeCost)."""
        _check_plan(self.spec, plan, self.layers)
        if plan.kind == "full":
            return 2 * self.forward_macs
        if plan.kind == "sparse":
            return self.sparse_backward_macs(plan.layers, plan.bias_layers)
        # TinyTL: every branch needs the gradient at its block's output, so the input gradients of all
        # layers above block 0 (or above the earliest trained bias); each branch costs its weight gradients,
        # the input gradient of its 1x1 conv, and that of its first conv when something earlier is trained.
        layers = self.layers
        block0_last = max(l.index for l in layers if l.block == 0)
        trained = list(plan.bias_layers) + [u.index for u in plan.layers]
        l_min = min([block0_last] + trained)
        total = self._later[l_min] + sum(layers[u.index].macs * _channel_fraction(layers[u.index], u)[0]
                                         for u in plan.layers)
        for br in lite_residual_branches(self.spec, self.resolution):
            first_of_block = min(l.index for l in layers if l.block == br.block)
            earlier = l_min < first_of_block
            total += br.macs + br.conv2_macs + (br.conv1_macs if earlier else 0)
        return int(total)

    def all_weights_bytes(self) -> int:
        """fp32 bytes of every backbone parameter (conv + BN): what the paper's Table 8 adds on a Linux board."""
        return BYTES * (sum(l.params for l in self.layers) + sum(2 * l.cout for l in self.layers))


def _model_for(spec: ArchSpec, plan: UpdatePlan) -> CostModel:
    if plan.model != spec.name:
        raise BadInput(f"the plan is for {plan.model!r} but the model is {spec.name!r}")
    return CostModel(spec, plan.resolution)


def backward_memory(spec: ArchSpec, plan: UpdatePlan) -> MemoryBreakdown:
    """Backward-pass memory of `plan` on `spec` (paper Table 2 / 7 accounting; see the module docstring)."""
    return _model_for(spec, plan).backward_memory(plan)


def backward_macs(spec: ArchSpec, plan: UpdatePlan) -> int:
    """Backward-pass MACs of `plan` on `spec` (paper_spec 5.2 ComputeCost)."""
    return _model_for(spec, plan).backward_macs(plan)


def sparse_memory_bytes(layers: Iterable[ConvLayer] | CostModel, selection: Mapping[int, float] |
                        Iterable[LayerUpdate], optimizer: str = "adam", axis: str = "out") -> int:
    """Table-2 memory of a sparse selection at batch 1 ({layer index: channel ratio} or LayerUpdates).

    Pass a `CostModel` for repeated calls: it keeps the precomputed walk. Given plain conv layers this
    uses the closed form of paper_spec 5.3 (peak inference buffer + weights x (1 + optimizer state)).
    """
    updates = _as_updates(selection, axis)
    if isinstance(layers, CostModel):
        return layers.sparse_memory_bytes(updates, optimizer)
    layers = list(layers)
    weights = sum(layers[u.index].params * _channel_fraction(layers[u.index], u)[0] for u in updates)
    return int(round(peak_inference_buffer_bytes(layers) + BYTES * weights * (1 + OPTIMIZER_STATE[optimizer])))


def sparse_backward_macs(layers: Iterable[ConvLayer] | CostModel, selection: Mapping[int, float] |
                         Iterable[LayerUpdate], axis: str = "out") -> int:
    """Backward MACs of a sparse selection ({layer index: channel ratio} or LayerUpdates)."""
    updates = _as_updates(selection, axis)
    if isinstance(layers, CostModel):
        return layers.sparse_backward_macs(updates)
    layers = list(layers)
    weighted = [(u, _channel_fraction(layers[u.index], u)[0]) for u in updates]
    weighted = [(u, f) for u, f in weighted if f > 0]
    if not weighted:
        return 0
    l_min = min(u.index for u, _ in weighted)
    later = sum(l.macs for l in layers[l_min + 1:])
    return int(round(later + sum(layers[u.index].macs * f for u, f in weighted)))


def _as_updates(selection, axis: str) -> list[LayerUpdate]:
    if isinstance(selection, Mapping):
        return [LayerUpdate(int(i), float(r), axis) for i, r in selection.items()]
    return list(selection)


# ---------------------------------------------------------------------------------------------------------
# The arena of the C runtime (tinytrain.mcu)

@dataclass(frozen=True)
class RuntimeArena:
    """Bytes of the C runtime's static arena for one sparse plan at batch 1 (see `runtime_arena`)."""

    forward: int       # the Table-2 activation walk at batch 1
    backward: int      # the same walk run down from the loss, with gradient buffers
    frame: int         # uint8 RGB frame + normalised image
    trained: int       # trained weights and BN shifts with their optimizer moments (gradients: in `backward`)
    classifier: int    # prototypes, class counts, features, feature gradient, logits
    total: int

    def to_dict(self) -> dict:
        return asdict(self)


def runtime_arena(spec: ArchSpec, plan: UpdatePlan, n_classes: int, precision: str = "float32") -> RuntimeArena:
    """The arena `tinytrain export --format c` needs for a sparse `plan` at batch 1, by this model's accounting.

    With `precision="int8"` (`--precision int8`) the forward walk holds the int8 prefix's tensors at 1 byte
    per element and counts the dequantisation of its output (int8 in, fp32 out), and the frame's
    normalised copy is int8 (3 x R x R bytes); the backward walk, above the prefix, is unchanged.

    Working memory is the largest of three walks:
      * forward: the Table-2 activation walk (`CostModel.sparse_activation_bytes`): each conv's input and
        output (one output channel for a depthwise conv, which works in place), a residual block's input
        inside the block, the inputs kept by trained convs, a 1-bit mask per ReLU6 output from the earliest
        trained layer up;
      * backward, from the loss down to the earliest trained layer: at each layer the gradient of its
        output and of its input (none at the earliest layer), a copy of the output gradient scaled by BN
        where a residual block's identity path still needs the original, the block-output gradient held
        inside such a block, the layer's own weight and BN-shift gradients (4 bytes per trained weight
        and shift of this layer only: the runtime applies each layer's update as soon as its gradients
        exist, TinyEngine's operator reordering), and whatever is still kept for the layers below;
      * the frame: the uint8 RGB image and its normalised float copy (3 x R x R).
    Added to it, what persists across steps: trained weights and BN shifts with their optimizer state
    (4 bytes each with SGD, 3 x 4 with Adam: the weight and two moments; the gradient is the working
    memory above; unlike Table 2's total, biases count), and the classifier's prototypes
    (classes x feature_dim), class counts, features, their gradient and the logits. Masks count n/8
    bytes (the runtime rounds each layer's up to 4 bytes).
    """
    if plan.kind != "sparse":
        raise BadInput(f"the C runtime runs sparse plans only (got a {plan.kind!r} plan)")
    spec = get_spec(spec) if isinstance(spec, str) else spec
    if plan.model != spec.name:
        raise BadInput(f"the plan is for {plan.model!r} but the model is {spec.name!r}")
    model = CostModel(spec, plan.resolution, precision)
    layers = model.layers
    bias_set = sorted(set(plan.bias_layers) | {u.index for u in plan.layers if u.ratio == 0 and not u.channels})
    weighted = {u.index: u for u in plan.layers if _channel_fraction(layers[u.index], u)[0] > 0}
    trained_idx = list(weighted) + bias_set
    if not trained_idx:
        raise BadInput("the plan trains nothing")
    earliest = min(trained_idx)
    forward = model.sparse_activation_bytes(plan.layers, bias_set)

    kept = {}   # layer -> bytes kept for its backward (input slice, mask)
    for l in layers[earliest:]:
        b = l.output_elems * SPARSE_RELU_BITS / 8 if _has_act(l) else 0.0
        if l.index in weighted:
            b += BYTES * l.input_elems * _channel_fraction(l, weighted[l.index])[1]
        kept[l.index] = b
    residual = {}   # layer inside a residual block whose identity gradient is needed -> block output bytes
    for b, blk in enumerate(model.spec.blocks):
        idx = [l.index for l in layers if l.block == b]
        if blk.residual and min(idx) > earliest:
            for i in idx:
                residual[i] = BYTES * layers[max(idx)].output_elems
    grads = {}  # layer -> bytes of its weight and shift gradients, alive during its backward only
    for i in set(trained_idx):
        w = model.sparse_weights([weighted[i]]) if i in weighted else 0.0
        grads[i] = BYTES * (w + (layers[i].cout if i in bias_set else 0))
    backward = 0.0
    for l in reversed(layers[earliest:]):
        i = l.index
        live = sum(v for j, v in kept.items() if j <= i) + BYTES * l.output_elems + grads.get(i, 0.0)
        if i > earliest:
            live += BYTES * l.input_elems
        if i in residual:
            live += residual[i]   # at the block's last layer: the BN-scaled copy beside the original
        backward = max(backward, live)

    r = plan.resolution
    frame = 3 * r * r + (1 if precision == "int8" else BYTES) * 3 * r * r
    m = OPTIMIZER_STATE[plan.optimizer] - 1     # optimizer state without the gradient (counted in `backward`)
    trained = BYTES * (1 + m) * (model.sparse_weights(weighted.values()) + sum(layers[i].cout for i in bias_set))
    d = model.spec.feature_dim
    classifier = BYTES * (n_classes * d + n_classes + 2 * d + n_classes)
    working = max(forward, backward, frame)
    total = int(round(working + trained + classifier))
    return RuntimeArena(int(forward), int(round(backward)), frame, int(round(trained)), classifier, total)


def flash_constants(spec: ArchSpec | str, plan: UpdatePlan, n_classes: int, precision: str = "float32") -> int:
    """Bytes of the constants `tinytrain export --format c` puts in flash for a sparse `plan`: every conv
    weight (fp32, or int8 with `precision="int8"`), the per-channel tables (fp32: BN scale and shift; the
    int8 prefix: int32 bias and multiplier and an int8 shift; the int8 export's float layers: a weight
    scale besides BN's two), the trained channels' fp32 master copies (int8 only: the float export reads
    them from its fp32 weights), the channel lists, the exported prototypes and, for int8, the 3 x 256
    input table. Not counted: the layer table, class names and code (a few KiB, measured by the bench)."""
    spec = get_spec(spec) if isinstance(spec, str) else spec
    if precision not in PRECISIONS:
        raise BadInput(f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    layers = conv_layers(spec, plan.resolution)
    weighted = {u.index: u for u in plan.layers if _channel_fraction(layers[u.index], u)[0] > 0}
    trained = list(weighted) + list(plan.bias_layers)
    n8 = int8_prefix_layers(layers, min(trained)) if precision == "int8" and trained else 0
    total = 0
    for l in layers:
        if l.index < n8:
            total += l.params + 9 * l.cout
        elif precision == "int8":
            total += l.params + 12 * l.cout
        else:
            total += BYTES * l.params + 8 * l.cout
        if l.index in weighted:
            u = weighted[l.index]
            axis_size = l.channels(u.axis)
            n = u.n_channels(axis_size)
            total += 2 * n + 2 * axis_size
            if precision == "int8":
                total += int(round(BYTES * l.params * _channel_fraction(l, u)[0]))
    total += BYTES * n_classes * spec.feature_dim
    if precision == "int8":
        total += 3 * 256
    return total
