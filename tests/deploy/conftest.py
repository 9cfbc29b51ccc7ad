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
