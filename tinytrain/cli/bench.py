"""`tinytrain bench speed|e2e|memory|pool|mcu`: side-by-side measurements, reported as ratios from one run."""
from __future__ import annotations

import importlib

# sub-command -> module under tinytrain.bench defining add_arguments(parser) and run(args) -> int
BENCHES = {"speed": "Training-iteration time and measured saved-for-backward bytes per method",
           "memory": "Peak process memory per method, each adaptation in a fresh child process",
           "e2e": "End-to-end adaptation time per phase (load, Fisher pass, selection, training, prototypes)",
           "pool": "Accuracy of a pool of augmented views against fresh augmentation (validation episodes)",
           "mcu": "The adapted sparse update as C: RAM, flash and instructions on an emulated Cortex-M7"}


def _runner(name):
    def run(args):
        return importlib.import_module(f"tinytrain.bench.{name}").run(args)
    return run


def register(sub) -> None:
    p = sub.add_parser("bench", help="measure speed and memory of the methods side by side")
    bsub = p.add_subparsers(dest="bench", metavar="BENCH")
    for name, help_text in BENCHES.items():
        bp = bsub.add_parser(name, help=help_text)
        try:
            importlib.import_module(f"tinytrain.bench.{name}").add_arguments(bp)
        except ModuleNotFoundError:
            continue
        bp.set_defaults(func=_runner(name))
