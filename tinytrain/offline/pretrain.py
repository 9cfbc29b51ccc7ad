"""Supervised pretraining of a backbone on a source domain's training classes.

The tiny paper backbones have no ImageNet weights on this machine, so the offline stage starts by
training them as plain classifiers (cross-entropy with label smoothing, SGD + Nesterov, warm-up then
cosine). Validation is the few-shot None accuracy on held-out classes, the quantity meta-training
then improves, and the best epoch is kept. Runs resume from the last saved step.
"""
from __future__ import annotations

import time
from typing import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..models.backbone import Backbone
from ..models.weights import save_checkpoint
from .episodes import EpisodeShape, EpisodeSource, episode_seed, seeded_rng
from .metatrain import TrainResult, pick_device, validate
from .rundir import RunConfig, RunDir, keep_on_schedule, saved_at
from .schedule import warmup_cosine_lr


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
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("--epochs and --batch-size must be at least 1")
        if not 0 < self.crop_scale <= 1:
            raise ValueError(f"--crop-scale must be in (0, 1], got {self.crop_scale}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"--warmup-epochs ({self.warmup_epochs}) must be below --epochs ({self.epochs})")
        EpisodeShape.parse(self.ways, self.shots, self.queries)



def pretrain(backbone: Backbone, train_data: torch.utils.data.Dataset, val: EpisodeSource | None,
             config: PretrainConfig, out: str | Path, *, restart: bool = False,
             stop_at_step: int | None = None, progress: bool = True,
             reseed: Callable[[int], None] | None = None) -> TrainResult:
    """Train `backbone` (built with a classifier over the training classes) in place; resumable.

    Batch b of epoch e and its augmentation depend only on (seed, e, b), so a resumed run continues
    with exactly the batches the interrupted one would have seen."""
    config.check()
    if backbone.classifier is None:
        raise ValueError("pretraining needs a classifier; build the backbone with num_classes=<training classes>")
    device = pick_device(config.device)
    backbone.to(device)
    run = RunDir(out)
    state = run.prepare(config, restart=restart)
    opt = torch.optim.SGD(backbone.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay, nesterov=config.momentum > 0)
    n = len(train_data)
    spe = n // config.batch_size
    if spe < 1:
        raise ValueError(f"the training set has {n} images, fewer than --batch-size {config.batch_size}; lower it")
    total = config.epochs * spe
    step, best, history = 0, None, []
    if state is not None:
        backbone.load_state_dict(state["backbone"])
        opt.load_state_dict(state["optimizer"])
        step, best, history = state["step"], state["best_val"], state["history"]

    def save_state():
        run.save_state({"backbone": backbone.state_dict(), "optimizer": opt.state_dict(), "step": step,
                        "best_val": best, "history": history})

    def validate_and_keep():
        nonlocal best
        summary = validate(backbone, val, config.val_episodes) if val is not None and config.val_episodes else None
        rec = {"step": step, "epoch": step / spe, "time": time.time()}
        if summary is not None:
            rec |= {"val_acc": summary.mean, "val_ci95": summary.ci95}
        history.append(rec)
        run.log(rec)
        meta = {"stage": "pretrain", "config": config.to_dict(), "step": step, "epoch": step / spe,
                "resolution": config.resolution, "val_acc": rec.get("val_acc"), "val_ci95": rec.get("val_ci95")}
        save_checkpoint(run.last_path, backbone, meta)
        if summary is None or best is None or summary.mean > best:
            best = None if summary is None else summary.mean
            save_checkpoint(run.best_path, backbone, meta)

    bar = None
    if progress and step < total:
        from tqdm import tqdm
        bar = tqdm(total=total, initial=step, unit="step", desc=f"pretrain {config.model}")
    perm_epoch, perm = -1, None
    win, t0 = torch.zeros(3), time.time()
    while step < total and (stop_at_step is None or step < stop_at_step):
        epoch, b = divmod(step, spe)
        if epoch != perm_epoch:
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(episode_seed(config.seed, epoch)))
            perm_epoch = epoch
        idx = perm[b * config.batch_size:(b + 1) * config.batch_size].tolist()
        if reseed is not None:
            reseed(episode_seed(config.seed + 1, step))
        with seeded_rng(episode_seed(config.seed + 2, step)):
            items = [train_data[i] for i in idx]
        x = torch.stack([it[0] for it in items]).to(device)
        y = torch.tensor([int(it[1]) for it in items], device=device)
        lr = warmup_cosine_lr(step / spe, base_lr=config.lr, epochs=config.epochs,
                              warmup_epochs=config.warmup_epochs, warmup_lr=config.lr * 0.01, min_lr=0.0)
        for g in opt.param_groups:
            g["lr"] = lr
        backbone.train()
        logits = backbone.logits(x)
        loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        win += torch.tensor([loss.item(), (logits.argmax(-1) == y).float().mean().item(), 1.0])
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss):.3f}", lr=f"{lr:.2g}")
        if step % config.log_every_steps == 0 or step % spe == 0:
            run.log({"step": step, "epoch": step / spe, "lr": lr, "loss": float(win[0] / win[2]),
                     "train_acc": float(win[1] / win[2]), "sec_per_step": (time.time() - t0) / float(win[2])})
            win.zero_()
            t0 = time.time()
        keep_on_schedule(step, spe, config.save_every_steps, validate_and_keep, save_state)
    if not saved_at(step, spe, config.save_every_steps):   # stopped early between saves
        save_state()
    if bar is not None:
        bar.close()
    if step >= total and not run.best_path.is_file():     # finished, then best.safetensors was deleted
        print(f"note: {run.missing_best(best, restore=True)}")
    return TrainResult(Path(out), step, total, best, history)


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
                            EpisodeShape.parse(config.ways, config.shots, config.queries),
                            config.resolution, config.seed + 10_000, train=False)
    torch.manual_seed(config.seed)
    backbone = build_backbone(config.model, num_classes=len(train_set.classes))
    return pretrain(backbone, view, val, config, out, restart=restart, stop_at_step=stop_at_step,
                    progress=progress, reseed=tf.reseed)
