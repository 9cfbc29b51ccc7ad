"""Append-only, crash-safe store of evaluation results: one JSON object per line (JSONL).

Why this shape: a long evaluation must survive being killed at any moment. Each finished
(domain, task, method) is written as one line and fsync'ed before the next starts, so a crash loses at
most the record being written. On reopening, a truncated last line (the crash) is cut off, records are
deduplicated by key (first wins), and the caller skips every key already present.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

KEY_FIELDS = ("domain", "task", "method")
REQUIRED_FIELDS = KEY_FIELDS + ("accuracy", "predicted_memory_bytes", "backward_macs", "seconds")


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
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                if not line.endswith("\n"):
                    break                      # truncated tail: ignored (repair() removes it)
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                    key = record_key(rec)
                except (json.JSONDecodeError, ValueError, TypeError):
                    continue                   # a corrupt line never stops a resume
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
