"""Launching distributed meta-training on one machine: gloo on CPU, NCCL on GPUs.

Two ways to get N processes, both ending in an initialised default process group:
- `torchrun --nproc-per-node N -m tinytrain metatrain ...` (env:// rendezvous; `init_from_env`);
- `tinytrain metatrain --nproc N ...`, which calls `launch(fn, N, args)` to spawn N local processes
  that rendezvous on a free loopback port.
"""
from __future__ import annotations

import os
import socket
import sys
from datetime import timedelta
from typing import Callable, NoReturn

import torch
import torch.distributed as dist


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_from_env(backend: str | None = None, timeout_s: float = 1800) -> bool:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE, MASTER_*).
    Returns False (and does nothing) when not started by a distributed launcher."""
    if dist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    dist.init_process_group(backend or default_backend(), timeout=timedelta(seconds=timeout_s))
    _share_cpus(dist.get_world_size())
    return True


def _share_cpus(world: int) -> None:
    """N processes on one CPU: give each its share of cores instead of N x all cores."""
    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))


def _entry(rank: int, fn: Callable, nproc: int, port: int, backend: str, timeout_s: float, args: tuple) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "WORLD_SIZE": str(nproc)})
    dist.init_process_group(backend, rank=rank, world_size=nproc, timeout=timedelta(seconds=timeout_s))
    _share_cpus(nproc)
    try:
        fn(*args)
    finally:
        dist.destroy_process_group()
    exit_rank(0)


def exit_rank(code: int = 0) -> NoReturn:
    """End a finished rank's process without the interpreter's teardown. With gloo, the C++ threads of a
    process group that was used can still abort the process at interpreter exit ("terminate called without
    an active exception", SIGABRT) after all its work is done and written: in about 1 of 10 2-rank runs on
    this 2-core machine under load, with or without destroy_process_group. Python's buffers are flushed
    first; every file the run writes is already closed."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def launch(fn: Callable, nproc: int, args: tuple = (), backend: str | None = None, timeout_s: float = 1800) -> None:
    """Run `fn(*args)` in `nproc` spawned processes joined in a process group on 127.0.0.1.

    `fn` must be importable (a module-level function). If one process fails, the others are stopped
    and the error is raised here."""
    if nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {nproc}")
    import torch.multiprocessing as mp
    mp.spawn(_entry, args=(fn, nproc, free_port(), backend or default_backend(), timeout_s, args),
             nprocs=nproc, join=True)
