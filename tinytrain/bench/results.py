"""Append-only, crash-safe store of evaluation results: one JSON object per line (JSONL).

Why this shape: a long evaluation must survive being killed at any moment. Each finished
(domain, task, method) is written as one line and fsync'ed before the next starts, so a crash loses at
most the record being written. On reopening, a truncated last line (the crash) is cut off, records are
deduplicated by key (first wins), and the caller skips every key already present.

A record holds an accuracy (a number in [0, 1]) or, for a job whose training diverged, `accuracy: null`
with `diverged` naming why: never a made-up accuracy. A line that is not such a record (hand-edited, or
missing a field) is left out of `load()` and counted in `skipped`, so a resume runs that job again and
the report says how many were left out.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

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


def record_key(record: dict) -> tuple[str, int, str]:
    """The identity of a result: which domain, which stored episode, which method (or ablation variant)."""
    missing = [k for k in KEY_FIELDS if k not in record]
    if missing:
        raise ValueError(f"result record lacks {missing}; every record needs {list(KEY_FIELDS)}")
    return str(record["domain"]), int(record["task"]), str(record["method"])


class ResultStore:
    """`results.jsonl` of one run directory. Not shared between processes: only the parent writes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._keys: set[tuple[str, int, str]] | None = None
        self.skipped = 0                       # lines of the last load() that were not usable records

    def repair(self) -> int:
        """Cut a partial last line (left by a crash mid-write). Returns the number of bytes removed."""
        if not self.path.exists():
            return 0
        data = self.path.read_bytes()
        if not data or data.endswith(b"\n"):
            return 0
        keep = data.rfind(b"\n") + 1          # 0 when the only line is partial
        with open(self.path, "r+b") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
        return len(data) - keep

    def load(self) -> list[dict]:
        """Every complete, valid record once (first occurrence of a key wins), in file order."""
        if not self.path.exists():
            return []
        records, seen = [], set()
        self.skipped = 0
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.endswith("\n"):
                    break                      # truncated tail: ignored (repair() removes it)
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                    bad = record_problem(rec)
                    key = None if bad else record_key(rec)
                except (json.JSONDecodeError, ValueError, TypeError):
                    bad = "not JSON"
                if bad:
                    self.skipped += 1          # a corrupt or incomplete line never stops a resume or a report
                    continue
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
            raise ValueError(f"result record lacks {missing}")
        bad = record_problem(record)
        if bad:
            raise ValueError(f"result record {record_key(record)}: {bad}")
        key = record_key(record)
        keys = self.keys()
        if key in keys:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, sort_keys=True, allow_nan=True) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        keys.add(key)
        return True
