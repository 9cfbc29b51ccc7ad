"""`tinytrain bench speed|e2e|memory|pool|mcu`: side-by-side measurements, reported as ratios from one run."""
from __future__ import annotations

import argparse
import importlib

from ..errors import BadInput

# sub-command -> module under tinytrain.bench defining add_arguments(parser) and run(args) -> int
BENCHES = {"speed": "Training-iteration time and measured saved-for-backward bytes per method",
           "memory": "Peak process memory per method, each adaptation in a fresh child process",
           "e2e": "End-to-end adaptation time per phase (load, Fisher pass, selection, training, prototypes)",
           "pool": "Accuracy of a pool of augmented views against fresh augmentation (validation episodes)",
           "mcu": "The adapted sparse update as C: RAM, flash and instructions on an emulated Cortex-M7"}

# optional packages a bench may import (top-level module -> how to install it)
INSTALL_HINTS = {"sklearn": "pip install 'tinytrain[pocket]'", "skimage": "pip install 'tinytrain[pocket]'",
                 "onnx": "pip install 'tinytrain[export]'", "onnxruntime": "pip install 'tinytrain[export]'"}


class BenchParser(argparse.ArgumentParser):
    """One bench's parser. Its arguments come from tinytrain.bench.<name>, which imports torch, so they are
    added only when that bench is named on the command line: `tinytrain --help`, `tinytrain bench --help`
    and every other command do not import it."""

    def __init__(self, *args, bench: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._pending = bench
        self._available = True

    def parse_known_args(self, args=None, namespace=None):
        if self._pending is not None:
            name, self._pending = self._pending, None
            self._available = add_bench_arguments(self, name)
        if not self._available:     # its arguments are unknown; running it says what is missing
            args = []
        return super().parse_known_args(args, namespace)


def add_bench_arguments(p: argparse.ArgumentParser, name: str) -> bool:
    """Import tinytrain.bench.<name> and let it define `p`'s arguments and function; False where a
    third-party package it imports is missing: the bench then fails, when run, with one line naming it. Any
    other import error (one of tinytrain's own modules included) is raised as it is."""
    try:
        module = importlib.import_module(f"tinytrain.bench.{name}")
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if not missing or missing == "tinytrain":
            raise
        p.set_defaults(func=_unavailable(name, missing))
        return False
    module.add_arguments(p)
    p.set_defaults(func=module.run)
    return True


def _unavailable(name: str, missing: str):
    def run(args) -> int:
        hint = INSTALL_HINTS.get(missing, f"pip install {missing}")
        raise BadInput(f"`tinytrain bench {name}` needs the Python package {missing!r}, which is not installed "
                        f"({hint})")
    return run


def register(sub) -> None:
    p = sub.add_parser("bench", help="measure speed and memory of the methods side by side")
    bsub = p.add_subparsers(dest="bench", metavar="BENCH", parser_class=BenchParser)
    for name, help_text in BENCHES.items():
        bsub.add_parser(name, help=help_text, bench=name)
