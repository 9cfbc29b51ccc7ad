"""Progress of the long steps of one adaptation (the Fisher pass, the fine-tuning iterations), and notes.

The library never prints: a step reports `(stage, done, total)` to whatever callback the caller
installed with `report_to` (the CLI shows progress bars with it); without one, reporting costs nothing.
A note (something the user should know that is not an error: a recovered interrupted write, skipped files)
goes to the `tinytrain` logger: stderr unless the caller configures logging otherwise.
"""
from __future__ import annotations

import contextlib
import logging
from contextvars import ContextVar
from typing import Callable, Iterator

Callback = Callable[[str, int, int], None]
_CALLBACK: ContextVar[Callback | None] = ContextVar("tinytrain_progress", default=None)


def step(stage: str, done: int, total: int) -> None:
    """Say that `done` of `total` units of `stage` are finished."""
    callback = _CALLBACK.get()
    if callback is not None:
        callback(stage, done, total)


@contextlib.contextmanager
def report_to(callback: Callback | None) -> Iterator[None]:
    """Send the steps of the enclosed code to `callback`."""
    token = _CALLBACK.set(callback)
    try:
        yield
    finally:
        _CALLBACK.reset(token)


class ProgressBars:
    """A callback that draws one tqdm bar per stage on stderr (a new bar when the stage changes)."""

    def __init__(self, enabled: bool = True):
        self.enabled, self.bar, self.stage = enabled, None, None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm
        if self.bar is None or stage != self.stage or done < self.bar.n:
            self.close()
            self.bar = tqdm(total=total, desc=stage, unit="it" if stage == "training" else "img",
                            dynamic_ncols=True, leave=False)
            self.stage = stage
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def note(message: str) -> None:
    """Tell the user something that is not an error, as `tinytrain: note: ...` on the `tinytrain` logger."""
    logging.getLogger("tinytrain").warning("tinytrain: note: %s", message)
