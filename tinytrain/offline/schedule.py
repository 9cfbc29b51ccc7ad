"""Learning-rate schedule of the paper's meta-training recipe (paper_spec.md 3.2).

Linear warm-up from `warmup_lr` to `base_lr` over `warmup_epochs`, then cosine decay to `min_lr` at
`epochs`. The schedule is a pure function of (fractional) epoch, so a resumed run needs only its step
counter to continue on the same curve. Unlike timm's scheduler (which P>M>F steps once per epoch and
whose cosine starts at epoch 0), ours is evaluated every optimizer step and the cosine starts after the
warm-up; with 2000 episodes per epoch the difference is negligible and short runs stay smooth.
"""
from __future__ import annotations

import math
from ..errors import BadInput


def warmup_cosine_lr(epoch: float, *, base_lr: float, epochs: float, warmup_epochs: float = 5.0,
                     warmup_lr: float = 1e-6, min_lr: float = 1e-6) -> float:
    """Learning rate at fractional `epoch` (0 <= epoch <= epochs)."""
    if epochs <= 0:
        raise BadInput(f"epochs must be positive, got {epochs}")
    if not 0 <= warmup_epochs < epochs:
        raise BadInput(f"warm-up ({warmup_epochs} epochs) must be shorter than training ({epochs} epochs); "
                         "lower --warmup-epochs or raise --epochs")
    if epoch < warmup_epochs:
        return warmup_lr + (base_lr - warmup_lr) * epoch / warmup_epochs
    frac = min(1.0, (epoch - warmup_epochs) / (epochs - warmup_epochs))
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * frac))
