"""Episode sources for meta-training: `source.task(i) -> Task`, a pure function of (seed, i).

Because episode i (its classes, images and augmentation) depends only on the seed and i, a resumed
run sees exactly the episodes it would have seen, and ranks of a distributed run can each build
their share of a step without talking to each other.
"""
from __future__ import annotations

import random
from typing import Callable, Protocol

import torch

from ..data.episodes import EpisodeSpec
from ..data.types import Episode, Task
from ..errors import BadInput


def episode_seed(seed: int, index: int) -> int:
    """A well-mixed 63-bit seed for episode `index` of a run seeded with `seed`."""
    x = (seed * 0x9E3779B97F4A7C15 + index * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) % (1 << 64)
    x ^= x >> 31
    x = (x * 0xBF58476D1CE4E5B9) % (1 << 64)
    x ^= x >> 29
    return x % (1 << 63)


class EpisodeSource(Protocol):
    def task(self, index: int) -> Task: ...


def sample_episode(class_sizes: list[int], shape: EpisodeSpec, seed: int) -> Episode:
    """Choose classes and items for one episode (classes need shots + queries images)."""
    rng = random.Random(seed)
    ways, shots = shape.draw(rng)
    need = shots + shape.queries
    eligible = [c for c, n in enumerate(class_sizes) if n >= need]
    if len(eligible) < ways:
        raise BadInput(f"a {ways}-way {shots}-shot {shape.queries}-query episode needs {ways} classes with "
                         f">= {need} images, but only {len(eligible)} have that many; lower --ways/--shots/--queries")
    classes = rng.sample(eligible, ways)
    support, query = [], []
    for label, c in enumerate(classes):
        items = rng.sample(range(class_sizes[c]), need)
        support += [(label, i) for i in items[:shots]]
        query += [(label, i) for i in items[shots:]]
    return Episode(classes, support, query, seed)


class TensorEpisodes:
    """Episodes drawn from in-memory image tensors (normalised, (N, 3, R, R)) and integer labels.

    `augment(x, generator) -> x` is applied per image batch with a generator seeded per episode."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, shape: EpisodeSpec = EpisodeSpec.parse(),
                 seed: int = 0, augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None):
        if len(images) != len(labels):
            raise BadInput(f"{len(images)} images but {len(labels)} labels")
        self.images, self.shape, self.seed, self.augment = images, shape, seed, augment
        classes = sorted(set(int(v) for v in labels))
        self.by_class = [torch.nonzero(labels == c).flatten() for c in classes]

    def episode(self, index: int) -> Episode:
        return sample_episode([len(ix) for ix in self.by_class], self.shape, episode_seed(self.seed, index))

    def task(self, index: int) -> Task:
        ep = self.episode(index)
        pick = lambda pairs: self.images[torch.stack([self.by_class[ep.classes[l]][i] for l, i in pairs])]
        sx, qx = pick(ep.support), pick(ep.query)
        if self.augment is not None:
            g = torch.Generator().manual_seed(episode_seed(self.seed + 1, index))
            sx, qx = self.augment(sx, g), self.augment(qx, g)
        return Task(sx, torch.tensor([l for l, _ in ep.support]), qx, torch.tensor([l for l, _ in ep.query]))


class ImageEpisodes:
    """Episodes from an `ImageDataset` (tinytrain.data), loaded with the train transform (augmented)
    or the eval transform. The augmentation generator is re-seeded per episode, so episode i always
    gets the same crops and colours. `flip=False` suits glyph domains, where a mirror image is
    another class."""

    def __init__(self, dataset, shape: EpisodeSpec, resolution: int, seed: int = 0, train: bool = True,
                 flip: bool = False, crop_scale: float = 0.35):
        self.dataset, self.shape, self.resolution = dataset, shape, resolution
        self.seed, self.train, self.flip, self.crop_scale = seed, train, flip, crop_scale
        self.class_sizes = list(dataset.class_sizes())

    def episode(self, index: int) -> Episode:
        return sample_episode(self.class_sizes, self.shape, episode_seed(self.seed, index))

    def transform(self, index: int):
        from ..data import transforms
        if not self.train:
            return transforms.eval_transform(self.resolution)
        return transforms.train_transform(self.resolution, flip=self.flip, scale=(self.crop_scale, 1.0),
                                          seed=episode_seed(self.seed + 1, index))

    def task(self, index: int) -> Task:
        ep = self.episode(index)
        tf = self.transform(index)
        with seeded_rng(episode_seed(self.seed + 2, index)):   # for transforms that use global RNGs
            load = lambda pairs: torch.stack([tf(self.dataset.load(ep.classes[l], i)) for l, i in pairs])
            sx, qx = load(ep.support), load(ep.query)
        return Task(sx, torch.tensor([l for l, _ in ep.support]), qx, torch.tensor([l for l, _ in ep.query]),
                    [self.dataset.classes[c] for c in ep.classes])


class ReseedableTransform:
    """The train transform, replaced by a freshly seeded one before each batch (`reseed(s)`), so that
    pretraining batches are reproducible after a resume."""

    def __init__(self, resolution: int, flip: bool = False, crop_scale: float = 0.35):
        self.resolution, self.flip, self.crop_scale = resolution, flip, crop_scale
        self.reseed(0)

    def reseed(self, seed: int) -> None:
        from ..data import transforms
        self._tf = transforms.train_transform(self.resolution, flip=self.flip, scale=(self.crop_scale, 1.0),
                                              seed=seed)

    def __call__(self, img):
        return self._tf(img)


class seeded_rng:
    """Context: torch, Python and NumPy global RNGs seeded for the block, then restored, so transforms
    that draw from the global generators are reproducible without disturbing the caller's streams."""

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self):
        import numpy as np
        self._saved = (torch.get_rng_state(), random.getstate(), np.random.get_state())
        torch.manual_seed(self.seed)
        random.seed(self.seed)
        np.random.seed(self.seed % (1 << 32))

    def __exit__(self, *exc):
        import numpy as np
        torch.set_rng_state(self._saved[0])
        random.setstate(self._saved[1])
        np.random.set_state(self._saved[2])
        return False


def open_source_splits(spec: str, val_every: int = 5):
    """(train, val) datasets of a source: its own class splits for named domains (pocket,
    Meta-Dataset); for a plain class-per-folder tree, every `val_every`-th class is held out for
    validation, so validation always uses classes never trained on."""
    from pathlib import Path
    from ..data import open_dataset
    if not Path(str(spec)).expanduser().is_dir():
        return open_dataset(spec, split="train"), open_dataset(spec, split="val")
    full = open_dataset(spec, split="all")
    n = len(full.classes)
    val = [c for c in range(n) if c % val_every == val_every - 1]
    if len(val) < 2 or n - len(val) < 2:
        raise BadInput(f"{spec} has {n} classes; a folder source needs at least {2 * val_every} classes to hold "
                         f"out every {val_every}th one for validation")
    train = [c for c in range(n) if c not in set(val)]
    return full.subset(train, f"{full.name}:train"), full.subset(val, f"{full.name}:val")
