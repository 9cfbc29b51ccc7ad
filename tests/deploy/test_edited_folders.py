"""Model folders edited by hand, kills between the renames of a save or an export, and the Python API's
argument types (issue 24): each gives the right result or one clear line (exit 2), never a traceback."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tinytrain.cli import main
from tinytrain.deploy.adapted import AdaptedModel, load_adapted, save_adapted
from tinytrain.deploy.images import normalisation
from tinytrain.methods.base import Predictor
from tinytrain.models.backbone import build_backbone
from tinytrain.models.head import CosineClassifier

from .conftest import write_folder
from .test_bad_input import fails, ok, tree


def tiny_model(method: str = "none", seed: int = 0) -> AdaptedModel:
    torch.manual_seed(seed)
    backbone = build_backbone("tiny-test").eval()
    return AdaptedModel(Predictor(backbone, torch.randn(3, backbone.feature_dim), CosineClassifier()),
                        "tiny-test", 32, ["blue", "green", "red"], normalisation(), method, {"method": method})


@pytest.fixture
def saved(tmp_path) -> Path:
    return save_adapted(tmp_path / "saved", tiny_model())


@pytest.fixture
def support(tmp_path) -> Path:
    return write_folder(tmp_path / "support", 3)


# --- adapted.json: every field a reader uses is checked ---------------------------------------------------

EDITS = [
    ("background", [300, 0], "background"), ("background", "pink", "background"),
    ("background", None, "background"), ("background", [1.5, 2, 3], "background"),
    ("classes", "xyz", "classes"), ("classes", ["blue", "green"], "names 2 classes"),
    ("classes", ["blue", "green", 7], "classes"), ("classes", ["a", "a", "b"], "distinct"),
    ("classes", [], "classes"),
    ("version", "2", "version"), ("version", 0, "version"), ("version", 99, "newer tinytrain"),
    ("normalisation", None, "normalisation"), ("normalisation", {"mean": [0.5] * 3, "std": [0.5] * 3}, "normalisation"),
    ("normalisation", {"mean": [0.485, 0.456], "std": [1, 1, 1]}, "normalisation"),
    ("resolution", "32", "resolution"), ("resolution", 0, "resolution"), ("resolution", 32.5, "resolution"),
    ("resolution", -32, "resolution"), ("resolution", 10 ** 9, "resolution"),
    ("model", 5, "model"), ("method", None, "method"), ("info", [1], "info"), ("report", "x", "report"),
]


@pytest.mark.parametrize("field, value, says", EDITS, ids=[f"{f}={json.dumps(v)[:20]}" for f, v, _ in EDITS])
@pytest.mark.parametrize("command", ["predict", "export"])
def test_edited_adapted_json_is_refused_naming_the_field(field, value, says, command, saved, support, tmp_path,
                                                         capsys):
    meta_path = saved / "adapted.json"
    meta = json.loads(meta_path.read_text())
    meta[field] = value
    meta_path.write_text(json.dumps(meta))
    if command == "predict":
        argv = ["predict", "--model-dir", saved, support / "red" / "0.png"]
    else:
        argv = ["export", "--model-dir", saved, "--format", "torchscript", "--out", tmp_path / "m.pt"]
    fails(capsys, tmp_path, argv, "adapted.json", says)


def test_predict_and_export_use_one_normalisation(saved):
    """The folder's normalisation is the one the code applies (anything else is refused above), so the
    exported graph and predict agree on every image."""
    from tinytrain.deploy.export import scoring_model
    model = load_adapted(saved)
    assert model.normalisation == normalisation()
    g = torch.Generator().manual_seed(1)
    pixels = torch.rand(4, 3, 32, 32, generator=g)
    mean = torch.tensor(normalisation()["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(normalisation()["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(scoring_model(model)(pixels), model.predictor.predict((pixels - mean) / std), atol=1e-5)


def test_a_model_saved_before_background_was_recorded_still_loads(saved):
    meta = json.loads((saved / "adapted.json").read_text())
    del meta["background"]
    (saved / "adapted.json").write_text(json.dumps(meta))
    assert load_adapted(saved).background == (255, 255, 255)


# --- kills between renames --------------------------------------------------------------------------------

def run_and_kill(script: str, tmp_path: Path) -> None:
    """Run `script` in a fresh interpreter that SIGKILLs itself where the script says."""
    path = tmp_path / "kill.py"
    path.write_text(textwrap.dedent(script))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == -9, proc.stderr


SAVE_SCRIPT = """
    import os, shutil, signal, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    import tinytrain.deploy.adapted as A
    from deploy.test_edited_folders import tiny_model
    out = Path({out!r})
    if {two_renames}:
        A.exchange_dirs = lambda a, b: False       # a system without RENAME_EXCHANGE: two renames
        rename = Path.rename
        def killing_rename(self, target):
            rename(self, target)
            if self == out:                         # OUT moved aside, the new model not yet in place
                os.kill(os.getpid(), signal.SIGKILL)
        Path.rename = killing_rename
    else:
        A.shutil.rmtree = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)   # after the exchange
    A.save_adapted(out, tiny_model("lastlayer", seed=1), overwrite=True)
"""


@pytest.mark.parametrize("two_renames", [True, False])
def test_save_killed_between_renames_is_recovered_on_the_next_run(two_renames, saved, support, tmp_path, capsys):
    run_and_kill(SAVE_SCRIPT.format(tests=str(Path(__file__).resolve().parents[1]), out=str(saved),
                                    two_renames=two_renames), tmp_path)
    hidden = [p.name for p in tmp_path.iterdir() if p.name.startswith(".saved.")]
    assert hidden, "the kill left no leftover: the test does not reach the window"
    if two_renames:
        assert not saved.exists()                  # before: no model at all, the old one only in a hidden folder
    model = load_adapted(saved)                    # the next run puts things right
    assert model.method == ("none" if two_renames else "lastlayer")   # the old model back, or the complete new one
    assert "note:" in capsys.readouterr().err
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".saved.")]
    ok(capsys, ["adapt", "--model", "tiny-test", "--checkpoint", "random", "--resolution", "32", "--support", support,
                "--method", "none", "--save", saved, "--overwrite"])


EXPORT_SCRIPT = """
    import os, signal
    from pathlib import Path
    import tinytrain.deploy.export as E
    from tinytrain.deploy.adapted import load_adapted
    out = Path({out!r})
    replace = os.replace
    def killing_replace(src, dst):
        replace(src, dst)
        if Path(dst) == out:                       # the graph is in place, its FILE.json not yet
            os.kill(os.getpid(), signal.SIGKILL)
    E.os.replace = killing_replace
    E.export_model(load_adapted({saved!r}), {fmt!r}, out)
"""


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_killed_between_renames_is_finished_by_the_rerun(fmt, saved, tmp_path, capsys):
    out = tmp_path / "exported" / "model.bin"
    out.parent.mkdir()
    run_and_kill(EXPORT_SCRIPT.format(out=str(out), saved=str(saved), fmt=fmt), tmp_path)
    assert out.exists() and not out.with_name("model.bin.json").exists()   # a graph without class names
    code = main(["export", "--model-dir", str(saved), "--format", fmt, "--out", str(out)])   # no --overwrite
    _, err = capsys.readouterr()
    assert code == 0, err
    assert "interrupted run left without its model.bin.json" in err
    assert json.loads(out.with_name("model.bin.json").read_text())["classes"] == ["blue", "green", "red"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.bin", "model.bin.json"]
    # a complete export is not replaced without --overwrite: the recovery allowed only that one rerun
    fails(capsys, tmp_path, ["export", "--model-dir", saved, "--format", fmt, "--out", out], "--overwrite")


def test_an_export_killed_before_its_first_rename_leaves_the_old_pair_alone(saved, tmp_path, capsys):
    out = tmp_path / "model.pt"
    ok(capsys, ["export", "--model-dir", saved, "--format", "torchscript", "--out", out])
    before = tree(tmp_path)
    journal = tmp_path / ".model.pt.export-pending.json"
    (tmp_path / ".model.pt.abc.graph.tmp").write_bytes(b"half a graph")
    journal.write_text(json.dumps({"graph_sha256": "0" * 64, "graph_tmp": ".model.pt.abc.graph.tmp",
                                   "sidecar_tmp": "../../etc/passwd"}))
    assert main(["export", "--model-dir", str(saved), "--format", "torchscript", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "note: discarded the temporary files" in err and "pass --overwrite" in err and "Traceback" not in err
    assert tree(tmp_path) == before                 # leftovers gone, the old pair untouched, nothing else touched


# --- the Python API ----------------------------------------------------------------------------------------

def test_api_adapt_argument_types(support):
    import tinytrain
    backbone = tinytrain.load_backbone("tiny-test", "random")
    with pytest.raises(TypeError, match="load_backbone"):
        tinytrain.adapt(None, support, "none")
    with pytest.raises(TypeError, match="not dict"):
        tinytrain.adapt({}, support, "none")
    with pytest.raises(ValueError, match="is neither"):
        tinytrain.adapt("no-such-model", support, "none")
    for bad in (2.5, 10 ** 20, -1, "40", True):
        with pytest.raises(ValueError, match="iterations"):
            tinytrain.adapt(backbone, support, "lastlayer", iterations=bad)
    for bad in (float("inf"), float("nan"), 0, "1e-3"):
        with pytest.raises(ValueError, match="lr"):
            tinytrain.adapt(backbone, support, "lastlayer", lr=bad)


def test_api_adapt_takes_a_model_name(support):
    """A zoo model name is its default shipped checkpoint, as load_backbone(name) gives it."""
    import tinytrain
    model = tinytrain.adapt("mcunet-5fps", support, "none")
    assert model.model == "mcunet-5fps" and model.classes == ["blue", "green", "red"]
    assert model.predict([support / "red" / "0.png"])[0]["label"] == "red"
