"""TinyTL's architecture (Cai et al. 2020): a lite-residual branch per block beside a frozen backbone.

Branch on block b (architectures.md; shapes = tinytrain.models.specs.lite_residual_branches):
block input -> AvgPool(2) -> conv k (groups 2, stride of the block) -> BN -> ReLU6 -> 1x1 conv -> BN
(scale 0 at start, so the branch starts as a no-op) -> bilinear upsample to the block output, added to it.
BatchNorm stays in the branch (frozen statistics, like every BN here) rather than TinyTL's GroupNorm.

A `TinyTLBackbone` is a `Backbone` subclass whose state_dict holds the branches under `lite.<block>.*`;
rebuild it with `TinyTLBackbone(spec, resolution)` and load that state_dict (safetensors works, all
tensors). The method that trains it is tinytrain.methods.tinytl; the offline stages pretrain the branches.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import Backbone
from .specs import ArchSpec, lite_residual_branches

__all__ = ["LiteResidual", "TinyTLBackbone", "lite_residual_branches"]


class LiteResidual(nn.Module):
    def __init__(self, cin: int, mid: int, cout: int, kernel: int, stride: int, groups: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, mid, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        y = F.avg_pool2d(x, 2) if min(x.shape[-2:]) >= 2 else x
        y = self.bn2(self.conv2(F.relu6(self.bn1(self.conv1(y)))))
        if tuple(y.shape[-2:]) != tuple(size):
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        return y


class TinyTLBackbone(Backbone):
    """A Backbone with a lite-residual branch on every block (its state_dict includes them)."""

    def __init__(self, spec: ArchSpec, resolution: int | None = None, num_classes: int | None = None):
        super().__init__(spec, num_classes)
        self.lite = nn.ModuleList(LiteResidual(b.cin, b.mid, b.cout, b.kernel, b.stride, b.groups)
                                  for b in lite_residual_branches(spec, resolution))

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for blk, lite in zip(self.blocks, self.lite):
            y = blk(x)
            x = y + lite(x, tuple(y.shape[-2:]))
        if self.feature_mix is not None:
            x = self.feature_mix(x)
        return x

    @staticmethod
    def from_backbone(backbone: Backbone, resolution: int | None = None) -> "TinyTLBackbone":
        tl = TinyTLBackbone(backbone.spec, resolution, backbone.classifier.out_features
                            if backbone.classifier is not None else None)
        missing, unexpected = tl.load_state_dict(backbone.state_dict(), strict=False)
        assert not unexpected and all(k.startswith("lite.") for k in missing)
        tl.checkpoint_info = backbone.checkpoint_info      # the same weights' provenance, head and resolution
        return tl.eval()
