"""`--variant 'METHOD[key=value,...]'` with values that hold commas: JSON (fixed_plan) and quoted text. Options
are separated by the commas outside brackets, braces and quotes; anything else is one line saying what to change."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinytrain.bench.ablations import option_variant, split_top_level

METHODS = ["none", "tinytrain", "tinytl"]


def test_a_json_fixed_plan_is_one_option_and_the_commas_inside_it_do_not_split():
    spec = 'tinytrain[fixed_plan={"weights": [], "biases": []}]'
    v = option_variant(spec, METHODS)
    assert v.options == {"fixed_plan": {"weights": [], "biases": []}} and v.label == spec
    plan = {"weights": [{"index": 3, "channels": [1, 2], "axis": "out"}], "biases": []}
    v = option_variant(f"tinytrain[stop_rule=skip,fixed_plan={json.dumps(plan)},ratio_policy=largest]", METHODS)
    assert v.options["fixed_plan"]["weights"][0]["channels"] == [1, 2]
    assert v.options["stop_rule"] == "skip" and v.options["ratio_policy"] == "largest"


def test_a_quoted_value_keeps_its_commas_and_loses_its_quotes():
    assert split_top_level('a="p,q",b=\'r,s\',c=1', "--variant x") == ['a="p,q"', "b='r,s'", "c=1"]
    assert split_top_level(r'a="x\",y",b=2', "--variant x") == [r'a="x\",y"', "b=2"]
    assert option_variant('tinytrain[stop_rule="skip"]', METHODS).options == {"stop_rule": "skip"}


@pytest.mark.parametrize("spec, words", [
    ('tinytrain[fixed_plan={"weights": []]', "'{' is not closed by '}'"),
    ('tinytrain[fixed_plan={"weights": [}]', "'}' at position 25 of the options does not close '['"),
    ("tinytrain[stop_rule=skip)]", "')' at position 15 of the options closes nothing"),
    ('tinytrain[stop_rule="skip]', "the quote \" is not closed"),
    ("tinytrain[stop_rule=skip,]", "option 2 of 2 is empty"),
    ("tinytrain[stop_rule=skip,,ratio_policy=largest]", "option 2 of 3 is empty"),
    ("tinytl[bias=no,bias=yes]", "sets bias more than once"),
    ("tinytrain[stop_rule=skip", "does not end with ']'"),
    ("[bias=no]", "names no method before '['"),
    ("tinytrain[]", "sets no option"),
    ("tinytrain[stop_rule]", "'stop_rule' is not key=value"),
])
def test_a_malformed_spec_is_one_line_saying_what_is_wrong(spec, words):
    with pytest.raises(ValueError) as e:
        option_variant(spec, METHODS)
    text = str(e.value)
    assert text.startswith(f"--variant {spec!r}") and words in text and "\n" not in text, text


JSON_VALUE = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | st.text("ab,]}[{ \"'", max_size=4),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text("ab,", max_size=3),
                                                                                      inner, max_size=2),
                          max_leaves=6)


@settings(max_examples=150, deadline=None, database=None)
@given(st.lists(st.tuples(st.sampled_from(["k1", "k2", "k3"]), JSON_VALUE), min_size=1, max_size=3,
                unique_by=lambda t: t[0]))
def test_json_values_split_back_into_the_items_they_were_written_as(pairs):
    """Any JSON values, their strings holding commas, brackets and quotes: split into exactly the items."""
    items = [f"{k}={json.dumps(v)}" for k, v in pairs]
    assert split_top_level(",".join(items), "--variant x") == items
