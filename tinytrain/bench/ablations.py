"""Ablations as extra result columns ("variants") on the same stored episodes.

Each ablation adds variants with their own labels and a `group`; the run evaluates them like any
method (same episodes, same backbone, same lr procedure), and the report gives each group its own
table and plot. Variant labels are the `method` field of result records, e.g. `tinytrain[score=fisher]`.

The option names follow the paper's ablations (paper_spec.md 9.6-9.8) and are passed to the method as
`AdaptConfig.options`:
- score (Table 3): "fisher" (Fisher only), "fisher/memory", "fisher/compute"; TinyTrain's own
  Fisher / (memory x compute) is "full", the reference row; plus layer_choice "l2" (layers ranked by
  weight L2 norm, Table 3's "L2 Norm");
- channel_choice (Fig. 6b): "l2" and "random" (static) against TinyTrain's dynamic "fisher" (reference);
- the meta-training ablation runs every method on a second checkpoint;
- the budget sweep runs TinyTrain at several memory budgets.
"""
from __future__ import annotations

from ..costs.units import format_bytes
from ..methods.options import parse_options
from .evalconfig import Variant
from ..errors import BadInput

SCORE_VARIANTS = ("fisher", "fisher/memory", "fisher/compute")   # reference: "full" (the main tinytrain row)
CHANNEL_VARIANTS = ("l2", "random")                            # reference: "fisher" (the main tinytrain row)
GROUP_TITLES = {
    "meta": "Meta-training ablation: every method on two checkpoints",
    "score": "Layer-selection criterion ablation (TinyTrain)",
    "channels": "Channel-selection ablation (TinyTrain)",
    "budget": "Accuracy against memory budget",
    "static": "Task adaptivity: TinyTrain with one plan chosen on validation tasks, used for every task",
    "options": "Option variants (--variant): methods with options other than their defaults",
}


def checkpoint_label(checkpoint: str) -> str:
    """A short label for a checkpoint spec ('pocket', a path -> its file stem)."""
    from pathlib import Path
    return Path(checkpoint).stem if ("/" in checkpoint or checkpoint.endswith((".safetensors", ".pth"))) \
        else checkpoint


def main_variants(methods: list[str]) -> list[Variant]:
    return [Variant(m, m) for m in methods]


def meta_variants(methods: list[str], other_checkpoint: str) -> list[Variant]:
    """Every method again on `other_checkpoint` (e.g. the backbone without meta-training)."""
    tag = checkpoint_label(other_checkpoint)
    return [Variant(f"{m}@{tag}", m, checkpoint=other_checkpoint, group="meta") for m in methods]


def score_variants(base: str = "tinytrain") -> list[Variant]:
    return ([Variant(f"{base}[score={s}]", base, {"score": s}, group="score") for s in SCORE_VARIANTS]
            + [Variant(f"{base}[layers=l2]", base, {"layer_choice": "l2"}, group="score")])


def channel_variants(base: str = "tinytrain") -> list[Variant]:
    return [Variant(f"{base}[channels={c}]", base, {"channel_choice": c}, group="channels")
            for c in CHANNEL_VARIANTS]


def static_variants(base: str = "tinytrain") -> list[Variant]:
    """TinyTrain with one plan for all tasks (chosen once on validation episodes; evalconfig.STATIC_PLAN)."""
    from .evalconfig import STATIC_PLAN
    return [Variant(f"{base}[static]", base, {"fixed_plan": STATIC_PLAN}, group="static")]


VARIANT_FORM = "write METHOD[key=value,...], e.g. tinytrain[stop_rule=skip] or tinytl[bias=no,lite=fresh]"
CLOSING = {"[": "]", "{": "}", "(": ")"}


def split_top_level(body: str, where: str) -> list[str]:
    """'a=1,b={"x": [1, 2]},c="p,q"' -> ['a=1', 'b={"x": [1, 2]}', 'c="p,q"']: split at the commas outside
    brackets, braces, parentheses and quotes (so JSON values such as fixed_plan's can be given); an unclosed
    or unmatched bracket or quote is a ValueError naming it."""
    items, stack, quote, escaped, start = [], [], None, False, 0
    for i, ch in enumerate(body):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\" and quote == '"':     # JSON's \" inside a string
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in CLOSING:
            stack.append(ch)
        elif ch in CLOSING.values():
            if not stack or CLOSING[stack[-1]] != ch:
                what = f"does not close {stack[-1]!r}" if stack else "closes nothing"
                raise BadInput(f"{where}: {ch!r} at position {i + 1} of the options {what}; check the brackets "
                                 "and braces")
            stack.pop()
        elif ch == "," and not stack:
            items.append(body[start:i])
            start = i + 1
    if quote:
        raise BadInput(f"{where}: the quote {quote} is not closed; close it, or leave quotes out")
    if stack:
        raise BadInput(f"{where}: {stack[-1]!r} is not closed by {CLOSING[stack[-1]]!r}; a JSON value must be "
                         "complete, e.g. fixed_plan={\"weights\": [], \"biases\": []}")
    items.append(body[start:])
    return items


def unquote(value: str) -> str:
    """A value written in quotes to protect its commas ("p,q" or 'p,q') -> p,q."""
    v = value.strip()
    return v[1:-1] if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'" else v


def option_variant(spec: str, methods: list[str]) -> Variant:
    """`METHOD[key=value,...]` -> a result column with those options, labelled by the spec itself
    (e.g. `tinytrain[ratio_policy=fisher-mass,stop_rule=skip]`); keys and values checked and converted by the
    method's options class (`parse_options`, as `adapt --option`), stored as plain values. Options are
    separated by the commas outside brackets, braces and quotes, so a JSON value (fixed_plan) can be given
    as it is; a value in quotes loses them."""
    if not isinstance(spec, str):
        raise BadInput(f"--variant {spec!r}: {VARIANT_FORM}")
    spec = spec.strip()
    where = f"--variant {spec!r}"
    if "[" not in spec:
        raise BadInput(f"{where}: {VARIANT_FORM}")
    if not spec.endswith("]"):
        raise BadInput(f"{where} does not end with ']' (the options go inside METHOD[...]); {VARIANT_FORM}")
    method, body = spec[:-1].split("[", 1)
    method = method.strip()
    if not method:
        raise BadInput(f"{where} names no method before '['; {VARIANT_FORM}")
    if method not in methods:
        raise BadInput(f"{where}: method {method!r} is not in --methods ({', '.join(methods)})")
    items = split_top_level(body, where)
    if not body.strip():
        raise BadInput(f"{where} sets no option; {VARIANT_FORM}")
    pairs = []
    for n, item in enumerate(items, 1):
        if not item.strip():
            raise BadInput(f"{where}: option {n} of {len(items)} is empty (two commas in a row, or one at an "
                             "end); remove the extra comma")
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"{where}: {item.strip()!r} is not key=value; {VARIANT_FORM}")
        pairs.append((key.strip(), unquote(value)))
    keys = [k for k, _ in pairs]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise BadInput(f"{where} sets {', '.join(twice)} more than once; give each option one value")
    options = parse_options(dict(pairs), method, where)
    return Variant(spec, method, options, group="options")


def budget_variants(budgets: list[int], methods: tuple[str, ...] = ("tinytrain",)) -> list[Variant]:
    if not budgets:
        return []
    if any(b <= 0 for b in budgets):
        raise BadInput("every --budget-sweep value must be a positive memory size, e.g. 128KB,256KB,1MB")
    return [Variant(f"{m}@{format_bytes(b).replace(' ', '')}", m, memory_budget=int(b), group="budget")
            for m in methods for b in sorted(set(budgets))]


def build_variants(methods: list[str], meta_checkpoint: str | None = None, scores: bool = False,
                   channels: bool = False, budgets: list[int] | None = None, static: bool = False,
                   options: list[str] | None = None) -> list[Variant]:
    """The full list of result columns for a run: the methods, then each requested ablation."""
    variants = main_variants(methods)
    extra = [option_variant(s, methods) for s in options or []]
    if len({v.label for v in extra}) < len(extra):
        raise BadInput("a --variant is given twice")
    variants += extra
    if meta_checkpoint:
        variants += meta_variants(methods, meta_checkpoint)
    if (scores or channels or budgets or static) and "tinytrain" not in methods:
        raise BadInput("the score, channel, static and budget ablations vary TinyTrain; include tinytrain in "
                         "--methods")
    if static:
        variants += static_variants()
    if scores:
        variants += score_variants()
    if channels:
        variants += channel_variants()
    if budgets:
        variants += budget_variants(budgets)
    return variants
