import math

import numpy as np
import pytest

from tinytrain.bench.stats import accuracy_table, cost_table, layer_selection, mean_ci, t_quantile_975


def test_mean_ci_matches_textbook_formula():
    vals = [0.5, 0.7, 0.6, 0.9, 0.8]
    c = mean_ci(vals)
    sd = np.std(vals, ddof=1)
    assert c.mean == pytest.approx(0.7)
    assert c.ci95 == pytest.approx(2.776 * sd / math.sqrt(5))      # t(0.975, df=4)
    assert c.n == 5
    assert c.fmt() == f"70.0 ± {100 * c.ci95:.1f}"


def test_t_quantile_approaches_normal():
    assert t_quantile_975(1) == pytest.approx(12.706)
    assert t_quantile_975(31) == pytest.approx(2.0395, abs=2e-4)
    assert t_quantile_975(199) == pytest.approx(1.9720, abs=2e-4)
    assert t_quantile_975(10 ** 6) == pytest.approx(1.95996, abs=1e-4)
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_degenerate_samples():
    assert mean_ci([]).n == 0 and mean_ci([]).fmt() == "-"
    one = mean_ci([0.25])
    assert one.mean == 0.25 and math.isnan(one.ci95) and one.fmt() == "25.0"
    assert mean_ci([0.4, 0.4, 0.4]).ci95 == pytest.approx(0.0, abs=1e-12)


def test_average_is_mean_of_domain_means():
    recs = ([{"domain": "a", "method": "m", "accuracy": v} for v in (1.0, 1.0, 1.0, 1.0)]
            + [{"domain": "b", "method": "m", "accuracy": v} for v in (0.0, 0.5)])
    t = accuracy_table(recs)
    assert t["m"]["a"].mean == 1.0 and t["m"]["b"].mean == 0.25
    assert t["m"]["average"].mean == pytest.approx(0.625)          # not the pooled 0.75
    se_b = mean_ci([0.0, 0.5]).ci95
    assert t["m"]["average"].ci95 == pytest.approx(se_b / 2)


def test_cost_ratios_are_relative_to_tinytrain():
    recs = [{"domain": "a", "method": "fulltrain", "predicted_memory_bytes": 1000, "backward_macs": 70, "seconds": 2},
            {"domain": "a", "method": "tinytrain", "predicted_memory_bytes": 10, "backward_macs": 10, "seconds": 1}]
    c = cost_table(recs)
    assert c["fulltrain"]["memory_ratio"] == 100 and c["fulltrain"]["compute_ratio"] == 7
    assert c["tinytrain"]["memory_ratio"] == 1


def test_layer_selection_counts_and_fisher():
    recs = [{"method": "tinytrain", "plan": [[3, 2, 8], [5, 8, 8]], "fisher_potential": {"3": 1.0, "5": 3.0}},
            {"method": "tinytrain", "plan": [[5, 4, 8]], "fisher_potential": {"3": 2.0, "5": 1.0}},
            {"method": "fulltrain", "plan": [[1, 8, 8]]}]
    sel = layer_selection(recs)
    assert sel[3]["frequency"] == 0.5 and sel[5]["frequency"] == 1.0
    assert sel[5]["mean_channel_fraction"] == pytest.approx(0.75)
    assert sel[3]["mean_fisher_potential"] == 1.5 and 1 not in sel


def test_paired_differences_use_only_shared_tasks():
    from tinytrain.bench.report import paired_report
    from tinytrain.bench.stats import paired_differences
    recs = []
    for t, (a, b) in enumerate([(0.9, 0.8), (0.5, 0.4), (0.7, 0.7), (0.6, 0.4)]):
        recs += [{"domain": "d", "task": t, "method": "tinytrain", "accuracy": a},
                 {"domain": "d", "task": t, "method": "fulltrain", "accuracy": b}]
    recs.append({"domain": "d", "task": 9, "method": "tinytrain", "accuracy": 0.0})   # no partner: ignored
    diff = paired_differences(recs)["fulltrain"]["d"]
    d = [0.1, 0.1, 0.0, 0.2]
    assert diff.n == 4 and diff.mean == pytest.approx(0.1)
    assert diff.ci95 == pytest.approx(3.182 * np.std(d, ddof=1) / 2)
    table = paired_report(recs)
    assert table.rows[0][0] == "fulltrain" and table.rows[0][1].startswith("+10.0 ±")
    assert paired_report([r for r in recs if r["method"] == "fulltrain"]) is None   # no reference method
