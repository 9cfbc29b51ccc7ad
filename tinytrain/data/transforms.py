"""Image transforms without torchvision: evaluation resize/crop, training augmentation, and the
P>M>F fine-tuning augmentation (DiffAugment: flip, colour, translation) on normalised batches."""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageEnhance
from ..errors import BadInput

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
        raise BadInput(f"resolution must be an integer >= 8 pixels, got {resolution!r}")


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
            raise BadInput(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
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
        raise BadInput(f"finetune_augment expects a batch (N, C, H, W), got shape {tuple(x.shape)}")
    if not 0.0 <= p <= 1.0:
        raise BadInput(f"p must be in [0, 1], got {p}")
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


class PhotoPatches:
    """Heavily augmented patches of a few photographs: the input of single-image distillation.

    Our rendering of the recipe of Asano & Saeed (ICLR 2023, "The augmented image prior"): pick a photo,
    take a random square crop of `init_crop` of its shorter side (so patches do not crowd the centre),
    then a random resized crop whose area is a fraction in [`min_area`, 1] of that square (down to tiny
    details), rotated by up to `rotation` degrees and sheared by up to `shear` degrees, flipped, centre-
    cropped to `resolution`, colour-jittered (brightness/contrast/saturation 0.4, hue 0.1; p = 0.8), greyed
    (p = 0.2) and solarised (p = 0.2). Every draw comes from the object's own numpy Generator.
    """

    def __init__(self, photos: list[Image.Image], resolution: int, *, init_crop: float = 0.5,
                 min_area: float = 0.002, rotation: float = 30.0, shear: float = 30.0, seed: int | None = None):
        _check_resolution(resolution)
        if not photos:
            raise BadInput("PhotoPatches needs at least one photograph")
        if not 0 < init_crop <= 1 or not 0 < min_area <= 1:
            raise BadInput(f"init_crop and min_area must be in (0, 1], got {init_crop} and {min_area}")
        self.photos = [p.convert("RGB") for p in photos]
        self.resolution, self.init_crop, self.min_area = resolution, init_crop, min_area
        self.rotation, self.shear = rotation, shear
        self.rng = np.random.default_rng(seed)

    def reseed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def _patch(self) -> Image.Image:
        rng, r = self.rng, self.resolution
        img = self.photos[int(rng.integers(len(self.photos)))]
        w, h = img.size
        side = max(8, int(self.init_crop * min(w, h)))
        x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        # random resized crop inside the square, output with room for rotation (sqrt 2)
        big = int(math.ceil(math.sqrt(2) * r))
        for _ in range(10):
            area = side * side * rng.uniform(self.min_area, 1.0)
            aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            cw, ch = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if 0 < cw <= side and 0 < ch <= side:
                break
        else:
            cw = ch = side
        cx, cy = x0 + int(rng.integers(0, side - cw + 1)), y0 + int(rng.integers(0, side - ch + 1))
        patch = img.resize((big, big), Image.BICUBIC, box=(cx, cy, cx + cw, cy + ch))
        # rotation + shear about the centre, sampled straight into the centred r x r output
        a = math.radians(rng.uniform(-self.rotation, self.rotation))
        s = math.radians(rng.uniform(-self.shear, self.shear))
        fwd = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) @ np.array([[1.0, math.tan(s)],
                                                                                            [0.0, 1.0]])
        inv = np.linalg.inv(fwd)
        c_in, c_out = big / 2.0, r / 2.0
        off = np.array([c_in, c_in]) - inv @ np.array([c_out, c_out])
        patch = patch.transform((r, r), Image.AFFINE, (inv[0, 0], inv[0, 1], off[0], inv[1, 0], inv[1, 1], off[1]),
                                resample=Image.BILINEAR)
        if rng.random() < 0.5:
            patch = patch.transpose(Image.FLIP_LEFT_RIGHT)
        if rng.random() < 0.8:
            for op in rng.permutation(4):
                if op == 3:
                    hsv = np.asarray(patch.convert("HSV")).copy()
                    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(rng.uniform(-0.1, 0.1) * 255)) % 256
                    patch = Image.fromarray(hsv, "HSV").convert("RGB")
                else:
                    enh = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)[op]
                    patch = enh(patch).enhance(float(rng.uniform(0.6, 1.4)))
        if rng.random() < 0.2:
            patch = patch.convert("L").convert("RGB")
        if rng.random() < 0.2:
            from PIL import ImageOps
            patch = ImageOps.solarize(patch, 128)
        return patch

    def __call__(self, n: int) -> torch.Tensor:
        """A batch of `n` normalised patches, (n, 3, resolution, resolution)."""
        return torch.stack([normalize(to_tensor(self._patch())) for _ in range(n)])


def cutmix(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """CutMix without labels (for distillation, where the teacher labels the mixed image): each image gets
    a box, of area fraction 1 - lambda with lambda ~ U(0, 1) (Beta(1, 1)), pasted from another image of the
    batch (a random permutation)."""
    n, _, h, w = x.shape
    if n < 2:
        return x.clone()
    perm = torch.randperm(n, generator=generator)
    lam = float(torch.rand((), generator=generator))
    bh, bw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = int(torch.randint(h, (), generator=generator)), int(torch.randint(w, (), generator=generator))
    y0, y1 = max(cy - bh // 2, 0), min(cy + bh // 2, h)
    x0, x1 = max(cx - bw // 2, 0), min(cx + bw // 2, w)
    out = x.clone()
    out[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
    return out
