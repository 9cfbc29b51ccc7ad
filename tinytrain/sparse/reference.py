"""The masked reference: how peers usually "sparse-update" — a dense model, a full backward, and the
gradients of non-selected channels zeroed before the optimizer step.

It trains the same parameters as `SparseEngine` (Adam state of masked entries stays zero, so the
weights match), but pays for a full backward. Used by the equivalence test and `bench speed`.
"""
from __future__ import annotations

import torch
from torch import nn

from ..models.backbone import Backbone
from .engine import EnginePlan


class MaskedReference(nn.Module):
    def __init__(self, backbone: Backbone, plan: EnginePlan):
        super().__init__()
        self.backbone = backbone.eval()
        self.plan = plan
        mods = backbone.conv_modules()
        self.masks: list[tuple[nn.Parameter, torch.Tensor]] = []
        for m in mods:
            m.conv.weight.requires_grad_(True)
            m.bn.weight.requires_grad_(True)
            m.bn.bias.requires_grad_(True)
            self.masks.append((m.bn.weight, torch.zeros_like(m.bn.weight)))
        sel = {w.index: w for w in plan.weights}
        for i, m in enumerate(mods):
            mask = torch.zeros_like(m.conv.weight)
            if i in sel:
                idx = torch.tensor(sel[i].channels, dtype=torch.long, device=mask.device)
                if sel[i].axis == "out" or m.conv.groups > 1:
                    mask[idx] = 1.0
                else:
                    mask[:, idx] = 1.0
            self.masks.append((m.conv.weight, mask))
            bmask = torch.ones_like(m.bn.bias) if i in plan.biases else torch.zeros_like(m.bn.bias)
            self.masks.append((m.bn.bias, bmask))
        for p in backbone.parameters():   # e.g. a classifier: trained by nobody
            if not any(p is q for q, _ in self.masks):
                p.requires_grad_(False)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p, _ in self.masks]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Zero the gradients of everything the plan does not train (call before the step)."""
        for p, mask in self.masks:
            if p.grad is not None:
                p.grad.mul_(mask)

    def sync(self) -> None:
        """Nothing to do: the dense model holds its weights itself (same interface as the engine)."""
