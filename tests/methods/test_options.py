"""Typed method options: one dataclass per method, one parser for `--option`, `--variant`, `AdaptConfig.options`
and `tinytrain.adapt(options=...)`; unknown keys refused for every method, strict booleans, checked numbers."""
from __future__ import annotations

import json
import typing

import pytest
import torch

import tinytrain
from tinytrain.bench.ablations import option_variant
from tinytrain.cli import main
from tinytrain.cli.adapt import format_summary
from tinytrain.deploy.adapted import load_adapted
from tinytrain.methods import METHODS, AdaptConfig, make_method
from tinytrain.methods.options import MethodOptions, parse_options
from tinytrain.methods.tinytrain import TinyTrainOptions
from tinytrain.models.backbone import build_backbone
from tests.deploy.conftest import write_folder
from tests.deploy.test_adapt_cli import TINY, run_json

BOOLEAN_TEXT = {"false": False, "False": False, "no": False, "NO": False, "off": False, "0": False,
                "true": True, "True": True, "yes": True, "On": True, "1": True}


@pytest.fixture(scope="module")
def task():
    torch.manual_seed(0)
    bb = build_backbone("tiny-test").eval()
    g = torch.Generator().manual_seed(3)
    return bb, torch.randn(9, 3, 32, 32, generator=g), torch.arange(3).repeat(3)


@pytest.fixture
def support(tmp_path):
    return write_folder(tmp_path / "support", 3)


def _cfg(**kw):
    return AdaptConfig(iterations=kw.pop("iterations", 1), resolution=32, augment=False, **kw)


# -- every method declares its options ----------------------------------------------------------

@pytest.mark.parametrize("name", list(METHODS))
def test_each_method_has_a_frozen_options_class_whose_defaults_round_trip(name):
    cls = METHODS[name].options_class
    assert issubclass(cls, MethodOptions) and cls is not MethodOptions and cls.method == name
    default = cls()
    with pytest.raises(Exception):          # frozen
        default.prefix_batch_size = 3
    assert set(MethodOptions.keys()) <= set(cls.keys())           # the shared options are every method's
    assert cls.parse(default.to_dict()) == default
    assert cls.parse(json.loads(json.dumps(default.to_dict()))) == default     # through JSON (saved reports)
    assert cls.parse(default.to_items()) == default                         # through --option text
    assert parse_options(default.to_items(), name, "--option") == default.to_dict()
    assert cls.parse(None) == cls.parse({}) == cls.parse([]) == default


def test_non_default_options_round_trip_through_text_and_dicts():
    opts = TinyTrainOptions(channel_ratios=[1, 0.25], fisher_batch_size=4, bias=True, device="nrf52840",
                            fixed_plan={"weights": [{"index": 3, "channels": [0, 2], "axis": "out"}], "biases": [4]},
                            cache_budget="4MB", lr_search_iterations=5, ratio_policy="largest")
    assert opts.channel_ratios == (1.0, 0.25) and opts.cache_budget == 4 * 1024 * 1024
    assert TinyTrainOptions.parse(opts.to_items()) == opts
    assert TinyTrainOptions.parse(opts.to_dict()) == opts
    assert TinyTrainOptions.parse(opts) is opts


def test_prefix_batch_size_has_one_default_per_method():
    """`none` embeds the support set in chunks of 256 (its one pass), the trained methods in chunks of 64."""
    assert {n: c.options_class().prefix_batch_size for n, c in METHODS.items()} == {
        "none": 256, "lastlayer": 64, "fulltrain": 64, "tinytl": 64, "sparseupdate": 64, "tinytrain": 64}


def test_tinytrain_choices_are_the_selection_codes_choices():
    from tinytrain.sparse import selection
    hints = typing.get_type_hints(TinyTrainOptions)
    for key, values in (("score", selection.SCORES), ("channel_choice", selection.CHANNEL_CHOICES),
                        ("stop_rule", selection.STOP_RULES), ("ratio_policy", selection.RATIO_POLICIES)):
        # "redraw" is TinyTrain's own: a random first draw (selection's "random"), redrawn every iteration
        assert set(typing.get_args(hints[key])) - {"redraw"} == set(values), key


# -- unknown keys: refused for every method, naming the valid keys ------------------------------

@pytest.mark.parametrize("name", list(METHODS))
def test_unknown_option_is_refused_for_every_method_naming_the_valid_keys(task, name):
    bb, _, _ = task
    valid = METHODS[name].options_class.keys()
    with pytest.raises(ValueError) as err:
        make_method(name, bb, _cfg(options={"no_such_key": 1}))
    msg = str(err.value)
    assert f"unknown {name} option(s) no_such_key; valid keys: {', '.join(valid)}" in msg and "\n" not in msg
    with pytest.raises(ValueError, match=f"unknown {name} option"):        # a typo of a real key, too
        make_method(name, bb, _cfg(options={"prefix_batchsize": 8}))
    with pytest.raises(ValueError, match=f"--option: unknown {name} option"):
        parse_options(["no_such_key=1"], name, "--option")
    with pytest.raises(ValueError, match=f"unknown {name} option"):        # eval --variant 'METHOD[...]'
        option_variant(f"{name}[foo=bar]", [name])


@pytest.mark.parametrize("name", list(METHODS))
def test_cli_refuses_an_unknown_option_with_exit_2_for_every_method(support, tmp_path, capsys, name):
    out = tmp_path / "never"
    code = main(["adapt", *TINY, "--support", str(support), "--method", name, "--option", "no_such_key=1",
                 "--save", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"--option: unknown {name} option(s) no_such_key; valid keys: " in err
    assert all(k in err for k in METHODS[name].options_class.keys())
    assert not out.exists()


def test_options_that_belong_to_another_method_are_refused(task):
    """Before, any key reached every method other than tinytrain and was silently ignored."""
    bb, _, _ = task
    with pytest.raises(ValueError, match="unknown fulltrain option.s. ratio_policy"):
        make_method("fulltrain", bb, _cfg(options={"ratio_policy": "largest"}))
    with pytest.raises(ValueError, match="unknown lastlayer option.s. policy"):
        make_method("lastlayer", bb, _cfg(options={"policy": {"n_bias": 1, "ratios": {}}}))
    with pytest.raises(ValueError, match="unknown none option.s. lite"):
        make_method("none", bb, _cfg(options={"lite": "fresh"}))


# -- values: strict booleans, checked numbers, lists ---------------------------------------------

@pytest.mark.parametrize("text, value", BOOLEAN_TEXT.items())
def test_booleans_from_text_are_strict(text, value):
    assert parse_options([f"bias={text}"], "tinytrain", "--option") == {"bias": value}
    assert parse_options([f"bias={text}"], "tinytl", "--option") == {"bias": value}
    assert parse_options([f"proto_grad={text}"], "none", "--option") == {"proto_grad": value}


@pytest.mark.parametrize("method, key", [("tinytrain", "bias"), ("tinytl", "bias"), ("lastlayer", "proto_grad"),
                                         ("tinytrain", "crossed_biases")])
@pytest.mark.parametrize("bad", ["maybe", "", "2", "nope", "truee"])
def test_a_word_that_is_not_a_boolean_is_refused_naming_the_key_and_the_words(method, key, bad):
    with pytest.raises(ValueError) as err:
        parse_options([f"{key}={bad}"], method, "--option")
    msg = str(err.value)
    assert msg.startswith(f"--option: {method} option {key} must be true or false") and f"{key}={bad!r}" in msg
    assert "true/false, yes/no, on/off or 1/0" in msg and "\n" not in msg


def test_booleans_from_python_are_real_bools(task):
    bb, _, _ = task
    assert make_method("tinytl", bb, _cfg(options={"bias": False})).opts.bias is False
    assert make_method("tinytl", bb, _cfg(options={"bias": "no"})).opts.bias is False     # text reads as text
    for bad in (0, 1, None, "maybe", [True]):
        with pytest.raises(ValueError, match="tinytl option bias must be true or false"):
            make_method("tinytl", bb, _cfg(options={"bias": bad}))


def test_bias_no_really_turns_bias_training_off(task):
    """`--option bias=False` / `bias=no` used to turn TinyTL's bias training ON (only lowercase false was false)."""
    bb, x, y = task
    for value in ("False", "no", "OFF", False):
        rep = make_method("tinytl", bb, _cfg(options={"bias": value})).plan(x, y)
        assert rep.extra["train_biases"] is False and not any("BN shift" in r.name for r in rep.rows)
        assert rep.options["bias"] is False
    rep = make_method("tinytl", bb, _cfg(options={"bias": "yes"})).plan(x, y)
    assert rep.extra["train_biases"] is True and any("BN shift" in r.name for r in rep.rows)


@pytest.mark.parametrize("item, words", [
    ("fisher_mass=nan", "fisher_mass must be a finite number in (0, 1]"),
    ("fisher_mass=inf", "fisher_mass must be a finite number in (0, 1]"),
    ("fisher_mass=-inf", "fisher_mass must be a finite number"),
    ("fisher_mass=0", "fisher_mass must be a finite number in (0, 1]"),
    ("augment_p=1.5", "augment_p must be a finite number in [0, 1]"),
    ("lr_candidates=1e-3;nan", "lr_candidates must be numbers >= 0 separated by ';'"),
    ("channel_ratios=1;0.5;abc", "channel_ratios must be numbers in (0, 1] separated by ';'"),
    ("channel_ratios=2", "channel_ratios must be numbers in (0, 1]"),
    ("augment_pool=8.5", "augment_pool must be a whole number >= 0"),
    ("augment_pool=-1", "augment_pool must be a whole number >= 0"),
    ("prefix_batch_size=0", "prefix_batch_size must be a whole number >= 1"),
    ("fisher_batch_size=some", "fisher_batch_size must be a whole number >= 1 or one of auto"),
    ("cache_budget=lots", "cache_budget must be a memory size"),
    ("ratio_policy=smallest", "ratio_policy must be one of fisher-mass, largest"),
    ("fixed_plan=garbage", "fixed_plan must be an UpdatePlan JSON object"),
    ('fixed_plan={"weights": [{"index": "x"}]}', "fixed_plan must be an UpdatePlan JSON object"),
    ("device=", "device must be a non-empty text or none"),
])
def test_bad_values_are_refused_naming_the_key(item, words):
    with pytest.raises(ValueError) as err:
        parse_options([item], "tinytrain", "--option")
    msg = str(err.value)
    assert msg.startswith("--option: tinytrain option ") and words in msg and "\n" not in msg
    key, _, value = item.partition("=")
    assert f"(got {key}={value!r})" in msg


def test_python_numbers_are_checked_too(task):
    bb, _, _ = task
    for opts, words in (({"fisher_mass": float("nan")}, "fisher_mass must be a finite number"),
                        ({"lr_candidates": [1e-3, float("inf")]}, "lr_candidates must be numbers >= 0"),
                        ({"augment_pool": True}, "augment_pool must be a whole number"),
                        ({"channel_ratios": []}, "channel_ratios must be numbers")):
        with pytest.raises(ValueError, match=words):
            make_method("tinytrain", bb, _cfg(options=opts))


def test_values_convert_to_their_types():
    got = parse_options(["channel_ratios=1;0.5", "fisher_mass=0.3", "fisher_batch_size=4", "stop_rule=first",
                         "cache_budget=4MB", "device=none", "lr_candidates=[0, 1e-3]", "augment_pool=8"],
                        "tinytrain", "--option")
    assert got == {"channel_ratios": [1.0, 0.5], "fisher_mass": 0.3, "fisher_batch_size": 4, "stop_rule": "first",
                   "cache_budget": 4 * 1024 * 1024, "device": None, "lr_candidates": [0.0, 1e-3], "augment_pool": 8}
    assert parse_options(["fisher_batch_size=auto", "cache_budget=none"], "tinytrain") == \
        {"fisher_batch_size": "auto", "cache_budget": None}
    assert parse_options(["policy_kb=fit"], "sparseupdate") == {"policy_kb": "fit"}
    assert parse_options(['policy={"n_bias": 2, "ratios": {"3": 0.5}}'], "sparseupdate") == \
        {"policy": {"n_bias": 2, "ratios": {"3": 0.5}}}
    assert parse_options(["policy=my/policy.json"], "sparseupdate") == {"policy": "my/policy.json"}
    # a variant column stores the converted values (what the run passes to the method)
    assert option_variant("tinytl[bias=no,lite=fresh]", ["tinytl"]).options == {"bias": False, "lite": "fresh"}


# -- the library and the CLI accept the same keys -----------------------------------------------

def test_augment_pool_is_accepted_by_the_cli_and_the_library(task, support, tmp_path, capsys):
    """`adapt --option augment_pool=8` used to be refused although the library took it."""
    out = tmp_path / "m"
    s = run_json(capsys, ["adapt", *TINY, "--support", str(support), "--method", "tinytrain", "--iterations", "3",
                          "--option", "augment_pool=8", "--json", "--save", str(out)])
    assert s["options"]["augment_pool"] == 8
    caches = load_adapted(out).report["extra"]["caches"]
    assert caches["pool_views"] == 3          # min(pool, iterations) views drawn once, as the library does
    bb, x, y = task
    m = make_method("tinytrain", bb, _cfg(iterations=3, lr=1e-3, options={"augment_pool": 8}))
    m.fit(x, y)
    assert m.report.extra["caches"]["pool_views"] == 3 and m.report.options["augment_pool"] == 8


def test_python_adapt_takes_options_and_they_change_the_plan(support):
    torch.manual_seed(0)
    bb = tinytrain.load_backbone("tiny-test", "random")
    kw = dict(memory_budget="64KB", compute_budget="60%", iterations=1, resolution=32)
    default = tinytrain.adapt(bb, support, "tinytrain", **kw)
    largest = tinytrain.adapt(bb, support, "tinytrain", options={"ratio_policy": "largest"}, **kw)
    assert default.summary["options"]["ratio_policy"] == "fisher-mass"
    assert largest.summary["options"]["ratio_policy"] == "largest"
    assert default.summary["plan"] != largest.summary["plan"]
    share = lambda plan: sum(r["channels_updated"] for r in plan) / sum(r["channels_total"] for r in plan)
    # largest: the largest ratio that fits (whole layers here); fisher-mass: a Fisher-chosen share of each layer
    assert share(largest.summary["plan"]) > 2 * share(default.summary["plan"])
    with pytest.raises(ValueError, match="options: unknown tinytrain option.s. ratio; valid keys: .*ratio_policy"):
        tinytrain.adapt(bb, support, "tinytrain", options={"ratio": "largest"}, **kw)
    with pytest.raises(ValueError, match="options: tinytl option bias must be true or false"):
        tinytrain.adapt(bb, support, "tinytl", options={"bias": "maybe"}, **kw)


def test_adapt_config_takes_an_options_object_as_well_as_a_dict(task):
    bb, x, y = task
    kw = dict(memory_budget=60_000, compute_budget=0.6)
    as_dict = make_method("tinytrain", bb, _cfg(options={"ratio_policy": "largest"}, **kw)).plan(x, y)
    as_object = make_method("tinytrain", bb, _cfg(options=TinyTrainOptions(ratio_policy="largest"), **kw)).plan(x, y)
    assert as_dict.rows == as_object.rows and as_dict.options == as_object.options


@pytest.mark.parametrize("name", list(METHODS))
def test_every_report_lists_the_applied_options(task, name):
    bb, x, y = task
    m = make_method(name, bb, _cfg(lr=1e-3, options={"prefix_batch_size": 5}))
    m.fit(x, y)
    expect = METHODS[name].options_class(prefix_batch_size=5).to_dict()
    if name == "tinytrain":
        expect.pop("fixed_plan")          # its plan is the report's plan; extra["static_plan"] says so
    assert m.report.options == expect and m.report.to_dict()["extra"]["options"] == expect
    json.dumps(m.report.to_dict())        # plain values


def test_text_summary_names_the_options_that_differ_from_the_defaults(support, capsys):
    s = run_json(capsys, ["adapt", *TINY, "--support", str(support), "--method", "tinytl", "--iterations", "1",
                          "--option", "bias=off", "--json"])
    assert s["options"]["bias"] is False and s["options"]["lite"] == "pretrained"
    text = format_summary(s)
    assert "options: bias=false (the others at their defaults)" in text
    s["options"]["bias"] = True
    assert "options:" not in format_summary(s)
