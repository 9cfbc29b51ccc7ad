"""Fixtures for the C runtime: the kernels as a shared library, small saved models, bench images."""
from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from tinytrain.deploy.adapted import AdaptedModel, save_adapted
from tinytrain.deploy.images import normalisation
from tinytrain.models.head import CosineClassifier
from tinytrain.mcu import build
from tinytrain.mcu.export import runtime_sources
from tinytrain.methods.base import Predictor
from tinytrain.models.backbone import build_backbone

# Every kind of trained layer: output-channel rows (6), input-channel columns (8), a depthwise conv
# with stride 2 (10), a whole layer listed by ratio (15, feature-mix), BN shifts (7, 12), and residual
# blocks whose identity path carries gradient (blocks 2 and 4).
TINY_PLAN = {"model": "tiny-test", "kind": "sparse", "resolution": 32, "optimizer": "adam",
             "layers": [{"index": 6, "ratio": 0.17, "axis": "out", "channels": [0, 3, 5, 7, 11, 20]},
                        {"index": 8, "ratio": 0.08, "axis": "in", "channels": [1, 4, 9]},
                        {"index": 10, "ratio": 0.06, "axis": "out", "channels": [2, 6, 30]},
                        {"index": 15, "ratio": 1.0, "axis": "out"}],
             "bias_layers": [7, 12]}


@pytest.fixture(scope="session")
def kernels(tmp_path_factory) -> ctypes.CDLL:
    """The runtime's kernel files (not the training step) compiled into a shared library."""
    out = tmp_path_factory.mktemp("kernels") / "libttkernels.so"
    files = [str(p) for p in runtime_sources() if p.suffix == ".c" and p.name != "tt_train.c"]
    subprocess.run([build.host_compiler(), *build.COMMON_FLAGS, "-Werror", "-shared", "-fPIC", "-o", str(out),
                    *files, "-lm"], check=True, capture_output=True)
    return ctypes.CDLL(str(out))


def random_backbone(name: str = "tiny-test", seed: int = 0):
    """A backbone with non-trivial BN statistics and shifts, so folding them is exercised."""
    torch.manual_seed(seed)
    bb = build_backbone(name).eval()
    for m in bb.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    return bb


def save_model(folder: Path, plan: dict | None, backbone=None, classes=("a", "b", "c"), lr: float = 1e-2,
               method: str = "tinytrain", resolution: int = 32) -> Path:
    bb = backbone if backbone is not None else random_backbone()
    protos = torch.randn(len(classes), bb.feature_dim, generator=torch.Generator().manual_seed(1))
    adapted = AdaptedModel(Predictor(bb, protos, CosineClassifier(10.0, 0.1)), bb.spec.name, resolution,
                           list(classes), normalisation(), method, {"method": method, "extra": {"lr": lr}}, plan)
    return save_adapted(folder, adapted)


@pytest.fixture
def tiny_model(tmp_path) -> Path:
    return save_model(tmp_path / "tiny-model", TINY_PLAN)


def frames(n: int, resolution: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB frames: per class a colour and a diagonal stripe pattern, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    yy, xx = np.mgrid[:resolution, :resolution]
    out = []
    for c in labels:
        base = np.array([(70 * c) % 256, (150 + 40 * c) % 256, (200 - 30 * c) % 256], dtype=float)
        stripes = 60 * np.sin((xx + (c + 1) * yy) / (3.0 + c))[..., None]
        img = base + stripes + rng.normal(0, 25, (resolution, resolution, 3))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out), labels


def write_folder(root: Path, images: np.ndarray, labels: np.ndarray, classes: list[str]) -> Path:
    """Frames as PNG class folders (root/<class>/<i>.png)."""
    from PIL import Image

    for i, (img, c) in enumerate(zip(images, labels)):
        d = root / classes[c]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i}.png")
    return root
