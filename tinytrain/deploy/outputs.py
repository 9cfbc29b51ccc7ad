"""Output paths of the user's commands: checked before any work starts, written all-or-nothing.

`check_output_file` / `check_output_dir` run first (before models load or training starts) and turn
every way a path can be unusable into one line that names the flag and the path: a regular file where
a folder must be, an existing directory where a file must be, an existing result without --overwrite,
a place the process cannot write. `atomic_file` then writes through a hidden temporary name beside the
target and renames it into place; on any failure the temporary file, and folders made for it, are
removed, and the error never names the temporary path.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from ..jsonfile import give_normal_mode
from ..errors import BadInput


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_creatable(path: Path, flag: str) -> None:
    """`path` does not exist yet: its nearest existing ancestor must be a folder we can write in."""
    base = _nearest_existing(path.parent if str(path.parent) else Path("."))
    if not base.is_dir():
        raise BadInput(f"{flag} {path}: {base} is a file, so {path} cannot be created under it; choose another path")
    try:
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as exc:
        raise BadInput(f"{flag} {path}: cannot write in {base} ({exc.strerror.lower()}); "
                         "choose a folder you can write to") from None


def check_output_file(path: str | Path, flag: str = "--out", overwrite: bool = False,
                      sidecars: tuple[str, ...] = ()) -> Path:
    """A file to be written (plus `sidecars`, suffixes appended to its name, e.g. '.json')."""
    path = Path(path)
    for p in [path] + [path.with_name(path.name + s) for s in sidecars]:
        if p.is_dir():
            raise BadInput(f"{flag} {p} is an existing directory; give a file name (a new file inside it, "
                             "or another path)" if p == path else f"{flag} {path}: {p} (written beside it) is a directory; "
                             "move it or choose another name")
        if p.exists() and not overwrite:
            raise BadInput(f"{flag} {p} already exists; pass --overwrite to replace it, or choose another name")
    _check_creatable(path, flag)
    return path


def check_output_dir(path: str | Path, flag: str = "--save") -> Path:
    """A folder to be created or replaced (the caller decides what may be replaced)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BadInput(f"{flag} {path} is a file; give a directory path")
    _check_creatable(path, flag)
    return path


def missing_parents(parent: Path) -> list[Path]:
    """Ancestors of a path that do not exist yet, innermost first (to remove them again on failure)."""
    missing = []
    p = parent
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    return missing


def remove_made_dirs(made: list[Path]) -> None:
    for d in made:
        with contextlib.suppress(OSError):
            d.rmdir()


@contextlib.contextmanager
def atomic_file(path: str | Path, flag: str = "--out") -> Iterator[Path]:
    """Yield a hidden temporary path beside `path`; rename it onto `path` when the block succeeds.
    On failure nothing is left behind (nor the folders created for it)."""
    path = Path(path)
    made = missing_parents(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        give_normal_mode(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp, made)
        raise BadInput(f"{flag} {path}: could not write it ({(exc.strerror or str(exc)).lower()})") from None
    except BaseException:
        _discard(tmp, made)
        raise


def _discard(tmp: str, made: list[Path]) -> None:
    with contextlib.suppress(OSError):
        os.unlink(tmp)
    remove_made_dirs(made)
