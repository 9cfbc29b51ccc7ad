"""Episodic ProtoNet meta-training (paper_spec.md 3.2), single process or torch.distributed.

Defaults follow the paper's recipe: SGD with momentum 0.9, linear warm-up from 1e-6 to 5e-5 over
5 epochs then cosine decay to 1e-6, 100 epochs x 2000 episodes, one episode per step, BatchNorm in
eval mode (P>M>F) when starting from a trained backbone. Each step averages the gradient over
`batch_episodes` episodes; in a distributed run those episodes are split across the ranks and the
gradients are all-reduced, so N processes compute exactly what one process computes for the same
episodes (up to float summation order).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..models.backbone import Backbone
from ..models.checkpoint_info import CheckpointInfo
from ..models.head import CosineClassifier, protonet_loss
from ..data.episodes import EpisodeSpec
from .episodes import EpisodeSource
from .loop import TrainResult, ValidatedStage, train_loop
from .rundir import RunConfig
from ..errors import BadInput


@dataclass
class MetaTrainConfig(RunConfig):
    model: str = "mcunet-5fps"
    init: str = "random"            # checkpoint the backbone starts from (recorded; see models.weights.load_backbone)
    data: str = "pocket-source"     # source dataset spec (train split: training; val split: validation)
    data_version: str = ""
    resolution: int = 64
    epochs: int = 100
    episodes_per_epoch: int = 2000
    batch_episodes: int = 1         # episodes per optimizer step, over all ranks (multiple of world size)
    lr: float = 5e-5
    warmup_lr: float = 1e-6
    min_lr: float = 1e-6
    warmup_epochs: float = 5.0
    momentum: float = 0.9
    weight_decay: float = 0.0
    ways: str = "5"                 # "5" or a range "5-20" drawn per episode
    shots: str = "5"
    queries: int = 15
    flip: bool = False              # horizontal flips in augmentation (off: the pocket source is glyphs)
    crop_scale: float = 0.35        # smallest area fraction of the random resized crop (P>M>F: 0.05)
    val_episodes: int = 100         # fixed validation episodes on held-out classes (0: no validation)
    bn_mode: str = "auto"           # eval | train | auto (eval from a trained init, train from random)
    frozen_blocks: int = 0          # the stem and the first N blocks keep their starting weights
    lite_residual: bool = False     # train only TinyTL lite-residual branches added to the frozen backbone
    seed: int = 0
    save_every_steps: int = 100
    log_every_steps: int = 20
    device: str = "auto"
    nproc: int = 1

    def check(self) -> None:
        self.check_numbers()
        if self.epochs < 1 or self.episodes_per_epoch < 1:
            raise BadInput("--epochs and --episodes-per-epoch must be at least 1")
        if not 0 < self.crop_scale <= 1:
            raise BadInput(f"--crop-scale must be in (0, 1], got {self.crop_scale}")
        if self.batch_episodes < 1:
            raise BadInput(f"--batch-episodes must be at least 1 (got {self.batch_episodes})")
        if self.episodes_per_epoch % self.batch_episodes:
            raise BadInput(f"--episodes-per-epoch ({self.episodes_per_epoch}) must be a multiple of "
                             f"--batch-episodes ({self.batch_episodes})")
        if self.bn_mode not in ("auto", "eval", "train"):
            raise BadInput(f"--bn-mode must be auto, eval or train, not {self.bn_mode!r}")
        if self.frozen_blocks < 0:
            raise BadInput(f"--frozen-blocks must be 0 or more, got {self.frozen_blocks}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise BadInput(f"--warmup-epochs ({self.warmup_epochs}) must be below --epochs ({self.epochs})")
        self.shape()

    def shape(self) -> EpisodeSpec:
        return EpisodeSpec.parse(self.ways, self.shots, self.queries)

    @property
    def steps_per_epoch(self) -> int:
        return self.episodes_per_epoch // self.batch_episodes

    def effective_bn_mode(self) -> str:
        if self.bn_mode != "auto":
            return self.bn_mode
        return "train" if self.init in ("random", "", None) else "eval"


def episode_loss(backbone: Backbone, head: CosineClassifier, task, device: torch.device):
    """ProtoNet loss of one episode; support and query go through the backbone in one batch."""
    x = torch.cat([task.support_x, task.query_x]).to(device)
    feats = backbone(x)
    ns = len(task.support_x)
    return protonet_loss(head, feats[:ns], task.support_y.to(device), feats[ns:], task.query_y.to(device))


def frozen_prefix(backbone: Backbone, blocks: int) -> torch.nn.Module:
    """The stem and the first `blocks` blocks: what `--frozen-blocks` keeps at its starting weights (an
    empty module for 0). Freezing the early, generic layers is meant to keep them from specialising to the
    source (docs/offline.md has what it did on proxyless-w0.3), and it makes meta-training cheaper: no weight
    gradients there."""
    if blocks > len(backbone.blocks):
        raise BadInput(f"--frozen-blocks {blocks} is more than {backbone.spec.name}'s "
                         f"{len(backbone.blocks)} blocks")
    return torch.nn.ModuleList([backbone.stem, *backbone.blocks[:blocks]]) if blocks else torch.nn.ModuleList()


def _frozen(backbone: Backbone, config: MetaTrainConfig) -> torch.nn.Module:
    """What keeps its starting weights: the first --frozen-blocks, or with --lite-residual all but the branches."""
    frozen = frozen_prefix(backbone, config.frozen_blocks)
    if config.lite_residual:
        if not hasattr(backbone, "lite"):
            raise BadInput("--lite-residual needs a backbone with lite-residual branches (TinyTLBackbone)")
        frozen = torch.nn.ModuleList([m for n, m in backbone.named_children() if n != "lite"])
    return frozen


class _MetaTraining(ValidatedStage):
    """ProtoNet episodes: step i's `batch_episodes` episodes are train.task(i * B + j), j < B, shared out
    over the ranks."""

    name = "metatrain"

    def __init__(self, backbone: Backbone, train: EpisodeSource, val: EpisodeSource | None,
                 config: MetaTrainConfig, head: CosineClassifier | None):
        super().__init__(config, f"metatrain {config.model}")
        if config.batch_episodes % self.world:
            raise BadInput(f"--batch-episodes ({config.batch_episodes}) must be a multiple of the number of "
                             f"processes ({self.world})")
        frozen = _frozen(backbone, config)     # checked before anything is written
        self.backbone, self.episodes, self.val, self.frozen = backbone, train, val, frozen
        self.head = head if head is not None else CosineClassifier()
        backbone.to(self.device)
        self.head.to(self.device)
        self.was_trainable = [p.requires_grad for p in frozen.parameters()]
        for p in frozen.parameters():
            p.requires_grad_(False)
        self.params = [p for p in backbone.parameters() if p.requires_grad] + list(self.head.parameters())
        self.opt = torch.optim.SGD(self.params, lr=config.lr, momentum=config.momentum,
                                   weight_decay=config.weight_decay)
        self.modules = {"backbone": backbone, "head": self.head}
        self.bn_train = config.effective_bn_mode() == "train"
        self.averaged = backbone if self.bn_train else None
        self.steps_per_epoch = config.steps_per_epoch
        self.warmup_lr, self.min_lr = config.warmup_lr, config.min_lr

    def unfreeze(self) -> None:
        """Give the caller's backbone back with the trainable flags it came with."""
        for p, flag in zip(self.frozen.parameters(), self.was_trainable):
            p.requires_grad_(flag)

    def backward(self, step: int) -> torch.Tensor:
        B = self.config.batch_episodes
        self.backbone.train(self.bn_train)
        self.frozen.eval()
        stats = torch.zeros(3)      # loss sum, accuracy sum, episodes
        for j in range(self.rank, B, self.world):
            loss, acc = episode_loss(self.backbone, self.head, self.episodes.task(step * B + j), self.device)
            (loss / B).backward()
            stats += torch.tensor([loss.item(), acc.item(), 1.0])
        return stats

    def log_fields(self, win: torch.Tensor, seconds: float) -> dict:
        return {"acc": float(win[1] / win[2]), "episodes": int(win[2]),
                "sec_per_step": seconds / max(1, self.config.log_every_steps)}

    def meta(self, record: dict) -> dict:
        head = {"scale": float(self.head.scale.detach()), "bias": float(self.head.bias.detach())}
        return self.checkpoint_meta(record, resolution=self.config.resolution, head=head,
                                    val_acc=record.get("val_acc"), val_ci95=record.get("val_ci95"),
                                    val_episodes=self.config.val_episodes)


def meta_train(backbone: Backbone, train: EpisodeSource, val: EpisodeSource | None, config: MetaTrainConfig,
               out: str | Path, *, head: CosineClassifier | None = None, restart: bool = False,
               stop_at_step: int | None = None, progress: bool = True) -> TrainResult:
    """Meta-train `backbone` in place on `train` episodes; resumes from `out` if it holds this run.

    Call it in every rank of an initialised process group for distributed training; only rank 0
    writes files. `stop_at_step` ends the run early (state saved), as an interruption would."""
    config.check()
    stage = _MetaTraining(backbone, train, val, config, head)
    try:
        return train_loop(stage, out, restart=restart, stop_at_step=stop_at_step, progress=progress)
    finally:
        stage.unfreeze()


# --- from a config to a finished run (what the CLI calls) ------------------------------------------

def strip_classifier(backbone: Backbone, keep_lite: bool = True) -> Backbone:
    """The same network without the supervised classifier (meta-training only uses features). Pretrained
    TinyTL branches loaded beside it (`checkpoint_info.lite`, from a checkpoint's `lite.*` keys) are kept with
    `keep_lite`, as a TinyTLBackbone whose state_dict writes them back (what a shipped file must hold)."""
    lite = backbone.checkpoint_info.lite if keep_lite else None
    if backbone.classifier is None and not lite:
        return backbone
    bare = Backbone(backbone.spec)
    bare.load_state_dict({k: v for k, v in backbone.state_dict().items() if not k.startswith("classifier.")})
    if lite:
        from ..models.tinytl import TinyTLBackbone
        bare = TinyTLBackbone.from_backbone(bare, lite.resolution)
        bare.lite.load_state_dict(lite.state)
    return bare


def initial_model(model: str, init: str, lite_residual_at: int | None = None) -> tuple[Backbone, CosineClassifier, CheckpointInfo]:
    """Backbone (no classifier) and ProtoNet head for `init` ('random', 'imagenet', 'pocket' or a path).
    With `lite_residual_at` (a resolution) the backbone gets TinyTL's lite-residual branches for that size."""
    from ..models.weights import load_backbone
    backbone = load_backbone(model, init)
    info = backbone.checkpoint_info
    head = info.head()
    backbone = strip_classifier(backbone, keep_lite=False)     # meta-training trains the plain backbone
    if lite_residual_at:
        from ..models.tinytl import TinyTLBackbone
        backbone = TinyTLBackbone.from_backbone(backbone, lite_residual_at)
    return backbone, head, info


def source_episodes(config: MetaTrainConfig):
    """(train, val) episode sources on the configured source dataset's train and val splits."""
    from .episodes import ImageEpisodes, open_source_splits
    shape = config.shape()
    train_set, val_set = open_source_splits(config.data)
    train = ImageEpisodes(train_set, shape, config.resolution, config.seed, train=True,
                          flip=config.flip, crop_scale=config.crop_scale)
    val = None
    if config.val_episodes:
        val = ImageEpisodes(val_set, shape, config.resolution,
                            config.seed + 10_000, train=False)
    return train, val


def run_metatrain(config: MetaTrainConfig, out: str | Path, *, restart: bool = False,
                  stop_at_step: int | None = None, progress: bool = True) -> TrainResult:
    """Build the model and data named by `config` and meta-train (in this process / rank)."""
    config.check()
    torch.manual_seed(config.seed)     # a random init is part of the run's seed
    backbone, head, _ = initial_model(config.model, config.init, config.resolution if config.lite_residual else None)
    train, val = source_episodes(config)
    return meta_train(backbone, train, val, config, out, head=head, restart=restart,
                      stop_at_step=stop_at_step, progress=progress)
