"""Property-based tests of what `tinytrain eval` reads from the user: learning rates (--lr, --lr-grid, METHOD=LR),
`--variant 'METHOD[key=value,...]'`, and a stored run's config.json (`config_from_stored`).

Each either gives a value within its documented range, or one line (BadInput/ValueError) naming the flag or
file; never another exception.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinytrain.bench.ablations import main_variants, option_variant
from tinytrain.bench.evalconfig import LR_PROTOCOLS, MAX_LR, EvalConfig, available_methods, check_rate
from tinytrain.bench.rundir import config_from_stored
from tinytrain.errors import BadInput
from tinytrain.cli.evaluate import _lr
from tinytrain.methods.options import options_class

SETTINGS = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
METHODS = available_methods()
RATE_TEXT = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                      st.floats(min_value=0, max_value=200).map(lambda x: f"{x:g}"),
                      st.integers(min_value=-10, max_value=10 ** 500).map(str),
                      st.sampled_from(["1e-3", "0", "-0", "1e30", "inf", "nan", "abc", "", "1e400", "100", "100.0001"]))


def one_line(exc: Exception, *names: str) -> None:
    text = str(exc)
    assert isinstance(exc, (ValueError, BadInput)) and text and "\n" not in text, repr(exc)
    for n in names:
        assert n in text, (n, text)


@SETTINGS
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=-10, max_value=10 ** 30),
                 st.booleans(), st.text(max_size=4), st.none()), st.booleans())
def test_a_rate_is_finite_within_the_limit_or_refused_naming_the_flag(value, zero_ok):
    try:
        rate = check_rate(value, "--lr-grid", zero_ok)
    except ValueError as exc:
        one_line(exc, "--lr-grid")
        return
    assert type(rate) is float and math.isfinite(rate) and rate <= MAX_LR
    assert rate > 0 or (zero_ok and rate == 0)
    assert rate == value and not isinstance(value, bool)


@SETTINGS
@given(st.one_of(RATE_TEXT, st.sampled_from(LR_PROTOCOLS + ("Auto", "auto ")),
                 st.lists(st.tuples(st.sampled_from(METHODS + ["default"]), RATE_TEXT), min_size=1, max_size=3).map(
                     lambda pairs: ",".join(f"{m}={r}" for m, r in pairs)),
                 st.text(alphabet=st.characters(blacklist_characters="="), max_size=10)))
def test_an_lr_text_is_a_protocol_a_rate_or_rates_by_method_or_one_line(text):
    try:
        lr = _lr(text)
    except BadInput as exc:
        one_line(exc, "--lr")
        return
    if isinstance(lr, str):
        assert lr in LR_PROTOCOLS and lr == text.strip()
    elif isinstance(lr, dict):
        given_keys = {item.split("=", 1)[0].strip() for item in text.split(",") if item.strip()}
        assert set(lr) == given_keys
        assert all(0 < v <= MAX_LR and math.isfinite(v) for v in lr.values())
    else:
        assert 0 < lr <= MAX_LR and lr == float(text)


KEYS = sorted({k for m in ("none", "tinytrain", "tinytl") for k in options_class(m).keys()})
SPEC = st.one_of(
    st.tuples(st.sampled_from(["none", "tinytrain", "tinytl", "fulltrain", "magic", ""]),
              st.lists(st.tuples(st.sampled_from(KEYS + ["foo"]),
                                 st.one_of(st.sampled_from(["true", "no", "maybe", "0.5", "2", "largest", "skip",
                                                            "1;0.5", "none", ""]), st.text(max_size=5))),
                       max_size=3)).map(lambda t: f"{t[0]}[{','.join(f'{k}={v}' for k, v in t[1])}]"),
    st.text(max_size=20))


@SETTINGS
@given(SPEC)
def test_a_variant_spec_is_a_checked_column_or_one_line_naming_it(spec):
    try:
        v = option_variant(spec, ["none", "tinytrain", "tinytl"])
    except ValueError as exc:
        one_line(exc, "--variant")
        return
    assert v.method in ("none", "tinytrain", "tinytl") and v.options and v.label == spec.strip()
    json.dumps(v.options, allow_nan=False)                 # stored in config.json as plain, finite values
    opts = options_class(v.method).parse(v.options)          # and read back by the method as they are
    assert {k: opts.to_dict()[k] for k in v.options} == v.options


GOOD = EvalConfig(domains=["pocket-digits"], variants=main_variants(["none", "tinytrain"])).to_dict()
JSON = st.recursive(st.none() | st.booleans() | st.integers(min_value=-10 ** 6, max_value=10 ** 6)
                    | st.floats(allow_nan=True) | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                               max_size=2), max_leaves=5)


@SETTINGS
@given(st.dictionaries(st.sampled_from(sorted(GOOD) + ["unknown_setting"]), JSON, max_size=2))
def test_a_stored_config_is_read_or_refused_naming_the_file(changes):
    d = {**GOOD, **changes}
    try:
        config = config_from_stored(d, Path("run/config.json"))
    except ValueError as exc:
        one_line(exc, "run/config.json")
        return
    assert isinstance(config, EvalConfig)
    assert isinstance(config.domains, list) and all(isinstance(x, str) for x in config.domains)
