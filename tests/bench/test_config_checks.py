"""An evaluation's settings are checked for type and range wherever they come from (command line, a stored
config.json, Python), and per-method learning rates cannot silently lose a pair."""
from __future__ import annotations

import pytest

from tinytrain.data.episodes import EpisodeSpec
from tinytrain.bench.evalconfig import EvalConfig, Variant
from tinytrain.cli.evaluate import _lr
from tinytrain.errors import BadInput


def _config(**kw) -> EvalConfig:
    return EvalConfig(**{"domains": ["pocket-digits"], "variants": [Variant("none", "none")], **kw})


@pytest.mark.parametrize("kw,message", [
    ({"tasks": 2.5}, "--tasks must be a whole number"), ({"tasks": True}, "--tasks must be a whole number"),
    ({"tasks": 0}, "--tasks"), ({"resolution": -5}, "--resolution must be a whole number >= 8"),
    ({"seed": "x"}, "--seed"), ({"memory_budget": -5}, "--memory-budget"),
    ({"compute_budget": "15%"}, "--compute-budget"), ({"compute_budget": float("nan")}, "--compute-budget"),
    ({"lr_episodes": "x"}, "--lr-episodes"), ({"lr": True}, "--lr"), ({"lr_grid": ("0.1",)}, "--lr-grid"),
    ({"variants": [Variant("n", "nope")]}, "unknown method 'nope'"),
    ({"episodes": EpisodeSpec(mode="garbage")}, "episodes mode"),
    ({"episodes": EpisodeSpec(mode="fixed", ways=5, shots=None, queries=5)}, "--shots"),
    ({"domains": "pocket-digits"}, "domains must be a list"),
])
def test_bad_settings_are_refused_naming_the_setting(kw, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        _config(**kw).validate()


def test_good_settings_pass():
    _config(compute_budget=0.15, memory_budget=1 << 20, lr={"fulltrain": 1e-4, "default": 1e-3}).validate()
    _config(episodes=EpisodeSpec(mode="fixed", ways=5, shots=1, queries=5)).validate()


@pytest.mark.parametrize("text,message", [
    ("fulltrain=1e-3,=5", "names no method"), ("=1e-3", "names no method"),
    ("sparseupdate=1e-3,sparseupdate=1e-2", "given twice"), ("x=", "METHOD=LR pairs"),
])
def test_per_method_rates_never_drop_a_pair(text, message):
    with pytest.raises(BadInput, match=message):
        _lr(text)
    assert _lr("fulltrain=1e-4,default=1e-3") == {"fulltrain": 1e-4, "default": 1e-3}


def test_deeply_nested_run_files_and_device_files_are_one_line(tmp_path):
    from tinytrain.bench.rundir import read_json
    from tinytrain.costs.devices import load_devices
    deep = tmp_path / "config.json"
    deep.write_text("[" * 100_000)
    with pytest.raises(ValueError, match="nested too deeply"):
        read_json(deep, "the run's settings")
    with pytest.raises(ValueError, match="nested too deeply"):
        load_devices(deep)


def test_a_null_device_entry_takes_the_default(tmp_path):
    import json

    from tinytrain.costs.devices import load_devices
    path = tmp_path / "devices.json"
    path.write_text(json.dumps({"devices": [{"name": "board", "ram": "512KB", "flash": "2MB",
                                             "memory_budget": "256KB", "batch_size": None, "compute_budget": None}]}))
    board = load_devices(path)["board"]
    assert board.batch_size == 1 and board.compute_budget == 0.15


@pytest.mark.parametrize("domain,words", [("/nonexistent/x", "does not exist"), ("pocket-digit", "pocket-digits?"),
                                          ("omniglott:/x", "omniglot:/x?")])
def test_a_domain_that_names_nothing_is_one_line_naming_the_flag_and_nothing_is_written(tmp_path, capsys, domain,
                                                                                        words):
    from tinytrain.cli import main
    out = tmp_path / "run"
    assert main(["eval", "--domains", domain, "--methods", "none", "--tasks", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--domains {domain}:" in err and words in err, err
    assert not out.exists()
