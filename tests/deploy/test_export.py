"""Export: the ONNX file (run in onnxruntime) and the TorchScript file match the PyTorch predictor."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tinytrain.cli import main
from tinytrain.deploy.adapted import AdaptedModel, load_adapted, save_adapted
from tinytrain.deploy.images import normalisation
from tinytrain.methods.base import Predictor
from tinytrain.models.backbone import build_backbone
from tinytrain.models.head import CosineClassifier


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    backbone = build_backbone("tiny-test").eval()
    for m in backbone.modules():             # non-trivial BN statistics, so folding them is tested
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    protos = torch.randn(4, backbone.feature_dim)
    head = CosineClassifier(scale=7.5, bias=0.3)
    adapted = AdaptedModel(Predictor(backbone, protos, head), "tiny-test", 32, ["a", "b", "c", "d"],
                           normalisation(), "none", {"method": "none"},
                           {"model": "tiny-test", "kind": "sparse", "layers": [{"index": 15, "ratio": 0.5}]})
    return save_adapted(tmp_path / "adapted", adapted)


def reference_scores(folder, images01: torch.Tensor) -> torch.Tensor:
    adapted = load_adapted(folder)
    mean = torch.tensor(adapted.normalisation["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(adapted.normalisation["std"]).view(1, 3, 1, 1)
    return adapted.predictor.predict((images01 - mean) / std)


def test_onnx_round_trip_matches_pytorch(saved, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    out = tmp_path / "model.onnx"
    assert main(["export", "--model-dir", str(saved), "--format", "onnx", "--out", str(out)]) == 0
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    assert proto.opset_import[0].version == 13
    images = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))   # batch 5: dynamic axis
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(["scores"], {"image": images.numpy()})[0]
    want = reference_scores(saved, images).numpy()
    assert got.shape == (5, 4)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert (got.argmax(1) == want.argmax(1)).all()
    side = json.loads((tmp_path / "model.onnx.json").read_text())
    assert side["classes"] == ["a", "b", "c", "d"] and side["update_plan"]["layers"][0]["index"] == 15
    assert side["input"]["shape"] == ["N", 3, 32, 32]


def test_torchscript_matches_pytorch(saved, tmp_path, capsys):
    out = tmp_path / "model.pt"
    assert main(["export", "--model-dir", str(saved), "--format", "torchscript", "--out", str(out)]) == 0
    module = torch.jit.load(str(out))
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(module(images), reference_scores(saved, images), rtol=1e-4, atol=1e-4)


def test_export_of_missing_dir_is_a_clear_error(tmp_path, capsys):
    code = main(["export", "--model-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "m.onnx")])
    assert code == 2 and "tinytrain adapt --save" in capsys.readouterr().err
