"""What an adaptation updates: the `UpdatePlan` shared by the cost model, the planners and the engine.

A plan names conv layers by their paper index (forward order, stem = 0) and, per layer, the fraction
of channels whose weights are trained. It is plain data (JSON round-trip) so that a plan chosen on one
machine can be saved, diffed, and replayed on another.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from ..errors import BadInput


def channel_count(ratio: float, total: int) -> int:
    """How many of `total` channels a ratio in (0, 1] updates: round(ratio x total), at least 1, at most total."""
    return min(total, max(1, int(round(ratio * total))))


OPTIMIZERS = ("adam", "sgd", "sgdm")
PLAN_KINDS = ("sparse", "full", "tinytl")
AXES = ("out", "in")


@dataclass(frozen=True)
class LayerUpdate:
    """Train part of one conv layer's weights.

    ratio: fraction of channels updated along `axis` ("out" = output channels, TinyTrain's reading of
    Fisher channels; "in" = input channels, SparseUpdate's sub-tensor update). ratio 0 = bias only.
    channels: the explicit channel indices, when already chosen (then len(channels) decides the count).
    """

    index: int
    ratio: float = 1.0
    axis: str = "out"
    channels: list[int] | None = None

    def __post_init__(self) -> None:
        if self.index < 0:
            raise BadInput(f"layer index must be >= 0 (got {self.index})")
        if not 0.0 <= self.ratio <= 1.0:
            raise BadInput(f"layer {self.index}: ratio must be in [0, 1] (got {self.ratio})")
        if self.axis not in AXES:
            raise BadInput(f"layer {self.index}: axis must be 'out' or 'in' (got {self.axis!r})")
        if self.channels is not None:
            object.__setattr__(self, "channels", [int(c) for c in self.channels])
            if len(set(self.channels)) != len(self.channels) or any(c < 0 for c in self.channels):
                raise BadInput(f"layer {self.index}: channels must be distinct non-negative indices")

    def n_channels(self, total: int) -> int:
        """How many of `total` channels are updated (at least 1 when ratio > 0)."""
        if self.channels is not None:
            if any(c >= total for c in self.channels):
                raise BadInput(f"layer {self.index}: channel index out of range (layer has {total} along "
                                 f"axis {self.axis!r})")
            return len(self.channels)
        if self.ratio == 0:
            return 0
        return channel_count(self.ratio, total)

    def to_dict(self) -> dict:
        d = {"index": self.index, "ratio": self.ratio, "axis": self.axis}
        if self.channels is not None:
            d["channels"] = list(self.channels)
        return d

    @staticmethod
    def from_dict(d: dict) -> "LayerUpdate":
        return LayerUpdate(int(d["index"]), float(d.get("ratio", 1.0)), d.get("axis", "out"), d.get("channels"))


@dataclass(frozen=True)
class UpdatePlan:
    """Which parameters an adaptation trains, with the batch size and optimizer the costs depend on.

    kind "sparse": exactly `layers` (weights) and `bias_layers` (BN shifts) are trained.
    kind "full": every parameter (FullTrain). kind "tinytl": lite-residual branches on every block
    plus the biases in `bias_layers` (TinyTL); `layers` is then normally empty.
    """

    model: str
    layers: list[LayerUpdate] = field(default_factory=list)
    bias_layers: list[int] = field(default_factory=list)
    batch_size: int = 1
    optimizer: str = "adam"
    kind: str = "sparse"
    resolution: int = 128

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise BadInput(f"optimizer must be one of {', '.join(OPTIMIZERS)} (got {self.optimizer!r})")
        if self.kind not in PLAN_KINDS:
            raise BadInput(f"plan kind must be one of {', '.join(PLAN_KINDS)} (got {self.kind!r})")
        if self.batch_size < 1:
            raise BadInput(f"batch_size must be >= 1 (got {self.batch_size})")
        if self.resolution < 8:
            raise BadInput(f"resolution must be >= 8 pixels (got {self.resolution})")
        indices = [u.index for u in self.layers]
        if len(set(indices)) != len(indices):
            raise BadInput(f"a layer appears twice in the plan: {sorted(indices)}")
        object.__setattr__(self, "layers", sorted(self.layers, key=lambda u: u.index))
        object.__setattr__(self, "bias_layers", sorted({int(i) for i in self.bias_layers}))

    def ratios(self) -> dict[int, float]:
        return {u.index: u.ratio for u in self.layers}

    def to_dict(self) -> dict:
        return {
            "model": self.model, "kind": self.kind, "resolution": self.resolution,
            "batch_size": self.batch_size, "optimizer": self.optimizer,
            "layers": [u.to_dict() for u in self.layers], "bias_layers": list(self.bias_layers),
        }

    @staticmethod
    def from_dict(d: dict) -> "UpdatePlan":
        try:
            return UpdatePlan(
                model=d["model"], layers=[LayerUpdate.from_dict(u) for u in d.get("layers", [])],
                bias_layers=list(d.get("bias_layers", [])), batch_size=int(d.get("batch_size", 1)),
                optimizer=d.get("optimizer", "adam"), kind=d.get("kind", "sparse"),
                resolution=int(d.get("resolution", 128)),
            )
        except KeyError as exc:
            raise BadInput(f"update plan JSON lacks the key {exc}; it needs at least 'model'") from None
