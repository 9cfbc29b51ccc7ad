"""`tinytrain pretrain` -> `tinytrain metatrain` -> `tinytrain checkpoint-eval` on a tiny PNG folder."""
from __future__ import annotations

import json

import pytest
import torch

from tinytrain.cli import main
from tinytrain.data import EpisodeSpec
from tinytrain.offline.episodes import ImageEpisodes, open_source_splits
from tinytrain.models.weights import load_checkpoint

from .helpers import write_png_folder


def test_image_episodes_are_reproducible(tmp_path):
    data = write_png_folder(tmp_path / "data", classes=10, per_class=8)
    train, val = open_source_splits(str(data))
    assert len(train.classes) == 8 and len(val.classes) == 2
    assert not set(train.classes) & set(val.classes)
    src = ImageEpisodes(train, EpisodeSpec.parse(3, 2, 3), resolution=32, seed=1, train=True)
    a, b, c = src.task(5), src.task(5), src.task(6)
    assert a.support_x.shape == (6, 3, 32, 32) and a.query_x.shape == (9, 3, 32, 32)
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
    assert not torch.equal(a.support_x, c.support_x)
    # --crop-scale reaches the random resized crop: whole-image crops differ from the default ones
    full = ImageEpisodes(train, EpisodeSpec.parse(3, 2, 3), resolution=32, seed=1, train=True, crop_scale=1.0)
    assert full.transform(5).scale == (1.0, 1.0) and src.transform(5).scale == (0.35, 1.0)
    assert not torch.equal(full.task(5).support_x, a.support_x)


def test_cli_pretrain_metatrain_evaluate(tmp_path, capsys, monkeypatch):
    data = str(write_png_folder(tmp_path / "data", classes=15, per_class=8))
    common = ["--model", "tiny-test", "--data", data, "--resolution", "32", "--ways", "3", "--shots", "2",
              "--queries", "3", "--val-episodes", "2", "--no-progress"]
    pre = tmp_path / "pre"
    assert main(["pretrain", *common, "--out", str(pre), "--epochs", "2", "--batch-size", "16",
                 "--warmup-epochs", "0.5"]) == 0
    cfg = json.loads((pre / "config.json").read_text())
    assert cfg["data"] == data and cfg["batch_size"] == 16
    backbone, meta = load_checkpoint(pre / "best.safetensors", expect_model="tiny-test")
    assert backbone.classifier is not None and meta["stage"] == "pretrain"

    meta_out = tmp_path / "meta"
    args = ["metatrain", *common, "--init", str(pre / "best.safetensors"), "--out", str(meta_out), "--epochs", "2",
            "--episodes-per-epoch", "2", "--warmup-epochs", "1", "--lr", "0.01"]
    assert main(args + ["--max-steps", "1"]) == 0
    assert "resumes" in capsys.readouterr().out
    assert main(args) == 0
    cfg = json.loads((meta_out / "config.json").read_text())
    assert cfg["init"].endswith("best.safetensors") and cfg["epochs"] == 2
    mt, meta = load_checkpoint(meta_out / "best.safetensors", expect_model="tiny-test")
    assert mt.classifier is None and meta["stage"] == "metatrain" and meta["val_episodes"] == 2

    assert main(args[:-2] + ["--lr", "0.5"]) == 2          # changed config on a finished run -> clear error
    assert "different config" in capsys.readouterr().err

    report = tmp_path / "eval.json"
    evaluation = ["checkpoint-eval", "--model", "tiny-test", "--checkpoints", "random", str(meta_out / "best.safetensors"),
                  "--domains", data, "--episodes", "3", "--resolution", "32", "--json", str(report), "--no-progress"]
    assert main(evaluation) == 0
    res = json.loads(report.read_text())["results"][data]
    assert set(res) == {"random", str(meta_out / "best.safetensors")}
    assert all(r["n"] == 3 and 0 <= r["mean"] <= 1 and len(r["accs"]) == 3 for r in res.values())
    diff = 100 * (sum(res[str(meta_out / "best.safetensors")]["accs"]) - sum(res["random"]["accs"])) / 3
    assert f"| {data} (n=3) | {diff:+.1f} ± " in capsys.readouterr().out     # the paired table: meta minus random
    # an identical evaluation is read back from --json, not run again
    before = report.read_text()
    monkeypatch.setattr("tinytrain.offline.evaluate.evaluate_checkpoints", lambda *a, **k: pytest.fail("evaluated"))
    assert main(evaluation) == 0
    assert f"reused from {report}" in capsys.readouterr().out and report.read_text() == before
    # the release tooling (cards, shipping into the zoo) is the maintainers' scripts/release.py, not a flag here
    with pytest.raises(SystemExit) as refused:
        main(evaluation + ["--card", str(tmp_path / "card.md")])
    assert refused.value.code == 2
    assert "unknown option '--card'" in capsys.readouterr().err and not (tmp_path / "card.md").exists()


def logged_step(log) -> int:
    """The highest step of a log being written: its last line may be half written (skipped)."""
    steps = [0]
    for line in log.read_text().splitlines():
        try:
            steps.append(json.loads(line).get("step", 0))
        except ValueError:
            pass
    return max(steps)


def test_metatrain_survives_sigkill_mid_epoch(tmp_path):
    """A real kill -9 of `tinytrain metatrain` mid-epoch; the same command then finishes the run with
    exactly the weights of an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from safetensors.torch import load_file
    from tinytrain.offline.state import load_state

    data = str(write_png_folder(tmp_path / "data", classes=15, per_class=8))
    args = ["metatrain", "--model", "tiny-test", "--data", data, "--resolution", "32", "--ways", "3",
            "--shots", "2", "--queries", "2", "--val-episodes", "1", "--epochs", "2", "--episodes-per-epoch", "60",
            "--warmup-epochs", "1", "--lr", "0.01", "--save-every", "3", "--log-every", "1", "--no-progress",
            "--device", "cpu"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "tinytrain", *args, "--out", str(killed)],
                            env=os.environ | {"OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL)
    log = killed / "log.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and logged_step(log) >= 7:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    cut = load_state(killed / "state.safetensors")["step"]
    assert 0 < cut < 60                                         # state from the middle of epoch 1
    assert main([*args, "--out", str(killed)]) == 0             # same command: resumes
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    a = load_file(str(killed / "last.safetensors"))
    b = load_file(str(tmp_path / "whole" / "last.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(l)["step"] for l in log.read_text().splitlines() if "loss" in l]
    assert steps == list(range(1, 121))                         # no step lost or logged twice


def test_random_column_is_reproducible_for_a_seed(tmp_path):
    from tinytrain.offline.evaluate import evaluate_checkpoints
    data = str(write_png_folder(tmp_path / "data", classes=8, per_class=10))
    kw = dict(episodes=8, resolution=32, mode="fixed", ways=5, shots=2, queries=5)
    torch.manual_seed(123)
    a = evaluate_checkpoints("tiny-test", ["random"], [data], seed=0, **kw)[data]["random"].accs
    torch.manual_seed(456)                      # whatever ran before must not matter
    b = evaluate_checkpoints("tiny-test", ["random"], [data], seed=0, **kw)[data]["random"].accs
    assert a == b


def test_metatrain_lite_residual_trains_only_the_branches_and_tinytl_starts_from_them(tmp_path):
    from safetensors.torch import load_file
    from tinytrain.methods import AdaptConfig, make_method
    from tinytrain.models.weights import load_backbone, save_checkpoint
    from tinytrain.models.backbone import build_backbone
    data = str(write_png_folder(tmp_path / "data", classes=15, per_class=8))
    torch.manual_seed(0)
    init = tmp_path / "init.safetensors"
    save_checkpoint(init, build_backbone("tiny-test"), {"resolution": 32})
    out = tmp_path / "lite"
    assert main(["metatrain", "--model", "tiny-test", "--data", data, "--resolution", "32", "--ways", "3",
                 "--shots", "2", "--queries", "3", "--val-episodes", "0", "--init", str(init), "--lite-residual",
                 "--epochs", "1", "--episodes-per-epoch", "4", "--warmup-epochs", "0.5", "--lr", "0.05",
                 "--out", str(out), "--no-progress"]) == 0
    trained, start = load_file(str(out / "last.safetensors")), load_file(str(init))
    lite = [k for k in trained if k.startswith("lite.")]
    assert lite and all(torch.equal(trained[k], start[k]) for k in start)          # the backbone is untouched
    assert any(trained[k].abs().sum() > 0 for k in lite if k.endswith("bn2.weight"))   # branches moved off 0
    backbone = load_backbone("tiny-test", str(out / "last.safetensors"))
    lite_info = backbone.checkpoint_info.lite
    assert lite_info.resolution == 32 and set(lite_info.state) == {k[5:] for k in lite}
    x, y = torch.randn(6, 3, 32, 32), torch.arange(3).repeat(2)
    m = make_method("tinytl", backbone, AdaptConfig(resolution=32, iterations=1, lr=0.0))
    m.fit(x, y)
    assert m.report.extra["lite_pretrained"] is True
    before = make_method("tinytl", build_backbone("tiny-test"), AdaptConfig(resolution=32, iterations=1, lr=0.0))
    before.fit(x, y)
    assert before.report.extra["lite_pretrained"] is False


def one_line(capsys, *names) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def test_finished_pretrain_without_best_checkpoint_and_damaged_state(tmp_path, capsys):
    """Issue 24: a finished run whose best.safetensors was deleted never reports it as written; a truncated
    state.safetensors is one line naming it and --restart."""
    data = str(write_png_folder(tmp_path / "data", classes=10, per_class=8))
    out = tmp_path / "pre"
    args = ["pretrain", "--model", "tiny-test", "--data", data, "--resolution", "32", "--ways", "2", "--shots", "1",
            "--queries", "2", "--val-episodes", "1", "--epochs", "1", "--batch-size", "16", "--warmup-epochs", "0",
            "--no-progress", "--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    capsys.readouterr()
    (out / "best.safetensors").unlink()
    assert main(args) == 0            # one epoch: the final epoch is the best, so last.safetensors stands in
    note = capsys.readouterr().err      # a note on stderr, as every note of the library
    assert note.startswith("tinytrain: note: ") and "was missing; the final epoch was the best" in note
    assert (out / "best.safetensors").is_file()
    (out / "best.safetensors").unlink()
    (out / "last.safetensors").unlink()
    assert main(args) == 2            # before: "done ... checkpoint best.safetensors", exit 0
    one_line(capsys, "best.safetensors is missing", "--restart")
    assert main(args + ["--restart"]) == 0 and (out / "best.safetensors").is_file()
    capsys.readouterr()
    state = out / "state.safetensors"
    state.write_bytes(state.read_bytes()[:50])
    assert main(args) == 2            # before: a safetensors traceback
    one_line(capsys, str(state), "--restart")
    state.write_text("{}")
    assert main(args) == 2
    one_line(capsys, str(state), "--restart")


def test_device_and_nproc_are_checked_before_any_work(tmp_path, capsys):
    data = str(write_png_folder(tmp_path / "data", classes=10, per_class=4))
    common = ["--model", "tiny-test", "--data", data, "--resolution", "32", "--no-progress"]
    if not torch.cuda.is_available():
        assert main(["metatrain", *common, "--device", "cuda", "--out", str(tmp_path / "m")]) == 2
        one_line(capsys, "--device cuda", "no CUDA GPU", "--device cpu")
    assert main(["metatrain", *common, "--device", "cuda:99", "--out", str(tmp_path / "m")]) == 2
    one_line(capsys, "--device cuda:99")
    assert main(["pretrain", *common, "--device", "toaster", "--out", str(tmp_path / "p")]) == 2
    one_line(capsys, "--device 'toaster'")
    assert main(["metatrain", *common, "--nproc", "0", "--out", str(tmp_path / "m")]) == 2
    one_line(capsys, "--nproc must be at least 1")
    assert main(["distill", "--student", "tiny-test", "--nproc", "0", "--out", str(tmp_path / "d")]) == 2
    one_line(capsys, "--nproc must be at least 1")            # before: ZeroDivisionError
    assert not any((tmp_path / n).exists() for n in ("m", "p", "d"))


@pytest.mark.parametrize("stage,flag,value,says", [
    ("pretrain", "--lr", "-1", "--lr must be a finite number > 0"),
    ("pretrain", "--lr", "nan", "--lr must be a finite number > 0"),
    ("pretrain", "--weight-decay", "-1", "--weight-decay must be a finite number >= 0"),
    ("pretrain", "--momentum", "1", "--momentum must be a finite number >= 0 and < 1"),
    ("pretrain", "--warmup-epochs", "-1", "--warmup-epochs must be a finite number >= 0"),
    ("pretrain", "--save-every", "0", "--save-every must be a whole number >= 1"),
    ("metatrain", "--log-every", "0", "--log-every must be a whole number >= 1"),
    ("metatrain", "--val-episodes", "-1", "--val-episodes must be a whole number >= 0"),
    ("metatrain", "--min-lr", "-1", "--min-lr must be a finite number >= 0"),
    ("metatrain", "--batch-episodes", "0", "--batch-episodes must be at least 1"),
    ("metatrain", "--ways", "1", "ways must be at least 2"),
])
def test_an_offline_setting_out_of_range_is_one_line_before_any_data_or_folder(stage, flag, value, says, tmp_path,
                                                                              monkeypatch, capsys):
    """Torch refused a negative rate mid-start (a traceback), accepted NaN and trained on it, and --save-every 0
    divided by zero: every shared numeric setting is checked first, naming its flag, and nothing is written."""
    monkeypatch.chdir(tmp_path)
    argv = [stage, "--model", "tiny-test", "--data", str(tmp_path / "no-such-data"), flag, value,
            "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"tinytrain {stage}: error: ") and says in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_a_file_given_as_the_run_folder_is_refused_naming_out(tmp_path, capsys):
    from tinytrain.offline.rundir import RunDir
    from tinytrain.offline.pretrain import PretrainConfig
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="--out .*f is a file; give a folder"):
        RunDir(tmp_path / "f").prepare(PretrainConfig())
    assert (tmp_path / "f").read_text() == "x"


def test_checkpoint_eval_refuses_a_json_target_it_cannot_write_before_evaluating(tmp_path, capsys):
    """It used to evaluate for minutes and then fail writing --json into a directory."""
    for target, says in ((tmp_path, "is an existing directory"), (tmp_path / "f" / "x.json", "")):
        if says == "":
            (tmp_path / "f").write_text("a file where a folder should be")
        argv = ["checkpoint-eval", "--model", "tiny-test", "--checkpoints", "random", "--domains",
                str(tmp_path / "no-such-data"), "--json", str(target)]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--json" in err[0] and says in err[0], err


def test_config_file_reproduces_a_run_bit_for_bit_and_refuses_mixed_or_foreign_settings(tmp_path, capsys):
    """`pretrain --config runs/X/config.json --out Y` trains the same run as X (same config, identical weights),
    as `eval --config` reproduces a table; a setting flag beside it, another stage's config, a hand-edited
    value of the wrong type or a missing file are one line each."""
    from safetensors.torch import load_file
    data = str(write_png_folder(tmp_path / "data", classes=10, per_class=8))
    first, again = tmp_path / "first", tmp_path / "again"
    assert main(["pretrain", "--model", "tiny-test", "--data", data, "--resolution", "32", "--ways", "2", "--shots",
                 "1", "--queries", "2", "--val-episodes", "1", "--epochs", "2", "--batch-size", "16", "--lr", "0.05",
                 "--seed", "3", "--max-steps", "2", "--no-progress", "--out", str(first)]) == 0
    assert main(["pretrain", "--config", str(first / "config.json"), "--max-steps", "2", "--no-progress",
                 "--out", str(again)]) == 0
    capsys.readouterr()
    assert json.loads((again / "config.json").read_text()) == json.loads((first / "config.json").read_text())
    a, b = load_file(str(first / "state.safetensors")), load_file(str(again / "state.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(json.loads((first / "config.json").read_text()) | {"epochs": "2"}))
    for argv, says in ((["pretrain", "--config", str(first / "config.json"), "--lr", "0.1"], "leave out --lr"),
                       (["metatrain", "--config", str(first / "config.json")], "is not a metatrain run's config"),
                       (["pretrain", "--config", str(edited)], "epochs must be a whole number"),
                       (["pretrain", "--config", str(tmp_path / "none.json")], "no such file"),
                       (["pretrain", "--config", str(first)], "is a folder; give its config.json")):
        assert main([*argv, "--out", str(tmp_path / "refused")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], err
        assert not (tmp_path / "refused").exists()
