"""Property-based tests of the size and budget parsers (costs/units.py) and of device profile files
(costs/devices.py): any text or JSON either gives a value within the documented range that means what was
written, or a one-line ValueError; never another exception, never a silently different value."""
from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinytrain.costs.devices import DeviceProfile, _read_table
from tinytrain.costs.units import MAX_BYTES, MAX_MACS, format_bytes, parse_bytes, parse_compute_budget

SETTINGS = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

BYTE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024 ** 2, "mb": 1024 ** 2, "mib": 1024 ** 2,
              "g": 1024 ** 3, "gb": 1024 ** 3, "gib": 1024 ** 3}
MAC_UNITS = {"": 1, "k": 10 ** 3, "m": 10 ** 6, "g": 10 ** 9}


def cased(word: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda ups: "".join(c.upper() if u else c for c, u in zip(word, ups)))


NUMBER = st.one_of(st.integers(min_value=0, max_value=10 ** 6).map(str),
                   st.floats(min_value=0, max_value=1e6).map(lambda x: f"{x:.4g}"),
                   st.floats(min_value=0, max_value=1e20).map(lambda x: f"{x:e}"),
                   st.sampled_from(["0", "0.0", ".5", "1e400", "1e-400", "00012"]))
GARBAGE = st.one_of(st.text(max_size=12), st.sampled_from(["", "MB", "1 2MB", "1..5MB", "-1MB", "1MB5", "nan",
                                                           "inf", "1e5e5", "1,5MB", "1.MB", "15%", "1 M B",
                                                           "1e", "0x10", "１MB", "1_000"]))


def one_line(exc: Exception) -> str:
    text = str(exc)
    assert isinstance(exc, ValueError) and text and "\n" not in text, repr(exc)
    return text


# --- memory sizes ---------------------------------------------------------------------------------------

@SETTINGS
@given(NUMBER, st.sampled_from(sorted(BYTE_UNITS)).flatmap(cased), st.sampled_from(["", " "]))
def test_a_size_with_a_unit_is_its_number_times_the_binary_unit(number, unit, space):
    text = f"{number}{space}{unit}"
    want = float(number) * BYTE_UNITS[unit.lower()]
    try:
        n = parse_bytes(text)
    except ValueError as exc:
        one_line(exc)
        assert not want <= MAX_BYTES, (text, exc)        # refused only above the limit (1e400 is infinite)
        return
    assert type(n) is int and 0 <= n <= MAX_BYTES
    assert n == round(want), (text, n, want)


@SETTINGS
@given(st.one_of(GARBAGE, st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
                 st.lists(st.integers(), max_size=2)))
def test_any_value_is_a_size_in_range_or_a_value_error(value):
    try:
        n = parse_bytes(value)
    except ValueError as exc:
        one_line(exc)
        return
    assert type(n) is int and 0 <= n <= MAX_BYTES, (value, n)
    assert not isinstance(value, (bool, list)) and value is not None


@SETTINGS
@given(st.integers(min_value=0, max_value=MAX_BYTES // 2))
def test_a_printed_size_reads_back_within_its_printed_precision(n):
    text = format_bytes(n, digits=3).replace(",", "")
    back = parse_bytes(text)
    assert abs(back - n) <= max(1, 0.01 * n), (n, text, back)


# --- compute budgets ------------------------------------------------------------------------------------

@SETTINGS
@given(st.one_of(GARBAGE, NUMBER, NUMBER.map(lambda x: x + "%"), NUMBER.map(lambda x: x + "M"),
                 NUMBER.map(lambda x: x + "kMACs"), st.floats(allow_nan=True, allow_infinity=True),
                 st.integers(), st.booleans()))
def test_a_compute_budget_is_a_fraction_or_a_positive_mac_count_or_a_value_error(value):
    try:
        b = parse_compute_budget(value)
    except ValueError as exc:
        one_line(exc)
        return
    assert not isinstance(value, bool)
    if isinstance(b, float):
        assert 0 < b <= 1, (value, b)                  # a share of FullTrain's backward MACs
    else:
        assert type(b) is int and 1 <= b <= MAX_MACS, (value, b)


@SETTINGS
@given(st.floats(min_value=1e-9, max_value=100, exclude_min=False))
def test_a_percentage_is_its_share(p):
    text = f"{p!r}%"
    assert parse_compute_budget(text) == pytest.approx(p / 100)


@SETTINGS
@given(st.floats(min_value=0, max_value=1e9), st.sampled_from(sorted(MAC_UNITS)))
def test_a_mac_count_is_its_number_times_the_decimal_unit_or_refused_below_one_mac(x, unit):
    text = f"{x!r}{unit}"
    want = x * MAC_UNITS[unit]
    try:
        b = parse_compute_budget(text)
    except ValueError as exc:
        one_line(exc)
        assert x == 0 or (round(want) < 1 and not (unit == "" and x <= 1)) or (unit == "" and 1 < x <= 100), \
            (text, exc)
        return
    if unit == "" and x <= 1:
        assert b == x and isinstance(b, float)
    else:
        assert unit or x > 100, (text, b)             # '15' is refused as ambiguous
        assert b == round(want) and b >= 1, (text, b)


def test_a_mac_count_that_rounds_to_zero_is_refused_not_zero():
    """Before: '0.0004k' and '0.0000001M' read as a budget of 0 MACs (refused only later, as 'compute budget
    must be positive (got 0)', without the text that was given)."""
    for text in ("0.0004k", "0.0000001M", "0.0004kMACs", "0.0005k"):
        with pytest.raises(ValueError, match=f"compute budget {text!r}.*less than one MAC"):
            parse_compute_budget(text)
    assert parse_compute_budget("0.5k") == 500


# --- device files ---------------------------------------------------------------------------------------

VALID = {"name": "board", "description": "a board", "ram": "320KB", "flash": "1MB", "memory_budget": "256KB",
         "compute_budget": 0.15, "frozen_weights_in_flash": True, "frozen_weight_bits": 8, "batch_size": 1,
         "cores": 1, "notes": "", "train_macs_per_second": 1e8, "power_watts": 0.5, "estimate_basis": ""}
JSON_VALUE = st.recursive(st.booleans() | st.integers(min_value=-10 ** 20, max_value=10 ** 20)
                          | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8)
                          | GARBAGE | NUMBER.map(lambda x: x + "KB"),
                          lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=4), inner,
                                                                                     max_size=2), max_leaves=4)
KEYS = sorted(VALID) + ["ram_bytes", "memory_budget_bytes", "flash_bytes"]


def check_profile(p: DeviceProfile) -> None:
    assert isinstance(p.name, str) and p.name.strip()
    assert type(p.ram_bytes) is int and 0 < p.ram_bytes <= MAX_BYTES
    assert type(p.memory_budget_bytes) is int and 0 < p.memory_budget_bytes <= p.ram_bytes
    assert p.flash_bytes is None or (type(p.flash_bytes) is int and p.flash_bytes > 0)
    assert isinstance(p.compute_budget, float) and 0 < p.compute_budget <= 1
    assert p.frozen_weight_bits in (8, 16, 32) and type(p.frozen_weights_in_flash) is bool
    assert type(p.batch_size) is int and p.batch_size >= 1
    assert p.cores is None or (type(p.cores) is int and p.cores >= 1)
    for v in (p.train_macs_per_second, p.power_watts):
        assert v is None or (math.isfinite(v) and v > 0)
    for v in (p.description, p.notes, p.estimate_basis):
        assert isinstance(v, str)


@SETTINGS
@given(st.dictionaries(st.sampled_from(KEYS), JSON_VALUE, max_size=3), st.sets(st.sampled_from(KEYS), max_size=2))
def test_an_edited_device_entry_is_a_valid_profile_or_a_value_error_naming_it(changes, dropped):
    entry = {k: v for k, v in {**VALID, **changes}.items() if k not in dropped}
    try:
        p = DeviceProfile.from_dict(entry, "device file my.json")
    except ValueError as exc:
        assert "my.json" in one_line(exc)
        return
    check_profile(p)
    # what was written is what is used
    for key in ("ram", "memory_budget", "flash"):
        raw = entry.get(f"{key}_bytes", entry.get(key))
        if raw is not None:
            got = {"ram": p.ram_bytes, "memory_budget": p.memory_budget_bytes, "flash": p.flash_bytes}[key]
            assert got == parse_bytes(raw)
    if "memory_budget" not in entry and "memory_budget_bytes" not in entry:
        assert p.memory_budget_bytes == p.ram_bytes


@SETTINGS
@given(st.one_of(st.text(max_size=40), JSON_VALUE.map(json.dumps),
                 st.lists(st.dictionaries(st.sampled_from(KEYS), JSON_VALUE, max_size=4), max_size=2).map(
                     lambda es: json.dumps({"devices": es}))))
def test_any_device_file_text_is_profiles_or_a_value_error_naming_the_file(text):
    try:
        profiles = _read_table(text, "my.json")
    except ValueError as exc:
        assert "my.json" in one_line(exc)
        return
    for p in profiles:
        check_profile(p)


def test_a_percentage_too_small_to_be_a_share_is_refused_not_zero():
    """Before: '1e-322%' gave the share 0.0, refused only later without the text that was given."""
    with pytest.raises(ValueError, match=r"percentage compute budget must be in \(0, 100\] \(got '1e-322%'\)"):
        parse_compute_budget("1e-322%")


@pytest.mark.parametrize("text", ["15", "2", "100", " 50 "])
def test_a_bare_number_between_1_and_100_is_refused_as_ambiguous(text):
    """Before: '--compute-budget 15' was 15 MACs (no layer fits; the error said 'compute 15 MACs' without saying
    that 15% was probably meant)."""
    with pytest.raises(ValueError, match=f"compute budget {text!r} is ambiguous: write '{text.strip()}%'"):
        parse_compute_budget(text)
    assert parse_compute_budget(text.strip() + "%") == pytest.approx(float(text) / 100)
    assert parse_compute_budget("100.5") == 100 and parse_compute_budget("1") == 1.0
