"""`tinytrain eval` over torch.distributed ranks (torchrun, single or multi-node, or `--nproc N`), and the lock
that keeps two launches off one run folder.

How a distributed evaluation divides the work (harness.run_eval does it; a run without a process group is a
world of one and behaves as before):

- rank 0 does everything that writes shared files (config, episodes, lr.json, the static plan) while the
  others wait; a refusal there stops every rank with rank 0's message;
- every job list (lr search, test jobs) is computed identically on every rank from what rank 0 read, and
  dealt out by `Ranks.share` (a fixed shuffle, so each rank gets a mix of methods and tasks);
- each rank runs its share with its own `--workers` processes and appends to its own results file
  (results.py); lr-search scores are gathered before any test job starts, so every rank trains with the
  same rates;
- rank 0 merges the rank files into results.jsonl and the caller writes the report, once.

Coordination goes over gloo whatever `--device` is (only small Python objects travel: job lists, scores,
failures), so a CPU cluster and a GPU box need nothing else.
"""
from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable, Iterator
from ..errors import BadInput

LOCK_NAME = "eval.lock"
HEARTBEAT_S = 30.0            # the holder touches its lock this often
STALE_AFTER_S = 600.0         # a lock from another host untouched this long belongs to a dead launch
TIMEOUT_S = 7 * 24 * 3600     # collectives wait this long: a rank waits at the lr-search handoff and at the
                              # end for the slowest rank, which may take hours; a dead rank ends the launch
                              # through torchrun (or --nproc) long before this
SHARE_SEED = 26               # the fixed shuffle of Ranks.share: the same split on every rank and every launch


class RankStopped(BadInput):
    """Raised on ranks other than 0 when rank 0 refused or failed; rank 0 reports the reason, once."""


class RunLocked(BadInput):
    """Another live launch holds the run folder."""


@dataclass(frozen=True)
class Ranks:
    """This process's place in the evaluation: rank, world size and local rank (its GPU on its node)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @staticmethod
    def current() -> "Ranks":
        """From the initialised default process group; a world of one when there is none."""
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()):
            return Ranks()
        return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist
            dist.barrier()

    def broadcast(self, obj=None):
        """Rank 0's `obj`, on every rank."""
        if not self.distributed:
            return obj
        import torch.distributed as dist
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def rank0(self, fn: Callable[[], object], share: bool = False):
        """Run `fn` on rank 0 while the other ranks wait; an exception there stops every rank (rank 0 raises
        it, the others raise RankStopped). With `share`, every rank returns rank 0's result."""
        if not self.distributed:
            return fn()
        if self.rank == 0:
            try:
                result = fn()
            except BaseException as exc:
                self.broadcast((False, f"{type(exc).__name__}: {exc}"))
                raise
            self.broadcast((True, result if share else None))
            return result
        ok, value = self.broadcast(None)
        if not ok:
            raise RankStopped(f"rank 0 stopped ({value})")
        return value

    def share(self, items: list) -> list:
        """This rank's part of `items`: a fixed shuffle dealt round-robin, kept in the list's order. The same
        on every rank, so the parts are disjoint and cover `items`; a mix of every method and task, so the
        ranks finish at about the same time."""
        if not self.distributed:
            return list(items)
        order = list(range(len(items)))
        random.Random(SHARE_SEED).shuffle(order)
        return [items[i] for i in sorted(order[self.rank::self.world])]


def init_from_env() -> bool:
    """Join torchrun's process group (gloo, long timeout) when started by a distributed launcher."""
    import torch.distributed as dist
    if dist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    dist.init_process_group("gloo", timeout=timedelta(seconds=TIMEOUT_S))
    return True


def under_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_world_size(nproc: int = 1) -> int:
    """Ranks on this node: torchrun's LOCAL_WORLD_SIZE, or `--nproc`."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", nproc)))


def launch(fn: Callable, nproc: int, args: tuple) -> None:
    """`--nproc N`: run `fn(*args)` in N local ranks joined over gloo on 127.0.0.1 (a rank that fails stops
    the others; the failure is raised here as torch.multiprocessing's ProcessExitedException /
    ProcessRaisedException). Interrupted here (Ctrl-C, SIGTERM), the ranks are stopped before this returns:
    none writes on after the launcher has let go of the run lock."""
    import torch.multiprocessing as tmp

    from ..offline.distributed import _entry, free_port
    if nproc < 1:
        raise BadInput(f"--nproc must be at least 1, got {nproc}")
    ctx = tmp.start_processes(_entry, args=(fn, nproc, free_port(), "gloo", TIMEOUT_S, args), nprocs=nproc,
                              join=False, start_method="spawn")
    try:
        while not ctx.join():
            pass
    except BaseException:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
        for p in ctx.processes:
            p.join(30)
            if p.is_alive():
                p.kill()
        raise


# --- devices ------------------------------------------------------------------------------------------------

def default_device() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(name: str | None) -> str:
    """`--device` -> 'cpu' or 'cuda' (None: cuda when torch sees a GPU). A ValueError names what to change."""
    if name is None:
        return default_device()
    if name not in ("cpu", "cuda"):
        raise BadInput(f"--device takes cpu or cuda (each rank then uses its local GPU), got {name!r}")
    if name == "cuda":
        import torch
        if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
            raise BadInput("--device cuda: torch sees no CUDA GPU on this machine; use --device cpu")
    return name


def rank_device(device: str, ranks: Ranks) -> str:
    """The torch device of this rank: its local GPU (LOCAL_RANK, shared round-robin when a node runs more
    ranks than it has GPUs), or cpu."""
    if device != "cuda":
        return "cpu"
    import torch
    return f"cuda:{ranks.local_rank % torch.cuda.device_count()}"


# --- the run lock ---------------------------------------------------------------------------------------------

def _read_lock(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:       # alive, another user's
        return True
    return True


def _stale_reason(path: Path, holder: dict | None) -> str | None:
    """Why the lock at `path` belongs to no live launch, or None when it may still be held."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return "it vanished"
    host = socket.gethostname()
    if holder and holder.get("host") == host and isinstance(holder.get("pid"), int):
        if not _pid_alive(holder["pid"]):
            return f"its holder, pid {holder['pid']} on {host}, is gone"
        return None
    if age > STALE_AFTER_S:
        who = f"pid {holder.get('pid')} on {holder.get('host')}" if holder else "an unreadable holder"
        return f"its holder ({who}) has not touched it for {age / 60:.0f} min"
    return None


def _held_message(path: Path, holder: dict | None) -> str:
    if not holder:
        return (f"{path.parent} is in use: another launch is starting there ({path} exists); wait for it, or use "
                f"another --out. If no launch is running, delete {path}")
    since = holder.get("started", "?")
    return (f"{path.parent} is in use by another `tinytrain eval` (pid {holder.get('pid')} on {holder.get('host')}, "
            f"since {since}); wait for it to finish, or use another --out. If that process is gone (e.g. its Slurm "
            f"job ended), delete {path}; a lock from another host also counts as stale after "
            f"{STALE_AFTER_S / 60:.0f} min without a heartbeat")


def acquire_lock(out: Path, log: Callable[[str], None] = print) -> dict:
    """Create OUT/eval.lock (atomically, O_EXCL) naming this process, or raise RunLocked. A stale lock (its
    process gone on this host, or untouched for STALE_AFTER_S from another host) is taken over."""
    path = Path(out) / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(), "token": uuid.uuid4().hex,
          "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(5):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(path)
            reason = _stale_reason(path, holder)
            if reason is None:
                raise RunLocked(_held_message(path, holder)) from None
            # move it aside, then check that what moved is the stale lock we judged, not a racing launch's new one
            grave = path.with_name(f"{LOCK_NAME}.{me['token']}.stale")
            try:
                os.rename(path, grave)
            except FileNotFoundError:
                continue
            if _read_lock(grave) != holder:
                try:
                    os.link(grave, path)          # put the other launch's lock back (fails if yet another took it)
                except FileExistsError:
                    pass
            else:
                log(f"note: took over {path}: {reason}")
            grave.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(me, f)
            f.flush()
            os.fsync(f.fileno())
        return me
    raise RunLocked(_held_message(path, _read_lock(path)))


def release_lock(out: Path, me: dict) -> None:
    """Remove OUT/eval.lock if it is still ours."""
    path = Path(out) / LOCK_NAME
    if (_read_lock(path) or {}).get("token") == me["token"]:
        path.unlink(missing_ok=True)


@contextmanager
def run_lock(out: str | Path, log: Callable[[str], None] = print) -> Iterator[dict]:
    """Hold OUT/eval.lock for the block (creating OUT), touching it every HEARTBEAT_S so that a launch on
    another host can tell a live holder from a dead one."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    me = acquire_lock(out, log)
    stop = threading.Event()

    def beat() -> None:
        path = out / LOCK_NAME
        while not stop.wait(HEARTBEAT_S):
            try:
                if (_read_lock(path) or {}).get("token") == me["token"]:
                    os.utime(path)
            except OSError:
                pass

    thread = threading.Thread(target=beat, daemon=True, name="eval-lock-heartbeat")
    thread.start()
    try:
        yield me
    finally:
        stop.set()
        release_lock(out, me)
