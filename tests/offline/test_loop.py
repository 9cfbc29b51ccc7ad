"""The shared step loop with a toy stage: what a stage supplies, and what the loop does with it."""
from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from tinytrain.offline.loop import Stage, train_loop
from tinytrain.offline.rundir import RunConfig
from tinytrain.offline.state import load_state


@dataclass
class ToyConfig(RunConfig):
    lr: float = 0.1
    epochs: int = 3
    warmup_epochs: float = 0.5
    save_every_steps: int = 2
    log_every_steps: int = 2
    device: str = "cpu"
    seed: int = 0


class ToyStage(Stage):
    """Least squares on batches seeded by the step; its 'validation' is the negative loss on fixed data."""

    name = "toy"
    keeps_best = False

    def __init__(self, config: ToyConfig):
        super().__init__(config, "toy")
        torch.manual_seed(config.seed)
        self.model = torch.nn.Linear(4, 1)
        self.params = list(self.model.parameters())
        self.opt = torch.optim.SGD(self.params, lr=config.lr, momentum=0.9)
        self.modules = {"model": self.model}
        self.steps_per_epoch = 5
        self.kept = []

    def backward(self, step: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(step)
        x = torch.randn(8, 4, generator=g)
        loss = ((self.model(x).squeeze(-1) - x.sum(-1)) ** 2).mean()
        loss.backward()
        return torch.tensor([loss.item(), 0.0, 1.0])

    def log_fields(self, win: torch.Tensor, seconds: float) -> dict:
        return {"steps": int(win[2])}

    def record(self, step: int) -> dict:
        return {"step": step, "epoch": step / self.steps_per_epoch, "weight": float(self.model.weight.detach().sum())}

    def keep(self, run, history, best):
        self.kept.append(self.checkpoint_meta(history[-1]))
        return None


def test_a_toy_stage_runs_resumes_and_saves_what_it_names(tmp_path):
    whole = ToyStage(ToyConfig())
    done = train_loop(whole, tmp_path / "whole", progress=False)
    assert done.completed and done.step == 15 and done.best_val is None
    assert [m["epoch"] for m in whole.kept] == [0, 1, 2, 3]        # the starting point, then every epoch's end
    assert whole.kept[0] == {"stage": "toy", "config": ToyConfig().to_dict(), "step": 0, "epoch": 0.0}

    cut = ToyStage(ToyConfig())
    part = train_loop(cut, tmp_path / "cut", stop_at_step=7, progress=False)
    assert not part.completed and part.step == 7
    state = load_state(tmp_path / "cut" / "state.safetensors")
    assert list(state) == ["model", "optimizer", "step", "history"] and state["step"] == 7   # no best_val
    again = ToyStage(ToyConfig(seed=0))
    with torch.no_grad():
        again.model.weight.fill_(9.0)                              # a new process: the state has the weights
    train_loop(again, tmp_path / "cut", progress=False)
    assert torch.equal(again.model.weight, whole.model.weight) and torch.equal(again.model.bias, whole.model.bias)
    read = lambda p: [{k: v for k, v in json.loads(line).items() if k != "time"} for line in p.read_text().splitlines()]
    log, cut_log = read(tmp_path / "whole" / "log.jsonl"), read(tmp_path / "cut" / "log.jsonl")
    assert [r for r in cut_log if "weight" in r] == [r for r in log if "weight" in r]
    assert [r["step"] for r in log if "loss" in r] == [2, 4, 5, 6, 8, 10, 12, 14, 15]   # every 2 steps, epoch ends
    assert [r["step"] for r in cut_log if "loss" in r] == [r["step"] for r in log if "loss" in r]
