"""The plan of the `--ablate-static` column. To isolate what task adaptivity is worth, TinyTrain also runs
with one plan for every test task, chosen once on validation episodes of held-out classes (those `--lr auto`
chooses on) and stored in DIR/static_plan.json; such a column names it with the STATIC_PLAN placeholder, which
the Runner replaces with the stored plan."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..jsonfile import write_json_atomic
from ..methods.base import AdaptConfig
from .episodes import ensure_validation_episodes, val_domain_of
from .evalconfig import STATIC_PLAN, EvalConfig
from .runner import Runner


def ensure_static_plan(config: EvalConfig, out: Path, log: Callable[[str], None] = print) -> None:
    """`--ablate-static`: one TinyTrain plan for every test task, chosen once on validation episodes of
    held-out classes (the source's, as for `--lr auto`), stored in DIR/static_plan.json."""
    if not any(v.options.get("fixed_plan") == STATIC_PLAN for v in config.variants):
        return
    path = out / "static_plan.json"
    if path.exists():
        return
    ensure_validation_episodes(config, out, log, flag="--ablate-static")
    from ..methods.tinytrain import static_plan
    runner = Runner(config, out)
    variant = next(v for v in config.variants if v.options.get("fixed_plan") == STATIC_PLAN)
    backbone, head = runner.backbone(variant.checkpoint)
    options = {k: v for k, v in variant.options.items() if k != "fixed_plan"}
    acfg = AdaptConfig(iterations=config.iterations, resolution=config.resolution, options=options,
                       memory_budget=variant.memory_budget if variant.memory_budget is not None else config.memory_budget,
                       compute_budget=config.compute_budget, seed=config.seed)
    tasks, sources = [], []
    for d in config.domains:
        src = val_domain_of(out, d)
        if src in sources:
            continue
        sources.append(src)
        tasks += [runner.task(d, i, "val")[1] for i in range(config.lr_episodes)]
    plan = static_plan(backbone, head, tasks, acfg)
    write_json_atomic(path, {"plan": plan, "validation": sources, "episodes": len(tasks)})
    log(f"static TinyTrain plan chosen on {len(tasks)} validation episodes of {', '.join(sources)}: layers "
        f"{[u['index'] for u in plan['layers']]} -> {path}")
