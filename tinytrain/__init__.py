"""tinytrain: on-device few-shot training of small CNNs under memory and compute budgets (TinyTrain, ICML 2024).

The user's path in Python (the same checks and defaults as the `tinytrain` command):

    import tinytrain
    backbone = tinytrain.load_backbone("mcunet-5fps", "pocket")
    model = tinytrain.adapt(backbone, "photos/support", method="tinytrain", memory_budget="1MB")
    model.predict(["photos/new/1.jpg"])      # [{'image': ..., 'label': ..., 'score': ..., 'top': [...]}]
    model.save("my-model")
    same = tinytrain.load_adapted("my-model")

Importing the package is cheap: torch loads when a function is first called.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .api import adapt, load_adapted, load_backbone
from .errors import BadInput

__all__ = ["__version__", "load_backbone", "adapt", "load_adapted", "AdaptedModel", "BadInput"]


def __getattr__(name: str):
    if name == "AdaptedModel":      # the class `adapt` returns, without importing torch up front
        from .deploy.adapted import AdaptedModel
        return AdaptedModel
    raise AttributeError(f"module 'tinytrain' has no attribute {name!r}")
