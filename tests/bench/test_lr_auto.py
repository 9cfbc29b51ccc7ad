import json

import pytest

from tinytrain.bench.ablations import build_variants
from tinytrain.data.episodes import EpisodeSpec
from tinytrain.bench.evalconfig import EvalConfig
from tinytrain.bench.harness import run_eval
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
                     lr="auto", lr_grid=(1e-4, 1e-2), lr_episodes=1, episodes=EpisodeSpec("fixed", 3, 2, 2))
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
               "--tasks", "2", "--resolution", "32", "--iterations", "2", "--mode", "fixed", "--ways", "3", "--shots", "2",
               "--queries", "2", "--workers", "1", "--out", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "[1/3] pocket benchmark" in text and "3-way 2-shot" in text
    table = text.split("### Accuracy")[1]
    assert "pocket-textures" in table and "pocket-scripts" in table and "pocket-digits" not in table
    assert "held-out episodes of each target" in text       # the demo's lr protocol is target-val
    assert json.loads((out / "lr.json").read_text())["pocket-textures"]["chosen"].keys() == {"lastlayer"}
    assert (out / "report.md").exists() and len(list(out.glob("*.png"))) >= 2
    assert "demo finished in" in text


def test_lr_support_chooses_per_task_on_the_support_split(small_pocket, tmp_path, monkeypatch):
    monkeypatch.setenv("TINYTRAIN_DATA", str(small_pocket))
    cfg = EvalConfig(model="tiny-test", checkpoint="random", domains=["pocket-digits"],
                     variants=build_variants(["none", "lastlayer"]), tasks=2, resolution=32, iterations=2,
                     lr="support", lr_grid=(1e-4, 1e-2), episodes=EpisodeSpec("fixed", 3, 2, 2))
    out = tmp_path / "run"
    records = run_eval(cfg, out, progress=False, log=lambda s: None)
    assert not (out / "lr.json").exists() and not list((out / "episodes").glob("*.val.json"))
    trained = [r for r in records if r["method"] == "lastlayer"]
    assert len(trained) == 2 and all(r["lr"] in (1e-4, 1e-2) for r in trained)
    text, _ = write_run_report(out, cfg, records)
    assert "chosen per task from 0.0001, 0.01 on a split of its support set" in text


def test_lr_target_val_uses_held_out_target_episodes_and_zero_is_a_choice(small_pocket, tmp_path, monkeypatch):
    monkeypatch.setenv("TINYTRAIN_DATA", str(small_pocket))
    cfg = EvalConfig(model="tiny-test", checkpoint="random", domains=["pocket-digits"],
                     variants=build_variants(["none", "lastlayer"]), tasks=2, resolution=32, iterations=2,
                     lr="target-val", lr_grid=(0.0, 1e-2), lr_episodes=2, episodes=EpisodeSpec("fixed", 3, 2, 2))
    out = tmp_path / "run"
    records = run_eval(cfg, out, progress=False, log=lambda s: None)
    choices = json.loads((out / "lr.json").read_text())["pocket-digits"]
    assert choices["split"] == "pocket-digits (held-out target episodes)"
    assert set(choices["scores"]["lastlayer"]) == {"0", "0.01"}
    tval = json.loads(next((out / "episodes").glob("*.tval.json")).read_text())
    test = json.loads(next(p for p in (out / "episodes").glob("*.json") if p.name.count(".") == 1).read_text())
    assert len(tval["episodes"]) == 2 and not any(e in test["episodes"] for e in tval["episodes"])
    assert {r["lr"] for r in records if r["method"] == "lastlayer"} == {choices["chosen"]["lastlayer"]}
    text, _ = write_run_report(out, cfg, records)
    assert "target-val (grid 0, 0.01 on 2 held-out episodes of each target domain" in text


def test_lr_zero_trains_nothing(small_pocket, tmp_path, monkeypatch):
    import torch
    from tinytrain.methods import AdaptConfig, make_method
    from tinytrain.models.backbone import build_backbone
    torch.manual_seed(0)
    bb = build_backbone("tiny-test").eval()
    x, y = torch.randn(6, 3, 32, 32), torch.arange(3).repeat(2)
    none = make_method("none", bb, AdaptConfig(resolution=32)).fit(x, y).predict(x)
    zero = make_method("lastlayer", bb, AdaptConfig(resolution=32, lr=0.0, iterations=3)).fit(x, y).predict(x)
    assert torch.allclose(none, zero)
    with pytest.raises(ValueError, match=">= 0"):
        make_method("lastlayer", bb, AdaptConfig(resolution=32, lr=-1.0)).fit(x, y)


def test_static_ablation_trains_one_plan_in_every_task(small_pocket, tmp_path, monkeypatch):
    monkeypatch.setenv("TINYTRAIN_DATA", str(small_pocket))
    cfg = EvalConfig(model="tiny-test", checkpoint="random", domains=["pocket-digits", "pocket-textures"],
                     variants=build_variants(["tinytrain"], static=True), tasks=2, resolution=32, iterations=1,
                     lr=1e-3, lr_episodes=2, memory_budget=60_000, compute_budget=1.0,
                     episodes=EpisodeSpec("fixed", 3, 2, 2))
    out = tmp_path / "run"
    records = run_eval(cfg, out, progress=False, log=lambda s: None)
    stored = json.loads((out / "static_plan.json").read_text())
    assert stored["validation"] == ["pocket-symbols"] and stored["episodes"] == 2
    static = [r for r in records if r["method"] == "tinytrain[static]"]
    assert len(static) == 4
    want = {str(u["index"]): u["channels"] for u in stored["plan"]["layers"]}
    assert all(r["plan_channels"] == want for r in static)           # the same plan in every task
    text, files = write_run_report(out, cfg, records)
    assert "Task adaptivity" in text and "plan varies between tasks" in text
    assert any(f.name == "plan_similarity.png" for f in files)


def test_static_ablation_needs_validation_classes(folder, tmp_path):
    cfg = EvalConfig(model="tiny-test", checkpoint="random", domains=[str(folder)],
                     variants=build_variants(["tinytrain"], static=True), tasks=1, resolution=32, iterations=1,
                     lr=1e-3, compute_budget=1.0, episodes=EpisodeSpec("fixed", 3, 2, 2))
    with pytest.raises(ValueError, match="--ablate-static needs validation classes"):
        run_eval(cfg, tmp_path / "run", progress=False, log=lambda s: None)


@pytest.mark.parametrize("extra, message", [
    (["--lr", "auto", "--lr-grid=-1e-3,1e-3"], "--lr-grid holds a negative rate"),
    (["--lr", "1e-3", "--methods", "none,lastlayer", "--ablate-static"], "include tinytrain in --methods"),
    (["--lr", "target-val", "--tasks", "30"], "too small to hold out"),
    (["--lr", "1e-3", "--variant", "tinytrain[stop_rule=skip]"], "is not in --methods"),
    (["--lr", "1e-3", "--variant", "lastlayer"], "write METHOD[key=value,...]"),
    (["--lr", "1e-3", "--methods", "tinytrain", "--variant", "tinytrain[stop=skip]"], "unknown tinytrain option"),
    (["--lr", "1e-3", "--methods", "tinytrain", "--variant", "tinytrain[skip]"], "is not key=value"),
    (["--lr", "1e-3", "--mode", "metadataset"], "add --mode fixed"),     # --ways/--shots never silently ignored
    (["--lr", "1e-3", "--variant-lr", "own"], "--variant-lr own"),
])
def test_eval_protocol_errors_name_the_flag(tmp_path, capsys, extra, message):
    from tinytrain.cli import main
    from .conftest import make_folder_dataset
    data = make_folder_dataset(tmp_path / "data", classes=2, per_class=2)
    args = ["eval", "--model", "tiny-test", "--checkpoint", "random", "--domains", str(data), "--methods",
            "none,lastlayer", "--mode", "fixed", "--ways", "2", "--shots", "1", "--queries", "1",
            "--resolution", "32", "--iterations", "1", "--workers", "1", "--tasks", "2",
            "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(args + extra) == 2                      # argparse: the last value of a flag wins
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_option_variants_train_with_their_options_and_get_a_paired_table(small_pocket, tmp_path, monkeypatch):
    monkeypatch.setenv("TINYTRAIN_DATA", str(small_pocket))
    spec = "tinytrain[ratio_policy=fisher-mass,fisher_mass=0.3,stop_rule=skip,channel_ratios=1;0.25]"
    cfg = EvalConfig(model="tiny-test", checkpoint="random", domains=["pocket-digits"],
                     variants=build_variants(["tinytrain"], options=[spec]), tasks=2, resolution=32,
                     iterations=1, lr=1e-3, memory_budget=60_000, compute_budget=1.0,
                     episodes=EpisodeSpec("fixed", 3, 2, 2))
    out = tmp_path / "run"
    records = run_eval(cfg, out, progress=False, log=lambda s: None)
    var = [r for r in records if r["method"] == spec]
    assert len(var) == 2
    assert var[0]["options"] == {"ratio_policy": "fisher-mass", "fisher_mass": 0.3, "stop_rule": "skip",
                                 "channel_ratios": [1, 0.25]}
    # every layer of the variant's plans trains all or a quarter of its channels (its own ratio ladder),
    # and the skip rule places more than one layer at this budget
    for r in var:
        assert len(r["plan"]) > 1
        assert {k / total for _, k, total in r["plan"]} <= {1.0, 0.25}
    text, _ = write_run_report(out, cfg, records)
    assert "Option variants" in text and "tinytrain minus method" in text


def test_variant_lr_own_searches_each_variant_with_its_options(small_pocket, tmp_path, monkeypatch):
    """--variant-lr own: a --variant column gets its own rate, searched on the same held-out episodes with its
    own options; without it the column trains at its method's rate."""
    monkeypatch.setenv("TINYTRAIN_DATA", str(small_pocket))
    spec = "tinytrain[crossed_biases=false]"
    base = dict(model="tiny-test", checkpoint="random", domains=["pocket-digits"], tasks=2, resolution=32,
                iterations=2, lr="target-val", lr_grid=(0.0, 1e-2), lr_episodes=2, memory_budget=60_000,
                compute_budget=1.0, episodes=EpisodeSpec("fixed", 3, 2, 2))
    own = EvalConfig(variants=build_variants(["tinytrain"], options=[spec]), variant_lr="own", **base)
    records = run_eval(own, tmp_path / "own", progress=False, log=lambda s: None)
    lr = json.loads((tmp_path / "own" / "lr.json").read_text())["pocket-digits"]
    assert set(lr["chosen"]) == {"tinytrain", spec}
    assert lr["scores"][spec]["0"] == lr["scores"]["tinytrain"]["0"]        # no update: the options cannot matter
    assert lr["scores"][spec]["0.01"] != lr["scores"]["tinytrain"]["0.01"]  # searched with its own options
    assert {r["lr"] for r in records if r["method"] == spec} == {lr["chosen"][spec]}
    shared = EvalConfig(variants=build_variants(["tinytrain"], options=[spec]), **base)
    run_eval(shared, tmp_path / "shared", progress=False, log=lambda s: None)
    assert set(json.loads((tmp_path / "shared" / "lr.json").read_text())["pocket-digits"]["chosen"]) == {"tinytrain"}


def test_a_setting_added_later_keeps_older_run_folders_resumable():
    from tinytrain.bench.rundir import config_differences
    new = EvalConfig(domains=["pocket-digits"], variants=build_variants(["none"])).to_dict()
    old = {k: v for k, v in new.items() if k != "variant_lr"}          # written before --variant-lr existed
    assert config_differences(old, new) == []
    assert config_differences(old, new | {"variant_lr": "own"}) == ['variant_lr: stored null vs now "own"']


def test_lr_search_trains_the_method_with_its_given_options(small_pocket, tmp_path, monkeypatch):
    """A method column's options (here a SparseUpdate policy given with --sparseupdate-policy) are the ones its
    rate is searched with: a bias-only policy and one that also trains a layer score differently."""
    from dataclasses import replace
    monkeypatch.setenv("TINYTRAIN_DATA", str(small_pocket))
    base = dict(model="tiny-test", checkpoint="random", domains=["pocket-digits"], tasks=1, resolution=32,
                iterations=2, lr="target-val", lr_grid=(0.0, 1e-2), lr_episodes=2, episodes=EpisodeSpec("fixed", 3, 2, 2))
    scores = []
    for policy in ({"n_bias": 1, "ratios": {}}, {"n_bias": 16, "ratios": {"13": 1.0, "14": 1.0, "15": 1.0}}):
        variants = [replace(v, options={"policy": policy}) for v in build_variants(["sparseupdate"])]
        out = tmp_path / f"run{len(scores)}"
        run_eval(EvalConfig(variants=variants, **base), out, progress=False, log=lambda s: None)
        scores.append(json.loads((out / "lr.json").read_text())["pocket-digits"]["scores"]["sparseupdate"])
    assert scores[0]["0"] == scores[1]["0"] and scores[0]["0.01"] != scores[1]["0.01"]
