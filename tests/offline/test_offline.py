"""Schedule, pickle-free state, episodes, evaluation, meta-training and its resume."""
from __future__ import annotations

import json

import pytest
import torch

from tinytrain.data import EpisodeSpec
from tinytrain.offline import (MetaTrainConfig, TensorEpisodes, evaluate_none, meta_train, summarize,
                               warmup_cosine_lr)
from tinytrain.data.episodes import parse_range
from tinytrain.offline.evaluate import paired_table
from tinytrain.offline.state import load_state, save_state
from tinytrain.models.backbone import build_backbone
from tinytrain.models.head import CosineClassifier
from tinytrain.models.weights import load_checkpoint

from .helpers import pattern_tensors


def test_schedule_follows_paper_recipe():
    kw = dict(base_lr=5e-5, epochs=100, warmup_epochs=5)
    assert warmup_cosine_lr(0, **kw) == pytest.approx(1e-6)
    assert warmup_cosine_lr(2.5, **kw) == pytest.approx((1e-6 + 5e-5) / 2)
    assert warmup_cosine_lr(5, **kw) == pytest.approx(5e-5)
    assert warmup_cosine_lr(52.5, **kw) == pytest.approx((5e-5 + 1e-6) / 2)
    assert warmup_cosine_lr(100, **kw) == pytest.approx(1e-6)
    with pytest.raises(ValueError, match="warm-up"):
        warmup_cosine_lr(0, base_lr=1e-3, epochs=3, warmup_epochs=5)


def test_state_roundtrip_is_pickle_free(tmp_path):
    p = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(p.parameters(), lr=0.1, momentum=0.9)
    p(torch.randn(4, 3)).sum().backward()
    opt.step()
    import random
    state = {"opt": opt.state_dict(), "step": 7, "best": None, "rng": random.getstate(), "w": p.weight}
    path = save_state(tmp_path / "s.safetensors", state)
    back = load_state(path)
    assert back["step"] == 7 and back["best"] is None
    assert torch.equal(back["opt"]["state"][0]["momentum_buffer"], opt.state_dict()["state"][0]["momentum_buffer"])
    opt2 = torch.optim.SGD(torch.nn.Linear(3, 2).parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(back["opt"])        # int keys and param groups survived the JSON round trip
    random.setstate(back["rng"])
    with pytest.raises(ValueError, match="cannot store"):
        save_state(tmp_path / "bad.safetensors", {"x": object()})


def test_episode_shapes_and_determinism():
    assert parse_range("5-20", "ways") == (5, 20) and parse_range(3, "shots") == (3, 3)
    with pytest.raises(ValueError, match="ways"):
        parse_range("x", "ways")
    x, y = pattern_tensors(classes=12, per_class=12)
    src = TensorEpisodes(x, y, EpisodeSpec.parse("3-6", "1-4", 5), seed=3)
    t1, t2 = src.task(4), src.task(4)
    assert torch.equal(t1.support_x, t2.support_x) and torch.equal(t1.query_y, t2.query_y)
    ways = {src.task(i).ways for i in range(30)}
    assert ways <= set(range(3, 7)) and len(ways) > 1
    t = src.task(0)
    assert len(t.query_y) == 5 * t.ways
    with pytest.raises(ValueError, match="lower --ways"):
        TensorEpisodes(x, y, EpisodeSpec.parse(20, 5, 5)).task(0)


def test_summary_ci_and_same_episodes():
    s = summarize([0.5, 0.7, 0.6, 0.8])
    assert s.mean == pytest.approx(0.65)
    assert s.ci95 == pytest.approx(1.96 * torch.tensor([0.5, 0.7, 0.6, 0.8]).std().item() / 2)
    x, y = pattern_tensors()
    src = TensorEpisodes(x, y, EpisodeSpec.parse(5, 3, 4), seed=0)
    torch.manual_seed(0)
    a = build_backbone("tiny-test")
    res = evaluate_none({"a": a, "b": a}, [src.task(i) for i in range(4)])
    assert res["a"].accs == res["b"].accs and res["a"].n == 4     # same backbone, same episodes


def _config(**kw) -> MetaTrainConfig:
    base = dict(model="tiny-test", init="random", epochs=2, episodes_per_epoch=4, batch_episodes=2, lr=0.05,
                warmup_epochs=0.5, ways="4", shots="3", queries=4, val_episodes=3, save_every_steps=1,
                log_every_steps=1, bn_mode="eval", device="cpu", resolution=32)
    return MetaTrainConfig(**(base | kw))


def _sources(seed=0):
    x, y = pattern_tensors(classes=12, per_class=12)
    shape = EpisodeSpec.parse(4, 3, 4)
    return TensorEpisodes(x[:96], y[:96], shape, seed), TensorEpisodes(x[96:], y[96:], shape, seed + 1)


def _fresh():
    torch.manual_seed(0)
    return build_backbone("tiny-test"), CosineClassifier()


def test_meta_training_learns_and_writes_run(tmp_path):
    train, val = _sources()
    b, h = _fresh()
    cfg = _config(epochs=3, episodes_per_epoch=8, val_episodes=6, bn_mode="train")
    res = meta_train(b, train, val, cfg, tmp_path, head=h, progress=False)
    assert res.completed and res.step == 12
    log = [json.loads(l) for l in (tmp_path / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert sum(losses[-3:]) < sum(losses[:3])                  # training lowers the ProtoNet loss
    vals = [r for r in log if "val_acc" in r]
    assert [v["epoch"] for v in vals] == [0, 1, 2, 3]
    assert json.loads((tmp_path / "config.json").read_text())["model"] == "tiny-test"
    best, meta = load_checkpoint(tmp_path / "best.safetensors", expect_model="tiny-test")
    assert meta["val_acc"] == pytest.approx(max(v["val_acc"] for v in vals))
    assert meta["head"]["scale"] != 10.0                       # the head's scale is trained too


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path):
    train, val = _sources()
    b, h = _fresh()
    full = meta_train(b, train, val, _config(), tmp_path / "full", head=h, progress=False)
    b2, h2 = _fresh()
    part = meta_train(b2, train, val, _config(), tmp_path / "cut", head=h2, stop_at_step=1, progress=False)
    assert not part.completed and part.step == 1               # killed mid-epoch (epoch = 2 steps)
    with (tmp_path / "cut" / "log.jsonl").open("a") as f:     # a step after the saved state, then a line torn
        f.write(json.dumps({"step": 2, "loss": 99.0}) + "\n" + '{"step": 2, "lo')     # by the kill mid-append
    b3, h3 = _fresh()                                          # a new process: fresh weights, state on disk
    done = meta_train(b3, train, val, _config(), tmp_path / "cut", head=h3, progress=False)
    assert done.completed and done.step == full.step
    for (k, v1), v2 in zip(b.state_dict().items(), b3.state_dict().values()):
        assert torch.equal(v1, v2), k
    assert torch.equal(h.scale, h3.scale)
    strip = lambda p: [{k: v for k, v in r.items() if k not in ("time", "sec_per_step")}
                       for r in map(json.loads, p.read_text().splitlines())]
    assert strip(tmp_path / "cut" / "log.jsonl") == strip(tmp_path / "full" / "log.jsonl")


def test_resume_refuses_a_different_config(tmp_path):
    train, val = _sources()
    b, h = _fresh()
    meta_train(b, train, val, _config(), tmp_path, head=h, stop_at_step=1, progress=False)
    with pytest.raises(ValueError, match="lr"):
        meta_train(b, train, val, _config(lr=0.1), tmp_path, head=h, progress=False)
    res = meta_train(b, train, val, _config(lr=0.1), tmp_path, head=h, restart=True, progress=False)
    assert res.completed


def test_resume_accepts_a_config_written_before_an_option_existed(tmp_path):
    """A saved config without `crop_scale` (older version) resumes when the option is at its default,
    and is refused when it is not."""
    train, val = _sources()
    b, h = _fresh()
    meta_train(b, train, val, _config(), tmp_path, head=h, stop_at_step=1, progress=False)
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["crop_scale"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="crop_scale"):
        meta_train(b, train, val, _config(crop_scale=0.05), tmp_path, head=h, progress=False)
    assert meta_train(b, train, val, _config(), tmp_path, head=h, progress=False).completed


def test_config_errors_say_what_to_change():
    with pytest.raises(ValueError, match="--batch-episodes"):
        _config(episodes_per_epoch=5, batch_episodes=2).check()
    with pytest.raises(ValueError, match="--warmup-epochs"):
        _config(warmup_epochs=5).check()
    with pytest.raises(ValueError, match="--crop-scale"):
        _config(crop_scale=0).check()
    assert MetaTrainConfig(init="random").effective_bn_mode() == "train"
    assert MetaTrainConfig(init="run/best.safetensors").effective_bn_mode() == "eval"


def test_paired_table_differences_episode_by_episode():
    # B beats A by exactly 10 points on every episode: the paired interval is zero although the
    # per-checkpoint intervals are wide and overlap
    a = summarize([0.2, 0.5, 0.8, 0.4])
    b = summarize([0.3, 0.6, 0.9, 0.5])
    assert a.ci95 > 0.1 and b.ci95 > 0.1
    table = paired_table({"d": {"A": a, "B": b}})
    assert table.splitlines()[0] == "| domain | B − A |"
    assert table.splitlines()[2] == "| d (n=4) | +10.0 ± 0.0 |"
    assert paired_table({"d": {"A": a, "B": b}}, reference="A").splitlines()[2] == "| d (n=4) | -10.0 ± 0.0 |"


def test_frozen_blocks_keep_their_starting_weights(tmp_path):
    train, val = _sources()
    b, h = _fresh()
    start = {k: v.clone() for k, v in b.state_dict().items()}
    meta_train(b, train, val, _config(frozen_blocks=1, bn_mode="train"), tmp_path, head=h, progress=False)
    after = b.state_dict()
    frozen = [k for k in start if k.startswith(("stem.", "blocks.0."))]
    trained = [k for k in start if k.startswith("blocks.1.") and k.endswith("weight")]
    assert frozen and trained
    assert all(torch.equal(start[k], after[k]) for k in frozen)   # weights and BN statistics alike
    assert any(not torch.equal(start[k], after[k]) for k in trained)
    assert all(p.requires_grad for p in b.parameters())          # given back trainable
    with pytest.raises(ValueError, match="--frozen-blocks 99"):
        meta_train(b, train, val, _config(frozen_blocks=99), tmp_path / "x", head=h, progress=False)
    assert not (tmp_path / "x").exists()
