"""`python -m tinytrain.mcu.samples OUT`: the command line of tinytrain.mcu.samples.write_samples (sample
photographs as class folders for `tinytrain bench mcu`)."""
from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    from ..mcu import samples

    p = argparse.ArgumentParser(prog="python -m tinytrain.mcu.samples", description=samples.__doc__.split("\n")[0])
    p.add_argument("out", help="folder to create (OUT/support, OUT/query)")
    p.add_argument("--classes", type=int, default=5)
    p.add_argument("--support", type=int, default=3, help="images per class in OUT/support")
    p.add_argument("--query", type=int, default=1, help="images per class in OUT/query")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        s, q = samples.write_samples(args.out, args.classes, args.support, args.query, args.seed)
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    print(f"wrote {s} and {q}")
    return 0
