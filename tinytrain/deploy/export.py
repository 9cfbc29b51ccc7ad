"""Export an adapted model as one file that maps an image to class scores (ONNX or TorchScript).

The exported graph is: input normalisation -> adapted backbone -> L2-normalised features -> a
Linear layer whose weight rows are the L2-normalised prototypes times the classifier scale and whose
bias is scale * bias. That is exactly `CosineClassifier(features, prototypes)`, folded into constants,
so a runtime needs nothing but the file.

Input: float32 RGB in [0, 1], shape (N, 3, R, R), after the same resize/centre-crop as
`tinytrain predict` (shorter side to R, centre crop). Output: (N, K) class scores (logits).
A JSON sidecar (FILE.json) names the classes and records the input spec and the update plan.

ONNX uses the TorchScript-based exporter (`dynamo=False`): it works offline without `onnxscript`,
and opset 13 is chosen for broad runtime support: the graph holds only Conv (BN folded), Clip,
Add, Sub, Div, ReduceMean, ReduceL2 and Gemm, all in their opset-13 form, which onnxruntime >= 1.6,
TensorRT >= 7, OpenVINO and the TFLite converters load.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..jsonfile import give_normal_mode, write_json_atomic
from ..models.backbone import Backbone
from ..models.weights import sha256_of
from .adapted import AdaptedModel
from .outputs import check_output_file, missing_parents, remove_made_dirs
from ..errors import BadInput

DEFAULT_OPSET = 13
FORMATS = ("onnx", "torchscript")


class ScoringModel(nn.Module):
    """Image in [0, 1] -> class scores, with normalisation and the prototype classifier built in."""

    def __init__(self, backbone: Backbone, prototypes: torch.Tensor, scale: float, bias: float,
                 mean: list[float], std: list[float]):
        super().__init__()
        self.backbone = backbone.eval()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        protos = F.normalize(prototypes.detach().float(), dim=-1)
        self.classifier = nn.Linear(protos.shape[1], protos.shape[0])
        with torch.no_grad():
            self.classifier.weight.copy_(scale * protos)
            self.classifier.bias.fill_(scale * bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        f = self.backbone((image - self.mean) / self.std)
        f = f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)   # as F.normalize, in basic ops
        return self.classifier(f)


def scoring_model(adapted: AdaptedModel) -> ScoringModel:
    p = adapted.predictor
    model = ScoringModel(p.backbone, p.prototypes, float(p.head.scale.detach()), float(p.head.bias.detach()),
                         adapted.normalisation["mean"], adapted.normalisation["std"])
    return model.eval()


def sidecar(adapted: AdaptedModel, fmt: str, opset: int | None = None) -> dict:
    """What a runtime needs besides the graph: classes, input spec, and how the model was adapted."""
    d = {"format": fmt, "model": adapted.model, "classes": adapted.classes,
         "input": {"name": "image", "shape": ["N", 3, adapted.resolution, adapted.resolution],
                   "dtype": "float32", "range": [0.0, 1.0], "layout": "NCHW RGB",
                   "preprocess": f"8-bit RGB (16-bit scaled down, transparent pixels composited onto "
                                 f"RGB {tuple(adapted.background)}); resize shorter side to {adapted.resolution}, "
                                 f"centre crop {adapted.resolution}x{adapted.resolution}; normalisation is inside "
                                 "the graph",
                   "background": list(adapted.background),
                   "normalisation_in_graph": adapted.normalisation},
         "output": {"name": "scores", "shape": ["N", len(adapted.classes)], "meaning": "class logits"},
         "method": adapted.method, "update_plan": adapted.update_plan}
    if opset is not None:
        d["opset"] = opset
    return d


def _example(adapted: AdaptedModel, batch: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(batch, 3, adapted.resolution, adapted.resolution, generator=g)


def export_onnx(adapted: AdaptedModel, path: str | Path, opset: int = DEFAULT_OPSET,
                overwrite: bool = False) -> Path:
    """Write an ONNX file with a dynamic batch axis, plus FILE.json."""
    if not 11 <= opset <= 20:
        raise BadInput(f"--opset {opset} is outside 11..20; use 13 (the default) for broad runtime support")
    prepare_export_target(path, overwrite)
    path = Path(path)
    model = scoring_model(adapted)

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # the legacy-exporter deprecation notice
            torch.onnx.export(model, (_example(adapted),), str(tmp), dynamo=False, opset_version=opset,
                              input_names=["image"], output_names=["scores"],
                              dynamic_axes={"image": {0: "batch"}, "scores": {0: "batch"}})

    _write_pair(path, write, sidecar(adapted, "onnx", opset))
    return path


def export_torchscript(adapted: AdaptedModel, path: str | Path, overwrite: bool = False) -> Path:
    """Write a traced TorchScript module (load with `torch.jit.load`), plus FILE.json."""
    prepare_export_target(path, overwrite)
    path = Path(path)
    model = scoring_model(adapted)

    def write(tmp: Path) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)   # TorchScript still loads in libtorch/C++ runtimes
            torch.jit.trace(model, _example(adapted, 2)).save(str(tmp))

    _write_pair(path, write, sidecar(adapted, "torchscript"))
    return path


# --- all or nothing: FILE and FILE.json ------------------------------------------------------------------
#
# Both are written under hidden temporary names first. Before the first rename, a journal
# `.FILE.export-pending.json` records the graph's SHA-256 and the two temporary names; it is removed after
# the second rename. A run killed between the renames leaves the journal, and the next export to FILE
# (`recover_interrupted_export`, which `tinytrain export` calls before its checks) finishes the pair when
# the new graph is in place (renames the sidecar's temporary file, or drops an old sidecar), or discards
# the temporary files when it is not (then the old pair was never touched); FILE and FILE.json, an
# interrupted export's, may then be replaced without --overwrite.

def _journal(path: Path) -> Path:
    return path.with_name(f".{path.name}.export-pending.json")


def recover_interrupted_export(path: str | Path) -> tuple[str | None, bool]:
    """Finish or undo an export to `path` that was killed between its renames (see above). Returns (a note
    saying what was done, or None when there was nothing to recover; whether FILE and FILE.json are that
    interrupted export's, which may then be replaced without --overwrite)."""
    path = Path(path)
    journal = _journal(path)
    if not journal.is_file():
        return None, False
    try:
        info = json.loads(journal.read_text(encoding="utf-8"))
        if not isinstance(info, dict):
            info = {}
    except (OSError, ValueError):
        info = {}

    def leftover(key: str) -> Path | None:       # only hidden siblings of FILE: never a path from elsewhere
        name = info.get(key)
        ok = isinstance(name, str) and name.startswith(f".{path.name}.") and "/" not in name and os.sep not in name
        return path.with_name(name) if ok else None

    graph_tmp, side_tmp = leftover("graph_tmp"), leftover("sidecar_tmp")
    side = path.with_name(path.name + ".json")
    placed = path.is_file() and info.get("graph_sha256") == sha256_of(path)
    if placed:
        if side_tmp is not None and side_tmp.is_file():
            os.replace(side_tmp, side)
            note = f"finished the export of {path} that an interrupted run left without its {side.name}"
        else:
            note = f"found the interrupted export of {path} complete"
    else:
        note = f"discarded the temporary files of an export to {path} that was interrupted before replacing it"
    for t in (graph_tmp, side_tmp):
        if t is not None:
            t.unlink(missing_ok=True)
    journal.unlink(missing_ok=True)
    return (note + "; this export replaces it" if placed else note), placed


def prepare_export_target(path: str | Path, overwrite: bool = False) -> bool:
    """Recover an interrupted export to `path` (whose files may then be replaced), then refuse a target
    that cannot or must not be written (see outputs.check_output_file). Returns the overwrite to export
    with: True where FILE and FILE.json are an interrupted export's. `tinytrain export` calls it first."""
    note, replaceable = recover_interrupted_export(path)
    if note:
        from ..progress import note as tell
        tell(note)
    overwrite = overwrite or replaceable
    check_output_file(path, "--out", overwrite, sidecars=(".json",))
    return overwrite


def _write_pair(path: Path, write_graph, side_data: dict) -> None:
    """Write the graph (by `write_graph(tmp)`) and its sidecar all or nothing (see above)."""
    made = missing_parents(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    side = path.with_name(path.name + ".json")
    journal = _journal(path)
    tmps: list[Path] = []
    try:
        for suffix in (".graph.tmp", ".json.tmp"):
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
            os.close(fd)
            tmps.append(Path(name))
        graph_tmp, side_tmp = tmps
        write_graph(graph_tmp)
        side_tmp.write_text(json.dumps(side_data, indent=1) + "\n", encoding="utf-8")
        for t in tmps:
            give_normal_mode(t)
        write_json_atomic(journal, {"graph_sha256": sha256_of(graph_tmp), "graph_tmp": graph_tmp.name,
                                    "sidecar_tmp": side_tmp.name})
        os.replace(graph_tmp, path)
        os.replace(side_tmp, side)
        journal.unlink()
    except BaseException as exc:
        placed = journal.exists() and not tmps[0].exists()
        if placed:          # the new graph is in place: finish the pair rather than leave it without names
            recover_interrupted_export(path)
        else:
            journal.unlink(missing_ok=True)
        for t in tmps:
            t.unlink(missing_ok=True)
        if not placed:
            remove_made_dirs(made)
        if isinstance(exc, OSError):      # never name a temporary file
            raise BadInput(f"--out {path}: could not write it ({(exc.strerror or str(exc)).lower()})") from None
        raise


def export_model(adapted: AdaptedModel, fmt: str, path: str | Path, opset: int = DEFAULT_OPSET,
                 overwrite: bool = False) -> Path:
    """Export in `fmt` ('onnx' or 'torchscript'); with overwrite=False an existing FILE or FILE.json is refused."""
    if fmt == "onnx":
        return export_onnx(adapted, path, opset, overwrite)
    if fmt == "torchscript":
        return export_torchscript(adapted, path, overwrite)
    raise BadInput(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
