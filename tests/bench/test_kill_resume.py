"""`tinytrain eval` killed with SIGKILL at several points, then resumed, gives exactly the records and the
accuracy table of a run that was never interrupted: nothing lost, nothing duplicated."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

from tinytrain.bench.results import ResultStore, record_key
from tinytrain.cli import main

TIMING = {"seconds", "fit_seconds", "selection_seconds", "train_seconds"}


def records(out) -> dict:
    recs = ResultStore(out / "results.jsonl").load()
    lines = [line for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    assert len(lines) == len(recs), "a key was written twice"
    return {record_key(r): {k: v for k, v in r.items() if k not in TIMING} for r in recs}


def lines_in(path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def test_eval_killed_at_several_points_matches_an_uninterrupted_run(folder, tmp_path, capsys):
    args = ["--model", "tiny-test", "--checkpoint", "random", "--domains", str(folder), "--methods",
            "none,lastlayer", "--tasks", "6", "--resolution", "32", "--iterations", "30", "--lr", "1e-3",
            "--mode", "fixed", "--ways", "3", "--shots", "2", "--queries", "3", "--workers", "1", "--no-progress"]
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    assert main(["eval", *args, "--out", str(clean)]) == 0
    want = records(clean)
    assert len(want) == 12

    results = killed / "results.jsonl"
    # kill points: as soon as the run folder exists (episodes being sampled), then after 2 and 6 results
    for point in ("config", 2, 6):
        err = tmp_path / f"stderr-{point}.txt"
        with open(err, "w") as stderr:
            proc = subprocess.Popen([sys.executable, "-m", "tinytrain", "eval", *args, "--out", str(killed)],
                                    stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if (point == "config" and (killed / "config.json").exists()) or \
                    (point != "config" and lines_in(results) >= point):
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended (exit {proc.poll()}) before the kill at {point}: {err.read_text()}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert len(ResultStore(results).load()) < 12
    assert main(["eval", *args, "--out", str(killed)]) == 0
    capsys.readouterr()
    assert records(killed) == want
    assert json.loads((killed / "accuracy.json").read_text()) == json.loads((clean / "accuracy.json").read_text())
    assert (killed / "episodes").is_dir() and sorted(p.name for p in (killed / "episodes").iterdir()) == \
        sorted(p.name for p in (clean / "episodes").iterdir())


def test_lr_search_killed_midway_resumes_where_it_stopped(folder, tmp_path, capsys):
    """The lr search keeps its records as they finish (lr_search.jsonl): a kill mid-search loses only the
    running job, the resume runs the missing ones, and the rates chosen equal an uninterrupted run's."""
    args = ["--model", "tiny-test", "--checkpoint", "random", "--domains", str(folder), "--methods",
            "none,lastlayer", "--tasks", "2", "--resolution", "32", "--iterations", "30", "--lr", "target-val",
            "--lr-grid", "1e-3,1e-2,3e-2", "--lr-episodes", "3", "--mode", "fixed", "--ways", "3", "--shots", "2",
            "--queries", "3", "--workers", "1", "--no-progress"]
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    assert main(["eval", *args, "--out", str(clean)]) == 0
    search = killed / "lr_search.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "tinytrain", "eval", *args, "--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and lines_in(search) < 3:
        time.sleep(0.02)
    assert proc.poll() is None, "the search finished before the kill; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = lines_in(search)
    assert 3 <= kept < 9 and not (killed / "lr.json").exists()
    assert main(["eval", *args, "--out", str(killed)]) == 0
    capsys.readouterr()
    assert lines_in(search) == 9                      # 3 rates x 3 episodes for lastlayer, each run once
    assert len(ResultStore(search).load()) == 9
    assert json.loads((killed / "lr.json").read_text()) == json.loads((clean / "lr.json").read_text())
    assert records(killed) == records(clean)


def test_a_launch_killed_while_writing_its_settings_resumes(folder, tmp_path, capsys):
    """config.json and config.sha256 are two files: a kill between them (or, before the digest was written
    atomically, inside it) left a digest that does not match. With no result made yet that is no edit to
    protect, so the next launch starts over; once results exist, a mismatch is still refused."""
    args = ["--model", "tiny-test", "--checkpoint", "random", "--domains", str(folder), "--methods", "none",
            "--tasks", "2", "--resolution", "32", "--iterations", "2", "--lr", "1e-3", "--mode", "fixed",
            "--ways", "3", "--shots", "2", "--queries", "2", "--workers", "1", "--no-progress"]
    clean = tmp_path / "clean"
    assert main(["eval", *args, "--out", str(clean)]) == 0
    want = records(clean)
    for left in ("empty", "half", "other settings"):
        run = tmp_path / left.replace(" ", "-")
        run.mkdir()
        (run / "config.json").write_text((clean / "config.json").read_text())
        digest = (clean / "config.sha256").read_text()
        if left == "other settings":          # a restart over other settings killed after config.json, before its digest
            stored = json.loads((clean / "config.json").read_text())
            stored["tasks"] = 3
            digest = hashlib.sha256(json.dumps(stored, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        (run / "config.sha256").write_text({"empty": "", "half": digest[:20]}.get(left, digest))
        (run / "episodes").mkdir()
        (run / "episodes" / ".data-0.json.k3j9.tmp").write_text('{"meta": {"dom')     # a half-written episode file
        assert main(["eval", *args, "--out", str(run)]) == 0, left
        capsys.readouterr()
        assert records(run) == want
        assert sorted(p.name for p in (run / "episodes").iterdir()) == sorted(p.name for p in (clean / "episodes").iterdir())
        assert (run / "config.sha256").read_text() == (clean / "config.sha256").read_text()
    (run / "config.sha256").write_text("")                     # results exist now: an unmatched digest is refused
    assert main(["eval", *args, "--out", str(run)]) == 2
    assert "edited after the run began" in capsys.readouterr().err
    searched = tmp_path / "searched"                           # so is it once a learning-rate search has begun
    searched.mkdir()
    (searched / "config.json").write_text((clean / "config.json").read_text())
    (searched / "config.sha256").write_text("")
    (searched / "lr_search.jsonl").write_text("")
    assert main(["eval", *args, "--out", str(searched)]) == 2
    assert "edited after the run began" in capsys.readouterr().err
    assert (searched / "lr_search.jsonl").exists()
