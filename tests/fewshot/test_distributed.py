"""Two gloo processes on loopback compute what one process computes for the same episodes."""
from __future__ import annotations

import torch
from safetensors.torch import load_file

from tinytrain.fewshot import CosineClassifier, EpisodeShape, MetaTrainConfig, TensorEpisodes, meta_train
from tinytrain.fewshot.distributed import launch
from tinytrain.models.backbone import build_backbone

from .helpers import pattern_tensors


def make_run():
    x, y = pattern_tensors(classes=12, per_class=12)
    shape = EpisodeShape.parse(4, 3, 4)
    torch.manual_seed(0)
    return (build_backbone("tiny-test"), CosineClassifier(),
            TensorEpisodes(x[:96], y[:96], shape, 0), TensorEpisodes(x[96:], y[96:], shape, 1))


CONFIG = dict(model="tiny-test", init="random", epochs=2, episodes_per_epoch=4, batch_episodes=2, lr=0.05,
              warmup_epochs=0.5, ways="4", shots="3", queries=4, val_episodes=2, save_every_steps=2,
              log_every_steps=1, bn_mode="eval", device="cpu", resolution=32)


def test_two_processes_match_one(tmp_path):
    from . import dist_worker
    launch(dist_worker.run, 2, (str(tmp_path / "dist"), CONFIG | {"nproc": 2}), backend="gloo", timeout_s=120)
    backbone, head, train, val = make_run()
    meta_train(backbone, train, val, MetaTrainConfig(**CONFIG), tmp_path / "single", head=head, progress=False)
    one = load_file(str(tmp_path / "single" / "last.safetensors"))
    two = load_file(str(tmp_path / "dist" / "last.safetensors"))
    assert one.keys() == two.keys()
    moved = 0.0
    torch.manual_seed(0)
    init = build_backbone("tiny-test").state_dict()
    for k in one:
        if one[k].is_floating_point():
            torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-5)
            moved = max(moved, float((one[k] - init[k]).abs().max()))
    assert moved > 1e-3     # training really changed the weights, so the match is not trivial
