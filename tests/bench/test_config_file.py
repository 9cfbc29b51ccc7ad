"""`tinytrain eval --config FILE`: every run setting from one JSON file (a run's config.json), so a table is
reproduced by one file; other run settings beside it are refused, never silently overridden."""
from __future__ import annotations

import json

import pytest

from tinytrain.bench.results import ResultStore, record_key
from tinytrain.cli import main

ARGS = ["--model", "tiny-test", "--checkpoint", "random", "--methods", "none,lastlayer", "--tasks", "2",
        "--resolution", "32", "--iterations", "2", "--lr", "1e-3", "--mode", "fixed", "--ways", "3", "--shots",
        "2", "--queries", "2", "--workers", "1", "--no-progress"]
TIMING = {"seconds", "fit_seconds", "selection_seconds", "train_seconds"}


def _records(out) -> dict:
    return {record_key(r): {k: v for k, v in r.items() if k not in TIMING}
            for r in ResultStore(out / "results.jsonl").load()}


def test_a_runs_config_json_reproduces_its_records(folder, tmp_path, capsys):
    first, again = tmp_path / "first", tmp_path / "again"
    assert main(["eval", *ARGS, "--domains", str(folder), "--out", str(first)]) == 0
    assert main(["eval", "--config", str(first / "config.json"), "--workers", "1", "--no-progress",
                 "--out", str(again)]) == 0
    capsys.readouterr()
    assert _records(again) == _records(first) and len(_records(first)) == 4
    assert json.loads((again / "config.json").read_text()) == json.loads((first / "config.json").read_text())


@pytest.mark.parametrize("content,extra,message", [
    (None, ["--tasks", "3"], "leave out --tasks"),
    ("[1, 2]", [], "one JSON object"),
    ("{not json", [], "not a readable JSON file"),
    ('{"domains": ["x"], "variants": [{"label": "n", "method": "none"}], "tasks": 2.5}', [], "--tasks must be"),
    ('{"domains": ["x"], "variants": [], "bogus": 1}', [], "bogus"),
])
def test_a_bad_config_file_is_one_line(tmp_path, capsys, content, extra, message):
    path = tmp_path / "c.json"
    if content is not None:
        path.write_text(content)
    else:
        path.write_text(json.dumps({"domains": ["x"], "variants": [{"label": "none", "method": "none"}]}))
    out = tmp_path / "out"
    assert main(["eval", "--config", str(path), *extra, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()


def test_a_missing_config_file_is_one_line(tmp_path, capsys):
    assert main(["eval", "--config", str(tmp_path / "nope.json"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err
