"""`tinytrain bench memory` on tiny-test: one child process per method, figures consistent."""
from __future__ import annotations

import json

from tinytrain.cli import main


def test_bench_memory_json_has_per_method_figures(capsys):
    code = main(["bench", "memory", "--model", "tiny-test", "--resolution", "32", "--ways", "2", "--shots", "2",
                 "--iterations", "1", "--methods", "none,tinytrain", "--compute-budget", "60%", "--json"])
    assert code == 0
    r = json.loads(capsys.readouterr().out)
    assert set(r["methods"]) == {"none", "tinytrain"}
    for row in r["methods"].values():
        assert {"peak_rss_bytes", "growth_bytes", "predicted_memory_bytes"} <= set(row)
        assert row["peak_rss_bytes"] >= row["loaded_rss_bytes"] >= row["import_rss_bytes"] > 10 * 2 ** 20
        assert row["growth_bytes"] == row["peak_rss_bytes"] - row["loaded_rss_bytes"] >= 0
    assert r["methods"]["tinytrain"]["predicted_memory_bytes"] > 0 == r["methods"]["none"]["predicted_memory_bytes"]
    assert r["methods"]["tinytrain"]["batch_size"] == 1


def test_bench_memory_rejects_unknown_method(capsys):
    assert main(["bench", "memory", "--model", "tiny-test", "--methods", "magic"]) == 2
    assert "unknown method" in capsys.readouterr().err
