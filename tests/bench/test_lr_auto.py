import json

import pytest

from tinytrain.bench.ablations import build_variants
from tinytrain.bench.harness import EpisodeShape, EvalConfig, run_eval
from tinytrain.bench.summary import write_run_report


@pytest.fixture(scope="module")
def small_pocket(tmp_path_factory):
    from tinytrain.data.pocket import build_pocket
    root = tmp_path_factory.mktemp("data")
    build_pocket(root / "pocket", small=True, progress=False)
    return root


def test_lr_auto_uses_validation_classes_only(small_pocket, tmp_path, monkeypatch):
    monkeypatch.setenv("TINYTRAIN_DATA", str(small_pocket))
    cfg = EvalConfig(model="tiny-test", checkpoint="random", domains=["pocket-digits", "pocket-textures"],
                     variants=build_variants(["none", "lastlayer"]), tasks=2, resolution=32, iterations=2,
                     lr="auto", lr_grid=(1e-4, 1e-2), lr_episodes=1, episodes=EpisodeShape("fixed", 3, 2, 2))
    out = tmp_path / "run"
    records = run_eval(cfg, out, progress=False, log=lambda s: None)
    choices = json.loads((out / "lr.json").read_text())
    entry = choices["pocket-digits"]
    assert set(entry["chosen"]) == {"lastlayer"}                 # `none` does not train: no lr to choose
    assert entry["chosen"]["lastlayer"] in (1e-4, 1e-2)
    assert entry["split"] == "pocket-symbols (val)"              # the target has no val split: source's val
    val = json.loads(next((out / "episodes").glob("*.val.json")).read_text())
    assert val["meta"]["domain"] == "pocket-symbols" and val["meta"]["split"] == "val"
    assert {r["lr"] for r in records if r["method"] == "lastlayer"} == {entry["chosen"]["lastlayer"]}
    assert choices["pocket-textures"]["chosen"] == entry["chosen"]     # same validation data: searched once
    text, _ = write_run_report(out, cfg, records)
    assert "Learning rates chosen on validation episodes" in text
    assert json.loads((out / "lr.json").read_text()) == choices       # the report never overwrites the choices


def test_demo_runs_end_to_end_on_small_settings(small_pocket, tmp_path, monkeypatch, capsys):
    from tinytrain.cli import main
    monkeypatch.setenv("TINYTRAIN_DATA", str(small_pocket))
    out = tmp_path / "demo"
    rc = main(["demo", "--model", "tiny-test", "--checkpoint", "random", "--methods", "none,lastlayer",
               "--tasks", "2", "--resolution", "32", "--iterations", "2", "--ways", "3", "--shots", "2",
               "--queries", "2", "--workers", "1", "--out", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "[1/3] pocket benchmark" in text and "3-way 2-shot" in text
    for domain in ("pocket-scripts", "pocket-digits", "pocket-textures"):
        assert domain in text.split("### Accuracy")[1]
    assert (out / "report.md").exists() and len(list(out.glob("*.png"))) >= 2
    assert "demo finished in" in text


def test_lr_support_chooses_per_task_on_the_support_split(small_pocket, tmp_path, monkeypatch):
    monkeypatch.setenv("TINYTRAIN_DATA", str(small_pocket))
    cfg = EvalConfig(model="tiny-test", checkpoint="random", domains=["pocket-digits"],
                     variants=build_variants(["none", "lastlayer"]), tasks=2, resolution=32, iterations=2,
                     lr="support", lr_grid=(1e-4, 1e-2), episodes=EpisodeShape("fixed", 3, 2, 2))
    out = tmp_path / "run"
    records = run_eval(cfg, out, progress=False, log=lambda s: None)
    assert not (out / "lr.json").exists() and not list((out / "episodes").glob("*.val.json"))
    trained = [r for r in records if r["method"] == "lastlayer"]
    assert len(trained) == 2 and all(r["lr"] in (1e-4, 1e-2) for r in trained)
    text, _ = write_run_report(out, cfg, records)
    assert "chosen per task from 0.0001, 0.01 on a split of its support set" in text
