"""Synthetic data for the offline-stage tests: class = a fixed random colour pattern plus noise; photographs and
a tiny teacher for the distillation tests."""
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


def write_photo(path: Path, seed: int, size=(96, 80)) -> Path:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 5, 3)).astype(np.uint8)
    img = Image.fromarray(small).resize(size, Image.BICUBIC)
    img.save(path)
    return path


def distill_setup(tmp_path: Path) -> tuple[Path, list[str]]:
    """Two photographs, a held-out one and a tiny teacher (tiny-test with a 1000-way classifier standing in for
    the ImageNet MobileNetV2); returns tmp_path and the `tinytrain distill` arguments without --out."""
    from tinytrain.models.backbone import build_backbone
    from tinytrain.models.weights import save_checkpoint
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        write_photo(photos / f"p{i}.png", i)
    held = write_photo(tmp_path / "held.png", 7)
    torch.manual_seed(0)
    teacher = tmp_path / "teacher.safetensors"
    net = build_backbone("tiny-test", num_classes=1000)
    with torch.no_grad():                      # logits that vary with the input, as a trained teacher's do
        net.classifier.weight.normal_(0, 1.0)
    save_checkpoint(teacher, net)
    args = ["distill", "--student", "tiny-test", "--teacher", "tiny-test", "--teacher-checkpoint", str(teacher),
            "--images", str(photos), "--heldout", str(held), "--resolution", "32", "--batch-size", "8",
            "--epochs", "2", "--steps-per-epoch", "4", "--warmup-epochs", "0.5", "--heldout-crops", "20",
            "--save-every", "3", "--log-every", "1", "--no-progress", "--device", "cpu"]
    return tmp_path, args


def lite_run_args(args: list[str], base: Path, out: Path, features: Path) -> list[str]:
    """`distill --lite-residual` beside the finished student of `base` (3 x 15 steps: 360 images seen)."""
    lite_args = list(args)
    lite_args[lite_args.index("--epochs") + 1] = "3"
    lite_args[lite_args.index("--steps-per-epoch") + 1] = "15"
    return lite_args + ["--out", str(out), "--init", str(base / "last.safetensors"), "--lite-residual",
                        "--lr", "0.01", "--cutmix", "0", "--temperature", "2", "--export", str(features)]
