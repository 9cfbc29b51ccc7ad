"""The `tinytrain` command. Thin: each sub-module parses its arguments and calls the library."""
from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__

# Each module defines register(subparsers); its parsers set `func(args) -> int | None`.
COMMAND_MODULES = ["zoo", "data", "train", "adapt", "plan", "evaluate", "bench", "export", "demo", "policy"]


# Commands that write all or nothing (no resume): an interrupt leaves no output behind.
ONE_SHOT_COMMANDS = {"adapt", "predict", "plan", "export"}


class UserError(Exception):
    """Bad input: printed as one clear line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinytrain", description="On-device few-shot training of small CNNs "
                                     "under memory and compute budgets (TinyTrain, ICML 2024).")
    parser.add_argument("--version", action="version", version=f"tinytrain {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"tinytrain.cli.{name}")
        module.register(sub)
    return parser


def attach_dash_values(argv: list[str]) -> list[str]:
    """`--memory-budget -5MB` -> `--memory-budget=-5MB`: argparse takes a value that starts with '-' and is
    not a plain number for an option and answers "expected one argument"; attached, the value reaches the
    check that says what is wrong with it."""
    out: list[str] = []
    for tok in argv:
        if (out and out[-1].startswith("--") and "=" not in out[-1] and len(tok) > 1 and tok[0] == "-"
                and (tok[1].isdigit() or tok[1] == ".")):
            out[-1] = f"{out[-1]}={tok}"
        else:
            out.append(tok)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(attach_dash_values(list(sys.argv[1:] if argv is None else argv)))
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except (UserError, ValueError, FileNotFoundError) as exc:
        print(f"tinytrain {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:      # a file the system refused (permissions, a full disk): one line naming it
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"tinytrain {args.command}: error: {where}{(exc.strerror or str(exc)).lower()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command in ONE_SHOT_COMMANDS:
            print("interrupted; nothing was written", file=sys.stderr)
        else:
            print("interrupted; finished work is kept and the same command resumes it", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
