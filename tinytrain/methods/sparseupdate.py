"""`sparseupdate`: SparseUpdate (Lin et al. 2022) — a STATIC layer/channel policy, the same for every task.

Policy source, in order (the report's extra["policy_source"] says which was used):
  1. options["policy"]: a dict {"n_bias": int, "ratios": {layer: input-channel ratio}} or a path to such
     a JSON file -> "given";
  2. the published upstream policies (tinytrain.costs.baselines.SPARSEUPDATE_POLICIES) for mcunet-5fps,
     mbv2-w0.35, proxyless-w0.3: options["policy_kb"] picks one by its budget (e.g. 99), "fit" picks the
     largest whose Table-2 memory fits the memory budget; default the "100 KB" one (the paper's)
     -> "published <kb> KB";
  3. a policy derived once, offline, by SparseUpdate's contribution analysis (`derive_static_policy` in
     methods/sparseupdate_policy.py, CLI `tinytrain sparseupdate-policy`): options["derived_policy"] (a JSON file, or a folder holding
     <model>-sparseupdate.json), else a shipped tinytrain/zoo/<model>-sparseupdate.json; its "model" must
     be this model -> "derived (<path>)";
  4. otherwise a structural fallback derived from the cost model alone (`structural_policy`)
     -> "structural fallback".
Channels inside a layer are the input channels with the largest weight L2 norm (static, as upstream);
ratio 0 = bias only. Biases are the BN shifts of the last n_bias conv layers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from ..costs.baselines import SPARSEUPDATE_DEFAULT_KB, SPARSEUPDATE_POLICIES
from ..costs.model import CostModel
from ..costs.plan import LayerUpdate
from ..sparse.engine import SparseEngine
from .options import MethodOptions, option
from .sparseupdate_policy import (channels_total, find_derived_policy, l2_channels, policy_memory, read_policy,
                                  structural_policy)
from .tinytrain import DEFAULT_MEMORY_BUDGET
from .trained import Built, TrainedMethod, private_copy, sparse_plan
from ..errors import BadInput


@dataclass(frozen=True)
class SparseUpdateOptions(MethodOptions):
    """SparseUpdate's options, besides those every method takes (methods/options.py); the module docstring
    gives the order in which the policy sources are tried."""

    method: ClassVar[str] = "sparseupdate"

    policy: dict | str | None = option(
        None, "the policy to train: {\"n_bias\": int, \"ratios\": {layer: ratio}} or a path to such a JSON file",
        expect="a policy JSON object {\"n_bias\": ..., \"ratios\": {...}}, the path of one, or none")
    policy_kb: int | Literal["fit"] | None = option(
        None, "which published policy (its budget in KB, e.g. 99), or fit (the largest within the memory budget); "
              "none = the paper's (the 100 KB one)")
    derived_policy: str | None = option(
        None, "a derived policy JSON file, or a folder holding <model>-sparseupdate.json (models without a "
              "published policy)")


class SparseUpdateMethod(TrainedMethod):
    name = "sparseupdate"
    default_batch_size = 1
    options_class = SparseUpdateOptions

    def _policy(self, backbone, res: int) -> tuple[dict, str]:
        opt = self.opts
        name = backbone.spec.name
        mem_budget = self.config.memory_budget or DEFAULT_MEMORY_BUDGET
        if isinstance(mem_budget, str):
            from ..costs.units import parse_bytes
            mem_budget = parse_bytes(mem_budget)
        if opt.policy is not None:
            pol, path = read_policy(opt.policy, name)
            return pol, "given" + (f" ({path})" if path else "")
        published = SPARSEUPDATE_POLICIES.get(name)
        if published is None:
            path = find_derived_policy(name, opt.derived_policy)
            if path is not None:
                return read_policy(path, name)[0], f"derived ({path})"
            return structural_policy(backbone, mem_budget, res, self.config.optimizer), "structural fallback"
        kb = SPARSEUPDATE_DEFAULT_KB[name] if opt.policy_kb is None else opt.policy_kb
        if kb == "fit":
            cm = CostModel(backbone.spec, res)
            n = len(backbone.conv_layers())
            fitting = [k for k, (nb, r) in published.items()
                       if policy_memory(cm, n, {"n_bias": nb, "ratios": r}, self.config.optimizer) <= mem_budget]
            if not fitting:
                raise BadInput(f"no published SparseUpdate policy of {name} fits {mem_budget} B; "
                                 f"raise the memory budget or give policy_kb")
            kb = max(fitting)
        if int(kb) not in published:
            raise BadInput(f"no SparseUpdate policy of {kb} KB for {name}; choose one of "
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
        ups = []
        if policy["n_bias"] > n:
            raise BadInput(f"policy trains the biases of the last {policy['n_bias']} layers but "
                             f"{backbone.spec.name} has {n}")
        biases = set(range(n - policy["n_bias"], n))
        for i, r in sorted(policy["ratios"].items()):
            if not 0 <= i < n:
                raise BadInput(f"policy names layer {i} but {backbone.spec.name} has layers 0..{n - 1}")
            if r <= 0:
                biases.add(i)
                continue
            total = channels_total(mods[i].conv)
            ch = l2_channels(mods[i].conv, r)
            ups.append(LayerUpdate(i, len(ch) / total, "in", list(ch)))
        up = sparse_plan(backbone.spec, ups, sorted(biases), self.batch_size, self.config.optimizer, res)
        extra = {"policy": {"n_bias": policy["n_bias"], "ratios": {str(k): v for k, v in policy["ratios"].items()}},
                 "policy_source": source}
        return Built(SparseEngine(backbone, up), backbone, up, extra=extra)
