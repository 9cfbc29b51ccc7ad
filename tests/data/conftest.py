from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_image(path: Path, size=(12, 10), mode="RGB", value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
    Image.fromarray(rng.integers(0, 255, size=shape, dtype=np.uint8), mode).save(path)


def make_folder(root: Path, n_classes: int, per_class, ext=".png", size=(8, 8)) -> Path:
    for c in range(n_classes):
        n = per_class[c] if isinstance(per_class, (list, tuple)) else per_class
        for i in range(n):
            write_image(root / f"class{c:03d}" / f"{i:03d}{ext}", size=size, value=c * 1000 + i)
    return root


@pytest.fixture(scope="session")
def pocket_small(tmp_path_factory):
    from tinytrain.data.pocket import build_pocket
    return build_pocket(tmp_path_factory.mktemp("cache") / "pocket", small=True, progress=False)
