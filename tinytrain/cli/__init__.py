"""The `tinytrain` command. Thin: each sub-module parses its arguments and calls the library."""
from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from .. import __version__

# Each module defines register(subparsers); its parsers set `func(args) -> int | None`.
COMMAND_MODULES = ["zoo", "data", "train", "adapt", "plan", "evaluate", "bench", "export", "demo", "policy"]


# Commands that write all or nothing (no resume): an interrupt leaves no output behind.
ONE_SHOT_COMMANDS = {"adapt", "predict", "plan", "export"}


class UserError(Exception):
    """Bad input: printed as one clear line, exit status 2."""


DEBUG_FLAG = "--debug"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinytrain", description="On-device few-shot training of small CNNs "
                                     "under memory and compute budgets (TinyTrain, ICML 2024).")
    parser.add_argument("--version", action="version", version=f"tinytrain {__version__}")
    parser.add_argument(DEBUG_FLAG, action="store_true",
                        help="on an error, print the full traceback (may be given anywhere on the line)")
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


def take_debug_flag(argv: list[str]) -> tuple[list[str], bool]:
    """`--debug` anywhere before a `--`, removed from argv (users add it at the end of the failed command)."""
    end = argv.index("--") if "--" in argv else len(argv)
    kept = [tok for tok in argv[:end] if tok != DEBUG_FLAG]
    return kept + argv[end:], len(kept) < end


def internal_error(prog: str, exc: Exception, debug: bool) -> int:
    """An exception that is not bad input is a bug in tinytrain: one line saying so (the traceback with
    --debug), exit status 1."""
    if debug:
        traceback.print_exc()
    text = str(exc).strip().splitlines()
    detail = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    print(f"{prog}: internal error: {detail} (a bug in tinytrain, not in the input; rerun with {DEBUG_FLAG} "
          "for the traceback)", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    argv, debug = take_debug_flag(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    try:
        args = parser.parse_args(attach_dash_values(argv))
    except Exception as exc:    # e.g. a bench module that fails to import: a bug, not bad input
        return internal_error("tinytrain", exc, debug)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    prog = f"tinytrain {args.command}"
    try:
        return int(args.func(args) or 0)
    except (UserError, ValueError, FileNotFoundError) as exc:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:      # a file the system refused (permissions, a full disk): one line naming it
        if debug:
            traceback.print_exc()
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{prog}: error: {where}{(exc.strerror or str(exc)).lower()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command in ONE_SHOT_COMMANDS:
            print("interrupted; nothing was written", file=sys.stderr)
        else:
            print("interrupted; finished work is kept and the same command resumes it", file=sys.stderr)
        return 130
    except Exception as exc:
        return internal_error(prog, exc, debug)


if __name__ == "__main__":
    sys.exit(main())
