"""Data: readers (class-per-folder, the nine Meta-Dataset sources, the pocket benchmark), the episode
sampler, transforms without torchvision, and `open_dataset`, the one entry point by name or path."""
from __future__ import annotations

from pathlib import Path

from . import transforms
from .datasets import (IMAGE_EXTENSIONS, ArrayDataset, ClassificationView, FileDataset, ImageDataset,
                       folder_dataset)
from .metadataset import READERS as METADATASET_SOURCES
from .metadataset import open_source
from .sampler import (EpisodeSampler, episode_stats, load_episode_file, load_task, save_episode_file)
from .types import Episode, Task, load_episodes, save_episodes

SPLITS = ("train", "val", "test", "all")

__all__ = ["open_dataset", "dataset_names", "ImageDataset", "FileDataset", "ArrayDataset", "ClassificationView",
           "folder_dataset", "open_source", "EpisodeSampler", "episode_stats", "load_task", "save_episode_file",
           "load_episode_file", "Episode", "Task", "save_episodes", "load_episodes", "transforms",
           "METADATASET_SOURCES", "IMAGE_EXTENSIONS"]


def dataset_names() -> list[str]:
    """Named datasets `open_dataset` accepts besides folders: pocket domains and '<source>:<path>'."""
    from .pocket import POCKET_DOMAINS
    return list(POCKET_DOMAINS) + [f"{s}:<path>" for s in METADATASET_SOURCES]


def open_dataset(spec: str, split: str = "all", root: str | None = None) -> ImageDataset:
    """Open a dataset by folder path, pocket domain name, or '<meta-dataset source>:<path>'.

    `root` overrides where the pocket benchmark lives (default: `pocket.pocket_root()`).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    from .pocket import POCKET_DOMAINS, open_pocket
    spec = str(spec)
    if spec in POCKET_DOMAINS:
        return open_pocket(spec, split, root)
    source, sep, path = spec.partition(":")
    if sep and source in METADATASET_SOURCES:
        return open_source(source, path, split)
    p = Path(spec).expanduser()
    if p.is_dir():
        if split != "all":
            raise ValueError(f"a plain folder has no class splits; use --split all (got {split!r}) or split "
                             "the folder yourself")
        return folder_dataset(p)
    raise ValueError(f"unknown dataset {spec!r}: not a folder, and not one of {', '.join(dataset_names())}")
