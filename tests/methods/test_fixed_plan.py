"""TinyTrain's `fixed_plan` (the static ablation) is an `UpdatePlan` JSON, the one plan type; the earlier
{"weights", "biases"} shape that older run folders hold still trains exactly the same tensors."""
from __future__ import annotations

import pytest
import torch

from tinytrain.costs.plan import LayerUpdate, UpdatePlan
from tinytrain.methods import AdaptConfig, make_method
from tinytrain.models.backbone import build_backbone


def _fit(bb, x, y, fixed):
    cfg = AdaptConfig(iterations=3, lr=1e-2, resolution=32, augment=False, options={"fixed_plan": fixed})
    m = make_method("tinytrain", bb, cfg)
    pred = m.fit(x, y)
    return m.report, pred.backbone.state_dict()


def test_update_plan_json_and_the_earlier_shape_train_the_same():
    torch.manual_seed(0)
    bb = build_backbone("tiny-test").eval()
    x, y = torch.randn(6, 3, 32, 32), torch.tensor([0, 0, 1, 1, 2, 2])
    plan = UpdatePlan("tiny-test", [LayerUpdate(3, 0.5, "out", [0, 2])], [3, 4], resolution=32)
    new = plan.to_dict() | {"scores": {"3": 0.7}}
    old = {"weights": [{"index": 3, "channels": [0, 2], "axis": "out", "score": 0.7}], "biases": [3, 4]}
    rep_new, w_new = _fit(bb, x, y, new)
    rep_old, w_old = _fit(bb, x, y, old)
    assert rep_new.update_plan == rep_old.update_plan
    assert [(u.index, u.channels) for u in rep_new.update_plan.layers] == [(3, [0, 2])]
    assert rep_new.update_plan.bias_layers == [3, 4] and rep_new.rows[0].score == 0.7 == rep_old.rows[0].score
    assert all(torch.equal(w_new[k], w_old[k]) for k in w_new)
    before = bb.state_dict()
    changed = {k for k in w_new if not torch.equal(w_new[k], before[k])}
    assert changed and all(k.startswith(("blocks.", "stem")) for k in changed)


@pytest.mark.parametrize("fixed,message", [
    ({"model": "mcunet-5fps", "layers": [], "bias_layers": [3]}, "plan for 'mcunet-5fps'"),
    ({"layers": [{"index": 99, "channels": [0]}], "bias_layers": []}, "names layer 99"),
    ({"layers": [{"index": 3, "channels": [999]}], "bias_layers": []}, "channels must be"),
    ({"layers": [], "bias_layers": []}, "trains nothing"),
])
def test_a_wrong_fixed_plan_is_one_clear_error(fixed, message):
    bb = build_backbone("tiny-test").eval()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match=message):
        make_method("tinytrain", bb, AdaptConfig(iterations=1, resolution=32, options={"fixed_plan": fixed})).fit(x, y)
