"""`tinytrain models` and `tinytrain profile`."""
from __future__ import annotations

from ..models.specs import ZOO, conv_layers


def cmd_models(args) -> int:
    for name, spec in ZOO.items():
        layers = conv_layers(spec)
        print(f"{name:16s} {len(layers):3d} conv layers  {sum(l.params for l in layers)/1e6:6.3f} M conv weights  "
              f"{sum(l.macs for l in layers)/1e6:7.2f} M MACs @{spec.resolution}px  feature {spec.feature_dim}-d  "
              f"{spec.description}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("models", help="list the model zoo")
    p.set_defaults(func=cmd_models)
