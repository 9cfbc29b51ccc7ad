"""Property-based tests of the command line (cli.main with argv, in-process): any text in a flag either runs, or
exits 2 with one `tinytrain CMD: error:` line that names the flag; never a traceback, never 'internal error'.

Numeric flags of adapt are checked as the command line is read: a bad one is refused before the support folder
is looked at (the tests give a folder that does not exist: a valid value reaches that error instead).
"""
from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinytrain.cli import main

SETTINGS = settings(max_examples=40, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
TINY = ["--model", "tiny-test", "--checkpoint", "random"]
MISSING = "/nonexistent-tinytrain-support"

NUMBER_TEXT = st.one_of(
    st.integers(min_value=-10 ** 6, max_value=10 ** 6).map(str), st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["1e20", "1e400", "2.5", "40", "0", "-1", "1e-3", "abc", "", " 7 ", "0x10", "1_000", "٣", "+5"]),
    st.text(max_size=8),
)


def run(capsys, argv: list[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as e:           # argparse's own checks exit while the command line is read
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(code: int, err: str, command: str, *names: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith(f"tinytrain {command}: error: "), err
    assert "Traceback" not in err and "internal error" not in err, err
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


@SETTINGS
@given(st.sampled_from(["--iterations", "--lr", "--seed", "--resolution"]), NUMBER_TEXT)
def test_adapt_numeric_flags_are_checked_before_the_support_folder(capsys, flag, text):
    start = time.perf_counter()
    code, _, err = run(capsys, ["adapt", *TINY, "--support", MISSING, f"{flag}={text}"])
    line = one_error_line(code, err, "adapt")
    if f"argument {flag}:" in line:
        assert repr(text) in line                               # the value given, quoted
        assert time.perf_counter() - start < 1.0                # refused as the command line is read
    else:
        assert MISSING in line and "does not exist" in line     # a valid value: the next problem is the folder


@SETTINGS
@given(st.sampled_from(["--memory-budget", "--compute-budget", "--option", "--background", "--method",
                        "--device"]),
       st.one_of(NUMBER_TEXT, NUMBER_TEXT.map(lambda t: t + "MB"), NUMBER_TEXT.map(lambda t: t + "%"),
                 st.sampled_from(["bias=maybe", "augment_p=2", "x=1", "=", "1,2,3", "#12345g", "tinytrain"])))
def test_adapt_text_flags_run_into_the_folder_or_name_the_flag(capsys, flag, text):
    argv = ["adapt", *TINY, "--support", MISSING, f"{flag}={text}"]
    if flag == "--option":
        argv += ["--method", "fulltrain"]
    code, _, err = run(capsys, argv)
    line = one_error_line(code, err, "adapt")
    if MISSING not in line:
        named = {"--device": "device", "--method": "method"}.get(flag, flag)
        assert named in line, line


@SETTINGS
@given(NUMBER_TEXT)
def test_predict_top_is_checked_as_the_command_line_is_read(capsys, text):
    code, _, err = run(capsys, ["predict", "--model-dir", MISSING, f"--top={text}", "x.png"])
    line = one_error_line(code, err, "predict")
    if "argument --top:" not in line:
        assert MISSING in line                                   # a valid --top: the folder is next


@SETTINGS
@given(NUMBER_TEXT)
def test_profile_resolution_runs_or_names_the_flag(capsys, text):
    code, out, err = run(capsys, ["profile", "tiny-test", f"--resolution={text}", "--json"])
    if code == 0:
        assert out.strip().startswith("{") and not err.strip()
        return
    one_error_line(code, err, "profile", "--resolution")


@SETTINGS
@given(st.sampled_from(["--memory-budget", "--compute-budget", "--seed"]),
       st.one_of(NUMBER_TEXT, NUMBER_TEXT.map(lambda t: t + "KB"), NUMBER_TEXT.map(lambda t: t + "%")))
def test_plan_budgets_run_or_name_the_flag(capsys, flag, text):
    argv = ["plan", *TINY, "--resolution", "32", "--method", "fulltrain", f"{flag}={text}", "--json"]
    code, out, err = run(capsys, argv)
    if code == 0:
        assert out.strip().startswith("{")
        return
    one_error_line(code, err, "plan", flag)
