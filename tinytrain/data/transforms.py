"""Image transforms without torchvision: evaluation resize/crop, training augmentation, and the
P>M>F fine-tuning augmentation (DiffAugment: flip, colour, translation) on normalised batches."""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageEnhance

# Standard ImageNet statistics; the mobilenetv2-1.0 ImageNet weights expect them, so they are used everywhere.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image -> float32 CHW tensor in [0, 1], grayscale expanded to 3 channels."""
    a = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(a.transpose(2, 0, 1).copy())


def normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype).view(3, 1, 1)
    return (x - mean) / std


def _check_resolution(resolution: int) -> None:
    if not isinstance(resolution, int) or resolution < 8:
        raise ValueError(f"resolution must be an integer >= 8 pixels, got {resolution!r}")


class EvalTransform:
    """Grayscale->RGB, resize the shorter side to `resolution`, centre crop, normalise."""

    def __init__(self, resolution: int):
        _check_resolution(resolution)
        self.resolution = resolution

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return normalize(to_tensor(resize_crop(img, self.resolution)))


def resize_crop(img: Image.Image, resolution: int) -> Image.Image:
    """RGB, shorter side resized to `resolution`, centre crop: the pixels every model input sees."""
    img = img.convert("RGB")
    r = resolution
    w, h = img.size
    s = r / min(w, h)
    nw, nh = max(r, round(w * s)), max(r, round(h * s))
    img = img.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - r) // 2, (nh - r) // 2
    return img.crop((left, top, left + r, top + r))


def eval_transform(resolution: int) -> EvalTransform:
    return EvalTransform(resolution)


class TrainTransform:
    """Random resized crop, colour jitter and (optional) horizontal flip, then normalise.

    For pretraining/meta-training. Randomness comes from the transform's own numpy Generator (seeded),
    so a run is reproducible; set `flip=False` for domains where mirroring changes the class (glyphs).
    """

    def __init__(self, resolution: int, scale: tuple[float, float] = (0.35, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), jitter: float = 0.4, flip: bool = True,
                 seed: int | None = None):
        _check_resolution(resolution)
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
        self.resolution, self.scale, self.ratio, self.jitter, self.flip = resolution, scale, ratio, jitter, flip
        self.rng = np.random.default_rng(seed)

    def _crop_box(self, w: int, h: int) -> tuple[int, int, int, int]:
        area = w * h
        for _ in range(10):
            target = area * self.rng.uniform(*self.scale)
            aspect = math.exp(self.rng.uniform(math.log(self.ratio[0]), math.log(self.ratio[1])))
            cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                x, y = int(self.rng.integers(0, w - cw + 1)), int(self.rng.integers(0, h - ch + 1))
                return x, y, x + cw, y + ch
        s = min(w, h)
        return (w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = img.convert("RGB")
        r = self.resolution
        img = img.crop(self._crop_box(*img.size)).resize((r, r), Image.BILINEAR)
        if self.jitter > 0:
            for enhancer in self.rng.permutation([ImageEnhance.Brightness, ImageEnhance.Contrast,
                                                  ImageEnhance.Color]):
                img = enhancer(img).enhance(float(self.rng.uniform(1 - self.jitter, 1 + self.jitter)))
        if self.flip and self.rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return normalize(to_tensor(img))


def train_transform(resolution: int, flip: bool = True, seed: int | None = None, **kwargs) -> TrainTransform:
    return TrainTransform(resolution, flip=flip, seed=seed, **kwargs)


def _uniform(shape: tuple[int, ...], generator: torch.Generator, device, dtype) -> torch.Tensor:
    return torch.rand(shape, generator=generator, dtype=dtype).to(device)


def finetune_augment(x: torch.Tensor, generator: torch.Generator, p: float = 0.9,
                     flip: bool = True, translation: float = 0.125) -> torch.Tensor:
    """P>M>F's DiffAugment on a normalised batch (N, 3, H, W), without gradient.

    With probability `p` (one draw per batch, as P>M>F): per-sample horizontal flip (p = 0.5), then
    colour (brightness +-0.5, saturation x[0, 2], contrast x[0.5, 1.5]), then a translation of up to
    `translation` of H and W with zero padding. Deterministic for a given generator state.
    """
    if x.dim() != 4:
        raise ValueError(f"finetune_augment expects a batch (N, C, H, W), got shape {tuple(x.shape)}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    x = x.detach()
    n, _, h, w = x.shape
    dt, dev = x.dtype, x.device
    if float(torch.rand((), generator=generator)) >= p:
        return x.clone()
    if flip:
        mask = _uniform((n, 1, 1, 1), generator, dev, dt) < 0.5
        x = torch.where(mask, x.flip(3), x)
    x = x + (_uniform((n, 1, 1, 1), generator, dev, dt) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_uniform((n, 1, 1, 1), generator, dev, dt) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (_uniform((n, 1, 1, 1), generator, dev, dt) + 0.5) + mean
    sx, sy = int(h * translation + 0.5), int(w * translation + 0.5)
    if sx or sy:
        tx = torch.randint(-sx, sx + 1, (n,), generator=generator).tolist()
        ty = torch.randint(-sy, sy + 1, (n,), generator=generator).tolist()
        padded = torch.nn.functional.pad(x, (sy, sy, sx, sx))
        x = torch.stack([padded[i, :, sx + tx[i]: sx + tx[i] + h, sy + ty[i]: sy + ty[i] + w]
                         for i in range(n)])
    return x
