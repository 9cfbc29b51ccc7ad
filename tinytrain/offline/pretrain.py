"""Supervised pretraining of a backbone on a source domain's training classes.

The tiny paper backbones have no ImageNet weights on this machine, so the offline stage starts by
training them as plain classifiers (cross-entropy with label smoothing, SGD + Nesterov, warm-up then
cosine). Validation is the few-shot None accuracy on held-out classes, the quantity meta-training
then improves, and the best epoch is kept. Runs resume from the last saved step.
"""
from __future__ import annotations

from typing import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..models.backbone import Backbone
from ..data.episodes import EpisodeSpec
from .episodes import EpisodeSource, episode_seed, seeded_rng
from .loop import TrainResult, ValidatedStage, train_loop
from .rundir import RunConfig, RunDir
from ..errors import BadInput


@dataclass
class PretrainConfig(RunConfig):
    model: str = "mcunet-5fps"
    data: str = "pocket-source"
    data_version: str = ""
    resolution: int = 64
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-5
    label_smoothing: float = 0.1
    flip: bool = False              # horizontal flips in augmentation (off: the pocket source is glyphs)
    crop_scale: float = 0.35        # smallest area fraction of the random resized crop
    warmup_epochs: float = 1.0
    val_episodes: int = 100
    ways: str = "5"
    shots: str = "5"
    queries: int = 15
    seed: int = 0
    save_every_steps: int = 200
    log_every_steps: int = 20
    device: str = "auto"

    def check(self) -> None:
        self.check_numbers()
        if self.epochs < 1 or self.batch_size < 1:
            raise BadInput("--epochs and --batch-size must be at least 1")
        if not 0 < self.crop_scale <= 1:
            raise BadInput(f"--crop-scale must be in (0, 1], got {self.crop_scale}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise BadInput(f"--warmup-epochs ({self.warmup_epochs}) must be below --epochs ({self.epochs})")
        EpisodeSpec.parse(self.ways, self.shots, self.queries)


class _Pretraining(ValidatedStage):
    """Cross-entropy with label smoothing on batches of the training set: batch b of epoch e is slice b of a
    permutation seeded by (seed, e), its augmentation seeded by (seed, step)."""

    name = "pretrain"
    distributed = False              # one process (the CLI never runs it under a process group)
    validates_at_start = False       # the first record is epoch 1's
    set_to_none = True

    def __init__(self, backbone: Backbone, data: torch.utils.data.Dataset, val: EpisodeSource | None,
                 config: PretrainConfig, reseed: Callable[[int], None] | None):
        if backbone.classifier is None:
            raise BadInput("pretraining needs a classifier; build the backbone with num_classes=<training classes>")
        super().__init__(config, f"pretrain {config.model}")
        self.backbone, self.data, self.val, self.reseed = backbone.to(self.device), data, val, reseed
        self.params = list(backbone.parameters())
        self.opt = torch.optim.SGD(self.params, lr=config.lr, momentum=config.momentum,
                                   weight_decay=config.weight_decay, nesterov=config.momentum > 0)
        self.modules = {"backbone": backbone}
        self.steps_per_epoch = len(data) // config.batch_size
        if self.steps_per_epoch < 1:
            raise BadInput(f"the training set has {len(data)} images, fewer than --batch-size {config.batch_size}; "
                             "lower it")
        self.perm_epoch, self.perm = -1, None

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        epoch, b = divmod(step, self.steps_per_epoch)
        if epoch != self.perm_epoch:
            seeded = torch.Generator().manual_seed(episode_seed(c.seed, epoch))
            self.perm, self.perm_epoch = torch.randperm(len(self.data), generator=seeded), epoch
        idx = self.perm[b * c.batch_size:(b + 1) * c.batch_size].tolist()
        if self.reseed is not None:
            self.reseed(episode_seed(c.seed + 1, step))
        with seeded_rng(episode_seed(c.seed + 2, step)):
            items = [self.data[i] for i in idx]
        x = torch.stack([it[0] for it in items]).to(self.device)
        return x, torch.tensor([int(it[1]) for it in items], device=self.device)

    def backward(self, step: int) -> torch.Tensor:
        x, y = self.batch(step)
        self.backbone.train()
        logits = self.backbone.logits(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.config.label_smoothing)
        loss.backward()
        return torch.tensor([loss.item(), (logits.argmax(-1) == y).float().mean().item(), 1.0])

    def log_fields(self, win: torch.Tensor, seconds: float) -> dict:
        return {"train_acc": float(win[1] / win[2]), "sec_per_step": seconds / float(win[2])}

    def meta(self, record: dict) -> dict:
        return self.checkpoint_meta(record, resolution=self.config.resolution, val_acc=record.get("val_acc"),
                                    val_ci95=record.get("val_ci95"))


def pretrain(backbone: Backbone, train_data: torch.utils.data.Dataset, val: EpisodeSource | None,
             config: PretrainConfig, out: str | Path, *, restart: bool = False,
             stop_at_step: int | None = None, progress: bool = True,
             reseed: Callable[[int], None] | None = None) -> TrainResult:
    """Train `backbone` (built with a classifier over the training classes) in place; resumable.

    Batch b of epoch e and its augmentation depend only on (seed, e, b), so a resumed run continues
    with exactly the batches the interrupted one would have seen."""
    config.check()
    stage = _Pretraining(backbone, train_data, val, config, reseed)
    result = train_loop(stage, out, restart=restart, stop_at_step=stop_at_step, progress=progress)
    run = RunDir(out)
    if result.completed and not run.best_path.is_file():     # finished, then best.safetensors was deleted
        from ..progress import note
        note(run.missing_best(result.best_val, restore=True))
    return result


def run_pretrain(config: PretrainConfig, out: str | Path, *, restart: bool = False,
                 stop_at_step: int | None = None, progress: bool = True) -> TrainResult:
    """Pretrain `config.model` from random initialisation on the train split of `config.data`."""
    from ..data import ClassificationView
    from ..models.backbone import build_backbone
    from .episodes import ImageEpisodes, ReseedableTransform, open_source_splits
    config.check()
    train_set, val_set = open_source_splits(config.data)
    tf = ReseedableTransform(config.resolution, config.flip, config.crop_scale)
    view = ClassificationView(train_set, tf)
    val = None
    if config.val_episodes:
        val = ImageEpisodes(val_set,
                            EpisodeSpec.parse(config.ways, config.shots, config.queries),
                            config.resolution, config.seed + 10_000, train=False)
    torch.manual_seed(config.seed)
    backbone = build_backbone(config.model, num_classes=len(train_set.classes))
    return pretrain(backbone, view, val, config, out, restart=restart, stop_at_step=stop_at_step,
                    progress=progress, reseed=tf.reseed)
