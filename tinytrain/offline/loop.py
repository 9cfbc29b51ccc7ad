"""The step loop the offline training stages share (pretrain.py, metatrain.py, distill.py).

A stage is a `Stage`: it builds its model and optimizer and says what differs between the stages: how step
i's batch or episodes are drawn and their loss (`backward`), what an epoch's end records (validation,
`record`) and which checkpoints it keeps, with what metadata (`keep`). `train_loop(stage, out)` does the rest,
the same way for every stage:

- the run folder: config.json written, a saved state resumed (a different config refused), log.jsonl cut
  back to the state's step; a fresh run records its starting point (epoch 0) unless the stage opts out;
- each step: the warm-up + cosine learning rate, zero-grad, the stage's backward, in a distributed run the
  gradients (and the step's statistics) summed over ranks, the optimizer step, BN statistics averaged;
- a log.jsonl record every `log_every_steps` steps and at each epoch's end (loss and the stage's fields);
- at each epoch's end the stage's record and checkpoints, then the resumable state; otherwise the state
  every `save_every_steps` steps, and once more where a run stops between saves (`stop_at_step`);
- ranks: rank 0 writes every file, the others read the folder and follow; a fresh run starts every rank
  from rank 0's weights.

What a run consumes from random-number generators is the stage's (its batches are drawn from seeded
generators per step), so a resumed run continues exactly as an uninterrupted one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..models.backbone import Backbone
from ..models.weights import save_checkpoint
from .distributed import all_reduce_grads, average_buffers, barrier, broadcast, broadcast_best, pick_device, world
from .episodes import EpisodeSource
from .evaluate import validate
from .rundir import RunConfig, RunDir
from .schedule import warmup_cosine_lr


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


def keep_on_schedule(step: int, steps_per_epoch: int, save_every: int, end_epoch, save) -> None:
    """The checkpoint schedule: at an epoch's end `end_epoch()` (validate, keep the best) then `save()` the
    resumable state; otherwise `save()` every `save_every` steps."""
    if step % steps_per_epoch == 0:
        end_epoch()
        save()
    elif step % save_every == 0:
        save()


def saved_at(step: int, steps_per_epoch: int, save_every: int) -> bool:
    """Whether `keep_on_schedule` saved at `step`; a loop that stops anywhere else saves once more."""
    return step % steps_per_epoch == 0 or step % save_every == 0


class Stage:
    """What a training stage supplies to `train_loop`. Its __init__ calls `Stage.__init__` (which sets `config`,
    `label`, `rank`, `world` and `device`), builds the model and optimizer, and sets:

        steps_per_epoch  optimizer steps per epoch; a run has config.epochs epochs
        modules          {state key: module}, saved in the resumable state in this order (then "optimizer",
                         "step", "best_val" where `keeps_best`, "history"); broadcast from rank 0 on a fresh start
        opt, params      the optimizer and the parameters whose gradients ranks sum

    and defines `backward`, `log_fields`, `record` and `keep`. The class attributes are the usual choices; a
    stage overrides those that differ. `config` has lr, epochs, warmup_epochs, save_every_steps,
    log_every_steps and device."""

    name = ""                         # "pretrain", "metatrain", "distill": checkpoint metadata's "stage"
    distributed = True                # False: every process trains alone (rank 0 of 1)
    keeps_best = True                 # the state holds "best_val", the value `keep` returns
    optional: tuple[str, ...] = ()    # modules a state written by an older version may lack
    validates_at_start = True         # a fresh run records its starting point (epoch 0) and saves its state
    set_to_none = False               # opt.zero_grad(set_to_none=...) before each step's backward
    averaged: torch.nn.Module | None = None    # whose floating-point buffers ranks average after each step
    unit, unit_size = "step", 1                # the progress bar counts steps, or unit_size units a step

    def __init__(self, config: RunConfig, label: str):
        self.config, self.label = config, label      # label: the progress bar's ("pretrain mcunet-5fps")
        self.rank, self.world = world() if self.distributed else (0, 1)
        self.device = pick_device(config.device)
        self.warmup_lr, self.min_lr = config.lr * 0.01, 0.0

    def lr(self, step: int) -> float:
        """Linear warm-up from `warmup_lr` over config.warmup_epochs, then cosine decay to `min_lr`."""
        c = self.config
        return warmup_cosine_lr(step / self.steps_per_epoch, base_lr=c.lr, epochs=c.epochs,
                                warmup_epochs=c.warmup_epochs, warmup_lr=self.warmup_lr, min_lr=self.min_lr)

    def backward(self, step: int) -> torch.Tensor:
        """Draw step `step`'s batch or episodes (this rank's share), forward, loss, backward into the zeroed
        gradients; return the step's statistics [loss sum, ..., count, ...], which the loop sums over ranks."""
        raise NotImplementedError

    def log_fields(self, win: torch.Tensor, seconds: float) -> dict:
        """The stage's fields of a log record, from the statistics summed since the last record (`win`) over
        `seconds`; the record starts with step, epoch, lr and loss (win[0] / win[2])."""
        raise NotImplementedError

    def postfix(self, stats: torch.Tensor, lr: float) -> dict:
        """The progress bar's postfix after a step with statistics `stats`."""
        return {"loss": f"{stats[0] / stats[2]:.3f}", "lr": f"{lr:.2g}"}

    def record(self, step: int) -> dict:
        """Rank 0, at an epoch's end: its log record (validation), also kept in the state's history."""
        raise NotImplementedError

    def keep(self, run: RunDir, history: list[dict], best: float | None) -> float | None:
        """Rank 0, after `record` (history[-1]): write the epoch's checkpoints; return the best value so far."""
        raise NotImplementedError

    def checkpoint_meta(self, record: dict, **extra) -> dict:
        """Checkpoint metadata: the stage, the run's config, the record's step and epoch, then `extra`."""
        return {"stage": self.name, "config": self.config.to_dict(), "step": record["step"],
                "epoch": record["epoch"]} | extra


class ValidatedStage(Stage):
    """A stage validated by None accuracy on held-out episodes (pretraining, meta-training). It sets `backbone`
    and `val` (None: no validation) and defines `meta(record)`, the checkpoints' metadata. Every epoch's end
    writes last.safetensors, and best.safetensors where validation improved (or there is none)."""

    backbone: Backbone
    val: EpisodeSource | None

    def record(self, step: int) -> dict:
        c = self.config
        summary = validate(self.backbone, self.val, c.val_episodes) if self.val is not None and c.val_episodes else None
        rec = {"step": step, "epoch": step / self.steps_per_epoch, "time": time.time()}
        if summary is not None:
            rec |= {"val_acc": summary.mean, "val_ci95": summary.ci95}
        return rec

    def keep(self, run: RunDir, history: list[dict], best: float | None) -> float | None:
        meta = self.meta(history[-1])
        save_checkpoint(run.last_path, self.backbone, meta)
        val = history[-1].get("val_acc")
        if val is None or best is None or val > best:
            save_checkpoint(run.best_path, self.backbone, meta)
            return val
        return best

    def meta(self, record: dict) -> dict:
        raise NotImplementedError


def train_loop(stage: Stage, out: str | Path, *, restart: bool = False, stop_at_step: int | None = None,
               progress: bool = True) -> TrainResult:
    """Train `stage` in the run folder `out` (resuming what it holds) until its last step, or until
    `stop_at_step` (the state saved, as an interruption would leave it); see the module's doc."""
    loop = _Loop(stage, Path(out))
    loop.start(restart)
    return loop.run(stop_at_step, progress)


class _Loop:
    def __init__(self, stage: Stage, out: Path):
        self.stage, self.out, self.dir = stage, out, RunDir(out)
        self.spe = stage.steps_per_epoch
        self.total = stage.config.epochs * self.spe
        self.step, self.best, self.history = 0, None, []

    def start(self, restart: bool) -> None:
        """Prepare the run folder (rank 0 writes it, then the others read it) and resume or start."""
        s = self.stage
        state = self.dir.prepare(s.config, restart=restart) if s.rank == 0 else None
        barrier(s.world)
        if s.rank != 0:
            state = self.dir.prepare(s.config, write=False)
        if state is not None:
            self.resume(state)
            return
        if s.world > 1:      # every rank starts from rank 0's weights
            broadcast([t for m in s.modules.values() for t in m.state_dict().values()])
        if s.validates_at_start:
            self.end_epoch()      # epoch 0: the starting point
            self.save()

    def resume(self, state: dict) -> None:
        s = self.stage
        for name, module in s.modules.items():
            if name in state or name not in s.optional:
                module.load_state_dict(state[name])
        s.opt.load_state_dict(state["optimizer"])
        self.step, self.history = state["step"], state["history"]
        if s.keeps_best:
            self.best = state["best_val"]

    def save(self) -> None:
        s = self.stage
        if s.rank == 0:
            state = {name: m.state_dict() for name, m in s.modules.items()}
            state |= {"optimizer": s.opt.state_dict(), "step": self.step}
            if s.keeps_best:
                state["best_val"] = self.best
            self.dir.save_state(state | {"history": self.history})
        barrier(s.world)

    def end_epoch(self) -> None:
        s = self.stage
        if s.rank == 0:
            rec = s.record(self.step)
            self.history.append(rec)
            self.dir.log(rec)
            self.best = s.keep(self.dir, self.history, self.best)
        if s.world > 1:
            self.best = broadcast_best(self.best)

    def train_step(self) -> tuple[torch.Tensor, float]:
        """One optimizer step; returns its statistics (summed over ranks) and learning rate."""
        s = self.stage
        lr = s.lr(self.step)
        for g in s.opt.param_groups:
            g["lr"] = lr
        s.opt.zero_grad(set_to_none=s.set_to_none)
        stats = s.backward(self.step)
        if s.world > 1:
            stats = all_reduce_grads(s.params, stats)     # sums over ranks
        s.opt.step()
        if s.world > 1 and s.averaged is not None:
            average_buffers(s.averaged, s.world)
        self.step += 1
        return stats, lr

    def run(self, stop_at_step: int | None, progress: bool) -> TrainResult:
        s, c = self.stage, self.stage.config
        bar = self.progress_bar() if progress and s.rank == 0 and self.step < self.total else None
        win, t0 = None, time.time()       # statistics summed since the last log record
        while self.step < self.total and (stop_at_step is None or self.step < stop_at_step):
            stats, lr = self.train_step()
            if win is None:
                win = torch.zeros_like(stats)
            win += stats
            if bar is not None:
                bar.update(s.unit_size)
                bar.set_postfix(**s.postfix(stats, lr))
            if s.rank == 0 and (self.step % c.log_every_steps == 0 or self.step % self.spe == 0):
                self.dir.log({"step": self.step, "epoch": self.step / self.spe, "lr": lr,
                              "loss": float(win[0] / win[2])} | s.log_fields(win, time.time() - t0))
                win.zero_()
                t0 = time.time()
            keep_on_schedule(self.step, self.spe, c.save_every_steps, self.end_epoch, self.save)
        if not saved_at(self.step, self.spe, c.save_every_steps):   # stopped early between saves
            self.save()
        if bar is not None:
            bar.close()
        return TrainResult(self.out, self.step, self.total, self.best, self.history)

    def progress_bar(self):
        from tqdm import tqdm
        n = self.stage.unit_size
        return tqdm(total=self.total * n, initial=self.step * n, unit=self.stage.unit, unit_scale=n > 1,
                    desc=self.stage.label)
