"""The run folder's episode files. Each domain's test episodes are sampled once and stored, so that every
method, worker, rank and resume sees the identical tasks; the held-out episodes that learning rates and the
static plan are chosen on (validation classes, or held-out episodes of the target itself) are stored beside
them and never equal a test episode. Here too: how a domain spec opens as a dataset and how it is named as a
file. How episodes are drawn is the config's EpisodeSpec (tinytrain.data.episodes, the same spec
meta-training draws its episodes by)."""
from __future__ import annotations

import hashlib
import re
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from ..jsonfile import write_json_atomic
from ..data.episodes import EpisodeSpec
from .evalconfig import TRAINING_FREE, EvalConfig
from ..errors import BadInput


def domain_file_stem(domain: str) -> str:
    """A safe, stable file name for a domain spec (which may be a path)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", domain).strip("._") or "domain"
    if stem != domain:
        stem = f"{stem[-40:]}-{hashlib.sha1(domain.encode()).hexdigest()[:8]}"
    return stem


def open_domain(spec: str, split: str):
    """A domain spec -> dataset of one split (pocket name, 'SOURCE:PATH' or a class-per-folder path)."""
    from .. import data
    if split == "test" and Path(spec).expanduser().is_dir():
        split = "all"                    # a plain folder has no class splits: all of it is test data
    return data.open_dataset(spec, split)


def validation_source(domain: str) -> str | None:
    """The domain whose validation split stands in when `domain` has none (pocket targets -> source)."""
    try:
        from ..data import pocket
    except ImportError:
        return None
    targets = list(getattr(pocket, "POCKET_TARGETS", []))
    if domain in targets or domain == getattr(pocket, "POCKET_SOURCE", None):
        return pocket.POCKET_SOURCE
    return None


def val_info(out_dir: Path) -> dict:
    """{test domain: {"domain": the domain its validation episodes come from, "split": its split}}."""
    from .rundir import read_json
    path = out_dir / "episodes" / "validation.json"
    if not path.exists():
        return {}
    info = read_json(path, "where the validation episodes come from")
    if not isinstance(info, dict) or not all(isinstance(v, dict) and isinstance(v.get("domain"), str)
                                             and isinstance(v.get("split"), str) for v in info.values()):
        raise BadInput(f"{path} does not map each domain to {{\"domain\": ..., \"split\": ...}}; delete it (the "
                       "validation episodes are then sampled again) or use a new --out")
    return info


def val_split_of(out_dir: Path, domain: str) -> str:
    return val_info(out_dir)[domain]["split"]


def val_domain_of(out_dir: Path, domain: str) -> str:
    return val_info(out_dir)[domain]["domain"]


def _sampler(dataset, shape: EpisodeSpec, seed: int):
    from ..data.sampler import EpisodeSampler
    return EpisodeSampler(dataset, seed=seed, **shape.sampler_kwargs())


def ensure_episodes(config: EvalConfig, out: Path, log: Callable[[str], None] = print) -> None:
    """Sample each domain's test episodes once and store them; later runs (and all methods) reuse them."""
    from ..data.sampler import check_episode_indices
    from ..data.types import load_episodes, save_episodes
    ep_dir = out / "episodes"
    ep_dir.mkdir(exist_ok=True)
    for domain in config.domains:
        path = ep_dir / (domain_file_stem(domain) + ".json")
        dataset = open_domain(domain, config.split)
        held_out = ep_dir / (domain_file_stem(domain) + ".tval.json")
        if held_out.exists():      # --lr target-val's, drawn from this dataset: checked while it is open
            check_episode_indices(held_out, load_episodes(held_out)[0], dataset)
        if path.exists():
            episodes, meta = load_episodes(path)
            if meta.get("classes") is not None and list(meta["classes"]) != list(dataset.classes):
                raise BadInput(f"{path} was sampled from a different class list than {domain!r} has now; "
                                 "use a new --out (the data changed)")
            if len(episodes) != config.tasks:
                raise BadInput(f"{path} holds {len(episodes)} episodes, not --tasks {config.tasks}; use a new --out")
            check_episode_indices(path, episodes, dataset)
            continue
        episodes = _sampler(dataset, config.episodes, config.seed).sample(config.tasks)
        meta = {"domain": domain, "split": config.split, "seed": config.seed, "tasks": config.tasks,
                "sampler": asdict(config.episodes), "dataset": dataset.name, "classes": list(dataset.classes)}
        save_episodes(path, episodes, meta)
        log(f"sampled {len(episodes)} {config.episodes.mode} episodes of {domain} ({len(dataset.classes)} classes) "
            f"-> {path}")


def check_support_split(config: EvalConfig, out: Path) -> None:
    """`--lr support` validates each rate on the support images left over after half of every class's trains;
    an episode whose classes all have one support image has none left. Refuse such a run before any training
    (naming the protocols that work) rather than fail those jobs and compare methods over unequal tasks."""
    if config.lr != "support" or all(v.method in TRAINING_FREE for v in config.variants):
        return
    from ..data.types import load_episodes
    for domain in config.domains:
        episodes, _ = load_episodes(out / "episodes" / (domain_file_stem(domain) + ".json"))
        bad = [i for i, e in enumerate(episodes) if max(e.shots(), default=0) < 2]
        if bad:
            raise BadInput(f"--lr support validates each rate on a split of the task's support set, but {len(bad)} "
                             f"of the {len(episodes)} episodes of {domain} (first: task {bad[0]}) have one support "
                             "image per class, nothing to validate on; use --lr target-val (held-out episodes of "
                             "the same domain), --lr auto with --lr-domain, or a fixed rate such as --lr 1e-3")


def ensure_validation_episodes(config: EvalConfig, out: Path, log: Callable[[str], None] = print,
                               flag: str = "--lr auto") -> None:
    """Validation episodes for `--lr auto`: from the domain's 'val' split, else from `lr_domain` or the
    pocket source's 'val' split. Never from the test classes."""
    from ..data.types import load_episodes, save_episodes
    info = val_info(out)
    for domain in config.domains:
        path = out / "episodes" / (domain_file_stem(domain) + ".val.json")
        if domain in info and path.exists():
            from ..data.sampler import check_episode_indices
            check_episode_indices(path, load_episodes(path)[0], open_domain(info[domain]["domain"], "val"))
            continue
        candidates = [domain] + [d for d in (config.lr_domain, validation_source(domain)) if d and d != domain]
        dataset, used, errors = None, None, []
        for cand in candidates:
            try:
                dataset, used = open_domain(cand, "val"), cand
                break
            except (ValueError, FileNotFoundError, KeyError) as exc:
                errors.append(f"{cand}: {exc}")
        if dataset is None:
            raise BadInput(f"{flag} needs validation classes for {domain!r} but found none ({'; '.join(errors)}); "
                             "pass --lr-domain with a domain that has a 'val' split"
                             + (", or a fixed --lr" if flag == "--lr auto" else ""))
        shape = config.episodes
        if shape.mode == "fixed" and len(dataset.classes) < (shape.ways or 0):
            shape = EpisodeSpec("fixed", len(dataset.classes), shape.shots, shape.queries)
        episodes = _sampler(dataset, shape, config.seed + 7919).sample(config.lr_episodes)
        save_episodes(path, episodes, {"domain": used, "split": "val", "for": domain, "sampler": asdict(shape)})
        info[domain] = {"domain": used, "split": "val"}
        write_json_atomic(out / "episodes" / "validation.json", info)
        log(f"validation episodes for {domain}: {len(episodes)} from {used} (val split)")


def ensure_target_val_episodes(config: EvalConfig, out: Path, log: Callable[[str], None] = print) -> None:
    """Held-out episodes of each target domain for `--lr target-val` (P>M>F's protocol): drawn from the same
    split as the test episodes with another seed, and never equal to one of them. They share classes with
    the test episodes (as in P>M>F); `--lr auto`, on the source's held-out classes, is the strict protocol."""
    from ..data.types import load_episodes, save_episodes
    for domain in config.domains:
        path = out / "episodes" / (domain_file_stem(domain) + ".tval.json")
        if path.exists():          # checked by ensure_episodes, which every run calls first
            continue
        test, _ = load_episodes(out / "episodes" / (domain_file_stem(domain) + ".json"))
        seen = {(tuple(e.classes), tuple(e.support), tuple(e.query)) for e in test}
        dataset = open_domain(domain, config.split)
        sampler = _sampler(dataset, config.episodes, config.seed + 104_729)
        picked, tries = [], 0
        while len(picked) < config.lr_episodes and tries < 20 * config.lr_episodes:
            e = sampler.episode(tries)
            tries += 1
            key = (tuple(e.classes), tuple(e.support), tuple(e.query))
            if key not in seen:
                seen.add(key)
                picked.append(e)
        if len(picked) < config.lr_episodes:
            raise BadInput(f"--lr target-val: {domain!r} ({len(dataset.classes)} classes, {dataset.num_images} "
                             f"images) is too small to hold out {config.lr_episodes} episodes that differ from the "
                             "test episodes; use --lr auto, --lr support or a fixed --lr")
        save_episodes(path, picked, {"domain": domain, "split": config.split, "for": domain, "held_out_of": "test",
                                     "sampler": asdict(config.episodes)})
        log(f"held-out target episodes for {domain}: {len(picked)} (for --lr target-val)")
