"""One training run's folder: its full config, a JSONL log, checkpoints and a resumable state.

    out/config.json        the run's full configuration (written before training starts)
    out/log.jsonl          one JSON record per log interval and per validation
    out/best.safetensors   backbone with the best validation accuracy so far
    out/last.safetensors   backbone at the end of the latest epoch
    out/state.safetensors  optimizer, counters, RNG: what `resume` needs (pickle-free)
"""
from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path

import math

from .state import load_state, save_state
from ..errors import BadInput
from ..jsonfile import write_text_atomic

# Fields that may differ between an interrupted run and the command that resumes it.
OPERATIONAL_FIELDS = {"save_every_steps", "log_every_steps", "progress", "device", "nproc"}


class RunConfig:
    """Mixin for the run-config dataclasses: JSON round trip that ignores keys it does not know
    (so a config.json written by an older version still loads)."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def defaults(cls) -> dict:
        return asdict(cls())

    @classmethod
    def from_dict(cls, d: dict):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def check_numbers(self) -> None:
        """The numeric settings the three stages share, each refused in one line naming its flag before any
        work (torch would otherwise reject a negative rate mid-start, and accept NaN and train on it)."""
        def flag(name: str) -> str:
            return FLAGS.get(name, "--" + name.replace("_", "-"))

        have = {f.name: f for f in fields(self)}
        for name, low, low_open, high in NUMBER_RULES:
            if name not in have:
                continue
            v, whole = getattr(self, name), have[name].type in ("int", int)
            if isinstance(v, bool) or not isinstance(v, int if whole else (int, float)) or not math.isfinite(v) \
                    or (v <= low if low_open else v < low) or (high is not None and v >= high):
                rng = f"{'>' if low_open else '>='} {low:g}" + (f" and < {high:g}" if high is not None else "")
                kind = "a whole number" if whole else "a finite number"
                raise BadInput(f"{flag(name)} must be {kind} {rng} (got {v!r})")


# (field, low, low excluded, high (excluded) or None): the offline stages' shared numeric settings
NUMBER_RULES = [("lr", 0, True, None), ("warmup_lr", 0, False, None), ("min_lr", 0, False, None),
                ("momentum", 0, False, 1), ("weight_decay", 0, False, None), ("warmup_epochs", 0, False, None),
                ("save_every_steps", 1, False, None), ("log_every_steps", 1, False, None),
                ("val_episodes", 0, False, None), ("temperature", 0, True, None)]
FLAGS = {"save_every_steps": "--save-every", "log_every_steps": "--log-every"}


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.json")
    log_path = property(lambda self: self.path / "log.jsonl")
    state_path = property(lambda self: self.path / "state.safetensors")
    best_path = property(lambda self: self.path / "best.safetensors")
    last_path = property(lambda self: self.path / "last.safetensors")

    def make_folder(self) -> None:
        """The run folder (--out), or one line saying why it cannot be one."""
        if self.path.exists() and not self.path.is_dir():
            raise BadInput(f"--out {self.path} is a file; give a folder for the run (a new one, or an earlier run "
                           "to resume)")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInput(f"--out {self.path}: cannot create the run folder ({(exc.strerror or str(exc)).lower()}); "
                           "choose a folder you can write to") from None

    def prepare(self, run_config: RunConfig, restart: bool = False, write: bool = True) -> dict | None:
        """Write config.json; return the saved state to resume from, or None for a fresh run.

        A folder holding a run with a different config is refused rather than overwritten. A key the
        saved config lacks (written before that option existed) counts as that option's default.
        `write=False` (ranks other than 0) only reads."""
        config = run_config.to_dict()
        if write:
            self.make_folder()
        if restart and write:
            for p in (self.state_path, self.log_path, self.best_path, self.last_path):
                p.unlink(missing_ok=True)
        state = None
        if self.state_path.is_file():
            old = self.read_config() if self.config_path.is_file() else {}
            old = {**run_config.defaults(), **old}
            diff = sorted(k for k in set(old) | set(config)
                          if k not in OPERATIONAL_FIELDS and old.get(k) != config.get(k))
            if diff:
                k = diff[0]
                there, now = _short(old.get(k)), _short(config.get(k))
                what = f"{k}: {there} there, {now} now" if len(there) + len(now) < 120 else f"{k} differs"
                raise BadInput(f"{self.path} holds an unfinished run with a different config ({what}"
                               f"{f'; also {len(diff) - 1} more' if len(diff) > 1 else ''}); pass another --out, "
                               "the same options to resume, or --restart to discard it")
            state = self.load_state()
            if write:
                self.truncate_log(state["step"])
        if write:
            write_text_atomic(self.config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")
        return state

    def read_config(self) -> dict:
        try:
            d = json.loads(self.config_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadInput(f"{self.config_path} is not valid JSON ({exc}); restore it, or pass --restart to "
                             "discard the unfinished run") from None
        if not isinstance(d, dict):
            raise BadInput(f"{self.config_path} must hold a JSON object; restore it, or pass --restart")
        return d

    def load_state(self) -> dict:
        """The resumable state; a truncated or foreign file is a one-line ValueError naming it."""
        try:
            state = load_state(self.state_path)
        except ValueError:
            raise
        except Exception as exc:      # safetensors' own errors (a truncated header, a bad length): not a traceback
            raise BadInput(f"{self.state_path} is damaged ({type(exc).__name__}: {str(exc).strip()[:120]}); pass "
                             "--restart to discard the unfinished run, or restore the file") from None
        if not isinstance(state, dict) or not isinstance(state.get("step"), int):
            raise BadInput(f"{self.state_path} is not a complete training state (no step count); pass --restart "
                             "to discard the unfinished run, or restore the file")
        return state

    def missing_best(self, best_val: float | None = None, restore: bool = False) -> str:
        """A finished run without best.safetensors (deleted afterwards). With `restore`, where the final
        epoch was the best (or there was no validation), last.safetensors is that checkpoint: copy it back
        and return a note; otherwise a ValueError says so, naming what to do (never 'done ... best')."""
        if restore and self.last_path.is_file():
            from ..models.weights import read_checkpoint_header
            try:
                last_val = (read_checkpoint_header(self.last_path).get("meta") or {}).get("val_acc")
            except Exception:       # noqa: BLE001 - an unreadable last.safetensors cannot stand in
                last_val = "unreadable"
            if best_val is None and last_val is None or (best_val is not None and last_val == best_val):
                import shutil
                tmp = self.best_path.with_name(".best.safetensors.tmp")
                shutil.copyfile(self.last_path, tmp)
                tmp.replace(self.best_path)
                return (f"{self.best_path} was missing; the final epoch was the best, so it was restored from "
                        f"{self.last_path.name}")
        raise BadInput(f"{self.path} holds a finished run, but its best.safetensors is missing (deleted?); restore "
                         f"it, use {self.last_path.name} (the final epoch's weights) if that will do, or pass --restart "
                         "to train again")

    def save_state(self, state: dict) -> None:
        save_state(self.state_path, state)

    def log(self, record: dict) -> None:
        with self.log_path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def read_log(self) -> list[dict]:
        if not self.log_path.is_file():
            return []
        lines = [line for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
                 if line.strip()]
        records = []
        for i, line in enumerate(lines):
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict):
                if i == len(lines) - 1:     # torn by a kill mid-append: the resume writes that step again
                    break
                raise BadInput(f"{self.log_path} line {i + 1} is not a log record; restore the file, or pass "
                               "--restart to discard the run")
            records.append(record)
        return records

    def truncate_log(self, step: int) -> None:
        """Drop records written after the saved state (they will be produced again on resume)."""
        kept = [r for r in self.read_log() if r.get("step", 0) <= step]
        write_text_atomic(self.log_path, "".join(json.dumps(r) + "\n" for r in kept))
