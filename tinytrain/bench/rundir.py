"""The run folder and its stored settings. A run is resumable only if every launch into DIR works with the
settings its results were made with, so DIR/config.json is written once with its digest, a later launch is
checked against it (different settings are refused once DIR holds results) and a config.json edited since is
refused. The folder's layout (everything JSON, a user can read and diff it; episodes.py, lrsearch.py,
staticplan.py and results.py write the rest):

    DIR/config.json              the run's settings; a resume into DIR must use the same ones
    DIR/config.sha256            the digest of config.json, written with it
    DIR/episodes/<domain>.json   test episodes, sampled once (with the sampler settings in "meta")
    DIR/episodes/<domain>.val.json  validation episodes used by `--lr auto` (held-out classes of the source)
    DIR/episodes/<domain>.tval.json held-out episodes of the target domain itself, used by `--lr target-val`
    DIR/lr.json                  learning rates chosen on validation episodes (with `--lr auto` / `target-val`)
    DIR/lr_search.jsonl          the search's records as they finish (same format as results.jsonl), so a killed
                                 search resumes where it stopped
    DIR/static_plan.json         the one TinyTrain plan of `--ablate-static`, chosen on validation episodes
    DIR/results.jsonl            one record per (domain, task, method), append-only (see results.py); while
                                 ranks of a torch.distributed run write, rank R > 0 appends to results.rankR.jsonl
    DIR/eval.lock                while a launch runs: its pid and host (distributed.py), so a second one refuses
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..jsonfile import write_json_atomic, write_text_atomic
from .evalconfig import EvalConfig
from .results import ResultStore, shard_paths
from ..errors import BadInput

CONFIG_DIGEST = "config.sha256"          # beside config.json: the digest of the settings the results were made with
LR_SEARCH = "lr_search.jsonl"            # the lr search's records, kept as they finish


def config_digest(d: dict) -> str:
    """SHA-256 of a stored config's content (key order and whitespace do not matter)."""
    return hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_json(path: Path, what: str):
    """A JSON file of a run folder; a damaged one is a one-line ValueError naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path} ({what}) is not valid JSON ({exc}); restore it, or use a new --out") from None
    except RecursionError:
        raise BadInput(f"{path} ({what}) is nested too deeply to be a tinytrain file; restore it, or use a "
                         "new --out") from None


def _write_config(out: Path, new: dict) -> None:
    """config.json, then its digest, each atomically. A kill between the two leaves no digest (read_stored_config
    makes it) or, on a restart over settings that made nothing, the old one (prepare_run_dir rewrites it)."""
    write_json_atomic(out / "config.json", new)
    write_text_atomic(out / CONFIG_DIGEST, config_digest(new) + "\n")


def read_stored_config(out: Path) -> dict:
    """DIR/config.json, checked against DIR/config.sha256 (written with it): settings edited after the run
    began would make every report claim settings the results were not made with, so that is refused. A
    folder from before the digest existed gets one now."""
    path = out / "config.json"
    stored = read_json(path, "the run's settings")
    if not isinstance(stored, dict):
        raise BadInput(f"{path} must hold a JSON object of settings; restore it, or use a new --out")
    digest = out / CONFIG_DIGEST
    if digest.exists():
        if digest.read_text(encoding="utf-8", errors="replace").strip() != config_digest(stored):
            raise BadInput(f"{path} was edited after the run began (it no longer matches {digest.name}), so its "
                             "settings are not the ones the results were made with; restore it, or rerun into a "
                             "new --out")
    else:
        write_text_atomic(digest, config_digest(stored) + "\n")
    return stored


def config_from_stored(d: dict, path: Path) -> "EvalConfig":
    """EvalConfig of a stored config.json; a field of the wrong type or value is a one-line ValueError."""
    try:
        config = EvalConfig.from_dict(d)
        config.validate()
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise BadInput(f"{path} holds settings this tinytrain cannot read ({exc}); restore it, or rerun into a "
                         "new --out") from None
    return config


def config_differences(old: dict, new: dict) -> list[str]:
    """Human-readable differences between two stored configs (for refusing a mismatched resume). A setting
    added after a run was stored matches when the new config holds its default: older runs stay resumable."""
    out = []
    defaults = EvalConfig().to_dict()
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a == b or (k not in old and k in defaults and b == defaults[k]):
            continue
        if k == "variants" and [v["label"] for v in a or []] != [v["label"] for v in b or []]:
            a, b, k = [v["label"] for v in a or []], [v["label"] for v in b or []], "methods"
        out.append(f"{k}: stored {json.dumps(a)[:160]} vs now {json.dumps(b)[:160]}")
    return out


def prepare_run_dir(config: EvalConfig, out_dir: str | Path) -> Path:
    """Create DIR with config.json, or check that an existing DIR was made by the same settings."""
    config.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.json"
    new = json.loads(json.dumps(config.to_dict()))
    if path.exists():
        made = bool(ResultStore(out / "results.jsonl").load())
        try:
            old = read_stored_config(out)
        except BadInput:
            searched = any(p.exists() for p in [out / "lr.json", out / LR_SEARCH, *shard_paths(out / LR_SEARCH)])
            if made or searched:
                raise
            old = None    # a launch killed between config.json and its digest, before any work: start over
        diff = config_differences(old, new) if old is not None else ["the stored settings are unusable"]
        if diff and made:
            raise BadInput(f"{out} holds a run with different settings ({'; '.join(diff)}); "
                             "use a new --out, or repeat the original settings to resume")
        if diff:       # nothing was evaluated yet (e.g. the first attempt failed early): start over
            import shutil
            shutil.rmtree(out / "episodes", ignore_errors=True)
            (out / "lr.json").unlink(missing_ok=True)
            for stale in [out / LR_SEARCH, *shard_paths(out / LR_SEARCH)]:
                stale.unlink(missing_ok=True)
            _write_config(out, new)
    else:
        _write_config(out, new)
    # a launch killed mid-write leaves the temporary file of the settings or episodes it was writing (only the
    # lock holder writes those, so none is in use)
    for tmp in [*out.glob(".config.*.tmp"), *((out / "episodes").glob(".*.tmp"))]:
        tmp.unlink(missing_ok=True)
    return out
