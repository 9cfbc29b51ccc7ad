"""Property-based tests of the method-option parser (methods/options.py), the one behind `adapt --option`,
`eval --variant 'METHOD[k=v,...]'`, `tinytrain.adapt(options=...)` and `AdaptConfig.options`.

For any text or Python value given to any option of any method: either a ValueError of one line naming the
option, or a value of the field's type, within the field's documented range, that writes back (`to_items`,
`to_dict`) to text that parses to the same options. Never another exception, never a wrong value.
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tinytrain.methods import METHODS
from tinytrain.methods.options import (BOOL_WORDS, FALSE_WORDS, NONE_WORDS, TRUE_WORDS, MethodOptions,
                                       changed_options, parse_options, split_items)

SETTINGS = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
CLASSES = {name: m.options_class for name, m in METHODS.items()}
FIELDS = [(name, f) for name, cls in CLASSES.items() for f in dataclasses.fields(cls)]


def hints(cls) -> dict:
    return typing.get_type_hints(cls)


def base_types(tp) -> list:
    """The alternatives of a field's type (Union/Optional flattened)."""
    if typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType")):
        return [a for a in typing.get_args(tp)]
    return [tp]


def fields_of_type(kind) -> list[tuple[str, str]]:
    out = []
    for name, cls in CLASSES.items():
        h = hints(cls)
        for f in dataclasses.fields(cls):
            if f.metadata.get("convert") is None and kind in base_types(h[f.name]):
                out.append((name, f.name))
    return out


BOOL_FIELDS = [(m, k) for m, k in fields_of_type(bool)]
INT_FIELDS = [(m, k) for m, k in fields_of_type(int)]
FLOAT_FIELDS = [(m, k) for m, k in fields_of_type(float)]

WORDS = list(TRUE_WORDS + FALSE_WORDS + NONE_WORDS) + ["maybe", "False", "NO", " Yes ", "tru", "2", "-1", "auto",
                                                       "fit", "largest", "fisher", "out", "in", "[]", "{}", ";"]


def cased(word: str) -> st.SearchStrategy[str]:
    return st.tuples(st.sampled_from(["", " ", "\t"]), st.lists(st.booleans(), min_size=len(word),
                                                                 max_size=len(word)),
                     st.sampled_from(["", " ", "\n"])).map(
        lambda t: t[0] + "".join(c.upper() if up else c for c, up in zip(word, t[1])) + t[2])


NUMBER_TEXT = st.one_of(
    st.integers().map(str),
    st.integers(min_value=10 ** 300, max_value=10 ** 500).map(str),     # beyond float range
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=-2, max_value=2).map(lambda x: f"{x:g}"),
    st.sampled_from(["1e400", "-1e400", "nan", "inf", "1_000", "0x10", "1e-400", "１", "٣", "5.", ".5", "+3"]),
)
TEXT = st.one_of(st.text(max_size=30), st.sampled_from(WORDS).flatmap(cased), NUMBER_TEXT,
                 st.lists(NUMBER_TEXT, min_size=0, max_size=4).map(";".join),
                 st.lists(st.floats(allow_nan=True), max_size=3).map(lambda v: json.dumps(v)))
JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                  max_size=3), max_leaves=8)
PYTHON_VALUE = st.one_of(JSONISH, st.integers(min_value=10 ** 300, max_value=10 ** 400), st.tuples(st.floats()),
                         st.just(object()), st.binary(max_size=4))


def check_valid(cls, opts: MethodOptions) -> None:
    """Every field of `opts` has its type and is within its documented range; the options write back."""
    h = hints(cls)
    for f in dataclasses.fields(cls):
        value, meta = getattr(opts, f.name), f.metadata
        low, high, low_open = meta.get("low"), meta.get("high"), meta.get("low_open")
        numbers = []
        if isinstance(value, tuple):
            assert value, f.name
            numbers = list(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            numbers = [value]
        for x in numbers:
            assert isinstance(x, (int, float)) and not isinstance(x, bool), (f.name, value)
            assert isinstance(x, int) or math.isfinite(x), (f.name, value)
            if low is not None and meta.get("convert") is None:
                assert (x > low) if low_open else (x >= low), (f.name, value)
            if high is not None:
                assert x <= high, (f.name, value)
        if value is None:
            assert type(None) in base_types(h[f.name]), f.name
        if isinstance(value, str):
            assert value.strip(), f.name
    # to_items -> parse and to_dict -> parse give the same options back
    assert cls.parse(opts.to_items()) == opts
    assert cls.parse(opts.to_dict()) == opts


def one_line_naming(exc: ValueError, *words: str) -> None:
    text = str(exc)
    assert text and "\n" not in text, text
    for w in words:
        assert w in text, (w, text)


@SETTINGS
@given(st.sampled_from(FIELDS), TEXT)
def test_any_text_for_any_option_parses_in_range_or_is_refused(field_, text):
    method, f = field_
    cls = CLASSES[method]
    try:
        opts = cls.parse([f"{f.name}={text}"], "--option")
    except ValueError as exc:
        one_line_naming(exc, "--option")
        return
    check_valid(cls, opts)


@SETTINGS
@given(st.sampled_from(FIELDS), PYTHON_VALUE)
def test_any_python_value_for_any_option_parses_in_range_or_is_refused(field_, value):
    method, f = field_
    cls = CLASSES[method]
    try:
        opts = cls.parse({f.name: value})
    except ValueError as exc:
        one_line_naming(exc, f.name)
        return
    check_valid(cls, opts)


@SETTINGS
@given(st.sampled_from(BOOL_FIELDS), st.one_of(st.sampled_from(WORDS).flatmap(cased), st.text(max_size=6)))
def test_booleans_are_strict(field_, text):
    """Only true/false, yes/no, on/off, 1/0 (any case, spaces around) are booleans; everything else is refused
    (`bias=False` is false, `proto_grad=maybe` an error)."""
    method, key = field_
    word = text.strip().lower()
    try:
        value = getattr(CLASSES[method].parse({key: text}), key)
    except ValueError as exc:
        assert word not in TRUE_WORDS + FALSE_WORDS
        one_line_naming(exc, key, BOOL_WORDS)
        return
    assert value is (word in TRUE_WORDS)
    assert word in TRUE_WORDS + FALSE_WORDS


@SETTINGS
@given(st.sampled_from(INT_FIELDS), st.integers(min_value=-10 ** 6, max_value=10 ** 7))
def test_whole_numbers_in_range_are_taken_as_written_and_others_refused(field_, n):
    method, key = field_
    cls = CLASSES[method]
    meta = {f.name: f.metadata for f in dataclasses.fields(cls)}[key]
    low, high = meta.get("low"), meta.get("high")
    inside = (low is None or n >= low) and (high is None or n <= high)
    for given_as in (str(n), n, f" {n} "):
        try:
            value = getattr(cls.parse({key: given_as}), key)
        except ValueError as exc:
            assert not inside, (key, given_as, exc)
            one_line_naming(exc, key)
            continue
        assert inside and value == n and type(value) is int, (key, given_as, value)


@SETTINGS
@given(st.sampled_from(FLOAT_FIELDS), st.floats(allow_nan=True, allow_infinity=True))
def test_finite_numbers_in_range_are_taken_as_written_and_others_refused(field_, x):
    method, key = field_
    cls = CLASSES[method]
    meta = {f.name: f.metadata for f in dataclasses.fields(cls)}[key]
    low, high, low_open = meta.get("low"), meta.get("high"), meta.get("low_open")
    inside = math.isfinite(x) and (low is None or (x > low if low_open else x >= low)) and \
        (high is None or x <= high)
    for given_as in (repr(x), x):
        try:
            value = getattr(cls.parse({key: given_as}), key)
        except ValueError as exc:
            assert not inside, (key, given_as, exc)
            one_line_naming(exc, key)
            continue
        assert inside and value == x and type(value) is float, (key, given_as, value)


@SETTINGS
@given(st.sampled_from(sorted(CLASSES)), st.text(min_size=1, max_size=20))
def test_unknown_keys_are_refused_naming_the_valid_ones(method, key):
    cls = CLASSES[method]
    assume(key.strip() and key.strip() not in cls.keys() and "=" not in key)
    with pytest.raises(ValueError) as e:
        parse_options([f"{key}=1"], method, "--option")
    shown = key.strip() if key.strip().isprintable() else repr(key.strip())
    one_line_naming(e.value, "--option", shown, "valid keys")
    with pytest.raises(ValueError) as e:
        cls.parse({key: 1})
    one_line_naming(e.value, "valid keys")


@SETTINGS
@given(st.lists(st.one_of(st.text(max_size=12), st.sampled_from(["=", "a=", "=b", " k = v ", ""])), max_size=5))
def test_key_value_texts_split_or_are_refused(items):
    try:
        out = split_items(items, "--option")
    except ValueError as exc:
        one_line_naming(exc, "--option")
        assert any(i.strip() and (not i.strip().partition("=")[1] or not i.strip().partition("=")[0].strip())
                   for i in items)
        return
    for key, value in out.items():
        assert key and key == key.strip() and value == value.strip()
    # the last of a repeated key wins, as a repeated flag does
    for item in items:
        if item.strip():
            k, _, v = item.strip().partition("=")
            assert k.strip() in out


@SETTINGS
@given(st.sampled_from(sorted(CLASSES)), st.lists(st.tuples(st.sampled_from(sorted({f.name for _, f in FIELDS})),
                                                            TEXT), max_size=4))
def test_parse_options_returns_the_given_keys_as_plain_values_that_parse_back(method, pairs):
    items = [f"{k}={v}" for k, v in pairs]
    try:
        out = parse_options(items, method, "--option")
    except ValueError as exc:
        one_line_naming(exc, "--option")
        return
    assert set(out) == {k for k, v in pairs}
    json.dumps(out, allow_nan=False)               # plain JSON values, finite numbers
    again = parse_options(out, method)
    assert again == out
    changed = changed_options(method, CLASSES[method].parse(out).to_dict())
    assert set(changed) <= set(out)


# --- regressions: what the properties found ----------------------------------------------------------------

BIG = "1" * 400          # a whole number beyond the float range


@pytest.mark.parametrize("item", [f"augment_p={BIG}", f"lr_candidates=1e-3;{BIG}", f"fisher_mass={BIG}"])
def test_a_number_beyond_the_float_range_is_refused_not_an_overflow(item, capsys):
    """Before: OverflowError (the CLI said 'internal error', exit 1). After: the option's one-line error."""
    from tinytrain.cli import main

    with pytest.raises(ValueError, match=f"option {item.split('=')[0]} must be"):
        parse_options([item], "tinytrain", "--option")
    assert main(["adapt", "--support", "/nonexistent-support", "--option", item]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--option" in err and "internal error" not in err, err


def test_an_unknown_key_with_a_control_character_is_shown_escaped_on_one_line():
    """Before: the key was pasted raw, so a newline in it split the message over two lines."""
    with pytest.raises(ValueError) as e:
        MethodOptions.parse({"bias\n": 1}, "--option")
    assert "\n" not in str(e.value) and "'bias\\n'" in str(e.value)


def test_text_options_are_stripped_so_they_write_back_as_given():
    """Before: policy=' p.json ' kept its spaces, and to_items() wrote text that parsed to 'p.json'."""
    opts = CLASSES["sparseupdate"].parse({"policy": " p.json "})
    assert opts.policy == "p.json"
    assert CLASSES["sparseupdate"].parse(opts.to_items()) == opts


def test_search_iterations_are_bounded():
    """Before: lr_search_iterations=1e20 was taken (a rate search without end, as --iterations 1e20 was)."""
    with pytest.raises(ValueError, match=r"lr_search_iterations must be a whole number in \[0, 100000\]"):
        parse_options(["lr_search_iterations=100000000000000000000"], "fulltrain", "--option")
    assert parse_options(["lr_search_iterations=100000"], "fulltrain") == {"lr_search_iterations": 100000}
