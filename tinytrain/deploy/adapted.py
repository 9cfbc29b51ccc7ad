"""An adapted model on disk: what `tinytrain adapt --save OUT` writes and `predict`/`export` read.

    OUT/model.safetensors   the adapted backbone (a tinytrain checkpoint, see models.weights)
    OUT/head.safetensors    prototypes (K, D), cosine-classifier scale and bias
    OUT/adapted.json        model, classes, resolution, normalisation, method, report, update plan

The directory is written under a temporary name and renamed into place, so a crash or a bad input
never leaves a half-written OUT behind; an existing saved model is replaced only when asked to.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..data.datasets import WHITE
from ..jsonfile import give_normal_mode
from ..methods.base import Predictor
from ..models.head import CosineClassifier
from ..models.weights import UnreadableCheckpoint, load_checkpoint, read_safetensors, save_checkpoint
from .outputs import check_output_dir, missing_parents, remove_made_dirs

FORMAT = "tinytrain-adapted"
FORMAT_VERSION = 1
MODEL_FILE, HEAD_FILE, META_FILE = "model.safetensors", "head.safetensors", "adapted.json"


@dataclass
class AdaptedModel:
    """A predictor plus everything needed to feed it images and to explain how it was made."""

    predictor: Predictor
    model: str
    resolution: int
    classes: list[str]
    normalisation: dict
    method: str
    report: dict = field(default_factory=dict)       # AdaptReport.to_dict()
    update_plan: dict | None = None                  # UpdatePlan.to_dict() when the method has one
    info: dict = field(default_factory=dict)         # checkpoint, seed, query accuracy, ...
    background: tuple[int, int, int] = WHITE         # what transparent pixels are composited onto
    summary: dict = field(default_factory=dict, repr=False)   # what `adapt` reported (not saved)

    def metadata(self) -> dict:
        return {"format": FORMAT, "version": FORMAT_VERSION, "model": self.model,
                "resolution": self.resolution, "classes": self.classes,
                "normalisation": self.normalisation, "background": list(self.background), "method": self.method,
                "report": self.report, "update_plan": self.update_plan, "info": self.info}

    def predict(self, images, top: int = 1) -> list[dict]:
        """Classify images: file paths or folders (read as `tinytrain predict` reads them), PIL images,
        or a tensor (N, 3, R, R): uint8 for raw RGB pixels 0-255 (normalised here, as files are), floating
        point for images already normalised with `self.normalisation` (the eval transform's output); other
        dtypes and NaN/infinite values are refused. One dict per image: {label, score, top: [{label,
        probability}]} (plus `image` for files). `top`: how many classes to list (an integer >= 1)."""
        from .images import as_image_batch
        if isinstance(top, bool) or not isinstance(top, int) or top < 1:
            raise ValueError(f"top must be an integer >= 1 (got {top!r})")
        x, names = as_image_batch(images, self.resolution, self.background)
        results = classify(self, x, top)
        for r, name in zip(results, names):
            if name is not None:
                r["image"] = name
        return results

    def save(self, folder: str | Path, overwrite: bool = False) -> Path:
        """Write the model as `tinytrain adapt --save` does (see `save_adapted`)."""
        return save_adapted(folder, self, overwrite=overwrite, flag="save folder")


def _write_bundle(folder: Path, adapted: AdaptedModel) -> None:
    p = adapted.predictor
    save_checkpoint(folder / MODEL_FILE, p.backbone, meta={"adapted": True, "method": adapted.method})
    save_file({"prototypes": p.prototypes.detach().contiguous().float().cpu(),
               "scale": p.head.scale.detach().reshape(()).float().cpu().contiguous(),
               "bias": p.head.bias.detach().reshape(()).float().cpu().contiguous()},
              str(folder / HEAD_FILE), metadata={"format": FORMAT})
    (folder / META_FILE).write_text(json.dumps(adapted.metadata(), indent=2, default=_json_default))


def _json_default(obj):
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    raise TypeError(f"cannot store {type(obj).__name__} in adapted.json")


def is_adapted_dir(folder: str | Path) -> bool:
    meta = Path(folder) / META_FILE
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("format") == FORMAT
    except (json.JSONDecodeError, OSError, UnicodeDecodeError, AttributeError):
        return False


def check_save_target(out_dir: str | Path, overwrite: bool = False, flag: str = "--save") -> Path:
    """Refuse, before any work, an output folder that cannot or must not be written: a file, a folder that
    holds something else, an existing saved model (unless `overwrite`), a place we cannot write."""
    out = check_output_dir(out_dir, flag)
    if out.is_dir() and any(out.iterdir()):
        if not is_adapted_dir(out):
            raise ValueError(f"{flag} {out} is a non-empty directory that is not a saved tinytrain model; "
                             "choose a new or empty directory")
        if not overwrite:
            how = "--overwrite" if flag.startswith("--") else "overwrite=True"
            raise ValueError(f"{flag} {out} already holds a saved model; pass {how} to replace it, "
                             "or choose another directory")
    return out


def save_adapted(out_dir: str | Path, adapted: AdaptedModel, overwrite: bool = False, flag: str = "--save") -> Path:
    """Write `adapted` to `out_dir` atomically. An existing saved model is replaced only with `overwrite`;
    any other non-empty directory is refused."""
    out = check_save_target(out_dir, overwrite, flag)
    made = missing_parents(out.parent)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        _write_bundle(tmp, adapted)
        _apply_umask(tmp)
        if out.exists():
            if any(out.iterdir()):
                old = out.parent / f".{out.name}.old-{os.getpid()}"
                out.rename(old)
                tmp.rename(out)
                shutil.rmtree(old, ignore_errors=True)
            else:
                out.rmdir()
                tmp.rename(out)
        else:
            tmp.rename(out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_made_dirs(made)
        if isinstance(exc, OSError):     # never name the temporary folder
            raise ValueError(f"{flag} {out}: could not write the model ({(exc.strerror or str(exc)).lower()})") from None
        raise
    return out


def _apply_umask(folder: Path) -> None:
    """mkdtemp makes a private (0700) folder; give the result the permissions a plain mkdir would."""
    give_normal_mode(folder, directory=True)
    for f in folder.iterdir():
        give_normal_mode(f)


def load_adapted(folder: str | Path) -> AdaptedModel:
    """Read a directory written by `save_adapted` (or `tinytrain adapt --save`). A damaged or incomplete
    directory is a one-line ValueError naming the file at fault."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"model directory {folder} does not exist; create it with `tinytrain adapt --save`")
    if not folder.is_dir():
        raise ValueError(f"{folder} is a file; --model-dir takes the directory written by `tinytrain adapt --save`")
    if not is_adapted_dir(folder):
        raise ValueError(f"{folder} is not a saved tinytrain model (no valid {META_FILE}); "
                         "create one with `tinytrain adapt ... --save DIR`")
    meta = json.loads((folder / META_FILE).read_text())
    if meta.get("version", 0) > FORMAT_VERSION:
        raise ValueError(f"{folder} was written by a newer tinytrain (format version {meta['version']}); upgrade")
    missing = [k for k in ("model", "resolution", "classes", "normalisation", "method") if k not in meta]
    if missing:
        raise ValueError(f"{folder / META_FILE} lacks {', '.join(missing)}; the directory is damaged, save it again")
    for name in (MODEL_FILE, HEAD_FILE):
        if not (folder / name).is_file():
            raise ValueError(f"{folder} lacks {name}, so it is incomplete; save the model again with "
                             "`tinytrain adapt ... --save DIR`")
    backbone, _ = load_checkpoint(folder / MODEL_FILE, expect_model=meta["model"])
    head_t = read_safetensors(folder / HEAD_FILE, what="classifier file")
    if not {"prototypes", "scale", "bias"} <= set(head_t):
        raise UnreadableCheckpoint(f"{folder / HEAD_FILE} lacks prototypes/scale/bias; save the model again")
    protos = head_t["prototypes"]
    if protos.shape != (len(meta["classes"]), backbone.feature_dim):
        raise ValueError(f"{folder}: prototypes have shape {tuple(protos.shape)}, expected "
                         f"({len(meta['classes'])}, {backbone.feature_dim}); the directory is inconsistent")
    head = CosineClassifier(float(head_t["scale"]), float(head_t["bias"]))
    predictor = Predictor(backbone, protos, head, list(meta["classes"]))
    return AdaptedModel(predictor, meta["model"], int(meta["resolution"]), list(meta["classes"]),
                        meta["normalisation"], meta["method"], meta.get("report") or {},
                        meta.get("update_plan"), meta.get("info") or {},
                        tuple(meta.get("background") or WHITE))


def classify(adapted: AdaptedModel, x: torch.Tensor, top: int = 1) -> list[dict]:
    """Class scores -> per image {label, score, probabilities of the top classes}."""
    logits = adapted.predictor.predict(x)
    probs = logits.softmax(-1)
    k = min(top, probs.shape[1])
    out = []
    for row_p, row_l in zip(probs, logits):
        vals, idx = row_p.topk(k)
        out.append({"label": adapted.classes[int(idx[0])], "score": float(row_l[idx[0]]),
                    "top": [{"label": adapted.classes[int(i)], "probability": round(float(v), 6)}
                            for v, i in zip(vals, idx)]})
    return out
