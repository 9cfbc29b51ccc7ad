"""Parsing and printing of memory sizes and compute budgets.

Memory units are **1024-based**: "KB" and "KiB" both mean 1024 bytes, "MB" and "MiB" both mean 2**20
bytes. The paper writes "MB" for what are binary mebibytes (its 0.625 MB inference buffer is 640 KiB),
so reading the decimal prefixes as binary is what makes a budget such as "1MB" mean what the paper means.
"""
from __future__ import annotations

import math
import re
from ..errors import BadInput

_BYTE_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kb": 1024, "kib": 1024,
    "m": 1024 ** 2, "mb": 1024 ** 2, "mib": 1024 ** 2,
    "g": 1024 ** 3, "gb": 1024 ** 3, "gib": 1024 ** 3,
}
_MAC_UNITS = {"": 1, "k": 10 ** 3, "m": 10 ** 6, "g": 10 ** 9}
MAX_BYTES = 2 ** 50        # 1 PiB: larger sizes are refused (no device has that much memory; 1e400 is infinite)
MAX_MACS = 10 ** 18        # likewise for a compute budget in MACs
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z%]*)\s*$", re.IGNORECASE)


def parse_bytes(text: str | int | float) -> int:
    """Bytes from "1MB", "512KB", "1.5MiB", "320k" or "1048576" (KB/MB are 1024-based, like the paper)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text < 0:
            raise BadInput(f"a memory size cannot be negative (got {text})")
        value = float(text)
    else:
        m = _NUMBER.match(str(text))
        unit = m.group(2).lower() if m else None
        if not m or unit not in _BYTE_UNITS:
            raise BadInput(f"cannot read memory size {text!r}; write e.g. '1MB', '512KB', '1.5MiB' or a byte count")
        value = float(m.group(1)) * _BYTE_UNITS[unit]
    if math.isnan(value):
        raise BadInput(f"memory size {text!r} is not a number; write e.g. '1MB' or '512KB'")
    if value > MAX_BYTES:
        raise BadInput(f"memory size {text!r} is larger than any device (at most {MAX_BYTES // 2 ** 50} PiB); "
                         "write e.g. '1MB' or '512KB'")
    return int(text) if isinstance(text, int) else int(round(value))


def parse_compute_budget(text: str | int | float) -> float | int:
    """A compute budget: a fraction of FullTrain's backward MACs ("15%", "0.15") or absolute MACs ("6.5M").

    A bare number <= 1 is a fraction; a bare number > 100 is a MAC count; bare text between (e.g. "15") is
    refused as ambiguous (15 % or 15 MACs?). Fractions come back as float, MAC counts as int.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        m = _NUMBER.match(str(text))
        if not m:
            raise BadInput(f"cannot read compute budget {text!r}; write e.g. '15%', '0.15' or '6.5M' (MACs)")
        value, unit = float(m.group(1)), m.group(2).lower()
    if not math.isfinite(value):
        raise BadInput(f"compute budget {text!r} is not a finite number; write e.g. '15%', '0.15' or '6.5M' (MACs)")
    if unit == "%":
        if not 0 < value <= 100 or value / 100 == 0:       # 1e-322 % is 0.0 as a share
            raise BadInput(f"a percentage compute budget must be in (0, 100] (got {text!r})")
        return value / 100
    if unit.endswith("macs"):
        unit = unit[:-4]
    if unit not in _MAC_UNITS:
        raise BadInput(f"cannot read compute budget {text!r}; use '%' or a K/M/G suffix, e.g. '15%' or '6.5M'")
    if value <= 0:
        raise BadInput(f"a compute budget must be positive (got {text!r})")
    if unit == "" and value <= 1:
        return value
    if unit == "" and value <= 100 and not isinstance(text, (int, float)):
        # '15' is far too few MACs to train any layer, and reads like the paper's 15 %: ask which was meant
        raise BadInput(f"compute budget {text!r} is ambiguous: write '{m.group(1)}%' for a share of FullTrain's "
                         f"backward MACs, or a MAC count with its unit (e.g. '{m.group(1)}M' for "
                         f"{m.group(1)} million); a bare number is a share only up to 1 (0.15 = 15%)")
    if value * _MAC_UNITS[unit] > MAX_MACS:
        raise BadInput(f"compute budget {text!r} is over {MAX_MACS:.0e} MACs, more than any adaptation needs; "
                         "write e.g. '15%' or '6.5M'")
    macs = int(round(value * _MAC_UNITS[unit]))
    if macs < 1:        # e.g. '0.0004k': never a budget of 0 MACs
        raise BadInput(f"compute budget {text!r} is less than one MAC; write e.g. '15%' or '6.5M'")
    return macs


def format_bytes(n: int | float, digits: int = 3, largest: str = "GiB") -> str:
    """'906 MiB', '1.43 MiB', '640 KiB': binary units, `digits` significant figures, at most `largest`."""
    n = float(n)
    units = (("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024))
    names = [u for u, _ in units]
    if largest not in names:
        raise BadInput(f"largest must be one of {', '.join(names)} (got {largest!r})")
    for unit, size in units[names.index(largest):]:
        if abs(n) >= size:
            return f"{_sig(n / size, digits)} {unit}"
    return f"{int(n)} B"


def format_macs(n: int | float, digits: int = 3) -> str:
    """'44.9M', '590K': decimal units, as the paper prints MACs."""
    n = float(n)
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{_sig(n / size, digits)}{unit}"
    return f"{int(n)}"


def _sig(x: float, digits: int) -> str:
    if x == 0:
        return "0"
    mag = len(str(int(abs(x)))) if abs(x) >= 1 else 0
    decimals = max(0, digits - mag)
    return f"{x:,.{decimals}f}"
