import json

import pytest

from tinytrain.bench.results import ResultStore, record_key


def rec(domain="d", task=0, method="none", acc=0.5):
    return {"domain": domain, "task": task, "method": method, "accuracy": acc,
            "predicted_memory_bytes": 0, "backward_macs": 0, "seconds": 0.1}


def test_append_is_idempotent_per_key(tmp_path):
    store = ResultStore(tmp_path / "results.jsonl")
    assert store.append(rec(task=0))
    assert store.append(rec(task=1))
    assert not store.append(rec(task=0, acc=0.9))           # same key: not written again
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2
    assert [r["accuracy"] for r in ResultStore(tmp_path / "results.jsonl").load()] == [0.5, 0.5]


def test_truncated_last_line_is_dropped_and_appending_continues_cleanly(tmp_path):
    path = tmp_path / "results.jsonl"
    store = ResultStore(path)
    store.append(rec(task=0))
    with open(path, "a") as f:                                 # a crash in the middle of a write
        f.write(json.dumps(rec(task=1))[:25])
    reopened = ResultStore(path)
    assert [r["task"] for r in reopened.load()] == [0]
    assert reopened.keys() == {("d", 0, "none")}               # repairs the file
    assert reopened.append(rec(task=1))
    assert [r["task"] for r in ResultStore(path).load()] == [0, 1]
    for line in path.read_text().splitlines():
        json.loads(line)                                       # every line is whole JSON again


def test_duplicates_and_corrupt_lines_are_ignored_on_load(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text("\n".join([json.dumps(rec(task=0, acc=0.1)), "{not json", json.dumps(rec(task=0, acc=0.9)),
                               json.dumps({"no": "key"}), json.dumps(rec(task=2))]) + "\n")
    got = ResultStore(path).load()
    assert [(r["task"], r["accuracy"]) for r in got] == [(0, 0.1), (2, 0.5)]


def test_records_need_key_and_metrics(tmp_path):
    store = ResultStore(tmp_path / "r.jsonl")
    with pytest.raises(ValueError, match="accuracy"):
        store.append({"domain": "d", "task": 0, "method": "m"})
    with pytest.raises(ValueError, match="method"):
        record_key({"domain": "d", "task": 0})


def test_rank_files_are_merged_on_read_and_folded_once(tmp_path):
    path = tmp_path / "results.jsonl"
    main, rank1, rank2 = ResultStore(path), ResultStore(path, rank=1), ResultStore(path, rank=2)
    main.append(rec(task=0))
    rank1.append(rec(task=1))
    rank2.append(rec(task=2))
    assert rank1.write_path.name == "results.rank1.jsonl" and main.write_path == path
    with open(rank2.write_path, "a") as f:
        f.write(json.dumps(rec(task=1, acc=0.25)) + "\n")   # a key in two files: the lower rank's wins
        f.write(json.dumps(rec(task=3))[:20])                # a rank killed mid-record
    got = ResultStore(path).load()
    assert [r["task"] for r in got] == [0, 1, 2] and got[1]["accuracy"] == 0.5
    assert ResultStore(path).fold_shards() == 2
    assert not rank1.write_path.exists() and not rank2.write_path.exists()
    assert [r["task"] for r in ResultStore(path).load()] == [0, 1, 2]
    assert len(path.read_text().splitlines()) == 3 and ResultStore(path).fold_shards() == 0
