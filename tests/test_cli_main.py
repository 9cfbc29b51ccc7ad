"""The `tinytrain` command itself: cheap --help, bench sub-commands registered lazily, errors and --debug."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tinytrain.errors import BadInput

import tinytrain.bench
import tinytrain.cli.bench as cli_bench
import tinytrain.cli.zoo as cli_zoo
from tinytrain.cli import all_parsers, build_parser, main, parse_command_line, take_debug_flag


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_building_the_parser_does_not_import_torch():
    proc = run_python("import sys; from tinytrain.cli import build_parser; build_parser(); "
                      "print('torch' in sys.modules)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_help_of_every_command_does_not_import_torch():
    commands = sorted(build_parser()._subparsers._group_actions[0].choices)
    assert {"adapt", "eval", "bench", "metatrain", "export"} <= set(commands)
    proc = run_python(
        "import contextlib, io, sys\nfrom tinytrain.cli import main\n"
        f"for argv in [['--help'], *[[c, '--help'] for c in {commands!r}], ['bench', '--help']]:\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "        try:\n            main(argv)\n        except SystemExit as e:\n            assert e.code == 0, argv\n"
        "    assert 'usage: tinytrain' in out.getvalue(), argv\n"
        "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_help_of_the_benches_that_train_does_not_import_torch():
    """`bench speed|e2e|pool|memory --help` define their options without importing torch or the methods
    (they import them when they run); `bench mcu` builds C and may import what it needs."""
    proc = run_python(
        "import contextlib, io, sys\nfrom tinytrain.cli import main\n"
        "for b in ('speed', 'e2e', 'pool', 'memory'):\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "        try:\n            main(['bench', b, '--help'])\n        except SystemExit as e:\n"
        "            assert e.code == 0, b\n"
        "    assert '--seed' in out.getvalue() or '--model' in out.getvalue(), b\n"
        "print('torch' in sys.modules)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_tinytrain_help_exits_0():
    proc = subprocess.run([sys.executable, "-m", "tinytrain", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage: tinytrain" in proc.stdout and "--debug" in proc.stdout
    for name in ("adapt", "eval", "bench", "export"):
        assert name in proc.stdout


def test_bench_help_lists_every_bench_and_a_bench_help_its_options(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in cli_bench.BENCHES)
    with pytest.raises(SystemExit) as e:
        main(["bench", "speed", "--help"])
    assert e.value.code == 0 and "--iterations" in capsys.readouterr().out


@pytest.fixture
def fake_benches(tmp_path, monkeypatch):
    """Two benches next to the real ones: one whose library needs a package that is not installed, one whose
    command module imports a tinytrain module that does not exist (a bug)."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "cli").mkdir()
    (tmp_path / "lib" / "needs_pkg.py").write_text("import tinytrain_test_no_such_package\n")
    (tmp_path / "cli" / "bench_needs_pkg.py").write_text(
        "from tinytrain.cli.bench import bench_library\n"
        "def add_arguments(p): p.add_argument('--rounds')\n"
        "def run(args):\n    with bench_library('needs_pkg'):\n        import tinytrain.bench.needs_pkg\n"
        "    return 0\n")
    (tmp_path / "cli" / "bench_broken.py").write_text("import tinytrain.no_such_module\n"
                                                      "def add_arguments(p): pass\ndef run(args): return 0\n")
    monkeypatch.setattr(tinytrain.bench, "__path__", [*tinytrain.bench.__path__, str(tmp_path / "lib")])
    monkeypatch.setattr(tinytrain.cli, "__path__", [*tinytrain.cli.__path__, str(tmp_path / "cli")])
    monkeypatch.setattr(cli_bench, "BENCHES", {**cli_bench.BENCHES, "needs_pkg": "x", "broken": "y"})
    for name in ("tinytrain.bench.needs_pkg", "tinytrain.cli.bench_needs_pkg", "tinytrain.cli.bench_broken"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield


def test_a_bench_missing_an_optional_package_says_so_when_run(fake_benches, capsys):
    assert main(["bench", "needs_pkg", "--rounds", "3"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tinytrain bench needs_pkg: error: "), err
    assert "tinytrain bench needs_pkg" in lines[0] and "'tinytrain_test_no_such_package'" in lines[0]
    assert "pip install" in lines[0]
    assert main(["models"]) == 0             # the other commands are unaffected


def test_a_broken_import_of_the_project_is_never_hidden(fake_benches, capsys):
    assert main(["bench", "broken"]) == 1
    err = capsys.readouterr().err
    assert "internal error: ModuleNotFoundError" in err and "tinytrain.no_such_module" in err
    with pytest.raises(ModuleNotFoundError, match="tinytrain.no_such_module"):
        build_parser().parse_args(["bench", "broken"])


# --- errors: bad input, internal errors, --debug ----------------------------------------------------------

def failing(exc: BaseException):
    def cmd(args):
        raise exc
    return cmd


def test_bad_input_is_one_line_and_exit_2(monkeypatch, capsys):
    monkeypatch.setattr(cli_zoo, "cmd_models", failing(BadInput("--model must be one of a, b")))
    assert main(["models"]) == 2
    err = capsys.readouterr().err
    assert err == "tinytrain models: error: --model must be one of a, b\n"


def test_a_value_error_that_is_not_bad_input_is_reported_as_a_bug(monkeypatch, capsys):
    """Only the project's own BadInput reads as the user's mistake: a ValueError from inside a library (torch,
    numpy) or from our own code's bug is an internal error, exit 1."""
    monkeypatch.setattr(cli_zoo, "cmd_models", failing(ValueError("math domain error")))
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    assert "internal error: ValueError: math domain error" in err and "a bug in tinytrain" in err


@pytest.mark.parametrize("where", ["first", "last"])
def test_debug_prints_the_traceback_and_keeps_the_exit_status(monkeypatch, capsys, where):
    monkeypatch.setattr(cli_zoo, "cmd_models", failing(BadInput("bad value")))
    assert main(["--debug", "models"] if where == "first" else ["models", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "BadInput: bad value" in err
    assert err.strip().splitlines()[-1] == "tinytrain models: error: bad value"


def test_an_internal_error_says_so_in_one_line_with_the_debug_hint(monkeypatch, capsys):
    monkeypatch.setattr(cli_zoo, "cmd_models", failing(KeyError("layers")))
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("tinytrain models: internal error: KeyError: 'layers'")
    assert "--debug" in lines[0]
    monkeypatch.setattr(cli_zoo, "cmd_models", failing(RuntimeError("first line\nsecond line")))
    assert main(["models"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "first line" in lines[0]
    assert main(["models", "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "second line" in err
    assert err.strip().splitlines()[-1].startswith("tinytrain models: internal error: RuntimeError: first line")


def test_debug_after_a_double_dash_is_an_argument():
    assert take_debug_flag(["adapt", "--debug", "x", "--", "--debug"]) == (["adapt", "x", "--", "--debug"], True)
    assert take_debug_flag(["adapt", "--", "--debug"]) == (["adapt", "--", "--debug"], False)


# --- argparse's own errors: one line from the command that was given the argument -------------------------

def command_paths() -> list[list[str]]:
    """Every command and sub-command, as the words that name it: ['adapt'], ['data', 'stats'], ..."""
    import argparse

    def walk(parser, words):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            return [words]
        return [path for a in subs for name, child in a.choices.items() for path in walk(child, [*words, name])]
    return walk(build_parser(), [])


@pytest.mark.parametrize("flag", ["--bogus", "--bogus=3"])
def test_an_unknown_option_of_any_command_is_one_line_from_that_command(capsys, flag):
    paths = [p for p in command_paths() if p[0] != "bench"] + [["bench", "speed"]]
    assert len(paths) > 15
    for words in paths:
        with pytest.raises(SystemExit) as e:
            main([*words, flag])
        assert e.value.code == 2, words
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        prog = "tinytrain " + " ".join(words)
        assert captured.out == "" and len(lines) == 1, (words, captured.err)
        assert lines[0] == f"{prog}: error: unknown option {flag!r} (see `{prog} --help`)", words


def test_an_unknown_option_is_named_before_a_missing_required_one_with_the_likely_meant_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["adapt", "--suport", "photos"])           # a typo of --support, not a missing --support
    assert e.value.code == 2
    assert capsys.readouterr().err == ("tinytrain adapt: error: unknown option '--suport' (did you mean --support?) "
                                       "(see `tinytrain adapt --help`)\n")
    with pytest.raises(SystemExit) as e:
        main(["adapt"])                                  # nothing unknown: the missing one is named
    assert e.value.code == 2
    assert "the following arguments are required: --support (see `tinytrain adapt --help`)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["models", "extra"])
    assert e.value.code == 2
    assert capsys.readouterr().err == "tinytrain models: error: unknown argument 'extra' (see `tinytrain models --help`)\n"


def test_an_unknown_command_and_a_bad_value_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["nosuch"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "invalid choice: 'nosuch'" in err and "`tinytrain --help`" in err
    with pytest.raises(SystemExit) as e:
        main(["data", "stats", "folder", "--split", "nope"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("tinytrain data stats: error: argument --split: invalid choice: 'nope'")
    assert len(err.strip().splitlines()) == 1


def test_the_first_pass_leaves_required_arguments_required():
    parser = build_parser()
    required = [a for p in all_parsers(parser) for a in p._actions if a.required]
    with pytest.raises(SystemExit):
        parse_command_line(parser, ["adapt", "--bogus"])
    assert len(required) > 5 and all(a.required for a in required)


@pytest.mark.parametrize("argv", [
    ["export", "--model-dir", "", "--out", "x.onnx"],
    ["export", "--model-dir", "m", "--format", "c", "--out", "  "],
    ["predict", "--model-dir", "m", "a.png", ""],
    ["adapt", "--model", "tiny-test", "--support", "s", "--save", ""],
    ["eval", "--methods", "none", "--out", ""],
    ["data", "episodes", "", "--out", "e.json"],
])
def test_a_blank_value_is_refused_by_name_before_anything_runs(argv, tmp_path, monkeypatch, capsys):
    """'' as a path would be the current folder (`--out ''` writing here, `predict ''` reading every image
    below): refused in one line naming the flag or argument, exit 2, nothing written."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is empty" in err[0] and err[0].startswith(f"tinytrain {argv[0]}"), err
    assert ("argument" in err[0]) or any(f"{flag} is empty" in err[0] for flag in argv if flag.startswith("--"))
    assert list(tmp_path.iterdir()) == []
