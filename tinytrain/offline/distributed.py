"""Distributed training on one machine (gloo on CPU, NCCL on GPUs): launching the ranks, and what a
training loop does across them.

Two ways to get N processes, both ending in an initialised default process group:
- `torchrun --nproc-per-node N -m tinytrain metatrain ...` (env:// rendezvous; `init_from_env`);
- `tinytrain metatrain --nproc N ...`, which calls `launch(fn, N, args)` to spawn N local processes
  that rendezvous on a free loopback port.
Inside a run: `world()` (this rank and the number of ranks; (0, 1) without a process group), `pick_device`,
`barrier`, `broadcast` and `broadcast_best` (rank 0's tensors or score to all), `all_reduce_grads` and
`average_buffers`.
"""
from __future__ import annotations

import os
import socket
import sys
from datetime import timedelta
from typing import Callable, NoReturn

import torch
import torch.distributed as dist
from ..errors import BadInput


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


def world() -> tuple[int, int]:
    """(this process's rank, number of ranks); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def pick_device(name: str) -> torch.device:
    """The device `--device name` means for this rank: "auto" is the CPU under gloo, else this rank's GPU."""
    if name == "auto":
        if dist.is_initialized() and dist.get_backend() == "gloo":
            return torch.device("cpu")
        if torch.cuda.is_available():
            rank = int(os.environ.get("LOCAL_RANK", 0))
            return torch.device("cuda", rank % torch.cuda.device_count())
        return torch.device("cpu")
    return torch.device(name)


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def broadcast(tensors) -> None:
    """Overwrite `tensors` (in place) with rank 0's."""
    for t in tensors:
        dist.broadcast(t, 0)


def broadcast_best(value: float | None) -> float | None:
    """Rank 0's `value` (a non-negative score, or None) on every rank, rank 0 included: sent as float32, so
    every rank holds the same (rounded) value."""
    b = torch.tensor([-1.0 if value is None else value])
    dist.broadcast(b, 0)
    return None if b.item() < 0 else float(b.item())


def all_reduce_grads(params: list[torch.nn.Parameter], extra: torch.Tensor) -> torch.Tensor:
    """Sum gradients (and the `extra` statistics, returned) over ranks in one flat buffer."""
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params]
                     + [extra.to(params[0].device)])
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        n = p.numel()
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        p.grad.copy_(flat[offset:offset + n].view_as(p))
        offset += n
    return flat[offset:].cpu()


def average_buffers(module: torch.nn.Module, world: int) -> None:
    """Average the floating-point buffers (BN statistics) of `module` over ranks."""
    for name, buf in module.named_buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf)
            buf.div_(world)


def exit_rank(code: int = 0) -> NoReturn:
    """End a finished rank's process without the interpreter's teardown. With gloo, the C++ threads of a
    process group that was used can still abort the process at interpreter exit ("terminate called without
    an active exception", SIGABRT) after all its work is done and written: in about 1 of 10 2-rank runs on
    this 2-core machine under load, with or without destroy_process_group. multiprocessing's finalizers run
    and Python's buffers are flushed first; every file the run writes is already closed."""
    from multiprocessing import util
    # what the interpreter's exit would do for multiprocessing objects: unlink this process's semaphores
    # (tqdm's write lock is one), else the resource tracker warns of "leaked semaphore objects"
    util._run_finalizers(0)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def launch(fn: Callable, nproc: int, args: tuple = (), backend: str | None = None, timeout_s: float = 1800) -> None:
    """Run `fn(*args)` in `nproc` spawned processes joined in a process group on 127.0.0.1.

    `fn` must be importable (a module-level function). If one process fails, the others are stopped
    and the error is raised here."""
    if nproc < 1:
        raise BadInput(f"--nproc must be at least 1, got {nproc}")
    import torch.multiprocessing as mp
    mp.spawn(_entry, args=(fn, nproc, free_port(), backend or default_backend(), timeout_s, args),
             nprocs=nproc, join=True)
