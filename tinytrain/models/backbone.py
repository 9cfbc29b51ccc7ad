"""The torch network rebuilt from an `ArchSpec`.

Module paths equal `ConvLayer.name` ("stem", "blocks.7.pw1", "feature_mix"), so a conv layer's
description and its module are found by the same key. Every conv is a `ConvBNAct` (conv without
bias -> BatchNorm -> optional ReLU6); the sparse-update engine relies on that uniform shape.
"""
from __future__ import annotations

import torch
from torch import nn

from .specs import ArchSpec, BlockSpec, ConvLayer, conv_layers, get_spec
from .checkpoint_info import CheckpointInfo
from ..errors import BadInput


class ConvBNAct(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU6(inplace=False) if act else None
        self.input_map: tuple[torch.Tensor, torch.Tensor] | None = None   # stem only, see `input_map`

    def map_input(self, x: torch.Tensor) -> torch.Tensor:
        """The stem's conversion from the pipeline's normalisation to the weights' own (identity elsewhere)."""
        if self.input_map is None:
            return x
        scale, shift = self.input_map
        return x * scale.to(x).view(1, -1, 1, 1) + shift.to(x).view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(self.map_input(x)))
        return self.act(x) if self.act is not None else x


class MBConv(nn.Module):
    """Inverted residual block: [pw1 -> ReLU6] -> dw -> ReLU6 -> pw2 (linear) [+ identity]."""

    def __init__(self, spec: BlockSpec):
        super().__init__()
        self.spec = spec
        self.pw1 = ConvBNAct(spec.cin, spec.hidden, 1) if spec.expand != 1 else None
        self.dw = ConvBNAct(spec.hidden, spec.hidden, spec.kernel, spec.stride, groups=spec.hidden)
        self.pw2 = ConvBNAct(spec.hidden, spec.cout, 1, act=False)
        self.residual = spec.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw1(x) if self.pw1 is not None else x
        y = self.pw2(self.dw(y))
        return x + y if self.residual else y


class Backbone(nn.Module):
    """Feature extractor: image batch (N, 3, H, W) -> globally pooled features (N, feature_dim).

    `classifier` (a Linear on the features) exists only when `num_classes` is given; it is used by
    supervised pretraining and by ImageNet weights, never by few-shot adaptation.
    """

    def __init__(self, spec: ArchSpec, num_classes: int | None = None):
        super().__init__()
        self.spec = spec
        self.stem = ConvBNAct(3, spec.stem_out, spec.stem_kernel, spec.stem_stride)
        self.stem.input_map = input_map(spec)
        self.blocks = nn.ModuleList(MBConv(b) for b in spec.blocks)
        self.feature_mix = (
            ConvBNAct(spec.blocks[-1].cout, spec.feature_mix, 1) if spec.feature_mix else None
        )
        self.classifier = nn.Linear(spec.feature_dim, num_classes) if num_classes else None
        # where the weights came from (set by models.weights.load_backbone; random init until then)
        self.checkpoint_info = CheckpointInfo()
        self._init_weights()

    @property
    def feature_dim(self) -> int:
        return self.spec.feature_dim

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)
        # Zero the last BN of each residual block so that a fresh network starts near identity.
        for blk in self.blocks:
            if blk.residual:
                nn.init.zeros_(blk.pw2.bn.weight)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for blk in self.blocks:
            x = blk(x)
        if self.feature_mix is not None:
            x = self.feature_mix(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean((2, 3))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.classifier is None:
            raise BadInput("this backbone has no classifier; build it with num_classes=...")
        return self.classifier(self(x))

    # --- introspection -------------------------------------------------------------------
    def conv_layers(self, resolution: int | None = None) -> list[ConvLayer]:
        """Ordered descriptions of every conv layer (index 0 = stem)."""
        return conv_layers(self.spec, resolution)

    def conv_modules(self) -> list[ConvBNAct]:
        """The `ConvBNAct` modules in the same order as `conv_layers()`."""
        mods: list[ConvBNAct] = [self.stem]
        for blk in self.blocks:
            mods += [m for m in (blk.pw1, blk.dw, blk.pw2) if m is not None]
        if self.feature_mix is not None:
            mods.append(self.feature_mix)
        return mods


def input_map(spec: ArchSpec) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Per-channel (scale, shift) taking a pipeline-normalised image to the normalisation `spec`'s weights
    expect: x_own = x * std_pipe / std_own + (mean_pipe - mean_own) / std_own. Applied before the stem's
    zero padding, so it is exact (folding it into the stem's weights would be wrong at the borders)."""
    if spec.input_norm is None:
        return None
    from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD

    (mean, std), m0, s0 = spec.input_norm, IMAGENET_MEAN, IMAGENET_STD
    scale = torch.tensor([s0[c] / std[c] for c in range(3)], dtype=torch.float64)
    shift = torch.tensor([(m0[c] - mean[c]) / std[c] for c in range(3)], dtype=torch.float64)
    return scale.float(), shift.float()


def input_normalisation(spec: ArchSpec) -> dict:
    """The (mean, std) a raw [0, 1] image is normalised with to reach `spec`'s stem: its own, or the pipeline's."""
    from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD

    mean, std = spec.input_norm or (IMAGENET_MEAN, IMAGENET_STD)
    return {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}


def build_backbone(name_or_spec: str | ArchSpec, num_classes: int | None = None) -> Backbone:
    spec = get_spec(name_or_spec) if isinstance(name_or_spec, str) else name_or_spec
    return Backbone(spec, num_classes)
