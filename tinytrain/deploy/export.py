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

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..jsonfile import write_json_atomic
from ..models.backbone import Backbone
from .adapted import AdaptedModel
from .outputs import atomic_file, check_output_file

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
        raise ValueError(f"--opset {opset} is outside 11..20; use 13 (the default) for broad runtime support")
    path = check_output_file(path, "--out", overwrite, sidecars=(".json",))
    model = scoring_model(adapted)
    with atomic_file(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the legacy-exporter deprecation notice
        torch.onnx.export(model, (_example(adapted),), str(tmp), dynamo=False, opset_version=opset,
                          input_names=["image"], output_names=["scores"],
                          dynamic_axes={"image": {0: "batch"}, "scores": {0: "batch"}})
    _write_sidecar(path, sidecar(adapted, "onnx", opset))
    return path


def export_torchscript(adapted: AdaptedModel, path: str | Path, overwrite: bool = False) -> Path:
    """Write a traced TorchScript module (load with `torch.jit.load`), plus FILE.json."""
    path = check_output_file(path, "--out", overwrite, sidecars=(".json",))
    model = scoring_model(adapted)
    with atomic_file(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # TorchScript still loads in libtorch/C++ runtimes
        traced = torch.jit.trace(model, _example(adapted, 2))
        traced.save(str(tmp))
    _write_sidecar(path, sidecar(adapted, "torchscript"))
    return path


def _write_sidecar(path: Path, data: dict) -> None:
    try:
        write_json_atomic(path.with_name(path.name + ".json"), data)
    except BaseException:
        path.unlink(missing_ok=True)    # a graph without its class names is no export: all or nothing
        raise


def export_model(adapted: AdaptedModel, fmt: str, path: str | Path, opset: int = DEFAULT_OPSET,
                 overwrite: bool = False) -> Path:
    """Export in `fmt` ('onnx' or 'torchscript'); with overwrite=False an existing FILE or FILE.json is refused."""
    if fmt == "onnx":
        return export_onnx(adapted, path, opset, overwrite)
    if fmt == "torchscript":
        return export_torchscript(adapted, path, overwrite)
    raise ValueError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
