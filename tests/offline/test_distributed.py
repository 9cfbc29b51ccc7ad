"""Two gloo processes on loopback compute what one process computes for the same episodes."""
from __future__ import annotations

import torch
from safetensors.torch import load_file

from tinytrain.data import EpisodeSpec
from tinytrain.offline import MetaTrainConfig, TensorEpisodes, meta_train
from tinytrain.offline.distributed import launch
from tinytrain.models.backbone import build_backbone
from tinytrain.models.head import CosineClassifier

from .helpers import pattern_tensors


def make_run():
    x, y = pattern_tensors(classes=12, per_class=12)
    shape = EpisodeSpec.parse(4, 3, 4)
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


def test_torchrun_launch_matches_nproc(tmp_path):
    """`torchrun --nproc-per-node 2 -m tinytrain metatrain ...` (env:// rendezvous) trains exactly what
    `tinytrain metatrain --nproc 2 ...` trains on the same episodes."""
    import os
    import subprocess
    import sys

    from tinytrain.cli import main

    from .helpers import write_png_folder

    data = str(write_png_folder(tmp_path / "data", classes=15, per_class=6))
    args = ["metatrain", "--model", "tiny-test", "--data", data, "--resolution", "32", "--ways", "3",
            "--shots", "2", "--queries", "2", "--val-episodes", "1", "--epochs", "1", "--episodes-per-epoch", "4",
            "--batch-episodes", "2", "--warmup-epochs", "0.5", "--lr", "0.05", "--device", "cpu", "--no-progress"]
    assert main(args + ["--nproc", "2", "--out", str(tmp_path / "spawned")]) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                           "--standalone", "-m", "tinytrain", *args, "--out", str(tmp_path / "torchrun")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    a = load_file(str(tmp_path / "spawned" / "last.safetensors"))
    b = load_file(str(tmp_path / "torchrun" / "last.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6)
    assert (tmp_path / "torchrun" / "config.json").exists()
    assert done.stdout.count("done:") == 1          # only rank 0 reports
