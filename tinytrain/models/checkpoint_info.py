"""What a checkpoint records beside its weights, as one typed object.

Every loader of a backbone (`tinytrain.models.weights.load_backbone`, so the CLI, the Python API, the
evaluation and the offline stages) attaches one `CheckpointInfo` to the backbone it returns, as
`backbone.checkpoint_info`. Consumers read its fields (the training resolution, the meta-trained head, TinyTL
branches trained offline) instead of guessing keys of a metadata dict; `meta` keeps the file's whole record
for reports and cards.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

# The cosine head's initial values (models/head.py) where a checkpoint records no meta-trained head.
DEFAULT_HEAD_SCALE = 10.0
DEFAULT_HEAD_BIAS = 0.0


@dataclass(frozen=True)
class LiteBranches:
    """TinyTL lite-residual branches trained offline (a file's `lite.*` tensors) and the input size they
    were trained at: `tinytl` starts from them only at that size."""

    state: Mapping[str, Any]
    resolution: int


@dataclass(frozen=True)
class CheckpointInfo:
    source: str = "random"                    # 'random', 'imagenet', or the file the weights came from
    resolution: int | None = None             # the input size it was trained at (None: it records none)
    head_scale: float = DEFAULT_HEAD_SCALE    # the meta-trained cosine head (models/head.py)
    head_bias: float = DEFAULT_HEAD_BIAS
    lite: LiteBranches | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)   # the file's whole metadata record

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any] | None, source: str, lite_state: Mapping[str, Any] | None = None,
                  default_resolution: int | None = None) -> "CheckpointInfo":
        """Read the fields from a checkpoint's metadata (`resolution`, or `config.resolution` of an offline
        run; `head.scale` / `head.bias`)."""
        meta = dict(meta or {})
        res = meta.get("resolution") or (meta.get("config") or {}).get("resolution")
        res = int(res) if res else None
        head = meta.get("head") or {}
        lite = (LiteBranches(dict(lite_state), int(res or default_resolution or 0)) if lite_state else None)
        return cls(source=str(source), resolution=res,
                   head_scale=float(head.get("scale", DEFAULT_HEAD_SCALE)),
                   head_bias=float(head.get("bias", DEFAULT_HEAD_BIAS)), lite=lite, meta=meta)

    def head(self):
        """A fresh cosine classifier initialised from the checkpoint's meta-trained head."""
        from .head import CosineClassifier
        return CosineClassifier(self.head_scale, self.head_bias)
