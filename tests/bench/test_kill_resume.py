"""`tinytrain eval` killed with SIGKILL at several points, then resumed, gives exactly the records and the
accuracy table of a run that was never interrupted: nothing lost, nothing duplicated."""
from __future__ import annotations

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
        proc = subprocess.Popen([sys.executable, "-m", "tinytrain", "eval", *args, "--out", str(killed)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if (point == "config" and (killed / "config.json").exists()) or \
                    (point != "config" and lines_in(results) >= point):
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the run finished before the kill at {point}; make it longer"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert len(ResultStore(results).load()) < 12
    assert main(["eval", *args, "--out", str(killed)]) == 0
    capsys.readouterr()
    assert records(killed) == want
    assert json.loads((killed / "accuracy.json").read_text()) == json.loads((clean / "accuracy.json").read_text())
    assert (killed / "episodes").is_dir() and sorted(p.name for p in (killed / "episodes").iterdir()) == \
        sorted(p.name for p in (clean / "episodes").iterdir())
