"""C text for the generated files: arrays of constants and the layer table of tt_model.c.

Floats are written with 9 significant digits and an `f` suffix, which a C compiler rounds back to the
exact float32 value, so the exported weights are bit-identical to the PyTorch ones.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
from ..errors import BadInput

PER_LINE = 8
# Bytes written as themselves inside a C string literal: printable ASCII except the quote, the backslash
# and '?' (which could start a trigraph such as ??/ in compilers that still read them).
_PLAIN = frozenset(range(0x20, 0x7F)) - {ord('"'), ord("\\"), ord("?")}


def float_literal(v: float) -> str:
    if not math.isfinite(v):
        raise BadInput(f"cannot export a non-finite value ({v}); the model holds NaN or infinite weights")
    s = "%.9g" % v
    if "." not in s and "e" not in s:
        s += ".0"
    return s + "f"


def float_array(name: str, values: Iterable[float] | np.ndarray, const: bool = True, static: bool = True,
                section: str | None = None) -> str:
    vals = np.asarray(values, dtype=np.float32).ravel()
    items = [float_literal(float(v)) for v in vals]
    return _array("float", name, items, const, static, section)


def int_array(ctype: str, name: str, values: Iterable[int], const: bool = True, static: bool = True,
              section: str | None = None, per_line: int = PER_LINE) -> str:
    items = [str(int(v)) for v in values]
    return _array(ctype, name, items, const, static, section, per_line)


def bytes_array(name: str, data: bytes, const: bool = True, static: bool = False,
                section: str | None = None) -> str:
    return _array("uint8_t", name, [str(b) for b in data], const, static, section, per_line=24)


def _array(ctype: str, name: str, items: list[str], const: bool, static: bool, section: str | None,
           per_line: int = PER_LINE) -> str:
    if not items:
        raise BadInput(f"{name}: C arrays cannot be empty")
    qual = ("static " if static else "") + ("const " if const else "")
    attr = f" TT_SECTION(\"{section}\")" if section else ""
    body = ",\n".join("    " + ", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line))
    return f"{qual}{ctype} {name}[{len(items)}]{attr} = {{\n{body}\n}};\n"


def struct_initializer(fields: dict[str, object], indent: str = "    ") -> str:
    """`{ .a = 1, .b = x, ... }` with values already formatted as C text (or ints/floats)."""
    parts = []
    for k, v in fields.items():
        if isinstance(v, float):
            v = float_literal(v)
        elif isinstance(v, bool):
            v = int(v)
        parts.append(f".{k} = {v}")
    lines, line = [], ""
    for p in parts:
        if line and len(line) + len(p) > 96:
            lines.append(line.rstrip())
            line = ""
        line += p + ", "
    lines.append(line.rstrip().rstrip(","))
    return "{\n" + "\n".join(indent + "  " + l for l in lines) + "\n" + indent + "}"


def comment_text(text: str) -> str:
    """Text safe inside a C comment: letters, digits and ` ._+-=()[],:` kept, anything else (`*/`, newlines,
    non-ASCII) replaced by '_'. For the exporter's own names (model, layers); user strings go in `c_string`."""
    return "".join(c if (c.isascii() and c.isalnum()) or c in " ._+-=()[],:" else "_" for c in str(text))


def c_string(text: str) -> str:
    """`text` as a C string literal whatever it holds: UTF-8 bytes, each byte outside printable ASCII and
    each quote, backslash and '?' escaped (three-digit octal, which never runs into the next character).
    User strings (class names) go into generated code this way and no other, never into comments."""
    try:
        data = str(text).encode("utf-8", "surrogateescape")     # a file name's undecodable bytes as they were
    except UnicodeEncodeError:
        data = str(text).encode("utf-8", "backslashreplace")
    out = []
    for b in data:
        if b in _PLAIN:
            out.append(chr(b))
        elif b == ord('"'):
            out.append('\\"')
        elif b == ord("\\"):
            out.append("\\\\")
        else:
            out.append(f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def string_array(name: str, values: Iterable[str], static: bool = False) -> str:
    """`const char *const name[N] = {"...", ...};`, every element written by `c_string`."""
    items = [c_string(v) for v in values]
    return _array("char *const", name, items, const=True, static=static, section=None, per_line=1)
