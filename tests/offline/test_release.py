"""The maintainers' release tooling, scripts/release.py (not part of the package): checkpoint cards, shipping a
checkpoint into the zoo with its recipe, and TinyTL branches written into a shipped zoo file."""
from __future__ import annotations

import importlib.util
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import tinytrain
from tinytrain.cli import main
from tinytrain.models.backbone import build_backbone
from tinytrain.models.weights import load_backbone, save_checkpoint

from .helpers import distill_setup, lite_run_args, write_png_folder

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "release.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("release", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


release = _load_script()


def test_the_script_runs_from_a_checkout_and_the_package_never_imports_it():
    done = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=120,
                          cwd=SCRIPT.parents[1])
    assert done.returncode == 0, done.stderr
    assert all(c in done.stdout for c in ("card", "ship", "lite"))
    root = Path(tinytrain.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert "release_cards" not in text and "import release" not in text and "from scripts" not in text, path
    assert not (root / "offline" / "card.py").exists()


def test_card_of_a_meta_trained_checkpoint(tmp_path, capsys):
    data = str(write_png_folder(tmp_path / "data", classes=15, per_class=8))
    common = ["--model", "tiny-test", "--data", data, "--resolution", "32", "--ways", "3", "--shots", "2",
              "--queries", "3", "--val-episodes", "2", "--no-progress"]
    pre, meta_out = tmp_path / "pre", tmp_path / "meta"
    assert main(["pretrain", *common, "--out", str(pre), "--epochs", "2", "--batch-size", "16",
                 "--warmup-epochs", "0.5"]) == 0
    assert main(["metatrain", *common, "--init", str(pre / "best.safetensors"), "--out", str(meta_out), "--epochs", "2",
                 "--episodes-per-epoch", "2", "--warmup-epochs", "1", "--lr", "0.01"]) == 0

    report, card_path = tmp_path / "eval.json", tmp_path / "card.md"
    card_args = ["card", "--model", "tiny-test", "--checkpoints", "random", str(meta_out / "best.safetensors"),
                 "--domains", data, "--episodes", "3", "--resolution", "32", "--json", str(report), "--no-progress",
                 "--out", str(card_path), "--pretrain-run", str(pre), "--metatrain-run", str(meta_out), "--name", "mine"]
    assert release.main(card_args) == 0
    res = json.loads(report.read_text())["results"][data]
    assert set(res) == {"random", str(meta_out / "best.safetensors")}
    card = card_path.read_text()
    assert card.startswith("# tiny-test — `mine` meta-trained checkpoint\n")
    diff = 100 * (sum(res[str(meta_out / "best.safetensors")]["accs"]) - sum(res["random"]["accs"])) / 3
    assert f"| {data} (n=3) | {diff:+.1f} ± " in card           # the paired table: meta minus random
    assert "tinytrain metatrain --batch-episodes 1" in card and "--lr 0.01 --min-lr" in card
    assert "python scripts/release.py card --model tiny-test --checkpoints random" in card and "± " in card
    # an identical evaluation is read back from --json
    capsys.readouterr()
    assert release.main(card_args) == 0
    assert f"reused from {report}" in capsys.readouterr().out and card_path.read_text() == card
    # the card's own command is exact: run again (evaluating again: --json is not part of it), the same card
    line = next(x for x in card.splitlines() if x.startswith("python scripts/release.py card "))
    assert "--json" not in line and f"--out {card_path}" in line
    card_path.unlink()
    assert release.main(shlex.split(line)[2:] + ["--no-progress"]) == 0
    assert card_path.read_text() == card
    # the card's commands are exact: run again on the finished runs, each matches the stored config
    for stage in ("pretrain", "metatrain"):
        line = next(x for x in card.splitlines() if x.startswith(f"tinytrain {stage} "))
        assert main(shlex.split(line)[1:] + ["--no-progress"]) == 0, line
        assert "different config" not in capsys.readouterr().err

    # bad input: one line, exit 2, before anything is evaluated or written
    base = ["card", "--model", "tiny-test", "--checkpoints", "random", "--domains", data, "--episodes", "1",
            "--no-progress", "--out", str(tmp_path / "bad.md")]
    capsys.readouterr()
    assert release.main(base + ["--ship-checkpoint", "pocket"]) == 2
    assert "--ship-checkpoint pocket is not one of --checkpoints" in capsys.readouterr().err
    assert release.main(base + ["--curve-episodes", "2"]) == 2
    assert "--distill-run" in capsys.readouterr().err
    assert release.main(base + ["--pretrain-run", str(tmp_path / "data")]) == 2
    assert "config.json" in capsys.readouterr().err and not (tmp_path / "bad.md").exists()


def test_card_and_shipped_checkpoint_of_a_distillation(tmp_path, capsys):
    """`card --distill-run` writes the distilled card (commands, agreement curve with each snapshot's accuracy,
    paired table) and `ship` writes the checkpoint with its provenance."""
    from tests.bench.conftest import make_folder_dataset
    tmp, args = distill_setup(tmp_path)
    out = tmp / "run"
    assert main(args + ["--out", str(out), "--export", str(out / "features.safetensors")]) == 0
    data = make_folder_dataset(tmp / "data", classes=5, per_class=6)
    card, ship = tmp / "card.md", tmp / "zoo" / "tiny-test-distilled.safetensors"
    features = f"{out / 'features.safetensors'}@32"
    assert release.main(["card", "--model", "tiny-test", "--checkpoints", "random", features, "--domains", str(data),
                         "--episodes", "3", "--resolution", "32", "--distill-run", str(out), "--curve-episodes", "2",
                         "--out", str(card), "--shipped", "the distilled features", "--no-progress"]) == 0
    assert release.main(["ship", "--model", "tiny-test", "--checkpoint", features, "--name", "distilled",
                         "--distill-run", str(out), "--out", str(ship)]) == 0
    text = card.read_text()
    assert "tinytrain distill --student tiny-test" in text and "python scripts/release.py card" in text
    assert "| images seen | top-1 agreement" in text and "| 64 |" in text.replace(",", "")
    rows = [l for l in text.splitlines() if l.startswith("| 32 |") or l.startswith("| 0 |")]
    assert len(rows) == 2 and all(l.rstrip().endswith("% |") for l in rows)    # snapshot accuracy filled in
    assert "Paired difference" in text and "Shipped: **the distilled features**" in text
    shipped = load_backbone("tiny-test", str(ship))
    meta = shipped.checkpoint_info.meta
    assert shipped.classifier is None and meta["shipped_as"] == "distilled" and meta["images_seen"] == 64
    assert meta["resolution"] == 32 and any(c.startswith("tinytrain distill") for c in meta["recipe"])
    assert meta["recipe"][-1] == (f"python scripts/release.py ship --model tiny-test --checkpoint {features} "
                                  f"--name distilled --distill-run {out} --out {ship}")
    a, b = load_file(str(out / "features.safetensors")), load_file(str(ship))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    capsys.readouterr()
    assert release.main(["ship", "--model", "tiny-test", "--checkpoint", "random", "--name", "distilled",
                         "--out", str(ship)]) == 2                                # never replaces a shipped file
    assert "--out" in capsys.readouterr().err and load_file(str(ship)).keys() == a.keys()


def test_lite_branches_written_into_a_shipped_file(tmp_path, capsys):
    """`lite`: the branches of a `distill --lite-residual` run go into a zoo file holding the same backbone, the
    metadata records them; another backbone, or a run without branches, is refused."""
    tmp, args = distill_setup(tmp_path)
    base = tmp / "base"
    assert main(args + ["--out", str(base), "--export", str(tmp / "plain.safetensors")]) == 0
    out = tmp / "lite"
    assert main(lite_run_args(args, base, out, tmp / "lite-features.safetensors")) == 0
    trained = load_file(str(out / "last.safetensors"))
    lite = [k for k in trained if k.startswith("lite.")]
    zoo = tmp / "zoo.safetensors"
    zoo.write_bytes((tmp / "plain.safetensors").read_bytes())
    assert release.main(["lite", "--into", str(zoo), "--run", str(out), "--recipe", "the recipe"]) == 0
    shipped = load_backbone("tiny-test", str(zoo))
    smeta = shipped.checkpoint_info.meta
    assert smeta["lite_residual"]["images_seen"] == 360 and smeta["lite_residual"]["recipe"] == "the recipe"
    assert all(torch.equal(shipped.checkpoint_info.lite.state[k[5:]], trained[k]) for k in lite)
    torch.manual_seed(1)
    save_checkpoint(tmp / "other.safetensors", build_backbone("tiny-test"))
    with pytest.raises(ValueError, match="not the backbone"):
        release.add_lite_branches(tmp / "other.safetensors", out)
    capsys.readouterr()
    assert release.main(["lite", "--into", str(tmp / "other.safetensors"), "--run", str(out), "--recipe", "r"]) == 2
    assert "not the backbone" in capsys.readouterr().err
    assert release.main(["lite", "--into", str(zoo), "--run", str(base), "--recipe", "r"]) == 2
    assert "holds no lite-residual branches" in capsys.readouterr().err
