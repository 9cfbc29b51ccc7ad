"""Property-based tests of an evaluation run folder the user can edit or damage: results.jsonl, the stored
episodes, config.json and config.sha256, each changed at random, then `tinytrain eval-report DIR` and a resumed
`tinytrain eval --out DIR`.

Each command either succeeds with valid output or refuses in one line (exit 2) naming the file at fault; never a
traceback or an "internal error", and a refusal leaves the files it read exactly as they were.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.bench.conftest import make_folder_dataset
from tinytrain.bench.results import ResultStore
from tinytrain.cli import main

# TINYTRAIN_PROPERTY_EXAMPLES=300 explores deeper (the suite's default keeps it to seconds)
EXAMPLES = int(os.environ.get("TINYTRAIN_PROPERTY_EXAMPLES", "25"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
JSON = st.recursive(st.none() | st.booleans() | st.integers(min_value=-10 ** 20, max_value=10 ** 20)
                    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=6),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                               max_size=2), max_leaves=4)
TASKS, METHODS = 2, ("none", "lastlayer")


def eval_args(data: Path) -> list[str]:
    return ["--model", "tiny-test", "--checkpoint", "random", "--domains", str(data), "--methods", ",".join(METHODS),
            "--tasks", str(TASKS), "--resolution", "32", "--iterations", "2", "--lr", "1e-3", "--mode", "fixed",
            "--ways", "3", "--shots", "2", "--queries", "2", "--workers", "1", "--no-progress"]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A finished run of two methods on two tasks of a class-folder domain."""
    root = tmp_path_factory.mktemp("runfolder")
    data = make_folder_dataset(root / "data")
    out = root / "run"
    assert main(["eval", *eval_args(data), "--out", str(out)]) == 0
    return data, out


def inputs(run: Path) -> dict[str, bytes]:
    """The files a command reads back (what a refusal must leave as it was)."""
    names = ["config.json", "config.sha256", "results.jsonl"] + [f"episodes/{p.name}" for p in
                                                                 (run / "episodes").iterdir()]
    return {n: (run / n).read_bytes() for n in names if (run / n).is_file()}


# --- damage ------------------------------------------------------------------------------------------------

def damage_record(run: Path, which: int, key: str | None, value, delete: bool) -> str:
    path = run / "results.jsonl"
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rec = json.loads(lines[which % len(lines)])
    key = key if key is not None else sorted(rec)[abs(hash(str(value))) % len(rec)]
    if delete:
        rec.pop(key, None)
    else:
        rec[key] = value
    lines[which % len(lines)] = json.dumps(rec)
    path.write_text("\n".join(lines) + "\n")
    return "results.jsonl"


def damage_json_file(run: Path, name: str, path_in_doc: list, value, delete: bool) -> str:
    path = run / name
    doc = json.loads(path.read_text())
    node = doc
    for step in path_in_doc[:-1]:
        if isinstance(node, dict) and node:
            node = node[sorted(node)[step % len(node)]]
        elif isinstance(node, list) and node:
            node = node[step % len(node)]
        else:
            break
    if isinstance(node, dict) and node:
        key = sorted(node)[path_in_doc[-1] % len(node)]
        if delete:
            del node[key]
        else:
            node[key] = value
    elif isinstance(node, list) and node:
        i = path_in_doc[-1] % len(node)
        if delete:
            node.pop(i)
        else:
            node[i] = value
    path.write_text(json.dumps(doc))
    return name


def damage_bytes(run: Path, name: str, data: bytes, keep: float) -> str:
    path = run / name
    old = path.read_bytes()
    path.write_bytes(old[: int(len(old) * keep)] + data)
    return name


RECORD_KEYS = st.sampled_from([None, "accuracy", "method", "domain", "task", "lr", "plan", "predicted_memory_bytes",
                               "backward_macs", "key", "checkpoint", "options", "diverged"])


def damages(run_files: list[str]):
    json_files = [n for n in run_files if n.endswith(".json")]
    return st.one_of(
        st.tuples(st.just("record"), st.integers(0, 10), RECORD_KEYS, JSON, st.booleans()),
        st.tuples(st.just("json"), st.sampled_from(json_files), st.lists(st.integers(0, 50), min_size=1, max_size=4),
                  JSON, st.booleans()),
        st.tuples(st.just("bytes"), st.sampled_from(run_files), st.binary(max_size=20),
                  st.sampled_from([0.0, 0.3, 0.7, 1.0])),
    )


def apply(run: Path, damage: tuple) -> str:
    kind, *rest = damage
    if kind == "record":
        return damage_record(run, *rest)
    if kind == "json":
        return damage_json_file(run, *rest)
    return damage_bytes(run, *rest)


def check_outcome(code: int, err: str, command: str, before: dict[str, bytes], run: Path) -> None:
    assert "Traceback" not in err and "internal error" not in err, err
    assert code in (0, 2), (code, err)
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("note:", "tinytrain: note"))]
        assert len(lines) == 1 and lines[0].startswith(f"tinytrain {command}: error: "), err
        assert str(run) in lines[0] or "--out" in lines[0], err
        assert inputs(run) == before, "a refusal changed the files it read"


def run_files(template) -> list[str]:
    return sorted(inputs(template[1]))


def test_the_template_run_is_complete(template):
    assert len(ResultStore(template[1] / "results.jsonl").load()) == TASKS * len(METHODS)


@contextlib.contextmanager
def damaged_copy(template, data):
    """A copy of the template run with one random damage: (run folder, the files it reads back as damaged)."""
    damage = data.draw(damages(run_files(template)))
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(template[1], run)
        apply(run, damage)
        yield run, inputs(run)


@SETTINGS
@given(data=st.data())
def test_eval_report_on_a_damaged_run_folder_reports_or_refuses_in_one_line(template, data, capsys):
    with damaged_copy(template, data) as (run, before):
        capsys.readouterr()
        code = main(["eval-report", str(run)])
        check_outcome(code, capsys.readouterr().err, "eval-report", before, run)
        if code == 0:
            table = json.loads((run / "accuracy.json").read_text())
            assert isinstance(table, (dict, list))


@settings(SETTINGS, max_examples=max(1, EXAMPLES // 2))
@given(data=st.data())
def test_resuming_a_damaged_run_folder_finishes_validly_or_refuses_in_one_line(template, data, capsys):
    folder = template[0]
    with damaged_copy(template, data) as (run, before):
        capsys.readouterr()
        try:
            code = main(["eval", *eval_args(folder), "--out", str(run)])
        except SystemExit as exc:
            code = exc.code
        check_outcome(code, capsys.readouterr().err, "eval", before, run)
        if code == 0:     # every job has one valid record: a damaged one was redone, never kept
            recs = ResultStore(run / "results.jsonl").load()
            assert len({(r["method"], r["domain"], r["task"]) for r in recs}) == TASKS * len(METHODS)
            assert all(isinstance(r["accuracy"], float) and 0.0 <= r["accuracy"] <= 1.0 for r in recs)
