import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace

import pytest

from tinytrain.bench.ablations import build_variants
from tinytrain.data.episodes import EpisodeSpec
from tinytrain.bench.evalconfig import EvalConfig
from tinytrain.bench.harness import run_eval
from tinytrain.bench.results import ResultStore, record_key
from tinytrain.bench.summary import write_run_report
from tinytrain.cli import main


def tiny_config(folder, methods=("none", "lastlayer", "tinytrain"), tasks=3, **kw) -> EvalConfig:
    return EvalConfig(model="tiny-test", checkpoint="random", domains=[str(folder)],
                      variants=build_variants(list(methods), **kw), tasks=tasks, resolution=32, iterations=2,
                      lr=1e-3, compute_budget=1.0, episodes=EpisodeSpec("fixed", 3, 2, 3))


def keys(out):
    return Counter(record_key(r) for r in ResultStore(out / "results.jsonl").load())


def test_interrupted_run_resumes_without_loss_or_duplicates(folder, tmp_path):
    cfg, out = tiny_config(folder), tmp_path / "run"
    first = run_eval(cfg, out, progress=False, log=lambda s: None, max_jobs=4)     # "killed" after 4 results
    assert len(first) == 4
    episodes_before = (out / "episodes").glob("*.json")
    snapshot = {p.name: p.read_text() for p in episodes_before}
    head = (out / "results.jsonl").read_text()
    with open(out / "results.jsonl", "a") as f:        # and the kill hit in the middle of a write
        f.write('{"domain": "x", "task": 9, "meth')
    records = run_eval(cfg, out, progress=False, log=lambda s: None)
    k = keys(out)
    assert len(records) == len(k) == 3 * 3 and set(k.values()) == {1}
    assert (out / "results.jsonl").read_text().startswith(head)        # nothing already written is lost
    assert {p.name: p.read_text() for p in (out / "episodes").glob("*.json")} == snapshot   # episodes reused
    # every method saw the identical episodes: same support/query sizes per task
    by_task = {}
    for r in records:
        by_task.setdefault(r["task"], set()).add((r["ways"], r["support"], r["query"]))
    assert all(len(v) == 1 for v in by_task.values())
    # a third run has nothing left to do
    assert len(run_eval(cfg, out, progress=False, log=lambda s: None)) == 9


def test_resume_with_different_settings_is_refused(folder, tmp_path):
    out = tmp_path / "run"
    run_eval(tiny_config(folder, methods=("none",), tasks=2), out, progress=False, log=lambda s: None)
    with pytest.raises(ValueError, match="tasks: stored 2 vs now 5"):
        run_eval(tiny_config(folder, methods=("none",), tasks=5), out, progress=False, log=lambda s: None)
    # a directory without any result yet (a first attempt that failed early) takes new settings
    empty = tmp_path / "empty"
    run_eval(tiny_config(folder, methods=("none",), tasks=2), empty, progress=False, log=lambda s: None, max_jobs=0)
    recs = run_eval(tiny_config(folder, methods=("none",), tasks=4), empty, progress=False, log=lambda s: None)
    assert len(recs) == 4


def test_worker_pool_matches_single_process(folder, tmp_path):
    cfg = tiny_config(folder, methods=("none", "lastlayer"), tasks=2)
    serial = run_eval(cfg, tmp_path / "a", workers=1, progress=False, log=lambda s: None)
    pooled = run_eval(cfg, tmp_path / "b", workers=2, progress=False, log=lambda s: None)
    acc = lambda recs: {record_key(r): round(r["accuracy"], 6) for r in recs}
    assert acc(serial) == acc(pooled) and len(pooled) == 4


def test_report_files_and_plots(folder, tmp_path):
    cfg = tiny_config(folder, tasks=2, budgets=[48 * 1024, 96 * 1024])
    out = tmp_path / "run"
    records = run_eval(cfg, out, progress=False, log=lambda s: None)
    text, files = write_run_report(out, cfg, records)
    names = {f.name for f in files}
    assert {"report.md", "accuracy.md", "accuracy.csv", "accuracy.json", "costs.md", "costs.csv", "costs.json",
            "layers.json", "ablation_budget.json"} <= names
    pngs = [f for f in files if f.suffix == ".png"]
    assert len(pngs) >= 3 and all(f.stat().st_size > 1000 for f in pngs)
    acc = json.loads((out / "accuracy.json").read_text())["rows"]
    none_avg = next(r for r in acc if r["method"] == "none" and r["domain"] == "average")
    expect = sum(r["accuracy"] for r in records if r["method"] == "none") / 2
    assert none_avg["accuracy"] == pytest.approx(expect) and none_avg["tasks"] == 2
    costs = {r["method"]: r for r in json.loads((out / "costs.json").read_text())["rows"]}
    assert costs["tinytrain"]["predicted_memory_bytes"] > 0 and costs["none"]["backward_macs"] == 0
    assert "| tinytrain |" in text and "tinytrain@48.0KiB" in text


def test_cli_eval_kill_and_resume(folder, tmp_path):
    out = tmp_path / "cli"
    args = ["--model", "tiny-test", "--checkpoint", "random", "--domains", str(folder), "--methods",
            "none,lastlayer", "--tasks", "6", "--resolution", "32", "--iterations", "30", "--lr", "1e-3",
            "--mode", "fixed", "--ways", "3", "--shots", "2", "--queries", "3", "--workers", "1",
            "--out", str(out), "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "tinytrain", "eval", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results, deadline = out / "results.jsonl", time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if results.exists() and results.read_text().count("\n") >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = keys(out)
    assert 2 <= sum(partial.values()) < 12 and set(partial.values()) == {1}
    assert main(["eval", *args]) == 0
    k = keys(out)
    assert len(k) == 12 and set(k.values()) == {1}


def test_cli_rejects_unknown_method(folder, tmp_path, capsys):
    rc = main(["eval", "--model", "tiny-test", "--domains", str(folder), "--methods", "nonsense",
               "--out", str(tmp_path / "x")])
    assert rc == 2 and "unknown method(s) nonsense" in capsys.readouterr().err


def test_per_method_learning_rates(folder, tmp_path):
    from tinytrain.cli.evaluate import _lr
    assert _lr("auto") == "auto" and _lr("1e-3") == 1e-3
    lr = _lr("lastlayer=1e-4,default=1e-2")
    assert lr == {"lastlayer": 1e-4, "default": 1e-2}
    cfg = replace(tiny_config(folder, methods=("none", "lastlayer"), tasks=1), lr=lr)
    records = run_eval(cfg, tmp_path / "r", progress=False, log=lambda s: None)
    assert {r["method"]: r["lr"] for r in records} == {"none": 1e-2, "lastlayer": 1e-4}
    with pytest.raises(ValueError, match="unknown method"):
        run_eval(replace(cfg, lr={"lastlayr": 1e-3}), tmp_path / "s", progress=False, log=lambda s: None)


def test_meta_ablation_runs_methods_on_a_second_checkpoint(folder, tmp_path):
    import torch
    from tinytrain.models.backbone import build_backbone
    from tinytrain.models.weights import save_checkpoint
    torch.manual_seed(1)
    ckpt = save_checkpoint(tmp_path / "other.safetensors", build_backbone("tiny-test"))
    cfg = tiny_config(folder, methods=("none",), tasks=2, meta_checkpoint=str(ckpt))
    out = tmp_path / "run"
    records = run_eval(cfg, out, progress=False, log=lambda s: None)
    assert sorted({r["method"] for r in records}) == ["none", "none@other"]
    assert {r["checkpoint"] for r in records if r["method"] == "none@other"} == {str(ckpt)}
    text, files = write_run_report(out, cfg, records)
    assert "Meta-training ablation" in text and (out / "ablation_meta.png").exists()
    main_acc = json.loads((out / "accuracy.json").read_text())["rows"]
    assert {r["method"] for r in main_acc} == {"none"}        # the main table holds only the main methods
