"""`tinytrain bench speed|e2e|memory|pool|mcu`: side-by-side measurements, reported as ratios from one run.

Each bench's command line is a module `tinytrain.cli.bench_<name>` defining `add_arguments(parser)` and
`run(args) -> int`: it parses, calls the library (`tinytrain.bench.<name>`, `tinytrain.mcu.bench`), which
returns a result object, and prints that object's table or JSON. The command modules import only the
standard library; a bench's library (torch, numpy, the methods) is imported when the bench runs, inside
`bench_library`, so `tinytrain bench <name> --help` imports none of it."""
from __future__ import annotations

import argparse
import importlib
from contextlib import contextmanager

from ..errors import BadInput

# sub-command -> help; its command line is tinytrain.cli.bench_<name>
BENCHES = {"speed": "Training-iteration time and measured saved-for-backward bytes per method",
           "memory": "Peak process memory per method, each adaptation in a fresh child process",
           "e2e": "End-to-end adaptation time per phase (load, Fisher pass, selection, training, prototypes)",
           "pool": "Accuracy of a pool of augmented views against fresh augmentation (validation episodes)",
           "mcu": "The adapted sparse update as C: RAM, flash and instructions on an emulated Cortex-M7"}

# optional packages a bench may import (top-level module -> how to install it)
INSTALL_HINTS = {"sklearn": "pip install 'tinytrain[pocket]'", "skimage": "pip install 'tinytrain[pocket]'",
                 "onnx": "pip install 'tinytrain[export]'", "onnxruntime": "pip install 'tinytrain[export]'"}


class BenchParser(argparse.ArgumentParser):
    """One bench's parser. Its arguments come from tinytrain.cli.bench_<name>, imported only when that bench
    is named on the command line: `tinytrain --help` and every other command do not import it, and a bench
    whose module fails to import breaks only itself."""

    def __init__(self, *args, bench: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._pending = bench

    def parse_known_args(self, args=None, namespace=None):
        if self._pending is not None:
            name, self._pending = self._pending, None
            add_bench_arguments(self, name)
        return super().parse_known_args(args, namespace)


def add_bench_arguments(p: argparse.ArgumentParser, name: str) -> None:
    """Let tinytrain.cli.bench_<name> define `p`'s arguments and function. An import error is raised as it is
    (the command modules import only the standard library: failing to import one is a bug)."""
    module = importlib.import_module(f"tinytrain.cli.bench_{name}")
    module.add_arguments(p)
    p.set_defaults(func=module.run)


@contextmanager
def bench_library(name: str):
    """Import the library of `tinytrain bench <name>` inside this block: a third-party package it needs that
    is not installed becomes one line naming it and how to install it (BadInput). Any other import error
    (one of tinytrain's own modules included) is raised as it is."""
    try:
        yield
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if not missing or missing == "tinytrain":
            raise
        hint = INSTALL_HINTS.get(missing, f"pip install {missing}")
        raise BadInput(f"`tinytrain bench {name}` needs the Python package {missing!r}, which is not installed "
                       f"({hint})") from None


def register(sub) -> None:
    p = sub.add_parser("bench", help="measure speed and memory of the methods side by side")
    bsub = p.add_subparsers(dest="bench", metavar="BENCH", parser_class=BenchParser)
    for name, help_text in BENCHES.items():
        bsub.add_parser(name, help=help_text, bench=name)
