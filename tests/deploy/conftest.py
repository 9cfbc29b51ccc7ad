"""Small class-per-folder image sets written on the fly (coloured noise, mixed sizes)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

COLOURS = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}


def write_folder(root: Path, per_class: int, classes=COLOURS, seed: int = 0, sizes=((40, 36), (36, 48))) -> Path:
    rng = np.random.default_rng(seed)
    for name in classes:
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = sizes[i % len(sizes)]
            a = (np.array(COLOURS[name]) + rng.integers(-40, 40, (h, w, 3))).clip(0, 255).astype("uint8")
            Image.fromarray(a).save(d / f"{i}.png")
    return root


@pytest.fixture
def folders(tmp_path) -> tuple[Path, Path]:
    return write_folder(tmp_path / "support", 3), write_folder(tmp_path / "query", 2, seed=1)


@pytest.fixture
def support(tmp_path) -> Path:
    """A support folder of three colour classes, three images each."""
    return write_folder(tmp_path / "support", 3)


@pytest.fixture
def saved(tmp_path) -> Path:
    """A saved tiny-test model (no training: the format is what matters here)."""
    import torch

    from tinytrain.deploy.adapted import AdaptedModel, save_adapted
    from tinytrain.deploy.images import normalisation
    from tinytrain.methods.base import Predictor
    from tinytrain.models.backbone import build_backbone
    from tinytrain.models.head import CosineClassifier

    torch.manual_seed(0)
    backbone = build_backbone("tiny-test").eval()
    adapted = AdaptedModel(Predictor(backbone, torch.randn(3, backbone.feature_dim), CosineClassifier()),
                           "tiny-test", 32, ["blue", "green", "red"], normalisation(), "none", {"method": "none"})
    return save_adapted(tmp_path / "saved", adapted)
