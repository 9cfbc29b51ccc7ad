"""Adaptation methods behind one interface (see base.py): none, lastlayer, fulltrain, tinytl,
sparseupdate, tinytrain. `make_method(name, backbone, config)` builds one; each method's options are a frozen
dataclass (`METHODS[name].options_class`, see options.py)."""
from __future__ import annotations

from .base import AdaptConfig, AdaptReport, Method, Predictor, support_prototypes
from .fulltrain import FullTrainMethod
from .lastlayer import LastLayerMethod
from .none import NoneMethod
from .options import MethodOptions, parse_options
from .sparseupdate import SparseUpdateMethod
from .tinytl import TinyTLMethod
from .tinytrain import TinyTrainMethod
from ..errors import BadInput

METHODS: dict[str, type[Method]] = {
    "none": NoneMethod, "lastlayer": LastLayerMethod, "fulltrain": FullTrainMethod,
    "tinytl": TinyTLMethod, "sparseupdate": SparseUpdateMethod, "tinytrain": TinyTrainMethod,
}


def make_method(name: str, backbone, config: AdaptConfig | None = None, head=None) -> Method:
    """Build method `name` on `backbone` (which fit() never modifies)."""
    try:
        cls = METHODS[name]
    except KeyError:
        raise BadInput(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}") from None
    return cls(backbone, config or AdaptConfig(), head)


__all__ = ["AdaptConfig", "AdaptReport", "Method", "MethodOptions", "Predictor", "METHODS", "make_method",
           "parse_options", "support_prototypes"]
