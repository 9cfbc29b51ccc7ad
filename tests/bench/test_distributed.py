"""`tinytrain eval` over torch.distributed (gloo, CPU): two ranks under torchrun give the records of one process,
a rank killed mid-run is resumed by one process without losing or duplicating a record, and two launches never
share a run folder."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinytrain.bench.distributed import (LOCK_NAME, STALE_AFTER_S, Ranks, RunLocked, acquire_lock, rank_device,
                                         release_lock, run_lock)
from tinytrain.bench.results import ResultStore, record_key, shard_paths
from tinytrain.cli import main

TIMING = {"seconds", "fit_seconds", "selection_seconds", "train_seconds"}
REPO = Path(__file__).resolve().parents[2]


def make_hard_dataset(root: Path, classes: int = 8, per_class: int = 10, size: int = 16) -> Path:
    """Classes that differ only by faint stripe periods under heavy noise: accuracies well below 100 % (so
    equal accuracies mean something) and a learning rate that matters."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        d = root / f"class{c:02d}"
        d.mkdir(parents=True)
        colour = 110 + rng.integers(0, 40, 3)
        for i in range(per_class):
            img = rng.normal(0, 45, (size, size, 3)) + colour
            img[:, :: (c % 4) + 2] += 25
            img[:: (c // 4) + 2, :] += 15
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"{i}.png")
    return root


def eval_args(data: Path) -> list[str]:
    # lr search on held-out episodes (1e-1 diverges for fulltrain: a null score travels between ranks too)
    return ["--model", "tiny-test", "--checkpoint", "random", "--domains", str(data), "--methods",
            "none,lastlayer,fulltrain", "--tasks", "6", "--resolution", "32", "--iterations", "15",
            "--lr", "target-val", "--lr-grid", "1e-3,1e-1", "--lr-episodes", "2", "--mode", "fixed", "--ways", "4",
            "--shots", "2", "--queries", "3", "--workers", "1", "--no-progress"]


def records(out: Path) -> dict:
    """Every record once, without timings; fails if any key was written twice or a rank file is left."""
    assert not shard_paths(out / "results.jsonl"), "rank files left behind"
    recs = ResultStore(out / "results.jsonl").load()
    lines = [line for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    assert len(lines) == len(recs), "a key was written twice"
    return {record_key(r): {k: v for k, v in r.items() if k not in TIMING} for r in recs}


def same_run(a: Path, b: Path) -> None:
    assert records(a) == records(b)
    for name in ("lr.json", "accuracy.json"):
        assert json.loads((a / name).read_text()) == json.loads((b / name).read_text()), name
    assert not (b / LOCK_NAME).exists()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_hard_dataset(tmp_path_factory.mktemp("hard") / "data")


@pytest.fixture(scope="module")
def clean(data, tmp_path_factory) -> Path:
    """The reference: one process, never interrupted."""
    out = tmp_path_factory.mktemp("clean") / "run"
    assert main(["eval", *eval_args(data), "--out", str(out)]) == 0
    assert len(records(out)) == 18
    accs = {r["accuracy"] for r in ResultStore(out / "results.jsonl").load()}
    assert len(accs) > 3                       # accuracies that differ: equal records mean something
    return out


def test_two_ranks_under_torchrun_give_the_records_of_one_process(data, clean, tmp_path):
    out = tmp_path / "torchrun"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "tinytrain", "eval", *eval_args(data), "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "12 jobs over 2 ranks" not in proc.stdout and "18 jobs over 2 ranks" in proc.stdout
    assert proc.stdout.count("report: ") == 1              # written once, by rank 0
    same_run(clean, out)


def test_two_nodes_under_torchrun_give_the_records_of_one_process(data, clean, tmp_path):
    """Multi-node as on a cluster: two torchrun launches (one per "node", static rendezvous at node 0's address),
    one rank each, LOCAL_RANK 0 on both, one run folder on the filesystem they share."""
    out = tmp_path / "nodes"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(i),
                               "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port),
                               "-m", "tinytrain", "eval", *eval_args(data), "--out", str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO) for i in range(2)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    for node, (_, err) in zip(nodes, outputs):
        assert node.returncode == 0, err[-3000:]
    stdout = "".join(o for o, _ in outputs)
    assert "18 jobs over 2 ranks" in stdout and stdout.count("report: ") == 1
    same_run(clean, out)


def test_nproc_ranks_give_the_records_of_one_process_and_leave_quietly(data, clean, tmp_path):
    out = tmp_path / "nproc"
    proc = subprocess.run([sys.executable, "-m", "tinytrain", "eval", *eval_args(data), "--nproc", "2",
                           "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # each rank unlinks its semaphores (tqdm's write lock) before its os._exit: no resource-tracker warning
    assert "leaked semaphore" not in proc.stderr, proc.stderr[-2000:]
    same_run(clean, out)


def rank_pids(parent: int) -> list[int]:
    """The spawned rank processes of a `--nproc` launch (not multiprocessing's resource tracker)."""
    found = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split()
    ranks = []
    for pid in map(int, found):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmd:
            ranks.append(pid)
    return sorted(ranks)


def test_a_rank_killed_mid_run_then_one_process_resumes_it(data, clean, tmp_path, capsys):
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "tinytrain", "eval", *eval_args(data), "--nproc", "2",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    shard = out / "results.rank1.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and not (shard.exists() and shard.read_text().count("\n")):
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before the kill; make it longer"
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == proc.pid      # the launch holds the folder
    os.kill(rank_pids(proc.pid)[-1], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "was killed (SIGKILL)" in err, err[-2000:]
    assert not (out / LOCK_NAME).exists()
    kept = ResultStore(out / "results.jsonl").load()
    assert 0 < len(kept) < 18 and shard_paths(out / "results.jsonl")
    # a rank killed mid-record leaves a torn last line; resuming cuts it and runs that job again
    for path in (out / "results.jsonl", *shard_paths(out / "results.jsonl")):
        with open(path, "a") as f:
            f.write('{"domain": "' + str(data) + '", "task": 5, "method": "fulltr')
    assert main(["eval", *eval_args(data), "--out", str(out)]) == 0
    assert "merged" in capsys.readouterr().out
    same_run(clean, out)


def test_a_second_launch_refuses_and_a_dead_launchs_lock_is_taken_over(folder, tmp_path, capsys):
    args = ["eval", "--model", "tiny-test", "--checkpoint", "random", "--domains", str(folder), "--methods", "none",
            "--tasks", "2", "--resolution", "32", "--lr", "1e-3", "--mode", "fixed", "--ways", "3", "--shots", "2",
            "--queries", "3", "--workers", "1", "--no-progress", "--out", str(tmp_path / "run")]
    out, lock = tmp_path / "run", tmp_path / "run" / LOCK_NAME
    with run_lock(out):                     # a live launch (this process) holds the folder
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "is in use by another `tinytrain eval`" in err and f"pid {os.getpid()}" in err
        assert [p.name for p in out.iterdir()] == [LOCK_NAME]       # nothing written
    assert not lock.exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "token": "dead"}))
    assert main(args) == 0
    assert f"took over {lock}: its holder, pid {dead.pid}" in capsys.readouterr().out
    assert not lock.exists() and len(ResultStore(out / "results.jsonl").load()) == 2
    # another host's lock: refused while it has a fresh heartbeat, taken over once it has none for long
    lock.write_text(json.dumps({"pid": 1, "host": "node-elsewhere", "token": "far"}))
    with pytest.raises(RunLocked, match="pid 1 on node-elsewhere"):
        acquire_lock(out, log=lambda s: None)
    old = time.time() - STALE_AFTER_S - 60
    os.utime(lock, (old, old))
    me = acquire_lock(out, log=lambda s: None)
    assert json.loads(lock.read_text())["token"] == me["token"]
    release_lock(out, me)
    assert not lock.exists()


@pytest.mark.parametrize("flags, env, message", [
    (["--nproc", "0"], {}, "--nproc must be at least 1"),
    (["--nproc", "2"], {"WORLD_SIZE": "2"}, "under torchrun leave it out"),
    (["--device", "cuda"], {}, "torch sees no CUDA GPU"),
])
def test_bad_distributed_flags_are_one_line_and_write_nothing(folder, tmp_path, capsys, monkeypatch, flags, env,
                                                               message):
    import torch
    if "cuda" in flags and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    out = tmp_path / "run"
    assert main(["eval", "--model", "tiny-test", "--checkpoint", "random", "--domains", str(folder), "--methods",
                 "none", "--tasks", "2", "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_share_splits_every_job_list_into_disjoint_ordered_parts():
    jobs = list(range(37))
    for world in (1, 2, 3, 8):
        parts = [Ranks(r, world).share(jobs) for r in range(world)]
        assert sorted(j for p in parts for j in p) == jobs            # every job once
        assert all(p == sorted(p) for p in parts)                     # each rank keeps the job order
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
        assert parts == [Ranks(r, world).share(jobs) for r in range(world)]   # the same on every call


def test_each_rank_gets_its_local_gpu(monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert [rank_device("cuda", Ranks(r, 4, r % 3)) for r in range(4)] == ["cuda:0", "cuda:1", "cuda:0", "cuda:0"]
    assert rank_device("cpu", Ranks(1, 2, 1)) == "cpu"
