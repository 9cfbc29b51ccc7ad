import json
import time

import numpy as np
import pytest

from tinytrain.data import EpisodeSampler, folder_dataset, open_dataset
from tinytrain.data.pocket import POCKET_DOMAINS, POCKET_SOURCE, POCKET_TARGETS, build_pocket, pocket_root


def test_manifest_licences_and_domains(pocket_small):
    m = json.loads((pocket_small / "manifest.json").read_text())
    assert m["source"] == POCKET_SOURCE and tuple(m["targets"]) == POCKET_TARGETS and m["version"]
    for name in POCKET_DOMAINS:
        d = m["domains"][name]
        assert d["licences"] and all(isinstance(v, str) and v for v in d["licences"].values())
        assert d["n_classes"] >= 5


def test_idempotent(pocket_small):
    stamp = (pocket_small / "manifest.json").stat().st_mtime_ns
    t = time.perf_counter()
    assert build_pocket(pocket_small, small=True, progress=False) == pocket_small
    assert time.perf_counter() - t < 1.0
    assert (pocket_small / "manifest.json").stat().st_mtime_ns == stamp
    assert not [p for p in pocket_small.parent.iterdir() if p.name.startswith(".pocket-build-")]


def test_open_by_name_and_splits(pocket_small):
    src = open_dataset(POCKET_SOURCE, root=str(pocket_small))
    train = open_dataset(POCKET_SOURCE, "train", root=str(pocket_small))
    val = open_dataset(POCKET_SOURCE, "val", root=str(pocket_small))
    assert set(train.classes).isdisjoint(val.classes) and len(train.classes) + len(val.classes) == len(src.classes)
    img = src.load(0, 0)
    assert img.mode == "RGB" and img.size == (32, 32)
    scripts = open_dataset("pocket-scripts", "test", root=str(pocket_small))
    assert scripts.groups is not None and len(set(scripts.groups)) >= 3
    assert not set(src.classes) & set(scripts.classes)  # different characters
    with pytest.raises(ValueError, match="test and all"):
        open_dataset("pocket-digits", "train", root=str(pocket_small))
    for name in POCKET_TARGETS:
        ds = open_dataset(name, root=str(pocket_small))
        EpisodeSampler(ds, seed=0).episode(0)


def test_domains_readable_as_folders(pocket_small):
    for name in POCKET_DOMAINS:
        packed = open_dataset(name, root=str(pocket_small))
        folder = folder_dataset(pocket_small / name / "images")
        assert sorted(folder.classes) == sorted(packed.classes)
        assert folder.num_images == packed.num_images
        c = folder.classes.index(packed.classes[0])
        assert np.array_equal(np.asarray(folder.load(c, 0)), np.asarray(packed.load(0, 0)))


def test_pocket_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TINYTRAIN_DATA", str(tmp_path))
    assert pocket_root() == tmp_path / "pocket"
