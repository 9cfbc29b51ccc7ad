import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


def make_folder_dataset(root: Path, classes: int = 6, per_class: int = 8, size: int = 16, seed: int = 0) -> Path:
    """Class-per-folder PNGs: each class a distinct colour and stripe pattern plus noise."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        d = root / f"class{c:02d}"
        d.mkdir(parents=True)
        colour = rng.integers(0, 255, 3)
        for i in range(per_class):
            img = rng.integers(0, 60, (size, size, 3)) + colour * 0.7
            img[:, :: (c % 3) + 2] += 40
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"{i}.png")
    return root


@pytest.fixture
def folder(tmp_path) -> Path:
    return make_folder_dataset(tmp_path / "data")

@pytest.fixture(autouse=True)
def restore_threads():
    """The benches pin threads and CPUs for their process; give the test process its own back."""
    threads = torch.get_num_threads()
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    yield
    torch.set_num_threads(threads)
    if cpus is not None:
        os.sched_setaffinity(0, cpus)
