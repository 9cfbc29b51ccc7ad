"""Episodic ProtoNet meta-training (paper_spec.md 3.2), single process or torch.distributed.

Defaults follow the paper's recipe: SGD with momentum 0.9, linear warm-up from 1e-6 to 5e-5 over
5 epochs then cosine decay to 1e-6, 100 epochs x 2000 episodes, one episode per step, BatchNorm in
eval mode (P>M>F) when starting from a trained backbone. Each step averages the gradient over
`batch_episodes` episodes; in a distributed run those episodes are split across the ranks and the
gradients are all-reduced, so N processes compute exactly what one process computes for the same
episodes (up to float summation order).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from ..models.backbone import Backbone
from ..models.head import CosineClassifier, protonet_loss
from ..models.weights import save_checkpoint
from .episodes import EpisodeShape, EpisodeSource
from .evaluate import none_accuracy, summarize
from .rundir import RunConfig, RunDir, keep_on_schedule, saved_at
from .schedule import warmup_cosine_lr


@dataclass
class MetaTrainConfig(RunConfig):
    model: str = "mcunet-5fps"
    init: str = "random"            # checkpoint the backbone starts from (recorded; see load_backbone_with_meta)
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
        if self.epochs < 1 or self.episodes_per_epoch < 1:
            raise ValueError("--epochs and --episodes-per-epoch must be at least 1")
        if not 0 < self.crop_scale <= 1:
            raise ValueError(f"--crop-scale must be in (0, 1], got {self.crop_scale}")
        if self.batch_episodes < 1 or self.episodes_per_epoch % self.batch_episodes:
            raise ValueError(f"--episodes-per-epoch ({self.episodes_per_epoch}) must be a multiple of "
                             f"--batch-episodes ({self.batch_episodes})")
        if self.bn_mode not in ("auto", "eval", "train"):
            raise ValueError(f"--bn-mode must be auto, eval or train, not {self.bn_mode!r}")
        if self.frozen_blocks < 0:
            raise ValueError(f"--frozen-blocks must be 0 or more, got {self.frozen_blocks}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"--warmup-epochs ({self.warmup_epochs}) must be below --epochs ({self.epochs})")
        self.shape()

    def shape(self) -> EpisodeShape:
        return EpisodeShape.parse(self.ways, self.shots, self.queries)

    @property
    def steps_per_epoch(self) -> int:
        return self.episodes_per_epoch // self.batch_episodes

    def effective_bn_mode(self) -> str:
        if self.bn_mode != "auto":
            return self.bn_mode
        return "train" if self.init in ("random", "", None) else "eval"



@dataclass
class TrainResult:
    out: Path
    step: int
    total_steps: int
    best_val: float | None
    history: list[dict] = field(default_factory=list)   # validation records

    @property
    def completed(self) -> bool:
        return self.step >= self.total_steps


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if dist.is_initialized() and dist.get_backend() == "gloo":
            return torch.device("cpu")
        if torch.cuda.is_available():
            rank = int(__import__("os").environ.get("LOCAL_RANK", 0))
            return torch.device("cuda", rank % torch.cuda.device_count())
        return torch.device("cpu")
    return torch.device(name)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def episode_loss(backbone: Backbone, head: CosineClassifier, task, device: torch.device):
    """ProtoNet loss of one episode; support and query go through the backbone in one batch."""
    x = torch.cat([task.support_x, task.query_x]).to(device)
    feats = backbone(x)
    ns = len(task.support_x)
    return protonet_loss(head, feats[:ns], task.support_y.to(device), feats[ns:], task.query_y.to(device))


@torch.no_grad()
def validate(backbone: Backbone, val: EpisodeSource, episodes: int):
    was_training = backbone.training
    accs = [none_accuracy(backbone, val.task(i)) for i in range(episodes)]
    backbone.train(was_training)
    return summarize(accs)


def _all_reduce_grads(params: list[torch.nn.Parameter], extra: torch.Tensor) -> torch.Tensor:
    """Sum gradients (and the `extra` statistics) over ranks in one flat buffer."""
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params]
                     + [extra.to(params[0].device)])
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        n = p.numel()
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        p.grad.copy_(flat[offset:offset + n].view_as(p))
        offset += n
    return flat[offset:].cpu()


def _average_buffers(module: torch.nn.Module, world: int) -> None:
    for name, buf in module.named_buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf)
            buf.div_(world)


def frozen_prefix(backbone: Backbone, blocks: int) -> torch.nn.Module:
    """The stem and the first `blocks` blocks: what `--frozen-blocks` keeps at its starting weights (an
    empty module for 0). Freezing the early, generic layers is meant to keep them from specialising to the
    source (docs/offline.md has what it did on proxyless-w0.3), and it makes meta-training cheaper: no weight
    gradients there."""
    if blocks > len(backbone.blocks):
        raise ValueError(f"--frozen-blocks {blocks} is more than {backbone.spec.name}'s "
                         f"{len(backbone.blocks)} blocks")
    return torch.nn.ModuleList([backbone.stem, *backbone.blocks[:blocks]]) if blocks else torch.nn.ModuleList()


def _checkpoint_meta(config: MetaTrainConfig, head: CosineClassifier, step: int, val) -> dict:
    return {"stage": "metatrain", "config": config.to_dict(), "step": step,
            "epoch": step / config.steps_per_epoch, "resolution": config.resolution,
            "head": {"scale": float(head.scale.detach()), "bias": float(head.bias.detach())},
            "val_acc": None if val is None else val.mean, "val_ci95": None if val is None else val.ci95,
            "val_episodes": config.val_episodes}


def meta_train(backbone: Backbone, train: EpisodeSource, val: EpisodeSource | None, config: MetaTrainConfig,
               out: str | Path, *, head: CosineClassifier | None = None, restart: bool = False,
               stop_at_step: int | None = None, progress: bool = True) -> TrainResult:
    """Meta-train `backbone` in place on `train` episodes; resumes from `out` if it holds this run.

    Call it in every rank of an initialised process group for distributed training; only rank 0
    writes files. `stop_at_step` ends the run early (state saved), as an interruption would."""
    config.check()
    rank, world = _world()
    if config.batch_episodes % world:
        raise ValueError(f"--batch-episodes ({config.batch_episodes}) must be a multiple of the number of "
                         f"processes ({world})")
    device = pick_device(config.device)
    frozen = frozen_prefix(backbone, config.frozen_blocks)     # checked before anything is written
    if config.lite_residual:
        if not hasattr(backbone, "lite"):
            raise ValueError("--lite-residual needs a backbone with lite-residual branches (TinyTLBackbone)")
        frozen = torch.nn.ModuleList([m for n, m in backbone.named_children() if n != "lite"])
    head = head if head is not None else CosineClassifier()
    backbone.to(device)
    head.to(device)
    run = RunDir(out)
    if rank == 0:
        state = run.prepare(config, restart=restart)
    _barrier(world)
    if rank != 0:
        state = run.prepare(config, write=False)
    was_trainable = [p.requires_grad for p in frozen.parameters()]
    for p in frozen.parameters():
        p.requires_grad_(False)
    params = [p for p in backbone.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    step, best, history = 0, None, []
    if state is not None:
        backbone.load_state_dict(state["backbone"])
        head.load_state_dict(state["head"])
        opt.load_state_dict(state["optimizer"])
        step, best, history = state["step"], state["best_val"], state["history"]
    elif world > 1:   # every rank starts from rank 0's weights
        for t in list(backbone.state_dict().values()) + list(head.state_dict().values()):
            dist.broadcast(t, 0)
    bn_train = config.effective_bn_mode() == "train"
    spe, total = config.steps_per_epoch, config.epochs * config.steps_per_epoch
    B = config.batch_episodes

    def save_state():
        if rank == 0:
            run.save_state({"backbone": backbone.state_dict(), "head": head.state_dict(),
                            "optimizer": opt.state_dict(), "step": step, "best_val": best, "history": history})
        _barrier(world)

    def validate_and_keep():
        nonlocal best
        if rank == 0:
            summary = validate(backbone, val, config.val_episodes) if val is not None and config.val_episodes else None
            rec = {"step": step, "epoch": step / spe, "time": time.time()}
            if summary is not None:
                rec |= {"val_acc": summary.mean, "val_ci95": summary.ci95}
            history.append(rec)
            run.log(rec)
            meta = _checkpoint_meta(config, head, step, summary)
            save_checkpoint(run.last_path, backbone, meta)
            if summary is not None and (best is None or summary.mean > best):
                best = summary.mean
                save_checkpoint(run.best_path, backbone, meta)
            elif summary is None:
                save_checkpoint(run.best_path, backbone, meta)
        if world > 1:
            b = torch.tensor([-1.0 if best is None else best])
            dist.broadcast(b, 0)
            best = None if b.item() < 0 else float(b.item())

    if state is None:
        validate_and_keep()          # epoch 0: the starting point, kept as best unless training beats it
        save_state()
    bar = None
    if progress and rank == 0 and step < total:
        from tqdm import tqdm
        bar = tqdm(total=total, initial=step, unit="step", desc=f"metatrain {config.model}")
    win = torch.zeros(3)   # loss sum, acc sum, episodes since the last log
    t0 = time.time()
    while step < total and (stop_at_step is None or step < stop_at_step):
        backbone.train(bn_train)
        frozen.eval()
        lr = warmup_cosine_lr(step / spe, base_lr=config.lr, epochs=config.epochs,
                              warmup_epochs=config.warmup_epochs, warmup_lr=config.warmup_lr, min_lr=config.min_lr)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=False)
        stats = torch.zeros(3)
        for j in range(rank, B, world):
            loss, acc = episode_loss(backbone, head, train.task(step * B + j), device)
            (loss / B).backward()
            stats += torch.tensor([loss.item(), acc.item(), 1.0])
        if world > 1:
            stats = _all_reduce_grads(params, stats)
        opt.step()
        if world > 1 and bn_train:
            _average_buffers(backbone, world)
        step += 1
        win += stats
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{stats[0] / stats[2]:.3f}", lr=f"{lr:.2g}")
        if rank == 0 and (step % config.log_every_steps == 0 or step % spe == 0):
            run.log({"step": step, "epoch": step / spe, "lr": lr, "loss": float(win[0] / win[2]),
                     "acc": float(win[1] / win[2]), "episodes": int(win[2]),
                     "sec_per_step": (time.time() - t0) / max(1, config.log_every_steps)})
            win.zero_()
            t0 = time.time()
        keep_on_schedule(step, spe, config.save_every_steps, validate_and_keep, save_state)
    if not saved_at(step, spe, config.save_every_steps):   # stopped early between saves
        save_state()
    if bar is not None:
        bar.close()
    for p, flag in zip(frozen.parameters(), was_trainable):    # the caller's backbone as it was given
        p.requires_grad_(flag)
    return TrainResult(Path(out), step, total, best, history)


# --- from a config to a finished run (what the CLI calls) ------------------------------------------

def strip_classifier(backbone: Backbone, keep_lite: bool = True) -> Backbone:
    """The same network without the supervised classifier (meta-training only uses features). Pretrained
    TinyTL branches loaded beside it (`lite_state`, from a checkpoint's `lite.*` keys) are kept with
    `keep_lite`, as a TinyTLBackbone whose state_dict writes them back (what a shipped file must hold)."""
    lite = getattr(backbone, "lite_state", None) if keep_lite else None
    if backbone.classifier is None and not lite:
        return backbone
    bare = Backbone(backbone.spec)
    bare.load_state_dict({k: v for k, v in backbone.state_dict().items() if not k.startswith("classifier.")})
    if lite:
        from ..models.tinytl import TinyTLBackbone
        bare = TinyTLBackbone.from_backbone(bare, backbone.lite_resolution)
        bare.lite.load_state_dict(lite)
    return bare


def initial_model(model: str, init: str, lite_residual_at: int | None = None) -> tuple[Backbone, CosineClassifier, dict]:
    """Backbone (no classifier) and ProtoNet head for `init` ('random', 'imagenet', 'pocket' or a path).
    With `lite_residual_at` (a resolution) the backbone gets TinyTL's lite-residual branches for that size."""
    from ..models.weights import load_backbone_with_meta
    backbone, meta = load_backbone_with_meta(model, init)
    head = CosineClassifier(**meta.get("head", {}))
    backbone = strip_classifier(backbone, keep_lite=False)     # meta-training trains the plain backbone
    if lite_residual_at:
        from ..models.tinytl import TinyTLBackbone
        backbone = TinyTLBackbone.from_backbone(backbone, lite_residual_at)
    return backbone, head, meta


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
