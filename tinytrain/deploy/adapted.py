"""An adapted model on disk: what `tinytrain adapt --save OUT` writes and `predict`/`export` read.

    OUT/model.safetensors   the adapted backbone (a tinytrain checkpoint, see models.weights)
    OUT/head.safetensors    prototypes (K, D), cosine-classifier scale and bias
    OUT/adapted.json        model, classes, resolution, normalisation, method, report, update plan

The directory is written under a temporary name and renamed into place, so a crash or a bad input
never leaves a half-written OUT behind; an existing saved model is replaced only when asked to. The
replacement is one atomic exchange of the two folders where the system offers it (Linux renameat2
RENAME_EXCHANGE); elsewhere it is two renames (OUT to `.OUT.old-PID`, the new folder to OUT), and a kill
between them is undone by the next command that saves or reads OUT (`recover_interrupted_save`), which
puts the old model back; the hidden leftovers of killed writers are removed then too.
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
from ..errors import BadInput

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
            raise BadInput(f"top must be an integer >= 1 (got {top!r})")
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
    except (json.JSONDecodeError, OSError, UnicodeDecodeError, AttributeError, RecursionError):
        return False    # RecursionError: JSON nested too deeply to read


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def _leftovers(out: Path) -> list[tuple[str, int, Path]]:
    """Hidden siblings `.OUT.tmp-PID-*` / `.OUT.old-PID` left by writers that no longer run: (kind, pid, path)."""
    found = []
    try:
        siblings = list(out.parent.iterdir()) if out.parent.is_dir() else []
    except OSError:
        return []
    for p in siblings:
        for kind in ("tmp", "old"):
            head = f".{out.name}.{kind}-"
            if p.name.startswith(head):
                pid = p.name[len(head):].split("-", 1)[0]
                if pid.isdigit() and not _pid_alive(int(pid)):
                    found.append((kind, int(pid), p))
    return found


def recover_interrupted_save(out_dir: str | Path, valid=None, what: str = "saved model") -> str | None:
    """Undo a folder write into `out_dir` that was killed between its two renames: the old folder, still
    whole in `.OUT.old-PID`, goes back to OUT; leftovers of killed writers are removed. Returns a note, or
    None. `valid` says whether a folder is one of the kind written (default: a saved model); the C export
    uses the same mechanism for its source trees."""
    out = Path(out_dir)
    valid = valid or is_adapted_dir
    notes = []
    left = _leftovers(out)
    if not out.exists():
        olds = sorted((p for kind, _, p in left if kind == "old" and valid(p)),
                      key=lambda p: p.stat().st_mtime, reverse=True)
        if olds:
            olds[0].rename(out)
            notes.append(f"restored the {what} {out} that an interrupted write had moved to {olds[0].name}")
            left = _leftovers(out)
    removed = [p for _, _, p in left if p.exists()]
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    if removed:
        notes.append(f"removed {len(removed)} hidden leftover folder(s) of interrupted writes beside {out} "
                     f"({', '.join(p.name for p in removed[:2])})")
    if notes:
        from ..progress import note
        note("; ".join(notes))
    return "; ".join(notes) or None


def exchange_dirs(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux renameat2 with RENAME_EXCHANGE); False where the
    system or file system does not offer it (the caller then renames twice)."""
    import ctypes
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange) == 0


def check_save_target(out_dir: str | Path, overwrite: bool = False, flag: str = "--save") -> Path:
    """Refuse, before any work, an output folder that cannot or must not be written: a file, a folder that
    holds something else, an existing saved model (unless `overwrite`), a place we cannot write. An
    interrupted earlier save into it is recovered first (`recover_interrupted_save`)."""
    recover_interrupted_save(out_dir)
    out = check_output_dir(out_dir, flag)
    if out.is_dir() and any(out.iterdir()):
        if not is_adapted_dir(out):
            raise BadInput(f"{flag} {out} is a non-empty directory that is not a saved tinytrain model; "
                             "choose a new or empty directory")
        if not overwrite:
            how = "--overwrite" if flag.startswith("--") else "overwrite=True"
            raise BadInput(f"{flag} {out} already holds a saved model; pass {how} to replace it, "
                             "or choose another directory")
    return out


def save_adapted(out_dir: str | Path, adapted: AdaptedModel, overwrite: bool = False, flag: str = "--save") -> Path:
    """Write `adapted` to `out_dir` atomically. An existing saved model is replaced only with `overwrite`;
    any other non-empty directory is refused."""
    out = check_save_target(out_dir, overwrite, flag)
    made = missing_parents(out.parent)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    try:
        _write_bundle(tmp, adapted)
        _apply_umask(tmp)
        if out.exists():
            if any(out.iterdir()):
                if exchange_dirs(tmp, out):          # one atomic step: OUT is the new model, tmp the old one
                    shutil.rmtree(tmp, ignore_errors=True)
                else:                            # two renames; a kill between them is undone on the next run
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
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        if old.exists() and not out.exists():
            old.rename(out)                  # stopped between the two renames: the old model goes back
        shutil.rmtree(tmp, ignore_errors=True)
        remove_made_dirs(made)
        if isinstance(exc, OSError):     # never name the temporary folder
            raise BadInput(f"{flag} {out}: could not write the model ({(exc.strerror or str(exc)).lower()})") from None
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
    try:
        recover_interrupted_save(folder)     # a save into it that was killed: the old model back, leftovers gone
    except OSError:
        pass                                 # e.g. a read-only place: read what is there
    if not folder.exists():
        raise FileNotFoundError(f"model directory {folder} does not exist; create it with `tinytrain adapt --save`")
    if not folder.is_dir():
        raise BadInput(f"{folder} is a file; --model-dir takes the directory written by `tinytrain adapt --save`")
    if not is_adapted_dir(folder):
        raise BadInput(f"{folder} is not a saved tinytrain model (no valid {META_FILE}); "
                         "create one with `tinytrain adapt ... --save DIR`")
    meta = json.loads((folder / META_FILE).read_text())
    check_metadata(meta, folder / META_FILE)
    for name in (MODEL_FILE, HEAD_FILE):
        if not (folder / name).is_file():
            raise BadInput(f"{folder} lacks {name}, so it is incomplete; save the model again with "
                             "`tinytrain adapt ... --save DIR`")
    backbone, _ = load_checkpoint(folder / MODEL_FILE, expect_model=meta["model"])
    head_t = read_safetensors(folder / HEAD_FILE, what="classifier file")
    if not {"prototypes", "scale", "bias"} <= set(head_t):
        raise UnreadableCheckpoint(f"{folder / HEAD_FILE} lacks prototypes/scale/bias; save the model again")
    protos = head_t["prototypes"]
    if protos.ndim != 2 or protos.shape[1] != backbone.feature_dim:
        raise BadInput(f"{folder / HEAD_FILE}: prototypes have shape {tuple(protos.shape)}, expected "
                         f"({len(meta['classes'])}, {backbone.feature_dim}); the directory is inconsistent, save it again")
    if protos.shape[0] != len(meta["classes"]):
        raise BadInput(f"{folder / META_FILE} names {len(meta['classes'])} classes but {HEAD_FILE} holds "
                         f"{protos.shape[0]} prototypes; restore the class list (one name per prototype, in order) "
                         "or save the model again")
    if not all(bool(torch.isfinite(head_t[k]).all()) for k in ("prototypes", "scale", "bias")) or \
            head_t["scale"].numel() != 1 or head_t["bias"].numel() != 1:
        raise BadInput(f"{folder / HEAD_FILE} holds non-finite values or a scale/bias that is not one number; "
                         "save the model again")
    head = CosineClassifier(float(head_t["scale"]), float(head_t["bias"]))
    predictor = Predictor(backbone, protos, head, list(meta["classes"]))
    return AdaptedModel(predictor, meta["model"], int(meta["resolution"]), list(meta["classes"]),
                        {k: [float(v) for v in meta["normalisation"][k]] for k in ("mean", "std")},
                        meta["method"], meta.get("report") or {},
                        meta.get("update_plan"), meta.get("info") or {},
                        tuple(meta.get("background", WHITE)))


MAX_RESOLUTION = 4096


def check_metadata(meta: dict, path: Path) -> None:
    """Every field of an adapted.json that a reader uses, by type and range; a ValueError names the file, the
    field and what to change. `normalisation` must be the one the code applies (`images.normalisation()`):
    `predict` normalises with it and an export folds the file's value into its graph, so a folder holding
    another would make the two disagree; it is refused instead (save the model again)."""
    from .images import normalisation as pipeline_normalisation

    def bad(field_name: str, want: str) -> BadInput:
        return BadInput(f"{path}: {field_name} must be {want} (got {json.dumps(meta.get(field_name))[:60]}); "
                          "restore it or save the model again with `tinytrain adapt --save`")

    version = meta.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise bad("version", f"a whole number from 1 to {FORMAT_VERSION}")
    if version > FORMAT_VERSION:
        raise BadInput(f"{path} was written by a newer tinytrain (format version {version}); upgrade tinytrain")
    missing = [k for k in ("model", "resolution", "classes", "normalisation", "method") if k not in meta]
    if missing:
        raise BadInput(f"{path} lacks {', '.join(missing)}; the directory is damaged, save it again")
    for key in ("model", "method"):
        if not isinstance(meta[key], str) or not meta[key].strip():
            raise bad(key, "a non-empty string")
    res = meta["resolution"]
    if isinstance(res, bool) or not isinstance(res, int) or not 8 <= res <= MAX_RESOLUTION:
        raise bad("resolution", f"a whole number of pixels from 8 to {MAX_RESOLUTION}")
    classes = meta["classes"]
    if not isinstance(classes, list) or len(classes) < 1 or \
            not all(isinstance(c, str) and c.strip() for c in classes):
        raise bad("classes", "a list of class names (non-empty strings), one per prototype")
    if len(set(classes)) != len(classes):
        dup = sorted({c for c in classes if classes.count(c) > 1})
        raise bad("classes", f"a list of distinct names ({', '.join(map(repr, dup[:3]))} repeated)")
    norm, want = meta["normalisation"], pipeline_normalisation()
    ok = (isinstance(norm, dict) and all(isinstance(norm.get(k), list) and len(norm[k]) == 3 and
                                         all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in norm[k])
                                         for k in ("mean", "std")))
    if not ok or not all(abs(float(a) - b) <= 1e-6 for k in ("mean", "std") for a, b in zip(norm[k], want[k])):
        raise bad("normalisation", f"{json.dumps(want)}, the mean/std tinytrain applies to every image (predict "
                  "and exports alike; another would make them disagree)")
    bg = meta.get("background", list(WHITE))
    if not isinstance(bg, list) or len(bg) != 3 or \
            not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in bg):
        raise bad("background", "three whole numbers 0-255 (R, G, B), e.g. [255, 255, 255]")
    for key in ("report", "update_plan", "info"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise bad(key, "a JSON object or null")


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
