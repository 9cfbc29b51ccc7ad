"""`tinytl`: TinyTL (Cai et al. 2020): a lite-residual branch per block, backbone weights frozen.

Branch on block b (architectures.md; modules in tinytrain.models.tinytl, shapes = lite_residual_branches):
block input -> AvgPool(2) -> conv k (groups 2, stride of the block) -> BN -> ReLU6 -> 1x1 conv -> BN
(scale 0 at start, so the branch starts as a no-op) -> bilinear upsample to the block output, added to it.
Trained: the branches and, by default (TinyTL's "lite_residual+bias"; option "bias"), every BN shift
of the backbone. Plain autograd, batch 100 by default. BN statistics stay frozen.

Offline pretraining: TinyTL pretrains the branches on ImageNet before transfer. `tinytrain metatrain
--lite-residual` trains them on the source (episodic ProtoNet loss, backbone frozen) and the checkpoint
carries them (`lite.*` keys, loaded as `backbone.checkpoint_info.lite`); this method starts from them when their
resolution is the task's, and from a fresh no-op branch otherwise (`report.extra["lite_pretrained"]`); option
"lite": "fresh" ignores the pretrained branches (the ablation that measures what pretraining them buys).
`tinytrain distill --lite-residual` pretrains them the way the `distilled` backbones learnt natural images:
matching the ImageNet teacher on photo patches, backbone frozen (docs/offline.md).
BatchNorm stays in the branch (frozen statistics, like every BN here) rather than TinyTL's GroupNorm: with
frozen statistics a BN is a per-channel affine map, which works at batch 1 on a device where GroupNorm
would need per-image statistics in the backward pass.

Saving: the adapted model is a `TinyTLBackbone` (tinytrain.models.tinytl), a `Backbone` subclass whose
state_dict holds the branches under `lite.<block>.*`; rebuild it with `TinyTLBackbone(spec, resolution)` and
load that state_dict (safetensors works, all tensors).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from ..costs.baselines import tinytl_plan
from ..models.tinytl import TinyTLBackbone
from .options import MethodOptions, option
from .trained import Built, TrainedMethod, private_copy


@dataclass(frozen=True)
class TinyTLOptions(MethodOptions):
    """TinyTL's options, besides those every method takes (methods/options.py)."""

    method: ClassVar[str] = "tinytl"

    bias: bool = option(True, "also train every BN shift of the backbone (TinyTL's lite_residual+bias)")
    lite: Literal["pretrained", "fresh"] = option(
        "pretrained", "pretrained: start from the checkpoint's branches where it has them at the task's "
                      "resolution; fresh: no-op branches (the ablation)")


class _TinyTLModel(nn.Module):
    def __init__(self, backbone: TinyTLBackbone, train_biases: bool):
        super().__init__()
        self.backbone = backbone.eval()
        for p in backbone.parameters():
            p.requires_grad_(False)
        self.params = list(backbone.lite.parameters())
        if train_biases:
            self.params += [m.bn.bias for m in backbone.conv_modules()]
        for p in self.params:
            p.requires_grad_(True)

    def trainable_parameters(self):
        return self.params

    def sync(self) -> None:
        pass

    def forward(self, x):
        return self.backbone(x)


class TinyTLMethod(TrainedMethod):
    name = "tinytl"
    default_batch_size = 100
    options_class = TinyTLOptions

    def _build(self, x: torch.Tensor, y: torch.Tensor) -> Built:
        res = int(x.shape[-1])
        torch.manual_seed(int(self.config.seed))    # branch initialisation is part of the seeded run
        tl = TinyTLBackbone.from_backbone(private_copy(self.source_backbone), res)
        info = getattr(self.source_backbone, "checkpoint_info", None)      # None: not loaded by load_backbone
        lite = info.lite if info is not None and self.opts.lite == "pretrained" else None
        pretrained = lite is not None and lite.resolution == res
        if pretrained:
            tl.lite.load_state_dict(lite.state)
        bias = self.opts.bias
        up = tinytl_plan(tl.spec, res, self.config.optimizer, self.batch_size, train_biases=bias)
        return Built(_TinyTLModel(tl, bias), tl, up, extra={"train_biases": bias, "lite_pretrained": pretrained})
