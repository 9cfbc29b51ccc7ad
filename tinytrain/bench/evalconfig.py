"""The settings of one evaluation and their checks. An EvalConfig is what `tinytrain eval` builds from its
flags, what Python callers pass to run_eval and what a run folder's config.json holds (to_dict / from_dict
are that file's layout, key for key); every setting is checked here, once, whichever way it came in, so the
rest of the harness can trust it. Importing it imports no torch and nothing here touches a run folder, so
building and checking a config stays cheap; the other modules of the harness import this one, never the
other way round."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from ..data.episodes import EpisodeSpec
from ..errors import BadInput

TRAINING_FREE = {"none"}                 # methods whose result does not depend on the learning rate
LR_PROTOCOLS = ("auto", "target-val", "support")
STATIC_PLAN = "validation"               # `fixed_plan` placeholder: the plan chosen once on validation episodes
DEFAULT_LR = 1e-3                       # the fixed lr when --lr auto is not used (Adam; paper_spec 12.8)
DEFAULT_LR_GRID = (0.0, 1e-4, 1e-3, 1e-2)   # P>M>F's per-domain grid, plus 0 (no update: a valid choice);
                                            # the CLI's --lr-grid default is this constant
MAX_LR = 100.0                          # larger rates are refused up front: Adam moves a weight by about lr per
                                        # step, so no rate near this trains (P>M>F's grid tops at 1e-2)


def check_rate(value, flag: str, zero_ok: bool) -> float:
    """One learning rate of --lr / --lr-grid / METHOD=LR: a finite number in (0, MAX_LR] ([0, MAX_LR] where
    0, no update, is a valid choice). A ValueError names the flag and what to change."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadInput(f"{flag} takes numbers, got {value!r}")
    low = "0 or more (0 = no update)" if zero_ok else "positive"
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        raise BadInput(f"{flag} got {value!r}; a learning rate must be a finite number, {low}, e.g. 1e-3")
    if value > MAX_LR:
        raise BadInput(f"{flag} got {value:g}; rates above {MAX_LR:g} only diverge (Adam moves each weight by "
                         "about lr per step): use e.g. 1e-3, or --lr auto to choose from a grid")
    return float(value)


@dataclass
class Variant:
    """One column of results: a method with optional overrides (ablations). `label` is the record key."""

    label: str
    method: str
    options: dict = field(default_factory=dict)
    checkpoint: str | None = None        # None: the run's checkpoint
    memory_budget: int | None = None     # None: the run's budget
    group: str = "main"                  # main | meta | score | channels | static | budget | options


def _whole(value, name: str, low: int | None = None, none_ok: bool = False) -> None:
    """A setting that must be a whole number (not a bool, not 2.5), at least `low`."""
    if value is None and none_ok:
        return
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
        floor = f" >= {low}" if low is not None else ""
        raise BadInput(f"{name} must be a whole number{floor} (got {value!r})")


@dataclass
class EvalConfig:
    model: str = "mcunet-5fps"
    checkpoint: str = "pocket"
    domains: list[str] = field(default_factory=list)
    variants: list[Variant] = field(default_factory=list)
    tasks: int = 200
    seed: int = 0
    memory_budget: int | None = None
    compute_budget: float | int | None = None
    resolution: int = 128
    iterations: int = 40
    lr: float | str | dict = DEFAULT_LR  # a number, "auto" (chosen per domain and method on validation data),
                                         # "target-val" (the same, on held-out episodes of the target domain),
                                         # "support" (chosen per task on a split of its support set),
                                         # or {method: lr, "default": lr} (values an earlier `auto` run chose)
    lr_grid: tuple[float, ...] = DEFAULT_LR_GRID
    lr_episodes: int = 3
    lr_domain: str | None = None         # validation data for domains without a validation split
    variant_lr: str = "method"           # auto/target-val: --variant columns use their method's rate, or "own"
    split: str = "test"
    episodes: EpisodeSpec = field(default_factory=EpisodeSpec)  # how episodes are drawn (tinytrain.data)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lr_grid"] = list(self.lr_grid)
        return d

    @staticmethod
    def from_dict(d: dict) -> "EvalConfig":
        d = dict(d)
        d["variants"] = [Variant(**v) for v in d.get("variants", [])]
        d["episodes"] = EpisodeSpec(**d.get("episodes", {}))
        d["lr_grid"] = tuple(d.get("lr_grid", DEFAULT_LR_GRID))
        return EvalConfig(**d)

    def _check_types(self) -> None:
        """Every setting of the right type and range, whether it came from the command line, a stored
        config.json or Python (`EvalConfig(...)`): a wrong one is refused here, not misused later."""
        for name in ("model", "split"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise BadInput(f"{name} must be a non-empty text (got {getattr(self, name)!r})")
        if not isinstance(self.domains, list) or not all(isinstance(d, str) and d for d in self.domains):
            raise BadInput(f"domains must be a list of non-empty texts (got {self.domains!r})")
        _whole(self.tasks, "--tasks", 1)
        _whole(self.seed, "--seed", 0)
        _whole(self.resolution, "--resolution", 8)
        _whole(self.iterations, "--iterations", 0)
        _whole(self.lr_episodes, "--lr-episodes", 0)
        _whole(self.memory_budget, "--memory-budget (bytes)", 1, none_ok=True)
        cb = self.compute_budget
        if cb is not None and (isinstance(cb, bool) or not isinstance(cb, (int, float)) or not math.isfinite(cb)
                               or cb <= 0):
            raise BadInput(f"--compute-budget must be a positive share (<= 1) or MAC count (got {cb!r})")
        if not isinstance(self.lr, (str, dict)) and (isinstance(self.lr, bool) or not isinstance(self.lr, (int, float))):
            raise BadInput(f"--lr must be a number, a protocol name or METHOD=LR pairs (got {self.lr!r})")
        if any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in self.lr_grid):
            raise BadInput(f"--lr-grid must hold numbers (got {list(self.lr_grid)!r})")
        for v in self.variants:
            if v.method not in available_methods():
                raise BadInput(f"variant {v.label!r} names the unknown method {v.method!r}; methods: "
                                 f"{', '.join(available_methods())}")
            if not isinstance(v.options, dict):
                raise BadInput(f"variant {v.label!r}: options must be a {{key: value}} object (got {v.options!r})")
            _whole(v.memory_budget, f"variant {v.label!r} memory_budget", 1, none_ok=True)
        e = self.episodes
        if e.mode not in ("metadataset", "fixed"):
            raise BadInput(f"episodes mode must be metadataset or fixed (got {e.mode!r})")
        for name in ("ways", "shots", "queries"):
            _whole(getattr(e, name), f"--{name}", 1, none_ok=e.mode != "fixed")
        _whole(e.max_ways, "--max-ways", 2)
        _whole(e.max_support, "--max-support", 1)

    def validate(self) -> None:
        self._check_types()
        if not self.domains:
            raise BadInput("no domains to evaluate; pass --domains (pocket target names, SOURCE:PATH or folders)")
        if not self.variants:
            raise BadInput("no methods to evaluate; pass --methods")
        from ..deploy.session import check_iterations
        check_iterations(self.iterations)
        labels = [v.label for v in self.variants]
        dup = sorted({l for l in labels if labels.count(l) > 1})
        if dup:
            raise BadInput(f"methods listed twice: {', '.join(dup)}; list each once")
        if isinstance(self.lr, str) and self.lr not in LR_PROTOCOLS:
            raise BadInput(f"--lr must be a number, 'auto', 'target-val', 'support' or METHOD=LR pairs "
                             f"(got {self.lr!r})")
        if any(isinstance(x, (int, float)) and x < 0 for x in self.lr_grid):
            raise BadInput(f"--lr-grid holds a negative rate ({', '.join(f'{x:g}' for x in self.lr_grid)}); use "
                             "rates >= 0 (0 = no update)")
        for x in self.lr_grid:
            check_rate(x, "--lr-grid", zero_ok=True)
        if isinstance(self.lr, dict):
            for k, v in self.lr.items():
                check_rate(v, f"--lr {k}=", zero_ok=False)
        elif not isinstance(self.lr, str):
            check_rate(self.lr, "--lr", zero_ok=False)
        if isinstance(self.lr, dict):
            bad = [k for k in self.lr if k != "default" and k not in available_methods()]
            if bad:
                raise BadInput(f"--lr names unknown method(s) {', '.join(bad)}; use METHOD=LR with methods "
                                 f"from {', '.join(available_methods())}, or default=LR")
        if self.variant_lr not in ("method", "own"):
            raise BadInput(f"--variant-lr must be method or own (got {self.variant_lr!r})")
        if self.variant_lr == "own" and self.lr not in ("auto", "target-val"):
            raise BadInput("--variant-lr own chooses each --variant's rate on validation episodes; it needs --lr auto "
                             "or --lr target-val")
        if self.lr == "support" and not self.lr_grid:
            raise BadInput("--lr support chooses from --lr-grid, which is empty; give rates such as 0,1e-4,1e-3")
        if self.lr in ("auto", "target-val") and (not self.lr_grid or self.lr_episodes < 1):
            raise BadInput(f"--lr {self.lr} needs a non-empty --lr-grid and --lr-episodes >= 1")


def available_methods() -> list[str]:
    from ..methods import METHODS
    return list(METHODS)


def checkpoint_resolution(model: str, checkpoint: str, default: int = 128) -> int:
    """The input size a checkpoint was trained at (its metadata), else `default`."""
    from ..models.weights import load_backbone
    return load_backbone(model, checkpoint).checkpoint_info.resolution or default
