"""Data: readers (class-per-folder, the nine Meta-Dataset sources, the pocket benchmark), the episode
sampler, transforms without torchvision, and `open_dataset`, the one entry point by name or path."""
from __future__ import annotations

import difflib
from pathlib import Path

from . import transforms
from .datasets import ArrayDataset, ClassificationView, FileDataset, ImageDataset, folder_dataset
from .folders import IMAGE_EXTENSIONS, read_class_folders
from .metadataset import READERS as METADATASET_SOURCES
from .metadataset import open_source
from .sampler import (EpisodeSampler, episode_stats, load_episode_file, load_task, save_episode_file)
from .types import Episode, Task, load_episodes, save_episodes
from ..errors import BadInput

SPLITS = ("train", "val", "test", "all")

__all__ = ["open_dataset", "dataset_names", "ImageDataset", "FileDataset", "ArrayDataset", "ClassificationView",
           "folder_dataset", "read_class_folders", "open_source", "EpisodeSampler", "episode_stats", "load_task",
           "save_episode_file", "load_episode_file", "Episode", "Task", "save_episodes", "load_episodes", "transforms",
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
        raise BadInput(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    from .pocket import POCKET_DOMAINS, open_pocket
    spec = str(spec)
    if spec in POCKET_DOMAINS:
        return open_pocket(spec, split, root)
    if not spec.strip():       # Path('') is the current folder: never read it by accident
        raise BadInput(f"the dataset is empty text; give a class-per-folder path or one of {', '.join(dataset_names())}")
    source, sep, path = spec.partition(":")
    if sep and source in METADATASET_SOURCES:
        return open_source(source, path, split)
    p = Path(spec).expanduser()
    if p.is_dir():
        if split != "all":
            raise BadInput(f"a plain folder has no class splits; use --split all (got {split!r}) or split "
                             "the folder yourself")
        return folder_dataset(p)
    named = ", ".join(dataset_names())
    if p.exists():
        raise BadInput(f"dataset {spec} is a file, not a folder; give a folder that holds one sub-folder per class "
                         f"(ROOT/<class>/<image>), or one of {named}")
    if sep and "/" not in source and "\\" not in source:
        close = difflib.get_close_matches(source, METADATASET_SOURCES, n=1)
        raise BadInput(f"unknown dataset source {source!r} in {spec!r}"
                         + (f" (did you mean {close[0]}:{path}?)" if close else "")
                         + f"; the sources are {', '.join(f'{s}:<path>' for s in METADATASET_SOURCES)}")
    if any(c in spec for c in "/\\") or spec.startswith((".", "~")):
        raise BadInput(f"dataset folder {spec} does not exist; check the path (named datasets: {named})")
    close = difflib.get_close_matches(spec, list(POCKET_DOMAINS), n=1)
    raise BadInput(f"unknown dataset {spec!r}: no folder of that name here"
                     + (f", and not a named dataset (did you mean {close[0]}?)" if close else
                        f", and not one of {named}"))
