"""SparseUpdate's static policies, found offline (Lin et al. 2022, sec. 3.3): the contribution analysis
(`derive_static_policy`, CLI `tinytrain sparseupdate-policy`), the structural fallback from the cost model
alone, and reading/finding policy files. The method that trains a policy is methods/sparseupdate.py.

A policy is {"n_bias": k, "ratios": {layer: input-channel ratio}}: the BN shifts of the last k conv layers,
and per listed layer the input channels with the largest weight L2 norm (ratio 0 = bias only).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from ..costs.model import CostModel
from ..costs.plan import LayerUpdate, channel_count
from ..sparse.engine import EnginePlan, LayerSelection, SparseEngine
from ..sparse.selection import select_channels
from .base import AdaptConfig
from .tinytrain import DEFAULT_MEMORY_BUDGET, candidate_layers
from .trained import private_copy
from ..errors import BadInput


RATIOS = (1.0, 0.5, 0.25, 0.125)
BIAS_BLOCKS = (1, 2, 3, 4, 5, 6)
MIN_GAIN = 1e-6     # a contribution must exceed this to be selected (smaller = float noise, e.g. a zero-init branch)
GAIN_METRIC = "query cross-entropy decrease (before minus after fine-tuning), mean over calibration episodes"
SELECTION = ("greedy by contribution per byte: for each bias count k (within the budget), start from the "
             "biases of the last k layers and repeatedly add the (layer, ratio) - or raise a chosen layer's "
             "ratio - with the largest positive contribution gain per byte of extra Table-2 memory that keeps "
             "the policy within the budget; keep the k with the largest Delta_b[k] + sum Delta_W")


def policy_memory(cm: CostModel, n_layers: int, policy: dict, optimizer: str) -> int:
    ups = [LayerUpdate(int(i), float(r), "in") for i, r in policy["ratios"].items() if float(r) > 0]
    biases = list(range(n_layers - int(policy["n_bias"]), n_layers))
    return cm.sparse_memory_bytes(ups, optimizer, biases)


def channels_total(conv) -> int:
    """Size of the input-channel axis SparseUpdate slices (the channel axis for depthwise convs)."""
    w = conv.weight
    return w.shape[0] if conv.groups > 1 else w.shape[1]


def l2_channels(conv, ratio: float) -> tuple[int, ...]:
    """The round(ratio * C) input channels with the largest weight L2 norm (static, as upstream)."""
    total = channels_total(conv)
    return select_channels(channel_count(ratio, total), "l2", weight=conv.weight, axis="in")


def structural_policy(backbone, memory_budget: int, resolution: int, optimizer: str = "adam") -> dict:
    """A static policy from the cost model alone, for models without a published or derived one.

    Mirrors the shape of the published policies: the first conv of each of the last 6 blocks, walked
    from the last block down, each at the largest input-channel ratio in {1, 1/2, 1/4, 1/8} that keeps
    the Table-2 memory within `memory_budget`; biases of every layer in those blocks (an error if they
    alone exceed the budget)."""
    cm = CostModel(backbone.spec, resolution)
    layers = backbone.conv_layers(resolution)
    cands = candidate_layers(backbone, "last6")
    firsts = sorted({min(i for i in cands if layers[i].block == b) for b in {layers[i].block for i in cands}},
                    reverse=True)
    n_layers = len(layers)
    policy = {"n_bias": n_layers - min(cands), "ratios": {}}
    floor = policy_memory(cm, n_layers, policy, optimizer)
    if floor > memory_budget:
        raise BadInput(f"memory budget {memory_budget} B is too small for {backbone.spec.name}'s structural "
                         f"SparseUpdate policy at {resolution} px: its biases alone need {floor} B; raise the "
                         f"budget to at least {floor} B, lower the resolution, or give a policy")
    for i in firsts:
        for r in RATIOS:
            trial = {"n_bias": policy["n_bias"], "ratios": {**policy["ratios"], i: r}}
            if policy_memory(cm, n_layers, trial, optimizer) <= memory_budget:
                policy = trial
                break
    return policy


# --------------------------------------------------------------------------------------------
# Contribution analysis (Lin et al. 2022, section 3.3), run once, offline

def bias_options(backbone, blocks: Iterable[int] = BIAS_BLOCKS) -> list[tuple[int, int]]:
    """(b, n_bias) for "the biases of the last b blocks" (the feature-mix conv, if any, counts with the
    last block), deduplicated; n_bias counts conv layers from the end, as the published policies do."""
    layers = backbone.conv_layers()
    n_blocks = len(backbone.spec.blocks)
    out, seen = [], set()
    for b in sorted(set(int(v) for v in blocks)):
        if b < 1:
            raise BadInput(f"bias block counts must be >= 1 (got {b})")
        inside = [l.index for l in layers if l.block >= max(0, n_blocks - b)]
        k = len(layers) - min(inside)
        if k not in seen:
            seen.add(k)
            out.append((b, k))
    return out


def _calibration_episodes(episodes) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    from .common import check_support
    if not isinstance(episodes, (list, tuple)) or not episodes:
        raise BadInput("give a non-empty list of calibration episodes (support_x, support_y, query_x, query_y)")
    out = []
    for n, ep in enumerate(episodes):
        if hasattr(ep, "support_x"):
            ep = (ep.support_x, ep.support_y, ep.query_x, ep.query_y)
        if len(ep) != 4 or ep[2] is None or ep[3] is None:
            raise BadInput(f"calibration episode {n} needs (support_x, support_y, query_x, query_y); the gain is "
                             "measured on the held-out query set")
        sx, sy = check_support(ep[0], ep[1])
        qx, qy = torch.as_tensor(ep[2]).float(), torch.as_tensor(ep[3]).long()
        if qx.dim() != 4 or qx.shape[1:] != sx.shape[1:] or qy.dim() != 1 or len(qy) != len(qx) or len(qy) == 0:
            raise BadInput(f"calibration episode {n}: the query set must be images shaped like the support "
                             f"images {tuple(sx.shape[1:])} with one label each (got {tuple(qx.shape)}, "
                             f"{tuple(qy.shape)})")
        if int(qy.min()) < 0 or int(qy.max()) > int(sy.max()):
            raise BadInput(f"calibration episode {n}: query labels must be among the support classes")
        out.append((sx, sy, qx, qy))
    res = {int(e[0].shape[-1]) for e in out}
    if len(res) > 1:
        raise BadInput(f"calibration episodes have mixed resolutions {sorted(res)}; use one")
    return out


@torch.no_grad()
def _query_metrics(backbone, head, sx, sy, qx, qy) -> tuple[float, float]:
    """(cross-entropy, accuracy) of the query set against the support prototypes (cosine ProtoNet)."""
    from .base import support_prototypes
    backbone.eval()
    protos = support_prototypes(backbone, sx, sy, batch_size=64)
    logits = torch.cat([head(backbone(qx[i:i + 64]), protos) for i in range(0, len(qx), 64)])
    return float(F.cross_entropy(logits, qy)), float((logits.argmax(-1) == qy).float().mean())


def derive_static_policy(backbone, episodes: Sequence, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                         iterations: int = 40, lr: float = 1e-3, seed: int = 0, head=None,
                         optimizer: str = "adam", augment: bool = True, bias_blocks: Iterable[int] = BIAS_BLOCKS,
                         ratios: Sequence[float] = RATIOS, candidates: str | Sequence[int] = "last6",
                         progress: Callable[[str], None] | None = None) -> dict:
    """SparseUpdate's contribution analysis (Lin et al. 2022, sec. 3.3), run ONCE, offline, on calibration
    episodes of the source domain's VALIDATION classes (never test classes).

    `episodes`: a list of (support_x, support_y, query_x, query_y) (or `Task`s) at one resolution.

    Contribution = gain of fine-tuning only that part, measured as the held-out QUERY cross-entropy before
    fine-tuning minus after (`GAIN_METRIC`; the query-accuracy change is recorded next to it, not used),
    averaged over the episodes. Fine-tuning is the methods' own P>M>F loop (`common.finetune`:
    `iterations`, Adam at `lr`, pseudo-query augmentation when `augment`), every configuration on the
    same episodes with the same augmentation draws (seeded per episode), so differences are not noise
    of the draws.
      * Delta_b[k]: biases (BN shifts) of the last k conv layers, k = the layers of the last b blocks for
        b in `bias_blocks` (1..6);
      * Delta_W[i, r]: weights of candidate layer i (`candidates`: "last6" (default: the conv layers of the
        last 6 blocks, which TinyTrain inspects too), "all", or a list of layer indices) at input-channel
        ratio r in `ratios` (top-L2 channels, as the method trains them), trained together with the biases
        of a fixed reference k_ref (the k with the largest Delta_b, ties: the smaller), minus Delta_b[k_ref]:
        the weights' contribution on top of a fixed bias part, as in the paper.
    Selection: max Delta_b[k] + sum Delta_W[i, r] (at most one ratio per layer, only contributions above
    MIN_GAIN) subject to Table-2 memory (`policy_memory`: activations with 1-bit ReLU masks +
    trained weights x (1 + optimizer state)) <= `memory_budget`. The paper uses an evolutionary search;
    here a greedy by contribution per byte (`SELECTION`), evaluated for every k, keeping the best total.
    Deterministic for a seed. Raises ValueError (before any training) if even the smallest option, the
    biases of the last block alone, exceeds the budget, naming the smallest budget that fits.

    Returns a JSON-serialisable dict: n_bias, ratios ({"layer": ratio}), source, memory_bytes,
    memory_budget, model, resolution, optimizer, contributions (readable tables). Pass it (or the JSON file
    written by `tinytrain sparseupdate-policy`) as options["policy"] / options["derived_policy"].
    """
    from ..models.head import CosineClassifier
    from .common import finetune
    t_start = time.perf_counter()
    say = progress or (lambda msg: None)
    eps = _calibration_episodes(episodes)
    if iterations < 1:
        raise BadInput(f"iterations must be >= 1 (got {iterations})")
    if not lr or lr <= 0:
        raise BadInput(f"lr must be positive (got {lr})")
    ratios = sorted({float(r) for r in ratios}, reverse=True)
    if not ratios or any(not 0 < r <= 1 for r in ratios):
        raise BadInput(f"ratios must be in (0, 1] (got {ratios})")
    memory_budget = int(memory_budget)
    head = head if head is not None else CosineClassifier()
    res = int(eps[0][0].shape[-1])
    spec = backbone.spec
    cm = CostModel(spec, res)
    layers = backbone.conv_layers(res)
    n_layers = len(layers)
    mods = backbone.conv_modules()
    if isinstance(candidates, str):
        cands = candidate_layers(backbone, candidates)
    else:
        cands = sorted({int(i) for i in candidates})
        if not cands or not all(0 <= i < n_layers for i in cands):
            raise BadInput(f"candidate layers must be in 0..{n_layers - 1} (got {list(candidates)})")
    b_opts = bias_options(backbone, bias_blocks)
    bias_mem = {k: policy_memory(cm, n_layers, {"n_bias": k, "ratios": {}}, optimizer) for _, k in b_opts}
    smallest = min(bias_mem.values())
    if smallest > memory_budget:
        k_min = min(bias_mem, key=lambda k: (bias_mem[k], k))
        raise BadInput(f"memory budget {memory_budget} B is too small for any SparseUpdate policy of {spec.name} "
                         f"at {res} px: the smallest option (biases of the last {k_min} conv layers, no weights) "
                         f"needs {smallest} B; give a budget of at least {smallest} B")
    b_opts = [(b, k) for b, k in b_opts if bias_mem[k] <= memory_budget]   # the others can never be chosen

    base = [_query_metrics(backbone, head, *ep) for ep in eps]
    ep_seeds = [int(seed) * 1_000_003 + e for e in range(len(eps))]
    runs = 0

    def measure(weights: tuple[LayerSelection, ...], biases: tuple[int, ...]) -> tuple[float, float]:
        nonlocal runs
        dl, da = [], []
        for ep, (l0, a0), s in zip(eps, base, ep_seeds):
            bb = private_copy(backbone)
            eng = SparseEngine(bb, EnginePlan(weights, biases))
            cfg = AdaptConfig(iterations=int(iterations), lr=float(lr), optimizer=optimizer, augment=augment,
                              seed=s, resolution=res)
            finetune(eng, ep[0], ep[1], head, cfg, float(lr), len(ep[0]))
            l1, a1 = _query_metrics(bb, head, *ep)
            dl.append(l0 - l1)
            da.append(a1 - a0)
            runs += 1
        return sum(dl) / len(dl), sum(da) / len(da)

    # Delta_b[k]
    bias_rows = []
    for b, k in b_opts:
        g, a = measure((), tuple(range(n_layers - k, n_layers)))
        bias_rows.append({"n_bias": k, "blocks": b, "first_layer": n_layers - k, "gain": g, "accuracy_gain": a,
                          "memory_bytes": bias_mem[k]})
        say(f"biases of the last {k} layers ({b} blocks): gain {g:+.4f}")
    gain_b = {r["n_bias"]: r["gain"] for r in bias_rows}
    k_ref = max(gain_b, key=lambda k: (gain_b[k], -k))
    ref_biases = tuple(range(n_layers - k_ref, n_layers))

    # Delta_W[i, r] on top of the reference biases
    weight_rows, gain_w = [], {}
    for i in cands:
        conv = mods[i].conv
        total = channels_total(conv)
        done: dict[int, tuple[float, float]] = {}
        for r in ratios:
            ch = l2_channels(conv, r)
            if len(ch) not in done:     # ratios that round to the same channel count are measured once
                g, a = measure((LayerSelection(i, ch, "in"),), ref_biases)
                done[len(ch)] = (g - gain_b[k_ref], a - next(x["accuracy_gain"] for x in bias_rows
                                                            if x["n_bias"] == k_ref))
            g, a = done[len(ch)]
            gain_w[(i, r)] = g
            weight_rows.append({"layer": i, "name": layers[i].name, "ratio": r, "channels": len(ch),
                                "channels_total": total, "gain": g, "accuracy_gain": a,
                                "weights": int(round(layers[i].params * len(ch) / total))})
        say(f"layer {i} ({layers[i].name}): " + ", ".join(f"r={r:g} {gain_w[(i, r)]:+.4f}" for r in ratios))

    policy, total_gain = _select(cm, n_layers, [(k, gain_b[k]) for _, k in b_opts], gain_w, memory_budget, optimizer)
    mem = policy_memory(cm, n_layers, policy, optimizer)
    return {
        "model": spec.name, "resolution": res, "optimizer": optimizer,
        "n_bias": int(policy["n_bias"]),
        "ratios": {str(i): float(r) for i, r in sorted(policy["ratios"].items())},
        "source": "contribution analysis (derive_static_policy)",
        "memory_bytes": int(mem), "memory_budget": memory_budget,
        "contributions": {
            "metric": GAIN_METRIC, "selection": SELECTION,
            "objective": total_gain,
            "episodes": len(eps), "iterations": int(iterations), "lr": float(lr), "seed": int(seed),
            "augment": bool(augment), "fine_tuning_runs": runs,
            "seconds": round(time.perf_counter() - t_start, 3),
            "before": {"query_loss": sum(b[0] for b in base) / len(base),
                       "query_accuracy": sum(b[1] for b in base) / len(base)},
            "bias": bias_rows,
            "weights_on_top_of_n_bias": k_ref,
            "weights": weight_rows,
        },
    }


def _select(cm: CostModel, n_layers: int, bias_gains: list[tuple[int, float]], gain_w: dict[tuple[int, float], float],
            budget: int, optimizer: str) -> tuple[dict, float]:
    """Greedy by contribution per byte (see SELECTION) -> (policy {"n_bias", "ratios"}, objective)."""
    best, best_key = None, None
    for k, gb in bias_gains:
        pol = {"n_bias": k, "ratios": {}}
        mem = policy_memory(cm, n_layers, pol, optimizer)
        if mem > budget:
            continue
        total = gb
        while True:
            step, step_key = None, None
            for (i, r), g in sorted(gain_w.items()):
                cur = pol["ratios"].get(i)
                if cur is not None and r <= cur:
                    continue
                dg = g - (gain_w[(i, cur)] if cur is not None else 0.0)
                if dg <= MIN_GAIN:
                    continue
                trial = {"n_bias": k, "ratios": {**pol["ratios"], i: r}}
                m = policy_memory(cm, n_layers, trial, optimizer)
                if m > budget:
                    continue
                key = (dg / max(m - mem, 1), dg, -i, -r)
                if step_key is None or key > step_key:
                    step, step_key = (trial, m, dg), key
            if step is None:
                break
            pol, mem, total = step[0], step[1], total + step[2]
        key = (total, -mem, -k)
        if best_key is None or key > best_key:
            best, best_key = pol, key
    if best is None:    # derive_static_policy checks this before measuring anything
        raise BadInput(f"no SparseUpdate policy fits the memory budget of {budget} B")
    return best, best_key[0]


# --------------------------------------------------------------------------------------------
# Reading policies

def _checked_policy(pol: dict, model: str, where: str) -> dict:
    if not isinstance(pol, dict) or "ratios" not in pol or "n_bias" not in pol:
        raise BadInput(f"a SparseUpdate policy needs 'n_bias' and 'ratios' ({{layer: ratio}}); {where} has "
                         f"{sorted(pol) if isinstance(pol, dict) else type(pol).__name__}")
    if pol.get("model") is not None and pol["model"] != model:
        raise BadInput(f"{where} is a SparseUpdate policy for {pol['model']!r}, not {model!r}; derive one for "
                         f"{model} with `tinytrain sparseupdate-policy --model {model} ...`")
    try:
        n_bias = int(pol["n_bias"])
        ratios = {int(k): float(v) for k, v in dict(pol["ratios"]).items()}
    except (TypeError, ValueError):
        raise BadInput(f"{where}: 'n_bias' must be an integer and 'ratios' a {{layer: ratio}} mapping") from None
    if n_bias < 0 or any(not 0 <= r <= 1 for r in ratios.values()):
        raise BadInput(f"{where}: 'n_bias' must be >= 0 and every ratio in [0, 1]")
    return {"n_bias": n_bias, "ratios": ratios}


def read_policy(pol, model: str) -> tuple[dict, str | None]:
    """A policy dict, or a path to its JSON -> ({"n_bias", "ratios"}, the path or None)."""
    if isinstance(pol, (str, Path)):
        path = Path(pol).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"SparseUpdate policy file {path} does not exist")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise BadInput(f"SparseUpdate policy file {path} is not valid JSON ({exc})") from None
        return _checked_policy(data, model, str(path)), str(path)
    return _checked_policy(pol, model, "the given policy"), None


def shipped_policy_path(model: str) -> Path:
    from ..models.weights import ZOO_DIR
    return ZOO_DIR / f"{model}-sparseupdate.json"


def find_derived_policy(model: str, pointer=None) -> Path | None:
    """A derived policy JSON for `model`: `pointer` (a file, or a folder holding <model>-sparseupdate.json),
    else the shipped zoo/<model>-sparseupdate.json; None if there is none."""
    if pointer is not None:
        p = Path(pointer).expanduser()
        if p.is_dir():
            if (p / f"{model}-sparseupdate.json").is_file():
                return p / f"{model}-sparseupdate.json"
        elif p.is_file():
            return p
        else:
            raise FileNotFoundError(f"derived_policy {p} is neither a policy JSON file nor a folder")
    shipped = shipped_policy_path(model)
    return shipped if shipped.is_file() else None
