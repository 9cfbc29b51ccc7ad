"""Method options written as text (`KEY=VALUE`), as `tinytrain adapt --option` and `eval --variant` take them."""
from __future__ import annotations

import json

from .tinytrain import OPTION_DEFAULTS

def _option_value(text: str):
    """'0.5' -> 0.5, 'true' -> True, '[1,0.5]' -> [1, 0.5], anything else stays a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_options(items: list[str], method: str, where: str) -> dict:
    """['key=value', ...] -> {key: value} for `method`; values are JSON where they parse (numbers, true/false,
    lists), else strings; a list is written with ';' ("1;0.5"). Unknown TinyTrain options are refused,
    naming `where` (the flag or spec they came from)."""
    options = {}
    for item in filter(None, (x.strip() for x in items)):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{where}: {item!r} is not key=value")
        value = value.strip()
        options[key.strip()] = ([_option_value(v) for v in value.split(";")] if ";" in value
                                else _option_value(value))
    if method == "tinytrain":
        unknown = sorted(set(options) - set(OPTION_DEFAULTS) - {"proto_grad", "augment_p"})
        if unknown:
            raise ValueError(f"{where}: unknown tinytrain option(s) {', '.join(unknown)}; known: "
                             f"{', '.join(sorted(OPTION_DEFAULTS))}, proto_grad, augment_p")
    return options
