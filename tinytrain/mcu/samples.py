"""A handful of real photographs as class folders, for the MCU bench when the user brings none.

Each class is one of scikit-image's bundled photographs (no download); its images are random crops
of it (a fixed seed), written as PNG into OUT/support/<class>/ and OUT/query/<class>/. brick, grass
and gravel are left out: the project holds them back for evaluation.

    tinytrain data samples OUT [--classes 5] [--support 3] [--query 1]

(the command calls `write_samples`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from ..errors import BadInput

PHOTOS = ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "motorcycle_left.png",
          "hubble_deep_field.jpg", "retina.jpg", "ihc.png")
SIZE = 160


def _photo(name: str):
    from PIL import Image

    try:
        import skimage.data
    except ImportError:
        raise BadInput("sample photographs need scikit-image (pip install 'tinytrain[pocket]'); or give "
                         "your own class folders with --support/--query") from None
    with Image.open(Path(skimage.data.__file__).parent / name) as img:
        return np.asarray(img.convert("RGB"))


def write_samples(out: str | Path, classes: int = 5, support: int = 3, query: int = 1, seed: int = 0
                  ) -> tuple[Path, Path]:
    """Write OUT/support and OUT/query; returns both paths. Refuses to write into non-empty folders."""
    from PIL import Image

    if not 2 <= classes <= len(PHOTOS):
        raise BadInput(f"--classes must be between 2 and {len(PHOTOS)} (got {classes})")
    if support < 1 or query < 0:
        raise BadInput("--support must be >= 1 and --query >= 0")
    out = Path(out)
    dirs = (out / "support", out / "query")
    for d in dirs:
        if d.exists() and any(d.iterdir()):
            raise BadInput(f"{d} is not empty; choose a new OUT folder")
    rng = np.random.default_rng(seed)
    for file in PHOTOS[:classes]:
        name = file.split(".")[0]
        img = _photo(file)
        h, w = img.shape[:2]
        for split, count in zip(dirs, (support, query)):
            (split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                side = int(min(h, w) * rng.uniform(0.45, 0.8))
                top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
                crop = Image.fromarray(np.ascontiguousarray(img[top:top + side, left:left + side]).astype(np.uint8))
                crop.resize((SIZE, SIZE), Image.BILINEAR).save(split / name / f"{i}.png")
    return dirs
