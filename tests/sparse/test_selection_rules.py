"""Layer selection on a hand-built cost table (independent of the cost model the method uses): score
order, binding budgets, both stop rules, per-layer ratio caps, and the Fisher-mass ratio."""
import pytest
import torch

from tinytrain.sparse.selection import BudgetTooSmall, fisher_mass_ratio, select_layers

# layer -> (memory bytes, MACs) when trained in full; a selection costs the sum of its layers' shares
TABLE = {1: (400, 10), 2: (300, 50), 3: (200, 30), 4: (100, 5)}
TOTAL = {i: 8 for i in TABLE}


def channels_for(i, r):
    return tuple(range(max(1, int(round(r * TOTAL[i])))))


def cost(sel):
    mem = sum(TABLE[c.index][0] * len(c.channels) / c.channels_total for c in sel)
    macs = sum(TABLE[c.index][1] * len(c.channels) / c.channels_total for c in sel)
    return int(mem), int(macs)


def pick(order, mem, macs, **kw):
    scores = {i: float(10 - k) for k, i in enumerate(order)}
    sel = select_layers(order, scores, channels_for, TOTAL, cost, mem, macs, **kw)
    return {c.index: c.ratio for c in sel}


def test_highest_scores_first_and_largest_ratio_that_fits():
    assert pick([3, 4, 1, 2], 10_000, 10_000) == {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0}
    # 3 (200) + 4 (100) fit in full; 1 then only at 1/2 (200): total 500
    assert pick([3, 4, 1, 2], 500, 10_000, ratios=(1.0, 0.5)) == {3: 1.0, 4: 1.0, 1: 0.5}


def test_memory_budget_binds():
    sel = pick([1, 2, 3, 4], 450, 10_000, ratios=(1.0,), stop_rule="skip")
    assert sel == {1: 1.0}                          # 400 used; 2 (300), 3 (200) no longer fit; 4 (100) would
    assert sum(TABLE[i][0] for i in sel) <= 450     # ... but it does not: 400 + 100 > 450


def test_compute_budget_binds_and_stop_rules_differ():
    # order 2, 1, 4: 2 costs 50 MACs; with a 55-MAC budget 1 (10) does not fit; 4 (5) would
    first = pick([2, 1, 4], 10_000, 55, ratios=(1.0,), stop_rule="first")
    skip = pick([2, 1, 4], 10_000, 55, ratios=(1.0,), stop_rule="skip")
    assert first == {2: 1.0}                        # the prefix rule stops at the first layer that misses
    assert skip == {2: 1.0, 4: 1.0}                 # skip goes on and uses the budget left


def test_ratio_cap_limits_each_layer():
    sel = pick([1, 2], 10_000, 10_000, ratio_cap=lambda i: 0.25 if i == 1 else 1.0)
    assert sel == {1: 0.25, 2: 1.0}


def test_nothing_fits_names_the_minimum():
    with pytest.raises(BudgetTooSmall, match="at least"):
        pick([1, 2], 10, 10_000)


def test_fisher_mass_ratio():
    ladder = (1.0, 0.5, 0.25, 0.125)
    concentrated = torch.tensor([10.0] + [0.01] * 7)          # one channel holds ~99 %
    spread = torch.ones(8)
    assert fisher_mass_ratio(concentrated, ladder, 0.9) == 0.125
    assert fisher_mass_ratio(spread, ladder, 0.5) == 0.5
    assert fisher_mass_ratio(spread, ladder, 0.9) == 1.0
    with pytest.raises(ValueError, match="mass"):
        fisher_mass_ratio(spread, ladder, 0.0)
