"""Crash-safe JSON files: the one writer every run folder and output file uses."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def give_normal_mode(path: str | Path, directory: bool = False) -> None:
    """The permissions a plain open()/mkdir() would give under the current umask. mkstemp, mkdtemp and
    safetensors create owner-only files and folders; anything we write for users must not stay private."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if directory else 0o666) & ~umask)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: `path` is either complete or untouched, so a
    run killed mid-write never leaves a half file that the next launch would refuse as damaged."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        give_normal_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """`text` as UTF-8, written atomically (write_bytes_atomic)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, payload) -> None:
    """`payload` as indented JSON, written atomically (write_text_atomic)."""
    write_text_atomic(path, json.dumps(payload, indent=1) + "\n")
