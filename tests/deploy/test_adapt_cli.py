"""`tinytrain adapt` / `predict`: JSON contract, budgets respected, save/load round trip, bad inputs."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from tinytrain.cli import main
from tinytrain.costs.model import compute_budget_macs
from tinytrain.deploy.adapted import load_adapted
from tinytrain.models.specs import get_spec


TINY = ["--model", "tiny-test", "--checkpoint", "random", "--resolution", "32"]
KEYS = {"method", "plan", "predicted_memory_bytes", "measured_saved_bytes", "backward_macs",
        "selection_seconds", "train_seconds", "query_accuracy"}


def run_json(capsys, argv) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_adapt_tinytrain_json_respects_budgets_and_saves(folders, tmp_path, capsys):
    support, query = folders
    out = tmp_path / "adapted"
    s = run_json(capsys, ["adapt", *TINY, "--support", str(support), "--query", str(query),
                          "--method", "tinytrain", "--memory-budget", "64KB", "--compute-budget", "60%",
                          "--iterations", "3", "--json", "--save", str(out)])
    assert KEYS <= set(s)
    assert s["plan"] and all({"layer", "name", "channels_updated", "channels_total", "score"} <= set(r)
                             for r in s["plan"])
    assert 0 < s["predicted_memory_bytes"] <= 64 * 1024
    assert s["backward_macs"] <= compute_budget_macs(get_spec("tiny-test"), 0.6, 32)
    assert s["measured_saved_bytes"] > 0 and 0 <= s["query_accuracy"] <= 1
    assert s["mixed_image_sizes"] is True          # mixed sizes are resized, not refused

    adapted = load_adapted(out)
    assert adapted.classes == ["blue", "green", "red"] and adapted.method == "tinytrain"
    assert adapted.update_plan["model"] == "tiny-test" and adapted.update_plan["layers"]
    # the saved model predicts what predict prints
    r = run_json(capsys, ["predict", "--model-dir", str(out), str(query / "red"), "--json", "--top", "2"])
    assert len(r) == 2 and all(x["label"] in adapted.classes and len(x["top"]) == 2 for x in r)


def test_saved_model_reproduces_predictions(folders, tmp_path, capsys):
    from tinytrain.deploy.images import load_class_folder
    from tinytrain.deploy.session import adapt_to_support, load_task_folders
    from tinytrain.deploy.adapted import save_adapted
    from tinytrain.methods.base import AdaptConfig
    from tinytrain.models.backbone import build_backbone

    support, query = load_task_folders(folders[0], folders[1], 32)
    torch.manual_seed(0)
    adapted, summary = adapt_to_support(build_backbone("tiny-test"), "tiny-test", support, query, "lastlayer",
                                        AdaptConfig(iterations=2, resolution=32))
    save_adapted(tmp_path / "m", adapted)
    again = load_adapted(tmp_path / "m")
    x = load_class_folder(folders[1], 32, adapted.classes).x
    torch.testing.assert_close(again.predictor.predict(x), adapted.predictor.predict(x))
    assert summary["query_accuracy"] == pytest.approx(again.predictor.accuracy(query.x, query.y))


def test_budget_too_small_names_the_smallest_that_fits(folders, tmp_path, capsys):
    out = tmp_path / "never"
    code = main(["adapt", *TINY, "--support", str(folders[0]), "--method", "tinytrain", "--memory-budget", "1KB",
                 "--compute-budget", "60%", "--save", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "no candidate layer fits" in err and "at least" in err
    assert not out.exists() and not list(tmp_path.glob(".never*"))


@pytest.mark.parametrize("case", ["single_class", "query_class_absent", "wrong_checkpoint", "empty_class"])
def test_bad_inputs_fail_clearly_and_write_nothing(case, folders, tmp_path, capsys):
    support, query = folders
    argv = ["adapt", *TINY, "--support", str(support), "--method", "none", "--save", str(tmp_path / "out")]
    if case == "single_class":
        single = tmp_path / "single"
        shutil.copytree(support / "red", single / "red")
        argv[argv.index(str(support))] = str(single)
        expect = "single class"
    elif case == "query_class_absent":
        (query / "purple").mkdir()
        shutil.copy(query / "red" / "0.png", query / "purple" / "0.png")
        argv += ["--query", str(query)]
        expect = "not in the support set"
    elif case == "wrong_checkpoint":
        from tinytrain.models.backbone import build_backbone
        from tinytrain.models.weights import save_checkpoint
        ck = save_checkpoint(tmp_path / "mcunet.safetensors", build_backbone("mcunet-5fps"))
        argv[argv.index("random")] = str(ck)
        expect = "is for model 'mcunet-5fps'"
    else:
        (support / "empty").mkdir()
        expect = "holds no images"
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and expect in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_save_refuses_foreign_directory(folders, tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    code = main(["adapt", *TINY, "--support", str(folders[0]), "--method", "none", "--save", str(foreign)])
    assert code == 2 and "not a saved tinytrain model" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_adapt_sparseupdate_with_a_policy_file(folders, tmp_path, capsys):
    support, _ = folders
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"model": "tiny-test", "n_bias": 2, "ratios": {"3": 0.5}}))
    s = run_json(capsys, ["adapt", *TINY, "--support", str(support), "--method", "sparseupdate",
                          "--sparseupdate-policy", str(policy), "--iterations", "1", "--json"])
    assert [r["layer"] for r in s["plan"]] == [3]
    assert s["plan"][0]["channels_updated"] * 2 == s["plan"][0]["channels_total"]
    assert main(["adapt", *TINY, "--support", str(support), "--method", "tinytrain",
                 "--sparseupdate-policy", str(policy)]) == 2
    assert "--method sparseupdate" in capsys.readouterr().err


def test_adapt_option_changes_tinytrains_selection(folders, tmp_path, capsys):
    """--option passes a method option: `ratio_policy=largest` trains whole layers where the default
    (`fisher-mass`) trains a Fisher-chosen share of channels; an unknown option is refused by name."""
    support, _ = folders
    argv = ["adapt", *TINY, "--support", str(support), "--method", "tinytrain", "--memory-budget", "64KB",
            "--compute-budget", "60%", "--iterations", "1", "--json", "--option", "crossed_biases=false"]
    default = run_json(capsys, argv)["plan"]
    largest = run_json(capsys, argv + ["--option", "ratio_policy=largest", "--option", "stop_rule=first"])["plan"]
    assert default != largest
    assert all(r["channels_updated"] == r["channels_total"] for r in largest if r["layer"] is not None)
    assert main(argv + ["--option", "stop=first"]) == 2
    err = capsys.readouterr().err
    assert "--option: unknown tinytrain option(s) stop" in err and err.count("\n") == 1
