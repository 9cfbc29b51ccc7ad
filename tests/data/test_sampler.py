import json

import numpy as np
import pytest
import torch

from tinytrain.cli import main
from tinytrain.data import ArrayDataset, EpisodeSampler, episode_stats, load_episode_file, load_task, save_episode_file

from .conftest import make_folder


def array_dataset(sizes, groups=None, hw=6):
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 255, size=(n, hw, hw), dtype=np.uint8) for n in sizes]
    names = [f"c{i}" for i in range(len(sizes))]
    gnames = None if groups is None else [f"g{g}" for g in sorted(set(groups))]
    return ArrayDataset("toy", names, arrays, groups, gnames)


def check_metadataset_episode(ep, sizes, max_ways=50):
    assert 5 <= ep.ways <= max_ways and len(set(ep.classes)) == ep.ways
    shots = ep.shots()
    assert min(shots) >= 1 and max(shots) <= 100 and len(ep.support) <= 500
    chosen = [sizes[c] for c in ep.classes]
    q = min(10, min(n // 2 for n in chosen))
    qcount = np.bincount([label for label, _ in ep.query], minlength=ep.ways)
    assert (qcount == q).all()
    for label in range(ep.ways):  # support and query are disjoint images of the class
        s = {j for l, j in ep.support if l == label}
        qq = {j for l, j in ep.query if l == label}
        assert not s & qq and max(s | qq) < sizes[ep.classes[label]]
        assert len(s) == shots[label]


def test_cli_stats_on_60_class_folder(tmp_path, capsys):
    """The issue's acceptance check: 200 episodes of a 60-class, 40-images-per-class folder."""
    root = make_folder(tmp_path / "ds", 60, 40, size=(4, 4))
    assert main(["data", "stats", str(root), "--episodes", "200", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_classes"] == 60 and out["n_images"] == 2400
    e = out["episodes"]
    for key in ("ways_mean", "ways_sd", "support_mean", "query_mean", "shots_mean"):
        assert key in e
    assert 5 <= e["ways_min"] and e["ways_max"] <= 50 and e["support_max"] <= 500
    assert e["query_shots_min"] == e["query_shots_max"] == 10 and e["min_shots"] >= 1
    assert 20 < e["ways_mean"] < 35  # uniform on [5, 50]


def test_metadataset_invariants_and_imbalance():
    sizes = [40] * 30 + [7, 13, 250, 3]
    ds = array_dataset(sizes)
    sampler = EpisodeSampler(ds, seed=3)
    eps = sampler.sample(150)
    for ep in eps:
        check_metadataset_episode(ep, sizes)
    assert any(len(set(ep.shots())) > 1 for ep in eps)  # class-imbalanced support sets
    stats = episode_stats(eps)
    assert stats["n_episodes"] == 150 and stats["support_max"] <= 500
    # Meta-Dataset's own formula only caps the big class's contribution to S, not its shots
    raw = EpisodeSampler(ds, seed=3, cap_shots=False).sample(150)
    assert max(max(e.shots()) for e in raw) > 100
    assert all(len(e.support) <= 500 for e in raw)


def test_support_caps_with_large_classes():
    sizes = [1000] * 60
    eps = EpisodeSampler(array_dataset(sizes, hw=2), seed=1).sample(100)
    assert max(len(e.support) for e in eps) <= 500 and max(max(e.shots()) for e in eps) <= 100
    assert max(len(e.support) for e in eps) > 300  # the cap is reached for some beta


def test_determinism():
    ds = array_dataset([20] * 12)
    a = EpisodeSampler(ds, seed=7).sample(5)
    b = EpisodeSampler(ds, seed=7).sample(5)
    c = EpisodeSampler(ds, seed=8).sample(5)
    assert [e.to_dict() for e in a] == [e.to_dict() for e in b]
    assert [e.to_dict() for e in a] != [e.to_dict() for e in c]
    assert EpisodeSampler(ds, seed=7).episode(3).to_dict() == a[3].to_dict()  # order-independent


def test_group_aware_sampling():
    groups = [0] * 6 + [1] * 8 + [2] * 3
    ds = array_dataset([10] * len(groups), groups=groups)
    for ep in EpisodeSampler(ds, seed=0).sample(50):
        g = {groups[c] for c in ep.classes}
        assert len(g) == 1 and g != {2}  # one alphabet per episode; a 3-class alphabet never qualifies
    seen = {groups[EpisodeSampler(ds, seed=0).episode(i).classes[0]] for i in range(50)}
    assert seen == {0, 1}
    mixed = EpisodeSampler(ds, seed=0, use_groups=False).sample(30)
    assert any(len({groups[c] for c in ep.classes}) > 1 for ep in mixed)


def test_fixed_mode():
    ds = array_dataset([6] * 8 + [2])
    for ep in EpisodeSampler(ds, mode="fixed", ways=5, shots=1, queries=5, seed=0).sample(20):
        assert ep.ways == 5 and ep.shots() == [1] * 5 and len(ep.query) == 25
        assert 8 not in ep.classes  # the 2-image class is too small for 1 + 5
    with pytest.raises(ValueError, match="'c0' \\(6\\)"):
        EpisodeSampler(ds, mode="fixed", ways=5, shots=5, queries=5)
    with pytest.raises(ValueError, match="--shots"):
        EpisodeSampler(ds, mode="fixed", ways=5, queries=5)


def test_metadataset_errors():
    with pytest.raises(ValueError, match="at least 5"):
        EpisodeSampler(array_dataset([10] * 4))
    with pytest.raises(ValueError, match="'c2' \\(1\\)"):
        EpisodeSampler(array_dataset([10, 10, 1, 10, 10, 10]))
    with pytest.raises(ValueError, match="mode"):
        EpisodeSampler(array_dataset([10] * 6), mode="balanced")


def test_episode_file_roundtrip_and_mismatch(tmp_path):
    ds = array_dataset([12] * 10)
    eps = EpisodeSampler(ds, seed=2).sample(4)
    save_episode_file(tmp_path / "e.json", ds, eps, seed=2)
    back, meta = load_episode_file(tmp_path / "e.json", ds)
    assert [e.to_dict() for e in back] == [e.to_dict() for e in eps] and meta["seed"] == 2
    other = array_dataset([12] * 11)
    with pytest.raises(ValueError, match="resample"):
        load_episode_file(tmp_path / "e.json", other)


def test_load_task_tensors():
    ds = array_dataset([8] * 6)
    ep = EpisodeSampler(ds, mode="fixed", ways=5, shots=2, queries=3, seed=0).episode(0)
    task = load_task(ds, ep, 16)
    assert task.support_x.shape == (10, 3, 16, 16) and task.query_x.shape == (15, 3, 16, 16)
    assert task.support_x.dtype == torch.float32 and task.ways == 5
    assert task.support_y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert task.class_names == [ds.classes[c] for c in ep.classes]
    # grayscale source: the three normalised channels are the same image up to mean/std
    from tinytrain.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    x = task.support_x[0]
    raw = [x[c] * IMAGENET_STD[c] + IMAGENET_MEAN[c] for c in range(3)]
    assert torch.allclose(raw[0], raw[1], atol=1e-5) and torch.allclose(raw[0], raw[2], atol=1e-5)


def test_cli_episodes_file_and_errors(tmp_path, capsys):
    root = make_folder(tmp_path / "ds", 6, 5, size=(4, 4))
    out = tmp_path / "eps.json"
    assert main(["data", "episodes", str(root), "--episodes", "3", "--out", str(out)]) == 0
    eps, meta = load_episode_file(out)
    assert len(eps) == 3 and meta["dataset"] == "ds"
    assert main(["data", "stats", str(root), "--mode", "fixed", "--ways", "5", "--shots", "5",
                 "--queries", "5"]) == 2
    assert "lower --ways" in capsys.readouterr().err
    assert main(["data", "stats", "nonexistent-name"]) == 2
