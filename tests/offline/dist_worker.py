"""Entry point for the distributed test's spawned processes (must be importable)."""
from __future__ import annotations


def run(out: str, config_dict: dict) -> None:
    from tinytrain.offline import MetaTrainConfig, meta_train
    from tests.offline.test_distributed import make_run
    backbone, head, train, val = make_run()
    meta_train(backbone, train, val, MetaTrainConfig(**config_dict), out, head=head, progress=False)
