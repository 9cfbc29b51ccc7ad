"""The user's path from Python: the same steps, checks and defaults as `tinytrain adapt` / `predict`.

    backbone = load_backbone("mcunet-5fps", "pocket")            # a shipped checkpoint, a file, 'random'
    model = adapt(backbone, "photos/support", memory_budget="1MB")
    model.predict(["photos/new/1.jpg"])                          # [{'image', 'label', 'score', 'top'}]
    model.save("my-model");  load_adapted("my-model")

Torch is imported when a function is called, not when `tinytrain` is imported.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence
from .errors import BadInput

if TYPE_CHECKING:
    from .deploy.adapted import AdaptedModel
    from .deploy.images import LabeledImages
    from .models.backbone import Backbone


def load_backbone(model: str = "mcunet-5fps", checkpoint: str | Path | None = "default") -> "Backbone":
    """A backbone of the zoo with weights: `checkpoint` is 'default' (the model's best shipped one), a
    shipped name ('pocket', 'pocket-long', 'distilled'),
    'random', 'imagenet' (mobilenetv2-1.0) or a checkpoint file. What the checkpoint records (training
    resolution, meta-trained classifier) is `backbone.checkpoint_info`, and `adapt` uses it."""
    from .models.weights import load_backbone as load

    return load(model, checkpoint)


def _support_set(support: Any, resolution: int, background: tuple[int, int, int],
                 classes: list[str] | None = None) -> "LabeledImages":
    """A class-per-folder path, or {class name: [image files or PIL images]}."""
    import torch

    from .data.folders import ClassFolders
    from .deploy.images import LabeledImages, as_image_batch, load_class_folder

    if isinstance(support, (str, Path, ClassFolders)):
        return load_class_folder(support, resolution, classes, background)
    if isinstance(support, Mapping):
        names = list(support) if classes is None else list(classes)
        unknown = [c for c in support if c not in names]
        if unknown:
            raise BadInput(f"classes {unknown} are not in the support set {names}")
        xs, ys = [], []
        for name, images in support.items():
            x, _ = as_image_batch(images, resolution, background)
            xs.append(x)
            ys += [names.index(name)] * len(x)
        return LabeledImages(torch.cat(xs), torch.tensor(ys, dtype=torch.long), names)
    raise BadInput(f"support must be a folder (DIR/<class>/<image>) or a dict {{class: [images]}}, "
                     f"not a {type(support).__name__}")


def adapt(backbone: "Backbone | str", support: str | Path | Mapping[str, Sequence[Any]], method: str = "tinytrain", *,
          query: str | Path | Mapping[str, Sequence[Any]] | None = None, memory_budget: str | int | None = None,
          compute_budget: str | float | None = None, device: str | None = None, iterations: int = 40,
          lr: float = 1e-3, seed: int = 0, resolution: int | None = None,
          background: str | tuple[int, int, int] = "white",
          options: Mapping[str, Any] | None = None) -> "AdaptedModel":
    """Adapt `backbone` to a few labelled images, as `tinytrain adapt` does.

    `backbone`: from `load_backbone(model, checkpoint)`, or a zoo model name such as "mcunet-5fps" (its
    default shipped checkpoint). `iterations`: a whole number from 0 to 100,000.

    `support` (and `query`, scored into `model.summary['query_accuracy']`): a class-per-folder path or
    {class: [files or PIL images]}. `method`: none | lastlayer | fulltrain | tinytl | sparseupdate |
    tinytrain. Budgets take '1MB' / '15%' / a MAC count, or a `device` profile. `resolution` defaults
    to the checkpoint's own. `options`: the method's options, as `--option` takes them, e.g.
    {"ratio_policy": "largest"} for tinytrain or {"augment_pool": 8} (docs/engine.md; unknown keys are refused,
    naming the valid ones); `model.summary["options"]` lists every option the method ran with. Raises
    ValueError with a one-line message for any bad input, including a fit that diverged. The returned model
    has `.predict(images)`, `.save(dir)` and `.summary`."""
    import math

    import torch

    from .deploy.images import parse_background
    from .deploy.session import adapt_to_support, check_iterations, check_support_classes, resolve_budgets, resolve_resolution
    from .methods.base import AdaptConfig
    from .methods.options import parse_options

    from .models.backbone import Backbone

    if isinstance(backbone, str):      # a zoo model name: its default shipped checkpoint, as load_backbone(name)
        from .models.specs import ZOO
        if backbone not in ZOO:
            raise BadInput(f"adapt takes a backbone (tinytrain.load_backbone(...)) or a zoo model name; "
                             f"{backbone!r} is neither (models: {', '.join(ZOO)})")
        backbone = load_backbone(backbone)
    if not isinstance(backbone, Backbone):
        raise TypeError(f"adapt takes a backbone from tinytrain.load_backbone(model, checkpoint) or a zoo model "
                        f"name such as 'mcunet-5fps', not {type(backbone).__name__}")
    opts = parse_options(options, method, "options")    # the same check as `tinytrain adapt --option`
    check_iterations(iterations, "iterations")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise BadInput(f"lr must be a positive number (got {lr!r}); the default is 1e-3")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise BadInput(f"seed must be an integer (got {seed!r})")
    from .models.checkpoint_info import CheckpointInfo
    info = getattr(backbone, "checkpoint_info", None) or CheckpointInfo()    # e.g. a module pickled before it existed
    res, source = resolve_resolution(info.resolution, resolution)
    bg = parse_background(background)
    budgets = resolve_budgets(memory_budget, compute_budget, device)
    if isinstance(support, (str, Path)):       # folders: checked as the CLI checks them, naming the argument
        from .deploy.images import check_task_folders
        support, read_query = check_task_folders(support, query if isinstance(query, (str, Path)) else None,
                                                 flags=("support", "query"))
        query = read_query or query            # the trees just read are loaded, not listed again
    support_set = _support_set(support, res, bg)
    check_support_classes(support_set)
    query_set = _support_set(query, res, bg, support_set.classes) if query is not None else None
    config = AdaptConfig(iterations=iterations, lr=lr, seed=seed, resolution=res, options=opts)
    torch.manual_seed(seed)
    adapted, summary = adapt_to_support(backbone, backbone.spec.name, support_set, query_set, method, config,
                                        budgets, info={"checkpoint": info.source},
                                        head=info.head(), background=bg)
    adapted.summary = summary | {"resolution_from": source.replace("--resolution", "resolution="),
                                 "options": (adapted.report.get("extra") or {}).get("options")}
    return adapted


def load_adapted(folder: str | Path) -> "AdaptedModel":
    """A model saved by `model.save(dir)` or `tinytrain adapt --save dir`."""
    from .deploy.adapted import load_adapted as load

    return load(folder)
