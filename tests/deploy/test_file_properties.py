"""Property-based tests of what a user can edit or name: adapted.json in a model folder, class-folder names,
--background colours.

Any content either loads as a model whose every field is what the file says and within range, or is refused
with a one-line ValueError naming the file (the field); never another exception, never a silently different
model. Every class folder name that `adapt` accepts is one a saved model keeps and loads back.
"""
from __future__ import annotations

import copy
import functools
import json
import math
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinytrain.data.datasets import WHITE
from tinytrain.data.folders import read_class_folders
from tinytrain.deploy.adapted import MAX_RESOLUTION, META_FILE, check_metadata, load_adapted
from tinytrain.deploy.images import normalisation, parse_background

SETTINGS = settings(max_examples=150, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
FEW = settings(SETTINGS, max_examples=25)

VALID = {"format": "tinytrain-adapted", "version": 1, "model": "tiny-test", "resolution": 32,
         "classes": ["blue", "green", "red"], "normalisation": normalisation(), "background": [255, 255, 255],
         "method": "none", "report": {"method": "none"}, "update_plan": None, "info": {}}
JSON = st.recursive(st.none() | st.booleans() | st.integers(min_value=-10 ** 6, max_value=10 ** 6)
                    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=6),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                               max_size=3), max_leaves=6)
NEAR = {  # values close to valid ones, where mistakes hide
    "version": st.sampled_from([0, 1, 2, "1", 1.0, True, -1]),
    "resolution": st.one_of(st.integers(min_value=-5, max_value=MAX_RESOLUTION + 5), st.sampled_from([32.0, "32"])),
    "classes": st.lists(st.one_of(st.text(max_size=4), st.integers()), max_size=4),
    "background": st.lists(st.one_of(st.integers(min_value=-2, max_value=258), st.floats(allow_nan=True),
                                     st.booleans()), max_size=4),
    "normalisation": st.fixed_dictionaries({k: st.lists(st.one_of(st.just(v), st.floats(allow_nan=True,
                                                                                      allow_infinity=True)),
                                                       min_size=3, max_size=3).map(list)
                                            for k, v in (("mean", 0.485), ("std", 0.229))}),
    "normalisation_nan": st.sampled_from(["NaN", "Infinity", "-Infinity"]),
}


def edited(changes: dict, dropped: set) -> dict:
    meta = copy.deepcopy(VALID)
    meta.update(changes)
    for k in dropped:
        meta.pop(k, None)
    return meta


def one_line(exc: Exception, *names) -> str:
    text = str(exc)
    assert isinstance(exc, ValueError) and text and "\n" not in text, repr(exc)
    for n in names:
        assert str(n) in text, (n, text)
    return text


def assert_checked(meta: dict) -> None:
    """What check_metadata let through is what a reader can use as it stands."""
    assert isinstance(meta["model"], str) and meta["model"].strip()
    assert isinstance(meta["method"], str) and meta["method"].strip()
    assert type(meta["resolution"]) is int and 8 <= meta["resolution"] <= MAX_RESOLUTION
    classes = meta["classes"]
    assert isinstance(classes, list) and classes and len(set(classes)) == len(classes)
    assert all(isinstance(c, str) and c.strip() for c in classes)
    want = normalisation()
    for k in ("mean", "std"):
        assert all(math.isfinite(a) and abs(a - b) <= 1e-6 for a, b in zip(meta["normalisation"][k], want[k]))
    bg = meta.get("background", list(WHITE))
    assert len(bg) == 3 and all(type(v) is int and 0 <= v <= 255 for v in bg)
    for key in ("report", "update_plan", "info"):
        assert meta.get(key) is None or isinstance(meta[key], dict)


@SETTINGS
@given(st.dictionaries(st.sampled_from(sorted(VALID)), JSON, max_size=3), st.sets(st.sampled_from(sorted(VALID)),
                                                                                    max_size=2))
def test_any_edit_of_adapted_json_is_checked_or_refused_naming_the_file(changes, dropped):
    meta = edited(changes, dropped)
    try:
        check_metadata(meta, Path("m/adapted.json"))
    except ValueError as exc:
        one_line(exc, "m/adapted.json")
        return
    assert_checked(meta)


@SETTINGS
@given(st.sampled_from(sorted(k for k in NEAR if k != "normalisation_nan")).flatmap(
    lambda k: st.tuples(st.just(k), NEAR[k])))
def test_near_valid_fields_are_taken_only_when_valid(pair):
    key, value = pair
    meta = edited({key: value}, set())
    try:
        check_metadata(meta, Path("m/adapted.json"))
    except ValueError as exc:
        one_line(exc, "m/adapted.json", key)
        return
    assert_checked(meta)


@functools.cache
def saved_model_folder() -> Path:
    """One saved tiny-test model for the whole module (copied for each example)."""
    import torch

    from tinytrain.deploy.adapted import AdaptedModel, save_adapted
    from tinytrain.methods.base import Predictor
    from tinytrain.models.backbone import build_backbone
    from tinytrain.models.head import CosineClassifier

    torch.manual_seed(0)
    backbone = build_backbone("tiny-test").eval()
    adapted = AdaptedModel(Predictor(backbone, torch.randn(3, backbone.feature_dim), CosineClassifier()),
                           "tiny-test", 32, ["blue", "green", "red"], normalisation(), "none", {"method": "none"})
    root = Path(tempfile.mkdtemp(prefix="tt-props-"))
    return save_adapted(root / "saved", adapted)


def adapted_json_texts() -> st.SearchStrategy[str]:
    edits = st.tuples(st.dictionaries(st.sampled_from(sorted(VALID)), JSON, max_size=2),
                      st.sets(st.sampled_from(sorted(VALID)), max_size=1)).map(lambda t: json.dumps(edited(*t)))
    nan_norm = NEAR["normalisation_nan"].map(
        lambda word: json.dumps(VALID).replace("0.485", word, 1))
    return st.one_of(edits, nan_norm, st.text(max_size=30), JSON.map(json.dumps),
                     st.sampled_from(["[" * 100_000, '{"format": "tinytrain-adapted", "a": ' + "[" * 100_000,
                                      "\ufeff" + json.dumps(VALID)]))


@FEW
@given(adapted_json_texts())
def test_a_model_folder_with_any_adapted_json_loads_as_written_or_is_refused(text):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "m"
        shutil.copytree(saved_model_folder(), folder)
        (folder / META_FILE).write_text(text, encoding="utf-8")
        try:
            model = load_adapted(folder)
        except ValueError as exc:
            one_line(exc, folder)
            return
        meta = json.loads(text)
        assert_checked(meta)
        assert model.classes == meta["classes"] and model.resolution == meta["resolution"]
        assert model.model == meta["model"] and model.method == meta["method"]
        assert list(model.background) == meta.get("background", list(WHITE))
        assert model.normalisation == normalisation()


@pytest.mark.parametrize("word", ["NaN", "Infinity", "-Infinity"])
def test_a_non_finite_normalisation_is_refused(saved, word):
    """Before: adapted.json with mean [NaN, ...] passed the check (NaN compares as 'not different'), and an
    export folded NaN into its graph."""
    path = saved / META_FILE
    path.write_text(path.read_text().replace(str(normalisation()["mean"][0]), word, 1))
    assert word in path.read_text()
    with pytest.raises(ValueError, match="normalisation must be"):
        load_adapted(saved)


def test_deeply_nested_adapted_json_is_refused_not_a_recursion_error(saved):
    """Before: a RecursionError from the JSON reader (the CLI said 'internal error')."""
    (saved / META_FILE).write_text("[" * 100_000)
    with pytest.raises(ValueError, match=f"{saved}.*adapted.json"):
        load_adapted(saved)


# --- class-folder names ---------------------------------------------------------------------------------

NAME = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1, max_size=12)


@FEW
@given(st.sets(NAME, min_size=2, max_size=4))
def test_every_class_folder_name_adapt_takes_is_one_a_saved_model_keeps(names):
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "support"
        made = []
        for name in names:
            if name in (".", "..") or len(name.encode()) > 255:
                continue
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (10, 20, 30)).save(root / name / "a.png")
            made.append(name)
        try:
            classes = read_class_folders(root, report=False).classes
        except (ValueError, FileNotFoundError) as exc:
            one_line(exc)
            return
        assert sorted(classes) == sorted(n for n in made if not n.startswith("."))
        if len(classes) >= 1:
            meta = edited({"classes": list(classes)}, set())
            check_metadata(meta, Path("m/adapted.json"))     # the saved model will load back


def test_a_blank_class_folder_name_is_refused_when_read():
    """Before: a class folder named ' ' trained and saved, and the saved model could not be loaded (adapted.json
    refuses a blank class name)."""
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in (" ", "cat"):
            (root / name).mkdir()
            Image.new("RGB", (8, 8)).save(root / name / "a.png")
        with pytest.raises(ValueError, match="blank"):
            read_class_folders(root, report=False)


# --- --background ---------------------------------------------------------------------------------------

COLOUR_TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["white", "Black", " grey ", "gray", "#ff00FF", "#fff", "#gg0000", "1,2", "1,2,3,4"]),
    st.lists(st.one_of(st.integers(min_value=-300, max_value=300).map(str), st.integers().map(str),
                       st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=3)),
             min_size=3, max_size=3).map(",".join),
)
COLOUR_VALUE = st.one_of(COLOUR_TEXT, st.tuples(*[st.one_of(st.integers(), st.floats(allow_nan=True),
                                                            st.booleans(), st.text(max_size=2))] * 3),
                         st.lists(st.integers(min_value=0, max_value=255), max_size=4), st.none(), st.integers())


@SETTINGS
@given(COLOUR_VALUE)
def test_any_background_is_an_rgb_triple_or_a_value_error_naming_the_flag(value):
    try:
        rgb = parse_background(value)
    except ValueError as exc:
        one_line(exc, "--background")
        return
    assert isinstance(rgb, tuple) and len(rgb) == 3 and all(type(v) is int and 0 <= v <= 255 for v in rgb)
    if isinstance(value, (tuple, list)) and all(type(v) is int for v in value):
        assert rgb == tuple(value)                            # integers are taken as written


def test_a_background_beyond_the_float_range_is_refused_not_an_overflow():
    """Before: '1...1,0,0' with 400 digits (or (10**400, 0, 0) from Python) was an OverflowError."""
    for value in ("1" * 400 + ",0,0", (10 ** 400, 0, 0)):
        with pytest.raises(ValueError, match="--background"):
            parse_background(value)
