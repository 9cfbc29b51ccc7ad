"""Method options: one frozen dataclass per method, and the one parser every entry point uses.

Each method declares its options as a frozen dataclass (`NoneOptions` in methods/none.py, `LastLayerOptions`,
`FullTrainOptions`, `TinyTLOptions`, `SparseUpdateOptions`, `TinyTrainOptions`), derived from `MethodOptions`
below, which holds the options every method takes. A method reads its options only through that object
(`method.opts`), built from `AdaptConfig.options` (a dict, or an options object) when the method is made.

`tinytrain adapt --option KEY=VALUE`, `tinytrain eval --variant 'METHOD[k=v,...]'`,
`tinytrain.adapt(..., options={...})` and `AdaptConfig.options` all go through `Options.parse`, so they accept
exactly the same keys and values:

* an unknown key is refused for every method, with the method's valid keys in the message;
* a value is converted to its field's type and checked: text (the CLI, or a Python string) is read as
  written below; other Python values must already have the field's type (an int where a float goes is fine);
* booleans are strict: true/false, yes/no, on/off, 1/0 in any case from text, True/False from Python;
* numbers must be finite (NaN and infinities are refused) and within the field's range;
* a list is written with ';' in text ("1;0.5") or as JSON ("[1, 0.5]"); "none" (or "null") is the empty value
  of an optional field; a JSON object is written as JSON.

Errors are ValueErrors of one line naming the method, the key, what it takes and what was given.
This module imports neither torch nor the methods (the registry is imported when a method name is looked up).
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal, Union
from ..errors import BadInput

TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")
NONE_WORDS = ("none", "null")
BOOL_WORDS = "true/false, yes/no, on/off or 1/0"

LR_CANDIDATES = (1e-4, 1e-3, 1e-2)
MAX_ITERATIONS = 100_000    # as deploy.session.MAX_ITERATIONS (this module imports neither)
# What the support cache and the augmentation pool may hold when no budget is given: a host default
# (ours), far above what a 25-image task needs at 128 px (MCUNet: 300 KiB per copy of the support set).
DEFAULT_CACHE_BUDGET = 64 * 1024 * 1024
# Images per chunk of the no-grad passes (the frozen prefix, prototypes) of the trained methods.
PREFIX_BATCH_SIZE = 64


class _Reject(Exception):
    """A value that does not convert to a field's type (internal: the caller writes the message)."""


def option(default, doc: str, *, low: float | None = None, high: float | None = None, low_open: bool = False,
           convert=None, expect: str | None = None, check=None):
    """A field of an options dataclass: `doc` documents it; `low`/`high` bound numbers (and the numbers of a
    list; `low_open`: > low rather than >= low); `convert(value)` replaces the type-driven conversion (with
    `expect`, the words for what it takes); `check(value)` validates a converted value (raises _Reject)."""
    return field(default=default, metadata={"doc": doc, "low": low, "high": high, "low_open": low_open,
                                            "convert": convert, "expect": expect, "check": check})


# --------------------------------------------------------------------------------------------
# Conversion by field type

def _is_text(value) -> bool:
    return isinstance(value, str)


def _to_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    if _is_text(value):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    raise _Reject


def _to_number(value, integer: bool):
    if isinstance(value, bool):
        raise _Reject
    if _is_text(value):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise _Reject from None
    if not isinstance(value, (int, float)):
        raise _Reject
    if isinstance(value, float) and not math.isfinite(value):
        raise _Reject
    if integer:
        if isinstance(value, float):
            if not value.is_integer():
                raise _Reject
            value = int(value)
        return value
    try:
        return float(value)
    except OverflowError:       # an integer beyond the float range (300+ digits): not a finite number
        raise _Reject from None


def _in_range(value, meta) -> None:
    low, high = meta.get("low"), meta.get("high")
    if low is not None and (value <= low if meta.get("low_open") else value < low):
        raise _Reject
    if high is not None and value > high:
        raise _Reject


def _convert(value, tp, meta):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if type(None) in args and (value is None or (_is_text(value) and value.strip().lower() in NONE_WORDS)):
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, meta)
            except _Reject:
                pass
        raise _Reject
    if origin is Literal:
        if _is_text(value) and value.strip() in args:
            return value.strip()
        raise _Reject
    if tp is bool:
        return _to_bool(value)
    if tp in (int, float):
        number = _to_number(value, tp is int)
        _in_range(number, meta)
        return number
    if tp is str:
        if _is_text(value) or isinstance(value, os.PathLike):
            text = os.fspath(value).strip()     # as `KEY=VALUE` text is read, so that to_items() parses back
            if not text:
                raise _Reject
            return text
        raise _Reject
    if origin is tuple:
        elem = args[0]
        if _is_text(value):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except ValueError:
                    raise _Reject from None
            else:
                value = text.split(";")
        if not isinstance(value, (list, tuple)) or not value:
            raise _Reject
        return tuple(_convert(v, elem, meta) for v in value)
    if tp is dict:
        if _is_text(value):
            try:
                value = json.loads(value)
            except ValueError:
                raise _Reject from None
        if not isinstance(value, Mapping):
            raise _Reject
        return copy.deepcopy(dict(value))
    raise TypeError(f"options of type {tp} are not supported")


def _range_words(meta) -> str:
    low, high, lo_open = meta.get("low"), meta.get("high"), meta.get("low_open")
    if low is not None and high is not None:
        return f" in {'(' if lo_open else '['}{low:g}, {high:g}]"
    if low is not None:
        return f" {'>' if lo_open else '>='} {low:g}"
    if high is not None:
        return f" <= {high:g}"
    return ""


def _describe(tp, meta) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        parts = [_describe(a, meta) for a in args if a is not type(None)]
        if type(None) in args:
            parts.append("none")
        return " or ".join(parts)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if tp is bool:
        return f"true or false ({BOOL_WORDS}, any case)"
    if tp is int:
        return "a whole number" + _range_words(meta)
    if tp is float:
        return "a finite number" + _range_words(meta)
    if tp is str:
        return "a non-empty text"
    if origin is tuple:
        return f"numbers{_range_words(meta)} separated by ';' (e.g. 1;0.5)"
    if tp is dict:
        return "a JSON object {...}"
    return str(tp)


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _plain(value):
    """JSON-ready: tuples -> lists, containers copied."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _text(value) -> str:
    """A converted value written as `--option` text that parses back to the same value."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ";".join(_text(v) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(_plain(value))
    return repr(value) if isinstance(value, float) else str(value)


# --------------------------------------------------------------------------------------------
# The base class

@dataclass(frozen=True)
class MethodOptions:
    """Options every method takes (the ones that concern fine-tuning are ignored by `none`, which trains
    nothing; an evaluation passes e.g. lr_candidates to every column)."""

    method: ClassVar[str] = "any"

    lr_candidates: tuple[float, ...] = option(
        LR_CANDIDATES, "rates tried when AdaptConfig.lr is None (chosen on a split of the support set)", low=0.0)
    lr_search_iterations: int | None = option(
        None, "iterations of each trial of the rate search; none = AdaptConfig.iterations", low=0,
        high=MAX_ITERATIONS)
    augment_p: float = option(0.9, "probability that a pseudo-query chunk is augmented (one draw per chunk, as P>M>F)",
                               low=0.0, high=1.0)
    proto_grad: bool = option(False, "the loss also reaches the weights through the support prototypes (P>M>F)")
    prefix_batch_size: int = option(PREFIX_BATCH_SIZE, "images per chunk of the no-grad passes (frozen prefix, "
                                                       "prototypes)", low=1)
    augment_pool: int = option(0, "P > 0: draw P augmented views once and cache their prefix outputs; 0 = fresh "
                                  "augmentation every iteration", low=0)
    cache_budget: int | None = option(
        DEFAULT_CACHE_BUDGET, "bytes the support cache and the augmentation pool may hold; none = unbounded",
        convert=lambda v: _bytes_or_none(v), expect="a memory size (e.g. 64MB or a byte count) or none (unbounded)")

    def __post_init__(self):
        hints = _hints(type(self))
        for f in fields(self):
            object.__setattr__(self, f.name, _convert_field(type(self), f, hints[f.name], getattr(self, f.name)))

    # -- parsing ------------------------------------------------------------------------------
    @classmethod
    def keys(cls) -> list[str]:
        return sorted(f.name for f in fields(cls))

    @classmethod
    def parse(cls, source=None, where: str | None = None):
        """An options object from a dict {key: value}, `KEY=VALUE` texts, an options object or None (the
        defaults). `where` (a flag or spec, e.g. "--option") starts every error message."""
        prefix = f"{where}: " if where else ""
        if source is None:
            return cls()
        if type(source) is cls:
            return source
        if isinstance(source, MethodOptions):
            source = source.to_dict()
        if isinstance(source, (list, tuple)):
            source = split_items(source, where)
        if not isinstance(source, Mapping):
            raise BadInput(f"{prefix}{cls.method} options must be a dict {{key: value}} or KEY=VALUE texts, "
                             f"not {type(source).__name__}")
        bad = [k for k in source if not isinstance(k, str)]
        if bad:
            raise BadInput(f"{prefix}{cls.method} option names must be strings (got {bad[0]!r}); valid keys: "
                             f"{', '.join(cls.keys())}")
        unknown = sorted(set(source) - set(cls.keys()))
        if unknown:
            shown = ", ".join(k if k.isprintable() else repr(k) for k in unknown)   # one line, whatever the key
            raise BadInput(f"{prefix}unknown {cls.method} option(s) {shown}; valid keys: {', '.join(cls.keys())}")
        try:
            return cls(**source)
        except ValueError as exc:
            raise BadInput(f"{prefix}{exc}") from None

    # -- writing ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Every option as a plain (JSON-ready) dict; `parse(to_dict())` gives this object back."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    def to_items(self) -> list[str]:
        """Every option as `KEY=VALUE` text, as `--option` takes it; `parse(to_items())` gives this back."""
        return [f"{f.name}={_text(getattr(self, f.name))}" for f in fields(self)]

    @classmethod
    def describe(cls) -> list[tuple[str, Any, str]]:
        """(key, default, doc) for every option."""
        return [(f.name, _plain(f.default), f.metadata.get("doc", "")) for f in fields(cls)]


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _convert_field(cls, f: dataclasses.Field, tp, value):
    meta = f.metadata
    try:
        if meta.get("convert") is not None:
            out = meta["convert"](value)
        else:
            out = _convert(value, tp, meta)
        if meta.get("check") is not None:
            meta["check"](out)
        return out
    except _Reject:
        expect = meta.get("expect") or _describe(tp, meta)
        raise BadInput(f"{cls.method} option {f.name} must be {expect} (got {f.name}={_shown(value)})") from None


def _bytes_or_none(value):
    from ..costs.units import parse_bytes
    if value is None or (_is_text(value) and value.strip().lower() in NONE_WORDS + ("unbounded",)):
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _Reject
    try:
        n = parse_bytes(value)
    except (ValueError, OverflowError):
        raise _Reject from None
    if n < 0:
        raise _Reject
    return n


# --------------------------------------------------------------------------------------------
# Text and the registry

def split_items(items, where: str | None = None) -> dict:
    """['key=value', ...] -> {key: 'value'} (text; the options class converts it). Blank items are skipped; a
    key given twice keeps its last value, as a repeated flag does."""
    prefix = f"{where}: " if where else ""
    out: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, str):
            raise BadInput(f"{prefix}options given as a list must be KEY=VALUE texts (got {item!r})")
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"{prefix}{item!r} is not key=value")
        out[key.strip()] = value.strip()
    return out


def options_class(method: str) -> type[MethodOptions]:
    """The options dataclass of method `method` (ValueError naming the methods if there is none)."""
    from . import METHODS
    try:
        return METHODS[method].options_class
    except KeyError:
        raise BadInput(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}") from None


def parse_options(items, method: str, where: str | None = None) -> dict:
    """Options for `method` from `KEY=VALUE` texts (`--option`, `--variant`) or a dict (Python), checked and
    converted by the method's options class -> {key: value} for the keys given (plain values, ready for
    `AdaptConfig.options` and JSON). Raises ValueError (one line, starting with `where`)."""
    cls = options_class(method)
    if isinstance(items, MethodOptions):
        return cls.parse(items, where).to_dict()
    given = split_items(items, where) if isinstance(items, (list, tuple)) else items
    if given is None:
        given = {}
    parsed = cls.parse(given, where)
    return {k: _plain(getattr(parsed, k)) for k in given}


def changed_options(method: str, applied: Mapping | None) -> dict:
    """The options in `applied` (a report's plain dict) that differ from `method`'s defaults, as `--option`
    text values ({} when none differ, or for an unknown method)."""
    try:
        defaults = options_class(method)().to_dict()
    except ValueError:
        return {}
    return {k: _text(v) for k, v in (applied or {}).items() if k in defaults and defaults[k] != v}
