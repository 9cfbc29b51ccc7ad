"""Backbone architectures as data: block lists, the zoo registry, per-conv-layer descriptions, and the
shapes of TinyTL's lite-residual branches (the modules are in tinytl.py).

Everything here is plain Python (no torch), so the cost model and planners can reason about a model
without building it. Layer numbering follows the paper: conv layers in forward order, stem = 0.
"""
from __future__ import annotations

from dataclasses import dataclass, asdict, replace
from ..errors import BadInput


@dataclass(frozen=True)
class BlockSpec:
    """One inverted-residual (MBConv) block: [pw1 (if expand > 1)] -> dw -> pw2."""

    expand: int
    kernel: int
    stride: int
    cin: int
    cout: int

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.cin == self.cout

    @property
    def hidden(self) -> int:
        return self.cin * self.expand


@dataclass(frozen=True)
class ArchSpec:
    """A MobileNet-style backbone: stem conv, MBConv blocks, optional 1x1 feature-mix conv."""

    name: str
    stem_out: int
    blocks: tuple[BlockSpec, ...]
    feature_mix: int | None = None   # output channels of the final 1x1 conv, None = no such layer
    stem_kernel: int = 3
    stem_stride: int = 2
    resolution: int = 128            # the paper's cost-figure resolution
    description: str = ""
    # The input normalisation the weights expect, (mean, std) per RGB channel on [0, 1] pixels; None means
    # the project's pipeline statistics (ImageNet mean/std), which every image is normalised with. A spec
    # with its own statistics (MIT's int8 models take [-1, 1]) makes the backbone convert exactly on entry.
    input_norm: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None

    @property
    def feature_dim(self) -> int:
        return self.feature_mix if self.feature_mix else self.blocks[-1].cout

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "ArchSpec":
        d = dict(d)
        d["blocks"] = tuple(BlockSpec(**b) for b in d["blocks"])
        if d.get("input_norm") is not None:
            mean, std = d["input_norm"]
            d["input_norm"] = (tuple(float(v) for v in mean), tuple(float(v) for v in std))
        return ArchSpec(**d)


@dataclass(frozen=True)
class ConvLayer:
    """One conv layer of a backbone at a given input resolution (batch 1)."""

    index: int
    name: str          # stable module path, e.g. "blocks.7.pw1"
    block: int         # block index; -1 for the stem, n_blocks for the feature-mix conv
    kind: str          # stem | pw1 | dw | pw2 | feature-mix
    cin: int
    cout: int
    kernel: int
    stride: int
    groups: int
    h_in: int
    h_out: int

    @property
    def params(self) -> int:
        return self.cout * (self.cin // self.groups) * self.kernel * self.kernel

    @property
    def macs(self) -> int:
        return self.params * self.h_out * self.h_out

    @property
    def input_elems(self) -> int:
        return self.cin * self.h_in * self.h_in

    @property
    def output_elems(self) -> int:
        return self.cout * self.h_out * self.h_out

    @property
    def is_depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.cin == self.cout

    def channels(self, axis: str) -> int:
        """How many channels a plan can select along `axis`: input ("in") or output ("out") channels; a
        grouped (depthwise) conv has one filter per output channel, so always its output channels."""
        return self.cin if axis == "in" and self.groups == 1 else self.cout

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(params=self.params, macs=self.macs)
        return d


def _out_size(h: int, kernel: int, stride: int) -> int:
    pad = kernel // 2
    return (h + 2 * pad - kernel) // stride + 1


def conv_layers(spec: ArchSpec, resolution: int | None = None) -> list[ConvLayer]:
    """The ordered conv layers of `spec` at `resolution` (default: the spec's own)."""
    h = resolution or spec.resolution
    layers: list[ConvLayer] = []

    def add(name, block, kind, cin, cout, k, s, groups):
        nonlocal h
        h_out = _out_size(h, k, s)
        layers.append(ConvLayer(len(layers), name, block, kind, cin, cout, k, s, groups, h, h_out))
        h = h_out

    add("stem", -1, "stem", 3, spec.stem_out, spec.stem_kernel, spec.stem_stride, 1)
    for b, blk in enumerate(spec.blocks):
        if blk.expand != 1:
            add(f"blocks.{b}.pw1", b, "pw1", blk.cin, blk.hidden, 1, 1, 1)
        add(f"blocks.{b}.dw", b, "dw", blk.hidden, blk.hidden, blk.kernel, blk.stride, blk.hidden)
        add(f"blocks.{b}.pw2", b, "pw2", blk.hidden, blk.cout, 1, 1, 1)
    if spec.feature_mix:
        add("feature_mix", len(spec.blocks), "feature-mix", spec.blocks[-1].cout, spec.feature_mix, 1, 1, 1)
    return layers


# ---------------------------------------------------------------------------------------------
# TinyTL's lite-residual branches

@dataclass(frozen=True)
class LiteResidualBranch:
    """One TinyTL side branch on block `block`: AvgPool(2) -> conv k (groups 2) -> BN -> ReLU -> 1x1 -> BN -> up."""

    block: int
    cin: int
    mid: int
    cout: int
    kernel: int
    stride: int
    groups: int
    h_in: int      # block input size (before pooling)
    h_pool: int    # after AvgPool(2)
    h_mid: int     # after the grouped conv
    h_out: int     # block output size (after upsampling)

    @property
    def conv1_params(self) -> int:
        return self.mid * (self.cin // self.groups) * self.kernel ** 2

    @property
    def conv2_params(self) -> int:
        return self.cout * self.mid

    @property
    def params(self) -> int:
        """Conv weights plus the two BNs' scale and shift."""
        return self.conv1_params + self.conv2_params + 2 * self.mid + 2 * self.cout

    @property
    def conv1_macs(self) -> int:
        return self.conv1_params * self.h_mid ** 2

    @property
    def conv2_macs(self) -> int:
        return self.conv2_params * self.h_mid ** 2

    @property
    def macs(self) -> int:
        return self.conv1_macs + self.conv2_macs


def _make_divisible(v: float, divisor: int = 8) -> int:
    n = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return n + divisor if n < 0.9 * v else n


def lite_residual_branches(spec: ArchSpec, resolution: int | None = None) -> list[LiteResidualBranch]:
    """The branch TinyTL adds to every block (architectures.md): kernel 5, or 3/1 on maps smaller than 5."""
    layers = conv_layers(spec, resolution)
    branches = []
    for b, blk in enumerate(spec.blocks):
        first = next(l for l in layers if l.block == b)
        last = [l for l in layers if l.block == b][-1]
        h_in = first.h_in
        h_pool = max(1, h_in // 2)
        kernel = 5 if h_pool >= 5 else (3 if h_pool >= 3 else 1)
        mid = _make_divisible(blk.cin)
        h_mid = (h_pool + 2 * (kernel // 2) - kernel) // blk.stride + 1
        branches.append(LiteResidualBranch(b, blk.cin, mid, blk.cout, kernel, blk.stride, 2,
                                           h_in, h_pool, h_mid, last.h_out))
    return branches


# ---------------------------------------------------------------------------------------------
# The zoo (architectures.md). Blocks are written as (expand, kernel, stride, cin, cout).

def _blocks(rows) -> tuple[BlockSpec, ...]:
    return tuple(BlockSpec(*r) for r in rows)


MCUNET_5FPS = ArchSpec(
    name="mcunet-5fps",
    stem_out=16,
    blocks=_blocks([
        (1, 3, 1, 16, 8), (4, 3, 2, 8, 16), (3, 3, 1, 16, 16), (3, 7, 2, 16, 24), (5, 3, 1, 24, 24),
        (5, 3, 2, 24, 40), (4, 7, 1, 40, 40), (4, 5, 1, 40, 48), (3, 3, 1, 48, 48), (4, 3, 1, 48, 48),
        (5, 7, 2, 48, 96), (4, 5, 1, 96, 96), (4, 5, 1, 96, 96), (6, 3, 1, 96, 160),
    ]),
    description="MCUNet 5FPS ImageNet model (MIT zoo mcunet-in1); the paper's 'MCUNet'",
)

MBV2_W035 = ArchSpec(
    name="mbv2-w0.35",
    stem_out=16,
    blocks=_blocks(
        [(1, 3, 1, 16, 8), (6, 3, 2, 8, 8), (6, 3, 1, 8, 8), (6, 3, 2, 8, 16)]
        + [(6, 3, 1, 16, 16)] * 2
        + [(6, 3, 2, 16, 24)] + [(6, 3, 1, 24, 24)] * 3
        + [(6, 3, 1, 24, 32)] + [(6, 3, 1, 32, 32)] * 2
        + [(6, 3, 2, 32, 56)] + [(6, 3, 1, 56, 56)] * 2
        + [(6, 3, 1, 56, 112)]
    ),
    feature_mix=448,
    description="MobileNetV2 width 0.35 (feature-mix 448); the paper's 'MobileNetV2'",
)

PROXYLESS_W03 = ArchSpec(
    name="proxyless-w0.3",
    stem_out=16,
    blocks=_blocks(
        [(1, 3, 1, 16, 8), (3, 5, 2, 8, 16), (3, 3, 1, 16, 16), (3, 7, 2, 16, 16),
         (3, 3, 1, 16, 16), (3, 5, 1, 16, 16), (3, 5, 1, 16, 16), (6, 7, 2, 16, 24)]
        + [(3, 5, 1, 24, 24)] * 3
        + [(6, 5, 1, 24, 32)] + [(3, 5, 1, 32, 32)] * 3
        + [(6, 7, 2, 32, 64), (6, 7, 1, 64, 64)] + [(3, 7, 1, 64, 64)] * 2
        + [(6, 7, 1, 64, 96)]
    ),
    feature_mix=384,
    description="ProxylessNAS mobile width 0.3 (feature-mix 384); the paper's 'ProxylessNASNet'",
)

MOBILENETV2_10 = ArchSpec(
    name="mobilenetv2-1.0",
    stem_out=32,
    blocks=_blocks(
        [(1, 3, 1, 32, 16)]
        + [(6, 3, 2, 16, 24), (6, 3, 1, 24, 24)]
        + [(6, 3, 2, 24, 32)] + [(6, 3, 1, 32, 32)] * 2
        + [(6, 3, 2, 32, 64)] + [(6, 3, 1, 64, 64)] * 3
        + [(6, 3, 1, 64, 96)] + [(6, 3, 1, 96, 96)] * 2
        + [(6, 3, 2, 96, 160)] + [(6, 3, 1, 160, 160)] * 2
        + [(6, 3, 1, 160, 320)]
    ),
    feature_mix=1280,
    description="standard MobileNetV2 (width 1.0); real ImageNet weights via torchvision's layout",
)

# tiny-training's variants of the two (Lin et al., NeurIPS 2022; MIT's `mcu_models` release): the same blocks
# without the final feature-mix conv, so the pooled features are the last block's output. Their ImageNet
# weights load only into these entries (never into the models above with a random feature-mix).
MBV2_W035_NOMIX = replace(MBV2_W035, name="mbv2-w0.35-nomix", feature_mix=None,
                          description="MobileNetV2 w0.35 without the feature-mix conv (tiny-training's int8 model)")
PROXYLESS_W03_NOMIX = replace(PROXYLESS_W03, name="proxyless-w0.3-nomix", feature_mix=None,
                              description="ProxylessNAS w0.3 without the feature-mix conv (tiny-training's int8 model)")

# Test-only micro model: same code paths, tiny cost (for fast unit tests and CI).
TINY_TEST = ArchSpec(
    name="tiny-test",
    stem_out=8,
    blocks=_blocks([(1, 3, 1, 8, 8), (3, 3, 2, 8, 12), (3, 5, 1, 12, 12), (4, 3, 2, 12, 16), (3, 3, 1, 16, 16)]),
    feature_mix=32,
    resolution=32,
    description="a tiny 5-block network for tests and CI smoke runs (not a paper model)",
)

ZOO: dict[str, ArchSpec] = {s.name: s for s in (MCUNET_5FPS, MBV2_W035, PROXYLESS_W03, MBV2_W035_NOMIX,
                                                 PROXYLESS_W03_NOMIX, MOBILENETV2_10, TINY_TEST)}
PAPER_MODELS = ("mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3")


def get_spec(name: str) -> ArchSpec:
    try:
        return ZOO[name]
    except KeyError:
        raise BadInput(f"unknown model {name!r}; choose one of: {', '.join(ZOO)}") from None
