"""The `tinytrain` command. Thin: each sub-module parses its arguments and calls the library."""
from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import sys
import traceback
from pathlib import Path

from .. import __version__
from ..errors import BadInput

# Each module defines register(subparsers); its parsers set `func(args) -> int | None`.
COMMAND_MODULES = ["zoo", "data", "train", "adapt", "plan", "evaluate", "bench", "export", "demo", "policy"]


# Commands that write all or nothing (no resume): an interrupt leaves no output behind.
ONE_SHOT_COMMANDS = {"adapt", "predict", "plan", "export"}


DEBUG_FLAG = "--debug"


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """argparse's own errors (a bad number, a missing, invalid or unknown value) as one line, exit status 2, like
    every other error of the command: `tinytrain CMD: error: ...`, pointing to `tinytrain CMD --help` instead of
    printing the usage block. Applied to `parser` and every sub-command parser below it (idempotent)."""
    def error(message: str):
        parser.exit(2, f"{parser.prog}: error: {message} (see `{parser.prog} --help`)\n")
    parser.error = error
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if child.error is not getattr(child, "_one_line_error", None):
                    one_line_errors(child)
    parser._one_line_error = error
    return parser


def all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """`parser` and every sub-command parser below it."""
    out = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                out += all_parsers(child)
    return out


def parse_command_line(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """parse_args, but an argument the command does not take is reported first, by that command, in one line
    naming it (`adapt --suport x` is a typo for --support, not a missing --support) and not by `tinytrain`
    with its usage block. A first pass without required arguments finds the unknown ones."""
    required = [a for p in all_parsers(parser) for a in p._actions if a.required]
    for action in required:
        action.required = False
    try:
        args, extras = parser.parse_known_args(argv)
    finally:
        for action in required:
            action.required = True
    if extras:
        command = innermost_parser(parser, args)
        command.error(unknown_arguments(command, extras))
    args = parser.parse_args(argv)
    refuse_blank_values(innermost_parser(parser, args), args)
    return args


def refuse_blank_values(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A value given as '' or blanks is never what the user meant: as a path it would silently be the current
    folder (`--out ''` writing here, `predict ''` classifying every image below). One line naming the flag."""
    for action in parser._actions:
        value = getattr(args, action.dest, None)
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str) and not v.strip() and v != action.default:
                name = (max(action.option_strings, key=len) if action.option_strings
                        else f"argument {(action.metavar or action.dest).upper()}")
                parser.error(f"{name} is empty ({v!r}); give a value")


def record_setting_defaults(parser: argparse.ArgumentParser, not_settings: set[str]) -> None:
    """Remember the defaults of the run settings (every flag but `not_settings` and --help), so that `--config`
    can refuse any of them given beside it (`refuse_settings_beside_config`)."""
    parser.set_defaults(setting_defaults={a.dest: a.default for a in parser._actions
                                          if a.dest not in not_settings and a.dest != "help"})


def refuse_settings_beside_config(args: argparse.Namespace) -> None:
    """--config FILE holds every setting of a run: a setting flag given beside it is refused by name, never
    silently overridden (a value that differs from the flag's default counts as given)."""
    given = sorted(d for d, default in args.setting_defaults.items() if getattr(args, d, default) != default)
    if given:
        flags = ", ".join("--" + d.replace("_", "-") for d in given)
        raise BadInput(f"--config {args.config} holds every run setting; leave out {flags}, or drop --config")


def read_config_file(path: Path) -> dict:
    """The JSON object of a `--config` file (a run's config.json), or one line saying what is wrong with it."""
    import json
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"--config {path}: no such file") from None
    except IsADirectoryError:
        raise BadInput(f"--config {path} is a folder; give its config.json") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadInput(f"--config {path}: not a readable JSON file ({type(exc).__name__}: {exc})") from None
    if not isinstance(d, dict):
        raise BadInput(f"--config {path}: must hold one JSON object in the layout of a run's config.json")
    return d


def innermost_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (sub-)sub-command that `args` ran: `tinytrain data stats` -> the `stats` parser."""
    while True:
        action = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        name = getattr(args, action.dest, None) if action is not None else None
        if name not in (action.choices if action is not None else {}):
            return parser
        parser = action.choices[name]


def unknown_arguments(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    """"unknown option '--iteration' (did you mean --iterations?)": the options the command does not take (the
    words after one are most likely its value), else the stray words."""
    flags = [s for a in parser._actions for s in a.option_strings]
    named = [t for t in extras if t.startswith("-") and t not in ("-", "--")] or extras
    words = []
    for tok in named:
        close = difflib.get_close_matches(tok.partition("=")[0], flags, n=1, cutoff=0.7) if tok.startswith("-") else []
        words.append(f"{tok!r}" + (f" (did you mean {close[0]}?)" if close else ""))
    kind = "option" if named is not extras or all(t.startswith("-") for t in extras) else "argument"
    return f"unknown {kind}{'s' if len(words) > 1 else ''} {', '.join(words)}"


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
    return one_line_errors(parser)


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


class NotesToStderr(logging.Handler):
    """The library's notes (the `tinytrain` logger) as lines on the command's stderr, whatever sys.stderr is
    at the time (a test's capture included)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr)


def show_notes() -> None:
    logger = logging.getLogger("tinytrain")
    if not any(isinstance(h, NotesToStderr) for h in logger.handlers):
        logger.addHandler(NotesToStderr(logging.WARNING))


def main(argv: list[str] | None = None) -> int:
    show_notes()
    argv, debug = take_debug_flag(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    try:
        args = parse_command_line(parser, attach_dash_values(argv))
    except Exception as exc:    # e.g. a bench module that fails to import: a bug, not bad input
        return internal_error("tinytrain", exc, debug)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    prog = innermost_parser(parser, args).prog      # `tinytrain bench mcu`, not only `tinytrain bench`
    try:
        return int(args.func(args) or 0)
    except (BadInput, FileNotFoundError) as exc:      # bad input; any other ValueError is a bug
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
