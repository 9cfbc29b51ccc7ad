"""Pickle-free training state: nested dicts/lists of tensors and JSON values in one safetensors file.

Resuming needs the optimizer's momentum buffers, counters and RNG states. `torch.save` would pickle
them; here every tensor goes into safetensors and the tree around them into the file's JSON metadata,
so loading a state file never runs code.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from ..errors import BadInput

_TENSOR = "__tensor__"
_DICT = "__dict__"     # dict with non-string keys (optimizer state is keyed by int)
_TUPLE = "__tuple__"


def _flatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().clone().contiguous()
        return {_TENSOR: key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _flatten(v, tensors) for k, v in obj.items()}
        return {_DICT: [[k, _flatten(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {_TUPLE: [_flatten(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_flatten(v, tensors) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise BadInput(f"cannot store a {type(obj).__name__} in a training state; use tensors or JSON values")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {_TENSOR}:
            return tensors[obj[_TENSOR]]
        if set(obj) == {_DICT}:
            return {k: _unflatten(v, tensors) for k, v in obj[_DICT]}
        if set(obj) == {_TUPLE}:
            return tuple(_unflatten(v, tensors) for v in obj[_TUPLE])
        return {k: _unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def save_state(path: str | Path, state: dict) -> Path:
    """Write `state` atomically (a kill during the write leaves the previous file intact)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    tree = _flatten(state, tensors)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata={"tinytrain_state": json.dumps(tree)})
    tmp.replace(path)
    return path


def load_state(path: str | Path) -> dict:
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get("tinytrain_state")
        for key in f.keys():
            tensors[key] = f.get_tensor(key)
    if raw is None:
        raise BadInput(f"{path} is not a tinytrain training state; delete it or pass --restart")
    return _unflatten(json.loads(raw), tensors)


def rng_state() -> dict:
    """Torch CPU and Python RNG states (what a resumed run needs to continue the same stream)."""
    import random
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    import random
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
