"""Append-only, crash-safe store of evaluation results: one JSON object per line (JSONL).

Why this shape: a long evaluation must survive being killed at any moment. Each finished
(domain, task, method) is written as one line and fsync'ed before the next starts, so a crash loses at
most the record being written. On reopening, a truncated last line (the crash) is cut off, records are
deduplicated by key (first wins), and the caller skips every key already present.

A record holds an accuracy (a number in [0, 1]) or, for a job whose training diverged, `accuracy: null`
with `diverged` naming why: never a made-up accuracy. A line that is not such a record (hand-edited, or
missing a field) is left out of `load()` and counted in `skipped`, so a resume runs that job again and
the report says how many were left out.

Several writers (ranks of a torch.distributed evaluation, see distributed.py) never share a file: rank 0
appends to `results.jsonl`, rank R > 0 to `results.rankR.jsonl` beside it. Every read merges them (the main
file first, then the rank files in rank order; first record of a key wins), and rank 0 folds the rank files
into `results.jsonl` when no rank writes (see `fold_shards`). Per-rank files rather than one file under a lock:
appends from several hosts to one file are not atomic on NFS, and `flock`/`fcntl` locks are off or local-only
on many cluster filesystems (Lustre without `-o flock`), so a file with one writer is the only arrangement that
is safe everywhere.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from ..errors import BadInput

KEY_FIELDS = ("domain", "task", "method")
REQUIRED_FIELDS = KEY_FIELDS + ("accuracy", "predicted_memory_bytes", "backward_macs", "seconds")


def record_problem(record: dict) -> str | None:
    """What makes `record` unusable as a result (a missing or ill-typed field), or None."""
    if not isinstance(record, dict):
        return "not a JSON object"
    missing = [k for k in REQUIRED_FIELDS if k not in record]
    if missing:
        return f"lacks {', '.join(missing)}"
    if not isinstance(record["domain"], str) or not isinstance(record["method"], str):
        return "domain and method must be strings"
    if isinstance(record["task"], bool) or not isinstance(record["task"], int) or record["task"] < 0:
        return f"task must be an integer >= 0 (got {record['task']!r})"
    acc = record["accuracy"]
    if acc is None:
        if not isinstance(record.get("diverged"), str) or not record["diverged"]:
            return "accuracy is null but the record does not say it diverged"
    elif isinstance(acc, bool) or not isinstance(acc, (int, float)) or not 0 <= acc <= 1:
        return f"accuracy must be a number in [0, 1] (got {acc!r})"
    for k in ("predicted_memory_bytes", "backward_macs", "seconds"):
        v = record[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
            return f"{k} must be a number >= 0 (got {v!r})"
    return None


def shard_path(path: str | Path, rank: int) -> Path:
    """Where rank `rank` appends: the run's `results.jsonl` for rank 0, `results.rankR.jsonl` otherwise."""
    path = Path(path)
    return path if rank == 0 else path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


def shard_paths(path: str | Path) -> list[Path]:
    """The rank files (rank >= 1) beside `path` that exist now, in rank order."""
    path = Path(path)
    pattern = re.compile(re.escape(path.stem) + r"\.rank([1-9][0-9]*)" + re.escape(path.suffix) + "$")
    found = [(int(m.group(1)), p) for p in path.parent.glob(f"{path.stem}.rank*{path.suffix}")
             if (m := pattern.match(p.name))] if path.parent.is_dir() else []
    return [p for _, p in sorted(found)]


def _repair_file(path: Path) -> int:
    """Cut a partial last line (left by a crash mid-write) of one file; the number of bytes removed."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    keep = data.rfind(b"\n") + 1          # 0 when the only line is partial
    with open(path, "r+b") as f:
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return len(data) - keep


def _append_lines(path: Path, records: list[dict]) -> None:
    """Append records as JSON lines, durably (flushed and fsync'ed before returning)."""
    if not records:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, sort_keys=True, allow_nan=True) + "\n" for r in records)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def record_key(record: dict) -> tuple[str, int, str]:
    """The identity of a result: which domain, which stored episode, which method (or ablation variant)."""
    missing = [k for k in KEY_FIELDS if k not in record]
    if missing:
        raise BadInput(f"result record lacks {missing}; every record needs {list(KEY_FIELDS)}")
    return str(record["domain"]), int(record["task"]), str(record["method"])


class ResultStore:
    """`results.jsonl` of one run directory, with its rank files merged on read. Each process writes only
    its own file (`rank`: 0 writes `results.jsonl`, as a run without torch.distributed always does)."""

    def __init__(self, path: str | Path, rank: int = 0):
        self.path = Path(path)
        self.write_path = shard_path(self.path, rank)
        self._keys: set[tuple[str, int, str]] | None = None
        self.skipped = 0                       # lines of the last load() that were not usable records

    def repair(self) -> int:
        """Cut a partial last line of the file this store writes. Returns the number of bytes removed."""
        return _repair_file(self.write_path)

    @staticmethod
    def _read(path: Path) -> tuple[list[dict], int]:
        """(valid records in file order, unusable lines) of one file; a partial last line is ignored."""
        records, skipped = [], 0
        if not path.exists():
            return records, skipped
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.endswith("\n"):
                    break                      # truncated tail: ignored (repair() removes it)
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                    bad = record_problem(rec)
                    if not bad:
                        record_key(rec)
                except (json.JSONDecodeError, ValueError, TypeError):
                    bad = "not JSON"
                if bad:
                    skipped += 1               # a corrupt or incomplete line never stops a resume or a report
                    continue
                records.append(rec)
        return records, skipped

    def load(self) -> list[dict]:
        """Every complete, valid record once (first occurrence of a key wins): `results.jsonl` in file order,
        then the records only rank files hold."""
        records, seen = [], set()
        self.skipped = 0
        for path in [self.path, *shard_paths(self.path)]:
            recs, skipped = self._read(path)
            self.skipped += skipped
            for rec in recs:
                key = record_key(rec)
                if key not in seen:
                    seen.add(key)
                    records.append(rec)
        return records

    def keys(self) -> set[tuple[str, int, str]]:
        if self._keys is None:
            self.repair()                      # so that the next append starts on a fresh line
            self._keys = {record_key(r) for r in self.load()}
        return self._keys

    def append(self, record: dict) -> bool:
        """Write one record durably; returns False (and writes nothing) when its key is already stored."""
        missing = [k for k in REQUIRED_FIELDS if k not in record]
        if missing:
            raise BadInput(f"result record lacks {missing}")
        bad = record_problem(record)
        if bad:
            raise BadInput(f"result record {record_key(record)}: {bad}")
        key = record_key(record)
        keys = self.keys()
        if key in keys:
            return False
        _append_lines(self.write_path, [record])
        keys.add(key)
        return True

    def fold_shards(self) -> int:
        """Move every record of the rank files into `results.jsonl` (keys it lacks only), then delete them;
        the number of records moved. Call it only while no process writes (rank 0 of a run that holds the
        run lock, before or after the ranks' work). A crash at any point loses nothing: a rank file is
        deleted only after its records are fsync'ed into `results.jsonl`, and reads dedupe by key."""
        shards = shard_paths(self.path)
        if not shards:
            return 0
        _repair_file(self.path)
        have = {record_key(r) for r in self._read(self.path)[0]}
        moved = 0
        for shard in shards:
            new = []
            for rec in self._read(shard)[0]:
                key = record_key(rec)
                if key not in have:
                    have.add(key)
                    new.append(rec)
            _append_lines(self.path, new)
            moved += len(new)
            shard.unlink()
        self._keys = None
        return moved
