"""`sparseupdate`: SparseUpdate (Lin et al. 2022) — a STATIC layer/channel policy, the same for every task.

Policy source, in order:
  1. options["policy"]: a dict {"n_bias": int, "ratios": {layer: input-channel ratio}} or a path to such
     a JSON file (e.g. one written by `derive_static_policy`, the contribution analysis below);
  2. the published upstream policies (tinytrain.costs.baselines.SPARSEUPDATE_POLICIES) for mcunet-5fps,
     mbv2-w0.35, proxyless-w0.3: options["policy_kb"] picks one by its budget (e.g. 99), "fit" picks the
     largest whose Table-2 memory fits the memory budget; default the "100 KB" one (the paper's);
  3. otherwise a structural fallback derived from the cost model alone (`structural_policy`).
Channels inside a layer are the input channels with the largest weight L2 norm (static, as upstream);
ratio 0 = bias only. Biases are the BN shifts of the last n_bias conv layers.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..costs.baselines import SPARSEUPDATE_DEFAULT_KB, SPARSEUPDATE_POLICIES
from ..costs.model import CostModel
from ..costs.plan import LayerUpdate, UpdatePlan
from ..sparse.engine import EnginePlan, LayerSelection, SparseEngine
from ..sparse.selection import select_channels
from .base import AdaptConfig
from .tinytrain import DEFAULT_MEMORY_BUDGET, candidate_layers
from .trained import Built, TrainedMethod, private_copy

RATIOS = (1.0, 0.5, 0.25, 0.125)


def _policy_memory(cm: CostModel, n_layers: int, policy: dict, optimizer: str) -> int:
    ups = [LayerUpdate(int(i), float(r), "in") for i, r in policy["ratios"].items() if float(r) > 0]
    biases = list(range(n_layers - int(policy["n_bias"]), n_layers))
    return cm.sparse_memory_bytes(ups, optimizer, biases)


def structural_policy(backbone, memory_budget: int, resolution: int, optimizer: str = "adam") -> dict:
    """A static policy from the cost model alone, for models without a published one.

    Mirrors the shape of the published policies: the first conv of each of the last 6 blocks, walked
    from the last block down, each at the largest input-channel ratio in {1, 1/2, 1/4, 1/8} that keeps
    the Table-2 memory within `memory_budget`; biases of every layer in those blocks."""
    cm = CostModel(backbone.spec, resolution)
    layers = backbone.conv_layers(resolution)
    cands = candidate_layers(backbone, "last6")
    firsts = sorted({min(i for i in cands if layers[i].block == b) for b in {layers[i].block for i in cands}},
                    reverse=True)
    n_layers = len(layers)
    policy = {"n_bias": n_layers - min(cands), "ratios": {}}
    for i in firsts:
        for r in RATIOS:
            trial = {"n_bias": policy["n_bias"], "ratios": {**policy["ratios"], i: r}}
            if _policy_memory(cm, n_layers, trial, optimizer) <= memory_budget:
                policy = trial
                break
    return policy


def derive_static_policy(backbone, x: torch.Tensor, y: torch.Tensor, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                         iterations: int = 10, lr: float = 1e-3, seed: int = 0) -> dict:
    """SparseUpdate's contribution analysis, run ONCE offline on a calibration task (not a test task).

    For each candidate layer (last 6 blocks) and ratio, fine-tune only that layer's top-L2 input
    channels and record the drop of the pseudo-query loss (the contribution); biases of the candidate
    blocks are always trained. Then pick, greedily by contribution per byte, the set of (layer, ratio)
    that fits `memory_budget` (Table-2 accounting). Save the result as JSON and pass it as
    options["policy"]."""
    from .common import finetune   # the same loop as the methods
    from ..fewshot.protonet import CosineClassifier
    res = int(x.shape[-1])
    cm = CostModel(backbone.spec, res)
    layers = backbone.conv_layers(res)
    n_layers = len(layers)
    cands = candidate_layers(backbone, "last6")
    cfg = AdaptConfig(iterations=iterations, lr=lr, augment=False, seed=seed)
    head = CosineClassifier()
    gains = {}
    for i in cands:
        for r in RATIOS:
            bb = private_copy(backbone)
            w = bb.conv_modules()[i].conv.weight
            total = w.shape[0] if bb.conv_modules()[i].conv.groups > 1 else w.shape[1]
            k = max(1, int(round(r * total)))
            ch = select_channels(k, "l2", weight=w, axis="in")
            eng = SparseEngine(bb, EnginePlan((LayerSelection(i, ch, "in"),)))
            stats = finetune(eng, x, y, head, cfg, lr, len(x))
            gains[(i, r)] = stats["losses"][0] - stats["losses"][-1]
    policy = {"n_bias": n_layers - min(cands), "ratios": {}}
    order = sorted(gains, key=lambda ir: -gains[ir] / max(1, layers[ir[0]].params * ir[1]))
    for i, r in order:
        if i in policy["ratios"] or gains[(i, r)] <= 0:
            continue
        trial = {"n_bias": policy["n_bias"], "ratios": {**policy["ratios"], i: r}}
        if _policy_memory(cm, n_layers, trial, "adam") <= memory_budget:
            policy = trial
    policy["ratios"] = {str(i): r for i, r in sorted(policy["ratios"].items())}
    policy["source"] = "contribution analysis (derive_static_policy)"
    return policy


class SparseUpdateMethod(TrainedMethod):
    name = "sparseupdate"
    default_batch_size = 1

    def _policy(self, backbone, res: int) -> tuple[dict, str]:
        opt = self.config.options
        mem_budget = self.config.memory_budget or DEFAULT_MEMORY_BUDGET
        if opt.get("policy") is not None:
            pol = opt["policy"]
            if isinstance(pol, (str, Path)):
                pol = json.loads(Path(pol).read_text())
            if "ratios" not in pol or "n_bias" not in pol:
                raise ValueError("a SparseUpdate policy needs 'n_bias' and 'ratios' ({layer: ratio})")
            return {"n_bias": int(pol["n_bias"]), "ratios": {int(k): float(v) for k, v in pol["ratios"].items()}}, \
                "given"
        published = SPARSEUPDATE_POLICIES.get(backbone.spec.name)
        if published is None:
            return structural_policy(backbone, mem_budget, res, self.config.optimizer), "structural fallback"
        kb = opt.get("policy_kb", SPARSEUPDATE_DEFAULT_KB[backbone.spec.name])
        if kb == "fit":
            cm = CostModel(backbone.spec, res)
            n = len(backbone.conv_layers())
            fitting = [k for k, (nb, r) in published.items()
                       if _policy_memory(cm, n, {"n_bias": nb, "ratios": r}, self.config.optimizer) <= mem_budget]
            if not fitting:
                raise ValueError(f"no published SparseUpdate policy of {backbone.spec.name} fits {mem_budget} B; "
                                 f"raise the memory budget or give policy_kb")
            kb = max(fitting)
        if int(kb) not in published:
            raise ValueError(f"no SparseUpdate policy of {kb} KB for {backbone.spec.name}; choose one of "
                             f"{', '.join(str(k) for k in published)} or 'fit'")
        n_bias, ratios = published[int(kb)]
        return {"n_bias": n_bias, "ratios": dict(ratios)}, f"published {kb} KB"

    def _build(self, x: torch.Tensor, y: torch.Tensor) -> Built:
        backbone = private_copy(self.source_backbone)
        res = int(x.shape[-1])
        layers = backbone.conv_layers(res)
        n = len(layers)
        policy, source = self._policy(backbone, res)
        mods = backbone.conv_modules()
        sels, rows, ups = [], [], []
        biases = set(range(n - policy["n_bias"], n))
        for i, r in sorted(policy["ratios"].items()):
            if not 0 <= i < n:
                raise ValueError(f"policy names layer {i} but {backbone.spec.name} has layers 0..{n - 1}")
            if r <= 0:
                biases.add(i)
                continue
            w = mods[i].conv.weight
            total = w.shape[0] if mods[i].conv.groups > 1 else w.shape[1]
            k = max(1, int(round(r * total)))
            ch = select_channels(k, "l2", weight=w, axis="in")
            sels.append(LayerSelection(i, ch, "in"))
            ups.append(LayerUpdate(i, len(ch) / total, "in", list(ch)))
            rows.append({"layer": i, "name": layers[i].name, "channels_updated": len(ch), "channels_total": total,
                         "score": None})
        eplan = EnginePlan(tuple(sels), tuple(sorted(biases)))
        up = UpdatePlan(backbone.spec.name, ups, sorted(biases), self.batch_size, self.config.optimizer, "sparse", res)
        extra = {"policy": {"n_bias": policy["n_bias"], "ratios": {str(k): v for k, v in policy["ratios"].items()}},
                 "policy_source": source}
        return Built(SparseEngine(backbone, eplan), backbone, up, rows, eplan, 0.0, extra)
