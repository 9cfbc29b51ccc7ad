"""Synthetic data for the offline-stage tests: class = a fixed random colour pattern plus noise."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def pattern_tensors(classes: int = 12, per_class: int = 12, res: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(classes, 3, 4, 4, generator=g)
    base = torch.nn.functional.interpolate(base, size=(res, res), mode="nearest")
    x = base.repeat_interleave(per_class, 0) + 0.8 * torch.randn(classes * per_class, 3, res, res, generator=g)
    y = torch.arange(classes).repeat_interleave(per_class)
    return x, y


def write_png_folder(root: Path, classes: int = 10, per_class: int = 8, size: int = 16, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for c in range(classes):
        base = rng.integers(0, 256, (4, 4, 3))
        d = root / f"class_{c:02d}"
        d.mkdir(parents=True)
        for i in range(per_class):
            img = np.kron(base, np.ones((size // 4, size // 4, 1))) + rng.normal(0, 20, (size, size, 3))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"{i}.png")
    return root
