"""`tinytrain eval` on plain class folders with its defaults (issue 24): every method finishes every episode;
learning rates are checked up front; a diverged job is recorded as diverged, never as an accuracy; tables
compare methods only over the tasks all of them finished; run folders that were edited are refused."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tinytrain.bench.evalconfig import DEFAULT_LR_GRID, EvalConfig, Variant
from tinytrain.bench.report import comparable_records
from tinytrain.bench.results import ResultStore
from tinytrain.bench.summary import write_run_report
from tinytrain.cli import main

from .conftest import make_folder_dataset

TINY = ["--model", "tiny-test", "--checkpoint", "random", "--resolution", "32", "--workers", "1", "--no-progress"]


def one_error_line(capsys, *names) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tinytrain "), err
    assert "Traceback" not in err
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def two_folders(tmp_path_factory):
    """Two plain class folders as a user has them: 10 and 12 classes of 12 images, no class splits."""
    root = tmp_path_factory.mktemp("mine")
    a = make_folder_dataset(root / "classA", classes=10, per_class=12, seed=1)
    b = make_folder_dataset(root / "classB", classes=12, per_class=12, seed=2)
    return str(a), str(b)


def test_eval_with_every_default_finishes_every_method_on_every_episode(two_folders, tmp_path, capsys):
    """Defaults: all methods, Meta-Dataset episodes, --lr auto. Only the size of the run (tiny model, 3 tasks,
    1 iteration) is set. Before: --lr auto fell back to --lr support, whose per-task split fails on episodes
    whose classes all have one support image; the run exited 1 with unequal task counts per method."""
    out = tmp_path / "run"
    code = main(["eval", "--domains", ",".join(two_folders), *TINY, "--tasks", "3", "--iterations", "1",
                 "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "--lr target-val" in text                    # said, and recorded
    assert json.loads((out / "config.json").read_text())["lr"] == "target-val"
    # the sampled episodes include the case that broke the per-task split: one support image per class
    shots = [max(len([s for s in ep["support"] if s[0] == c]) for c in range(len(ep["classes"])))
             for f in (out / "episodes").glob("*[0-9a-f].json") for ep in json.loads(f.read_text())["episodes"]]
    assert 1 in shots, "the test must cover an episode whose classes all have one support image"
    records = ResultStore(out / "results.jsonl").load()
    methods = [v["label"] for v in json.loads((out / "config.json").read_text())["variants"]]
    assert len(methods) == 6
    assert {(r["domain"], r["task"], r["method"]) for r in records} == \
        {(d, t, m) for d in two_folders for t in range(3) for m in methods}
    assert all(r["accuracy"] is not None and r["diverged"] is None for r in records)
    assert not (out / "failures.json").exists()
    table = json.loads((out / "accuracy.json").read_text())["rows"]
    assert {row["tasks"] for row in table if row["domain"] != "average"} == {3}   # every method, the same tasks
    chosen = json.loads((out / "lr.json").read_text())
    assert set(chosen) == set(two_folders)
    assert all(set(e["chosen"].values()) <= set(DEFAULT_LR_GRID) for e in chosen.values())


def test_lr_support_refuses_episodes_it_cannot_split_before_any_training(two_folders, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["eval", "--domains", ",".join(two_folders), *TINY, "--tasks", "3", "--iterations", "1",
                 "--methods", "none,lastlayer", "--lr", "support", "--out", str(out)])
    assert code == 2
    one_error_line(capsys, "--lr support", "one support image per class", "--lr target-val")
    assert not (out / "results.jsonl").exists()


def test_default_lr_grid_is_one_constant_with_zero():
    from tinytrain.cli import build_parser
    from tinytrain.cli.evaluate import config_from_args
    assert 0.0 in DEFAULT_LR_GRID and EvalConfig().lr_grid == DEFAULT_LR_GRID
    args = build_parser().parse_args(["eval", "--model", "tiny-test", "--checkpoint", "random", "--methods", "none",
                                      "--domains", "pocket-digits", "--resolution", "32"])
    assert config_from_args(args).lr_grid == DEFAULT_LR_GRID


@pytest.mark.parametrize("extra, flag", [
    (["--lr", "inf"], "--lr"), (["--lr", "1e30"], "--lr"), (["--lr", "nan"], "--lr"), (["--lr=-1e-3"], "--lr"),
    (["--lr", "0"], "--lr"), (["--lr", "fulltrain=inf,default=1e-3"], "--lr fulltrain="),
    (["--lr", "lastlayer=nan"], "--lr lastlayer="), (["--lr", "auto", "--lr-grid", "0,inf"], "--lr-grid"),
    (["--lr", "auto", "--lr-grid", "1e-3,nan"], "--lr-grid"), (["--lr", "auto", "--lr-grid", "1e5"], "--lr-grid"),
    (["--lr", "lastlayer"], "--lr"),
    (["--iterations", "100000000000000000000"], "--iterations"), (["--iterations", "100001"], "--iterations"),
    (["--memory-budget", "1e400"], "--memory-budget: memory size '1e400'"),
    (["--compute-budget", "1e400"], "--compute-budget: compute budget '1e400'"),
])
def test_bad_rates_iterations_and_budgets_are_refused_up_front(tmp_path, capsys, extra, flag):
    data = make_folder_dataset(tmp_path / "data", classes=5, per_class=4)
    out = tmp_path / "run"
    code = main(["eval", "--domains", str(data), *TINY, "--tasks", "1", "--iterations", "1",
                 "--methods", "none,lastlayer", "--out", str(out), *extra])
    assert code == 2
    one_error_line(capsys, flag)
    assert not out.exists()                              # decided before anything was written


def test_a_diverged_job_is_recorded_as_diverged_never_as_an_accuracy(tmp_path, capsys):
    data = make_folder_dataset(tmp_path / "data", classes=5, per_class=6)
    out = tmp_path / "run"
    code = main(["eval", "--domains", str(data), *TINY, "--tasks", "2", "--iterations", "10", "--lr", "50",
                 "--methods", "none,fulltrain", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 2
    assert "2 of 4 jobs diverged (fulltrain: 2, at lr 50)" in text and "never as accuracies" in text
    records = {r["method"]: r for r in ResultStore(out / "results.jsonl").load()}
    assert records["fulltrain"]["accuracy"] is None and records["fulltrain"]["diverged"]
    assert records["none"]["accuracy"] is not None
    rows = {row["method"]: row for row in json.loads((out / "accuracy.json").read_text())["rows"]
            if row["domain"] == str(data)}
    assert rows["fulltrain"]["tasks"] == 0 and rows["fulltrain"]["accuracy"] is None
    report = (out / "report.md").read_text()
    assert "diverged, no accuracy" in report and f"fulltrain on {data} (2 tasks)" in report
    # a resume does not retry them (the same settings diverge again) and says so again
    assert main(["eval", "--domains", str(data), *TINY, "--tasks", "2", "--iterations", "10", "--lr", "50",
                 "--methods", "none,fulltrain", "--out", str(out)]) == 2
    assert "resuming: 4 results" in capsys.readouterr().out


def rec(domain, task, method, acc=0.5, diverged=None):
    return {"domain": domain, "task": task, "method": method, "accuracy": acc, "diverged": diverged,
            "predicted_memory_bytes": 0, "backward_macs": 0, "seconds": 0.1}


def test_tables_compare_methods_only_over_the_tasks_all_of_them_finished(tmp_path):
    records = ([rec("d", t, "tinytrain", 0.9) for t in range(4)] + [rec("d", t, "none", 0.5) for t in range(2)]
               + [rec("d", 2, "none", None, "the training loss became nan")])
    kept, notes = comparable_records(records, ["none", "tinytrain"], ["d"])
    assert sorted((r["method"], r["task"]) for r in kept) == [("none", 0), ("none", 1), ("tinytrain", 0),
                                                               ("tinytrain", 1)]
    assert any("only the 2 tasks that every method finished" in n for n in notes)
    assert any("diverged" in n and "none on d (1 task)" in n for n in notes)
    config = EvalConfig(domains=["d"], variants=[Variant("none", "none"), Variant("tinytrain", "tinytrain")])
    text, _ = write_run_report(tmp_path, config, records)
    assert "tasks per (domain, method): 2;" in text
    rows = json.loads((tmp_path / "paired.json").read_text())["rows"]
    assert {r["tasks"] for r in rows if r["domain"] == "d"} == {2}


def small_run(folder, out) -> list[str]:
    return ["eval", "--domains", str(folder), *TINY, "--tasks", "2", "--iterations", "1", "--lr", "1e-3",
            "--methods", "none,lastlayer", "--mode", "fixed", "--ways", "3", "--shots", "2", "--queries", "2",
            "--out", str(out)]


def test_a_record_without_accuracy_is_left_out_and_rerun(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(small_run(folder, out)) == 0
    path = out / "results.jsonl"
    lines = path.read_text().splitlines()
    broken = json.loads(lines[1])
    del broken["accuracy"]
    path.write_text("\n".join([lines[0], json.dumps(broken), *lines[2:]]) + "\n")
    capsys.readouterr()
    assert main(["eval-report", str(out)]) == 0                   # before: KeyError traceback
    assert "1 line(s) of" in capsys.readouterr().out
    assert main(small_run(folder, out)) == 0                      # the resume runs that job again
    assert "running those jobs again" in capsys.readouterr().out
    assert len(ResultStore(path).load()) == 4


def test_an_edited_config_json_is_refused_by_eval_report(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(small_run(folder, out)) == 0
    capsys.readouterr()
    assert main(["eval-report", str(out)]) == 0
    capsys.readouterr()
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**cfg, "iterations": 400}, indent=1))
    before = (out / "report.md").read_text()
    assert main(["eval-report", str(out)]) == 2
    one_error_line(capsys, str(out / "config.json"), "edited")
    assert (out / "report.md").read_text() == before             # the report was not rewritten
    assert main(small_run(folder, out)) == 2                       # nor does a resume trust it
    one_error_line(capsys, "edited")
    (out / "config.json").write_text(json.dumps({**cfg, "tasks": "two"}))
    (out / "config.sha256").unlink()                              # even without the digest: types are checked
    assert main(["eval-report", str(out)]) == 2
    one_error_line(capsys, str(out / "config.json"))
    (out / "config.json").write_text("{not json")
    assert main(["eval-report", str(out)]) == 2
    one_error_line(capsys, "config.json", "not valid JSON")


def test_sigterm_to_a_multi_worker_eval_keeps_records_and_prints_one_line(folder, tmp_path):
    out = tmp_path / "run"
    args = small_run(folder, out)
    args[args.index("--tasks") + 1] = "40"
    args[args.index("--iterations") + 1] = "20"
    args[args.index("--workers") + 1] = "2"
    proc = subprocess.Popen([sys.executable, "-m", "tinytrain", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    results = out / "results.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and \
            (not results.exists() or results.read_text().count("\n") < 2):
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before the signal; make it longer"
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert [line for line in err.splitlines() if line.strip()] == \
        ["interrupted; finished work is kept and the same command resumes it"]
    kept = ResultStore(results).load()
    assert 2 <= len(kept) < 80


def test_bench_mcu_at_its_timeout_is_one_line(tmp_path, monkeypatch, capsys):
    """The emulated board run past --timeout: the limit the user set, named, exit 2 (before: 'internal
    error'); the builds before it are stand-ins here (they need the cross tools)."""
    import tinytrain.mcu.bench as mb

    def late(*args, **kwargs):
        raise RuntimeError("the emulated Cortex-M7 run did not finish within 5 s")

    for name, value in [("require_cross_tools", lambda: None), ("write_bench_data", lambda *a, **k: None),
                        ("build_host", lambda *a, **k: (None, "")), ("run_host", lambda *a, **k: ""),
                        ("parse_output", lambda text: text), ("build_board", lambda *a, **k: (None, "")),
                        ("elf_sizes", lambda *a, **k: None), ("run_board", late)]:
        monkeypatch.setattr(mb.build, name, value)
    monkeypatch.setattr(mb, "prepare", lambda model_dir: None)
    monkeypatch.setattr(mb, "bench_images", lambda *a: (None, None, None, None, None))
    monkeypatch.setattr(mb, "write_tree", lambda *a: None)
    assert main(["bench", "mcu", "--model-dir", str(tmp_path), "--timeout", "5"]) == 2
    one_error_line(capsys, "--timeout 5 s", "raise --timeout").startswith("tinytrain bench")
    for bad in ("0", "-3", "inf", "nan"):
        assert main(["bench", "mcu", "--model-dir", str(tmp_path), f"--timeout={bad}"]) == 2
        one_error_line(capsys, "--timeout must be a positive number")
