"""The static memory plan of the C runtime: every buffer of a training step at a fixed arena offset.

The training step is a fixed sequence of operations (normalise the frame, each conv layer forward,
pooling and the head, each trained layer backward), so the lifetime of every buffer is known when
the model is exported. Buffers that persist across steps (trained slices and BN shifts, their
optimizer moments, prototypes) sit at the start of the arena. A trained layer's weight and shift
gradients do not persist: the runtime applies the layer's update as soon as its backward has
computed them (TinyEngine's operator reordering; tt_train.c says why the result is unchanged), so
they are working buffers alive during that layer's backward only. The working buffers are placed by a
greedy first-fit in order of decreasing size (the scheme TFLite Micro's greedy planner uses): each
at the lowest offset where it overlaps no buffer alive at the same time (two tie-break orders are
tried, the smaller arena kept). Inference (`tt_predict`,
prototypes) runs the same forward offsets.

All sizes are in floats (4 bytes); bit masks, the uint8 frame and int8 tensors are rounded up to whole
floats. In an int8 export the prefix's tensors (the quantised image, every layer output below
`net.n_int8`) are int8, and one more operation dequantises the prefix's output into the first float
layer's input.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .network import RuntimeLayer, RuntimeNetwork

FLOAT = 4


@dataclass
class Buffer:
    name: str
    size: int          # floats
    start: int         # first operation that writes it
    end: int           # last operation that reads it
    offset: int = -1

    def overlaps_in_time(self, other: "Buffer") -> bool:
        return self.start <= other.end and other.start <= self.end


@dataclass
class LayerOffsets:
    """Arena offsets (floats) of one layer; -1 = not used. Field names follow tt_layer in tt_model.h."""

    x: int = -1
    y: int = -1
    tmp: int = -1
    res: int = -1
    mask: int = -1
    saved: int = -1
    wt: int = -1
    gw: int = -1
    m: int = -1
    v: int = -1
    bt: int = -1
    gb: int = -1
    bm: int = -1
    bv: int = -1
    gy: int = -1
    gc: int = -1
    gx: int = -1
    gres: int = -1


@dataclass
class MemoryPlan:
    arena_floats: int
    persistent_floats: int
    layers: list[LayerOffsets]
    globals: dict[str, int]                 # image, x0, features, gfeatures, logits, protos, counts
    buffers: list[Buffer] = field(default_factory=list)

    @property
    def arena_bytes(self) -> int:
        return FLOAT * self.arena_floats

    def to_dict(self) -> dict:
        return {"arena_floats": self.arena_floats, "arena_bytes": self.arena_bytes,
                "persistent_floats": self.persistent_floats, "globals": dict(self.globals),
                "layers": [asdict(o) for o in self.layers], "buffers": [asdict(b) for b in self.buffers]}


def _floats_for_bits(bits: int) -> int:
    return (bits + 31) // 32


def _floats_for_bytes(n: int) -> int:
    return (n + 3) // 4


def _in_place(net: RuntimeNetwork, layer: RuntimeLayer) -> bool:
    """A depthwise conv overwrites its input unless that input is a residual block's input,
    which the block's add still needs (a block without expansion layer)."""
    if layer.kind != "dw":
        return False
    return not any(l.block_first == layer.index for l in net.layers)


# Orders in which `_place` tries the buffers: largest first (TFLite Micro's greedy planner), and largest
# first with the longer-lived of equal size first; the smaller arena wins (the first on a tie). Neither
# order reaches the live-set lower bound on every plan; together they did on every plan tried
# (tests/mcu/test_memory.py), where the first alone left a few hundred bytes over it on some int8 plans.
_ORDERS = (lambda b: (-b.size, b.start, b.name),
           lambda b: (-b.size, b.start - b.end, b.name))


def _first_fit(buffers: list[Buffer], base: int, key) -> tuple[int, list[int]]:
    """Greedy first-fit in the order `key`: (end of the highest buffer, offsets in `buffers`' order)."""
    placed: list[tuple[Buffer, int]] = []
    offsets = {}
    top = base
    for b in sorted(buffers, key=key):
        busy = sorted((o, o + p.size) for p, o in placed if p.overlaps_in_time(b))
        offset = base
        for lo, hi in busy:
            if offset + b.size <= lo:
                break
            offset = max(offset, hi)
        placed.append((b, offset))
        offsets[id(b)] = offset
        top = max(top, offset + b.size)
    return top, [offsets[id(b)] for b in buffers]


def _place(buffers: list[Buffer], base: int) -> int:
    """Greedy first-fit by decreasing size, in each of `_ORDERS`; keeps the smallest arena and
    returns its top."""
    top, offsets = min((_first_fit(buffers, base, key) for key in _ORDERS), key=lambda r: r[0])
    for b, o in zip(buffers, offsets):
        b.offset = o
    return top


def plan_memory(net: RuntimeNetwork) -> MemoryPlan:
    """Offsets for every buffer of `net`'s training step, prediction and prototype passes."""
    layers = net.layers
    n = len(layers)
    r = net.resolution
    offs = [LayerOffsets() for _ in layers]
    adam = net.optimizer == "adam"

    # -- persistent: trained slices with their optimizer moments, then the classifier state
    cursor = 0

    def take(size: int) -> int:
        nonlocal cursor
        at, cursor = cursor, cursor + size
        return at

    for l, o in zip(layers, offs):
        if l.channels:
            o.wt = take(l.trained_weights)
            if adam:
                o.m, o.v = take(l.trained_weights), take(l.trained_weights)
        if l.bias:
            c = l.conv.cout
            o.bt = take(c)
            if adam:
                o.bm, o.bv = take(c), take(c)
    d, k = net.feature_dim, net.n_classes
    glob = {"protos": take(k * d), "counts": take(k), "features": take(d), "gfeatures": take(d),
            "logits": take(k)}
    persistent = cursor

    # -- working buffers with lifetimes over the operation sequence
    # op 0: frame -> normalised image; op 1 + i: forward of layer i; op 1 + n: pooling and head;
    # op 2 + n + (n - 1 - i): backward of layer i. An int8 export has one more operation, the
    # dequantisation, before the first float layer (everything from there on moves by one).
    n8 = net.n_int8
    extra = 1 if n8 else 0

    def fwd(i: int) -> int:
        return 1 + i + (extra if i >= n8 else 0)

    head = 1 + n + extra
    deq = 1 + n8

    def bwd(i: int) -> int:
        return head + 1 + (n - 1 - i)

    def elems(i: int, count: int) -> int:
        """Floats holding `count` elements of layer i's tensors (int8 in the prefix)."""
        return _floats_for_bytes(count) if i < n8 else count

    buffers: list[Buffer] = []
    owner: dict[str, list[tuple[LayerOffsets | dict, str]]] = {}   # buffer -> (where its offset goes, field)

    def new(name: str, size: int, start: int, end: int, *uses: tuple[LayerOffsets | dict, str]) -> Buffer:
        b = Buffer(name, size, start, end)
        buffers.append(b)
        owner[name] = list(uses)
        return b

    new("frame", _floats_for_bytes(3 * r * r), 0, 0, (glob, "image"))
    current = new("x0", elems(0, 3 * r * r), 0, fwd(0), (glob, "x0"), (offs[0], "x"))
    block_input: dict[int, Buffer] = {}          # first layer of a residual block -> its input buffer
    residual_firsts = {l.block_first for l in layers if l.block_first is not None}
    for i, l in enumerate(layers):
        c, o = l.conv, offs[i]
        if n8 and i == n8:                       # the int8 prefix's output, dequantised
            current.end = max(current.end, deq)
            current = new("deq", c.input_elems, deq, fwd(i), (glob, "deq"))
        if i in residual_firsts:
            block_input[i] = current
        if i > 0:
            owner[current.name].append((o, "x"))
        if _in_place(net, l):
            out = current
            owner[out.name].append((o, "y"))
            new(f"tmp{i}", elems(i, c.h_out * c.h_out), fwd(i), fwd(i), (o, "tmp"))
        else:
            out = new(f"y{i}", elems(i, c.output_elems), fwd(i), fwd(i), (o, "y"))
        out.end = max(out.end, (deq if i + 1 == n8 else fwd(i + 1)) if i + 1 < n else head)
        if l.block_first is not None:
            src = block_input[l.block_first]
            src.end = max(src.end, fwd(i))
            owner[src.name].append((o, "res"))
        if l.train:
            if l.act:
                new(f"mask{i}", _floats_for_bits(c.output_elems), fwd(i), bwd(i), (o, "mask"))
            if l.channels:
                new(f"saved{i}", l.saved_floats, fwd(i), bwd(i), (o, "saved"))
        current = out

    # backward: g{i} is the gradient w.r.t. layer i's output
    grad = new(f"g{n - 1}", layers[-1].conv.output_elems, head, bwd(n - 1), (offs[-1], "gy"))
    keep_identity: dict[int, Buffer] = {}        # block's first layer -> gradient of the block's output
    for i in range(n - 1, net.earliest - 1, -1):
        l, o = layers[i], offs[i]
        # this layer's weight and shift gradients: computed and consumed by its update within bwd(i)
        if l.channels:
            new(f"gw{i}", l.trained_weights, bwd(i), bwd(i), (o, "gw"))
        if l.bias:
            new(f"gb{i}", l.conv.cout, bwd(i), bwd(i), (o, "gb"))
        if net.identity_gradient(l):
            keep_identity[l.block_first] = grad
            grad.end = max(grad.end, bwd(l.block_first))
            new(f"gc{i}", l.conv.output_elems, bwd(i), bwd(i), (o, "gc"))
        else:
            owner[grad.name].append((o, "gc"))
        if i > net.earliest:
            below = new(f"g{i - 1}", l.conv.input_elems, bwd(i), bwd(i - 1), (o, "gx"), (offs[i - 1], "gy"))
            if i in keep_identity:
                owner[keep_identity[i].name].append((o, "gres"))
            grad = below

    top = _place(buffers, persistent)
    for b in buffers:
        for target, key in owner[b.name]:
            if isinstance(target, dict):
                target[key] = b.offset
            else:
                setattr(target, key, b.offset)
    return MemoryPlan(top, persistent, offs, glob, buffers)


def live_floats(plan: MemoryPlan) -> int:
    """Largest total size of the working buffers alive at one operation (what any placement of
    them needs at least), plus the persistent part."""
    ops = max(b.end for b in plan.buffers) + 1
    peak = max(sum(b.size for b in plan.buffers if b.start <= t <= b.end) for t in range(ops))
    return plan.persistent_floats + peak
