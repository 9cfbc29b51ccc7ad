"""SparseUpdate's contribution analysis (derive_static_policy), its CLI, and how the method finds policies."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tinytrain.cli import main
from tinytrain.costs.model import CostModel
from tinytrain.methods import AdaptConfig, make_method
from tinytrain.methods import sparseupdate_policy as su
from tinytrain.models.backbone import build_backbone
from tinytrain.models.head import CosineClassifier, class_prototypes

RES = 32
SMALL = dict(iterations=3, lr=1e-2, candidates=[10, 11, 15], ratios=(1.0, 0.25), bias_blocks=(1, 2), augment=False)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convolutions: one thread is much faster than two on a shared, loaded machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _episodes(n, ways=3, shots=4, queries=4, seed=0, noise=0.5):
    """Separable synthetic episodes: each class is a fixed random image plus noise."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(ways, 3, RES, RES, generator=g)

    def draw(k):
        x = torch.cat([protos[c] + noise * torch.randn(k, 3, RES, RES, generator=g) for c in range(ways)])
        return x, torch.arange(ways).repeat_interleave(k)

    return [(*draw(shots), *draw(queries)) for _ in range(n)]


@pytest.fixture(scope="module")
def setup():
    """tiny-test with every residual branch switched on (the fresh init zeroes them) and BN statistics
    calibrated on the data, so that every layer can contribute."""
    torch.manual_seed(0)
    bb = build_backbone("tiny-test")
    for blk in bb.blocks:
        if blk.residual:
            torch.nn.init.ones_(blk.pw2.bn.weight)
    eps = _episodes(2)
    bb.train()
    for m in bb.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        bb(torch.cat([e[0] for e in eps]))
    return bb.eval(), eps


def _smallest_budget(bb) -> int:
    cm = CostModel(bb.spec, RES)
    n = len(bb.conv_layers(RES))
    return min(su.policy_memory(cm, n, {"n_bias": k, "ratios": {}}, "adam") for _, k in su.bias_options(bb))


def _without_timing(p: dict) -> dict:
    p = json.loads(json.dumps(p))
    p["contributions"].pop("seconds")
    return p


def test_derived_policy_respects_budget_and_is_deterministic(setup):
    bb, eps = setup
    budget = 40_000
    p = su.derive_static_policy(bb, eps, memory_budget=budget, seed=3, **SMALL)
    assert json.loads(json.dumps(p)) == p                     # JSON-serialisable as is
    assert set(p) >= {"n_bias", "ratios", "source", "memory_bytes", "memory_budget", "model", "resolution",
                      "contributions"}
    assert p["model"] == "tiny-test" and p["resolution"] == RES and p["memory_budget"] == budget
    cm = CostModel(bb.spec, RES)
    n = len(bb.conv_layers(RES))
    assert p["memory_bytes"] == su.policy_memory(cm, n, p, "adam") <= budget
    assert p["ratios"]                                         # the budget allows some weights, and they help
    assert p["n_bias"] in {k for _, k in su.bias_options(bb, (1, 2))}
    assert all(int(i) in SMALL["candidates"] and r in SMALL["ratios"] for i, r in p["ratios"].items())
    c = p["contributions"]
    assert len(c["bias"]) == 2 and len(c["weights"]) == len(SMALL["candidates"]) * len(SMALL["ratios"])
    assert c["fine_tuning_runs"] == (2 + len(c["weights"])) * len(eps)
    chosen = {(int(i), r) for i, r in p["ratios"].items()}
    gains = {(w["layer"], w["ratio"]): w["gain"] for w in c["weights"]}
    assert all(gains[ir] > 0 for ir in chosen)               # only positive contributions are selected
    b_gain = next(b["gain"] for b in c["bias"] if b["n_bias"] == p["n_bias"])
    assert c["objective"] == pytest.approx(b_gain + sum(gains[ir] for ir in chosen))
    # the same seed gives the same policy and contributions; a larger budget never gives a worse objective
    again = su.derive_static_policy(bb, eps, memory_budget=budget, seed=3, **SMALL)
    assert _without_timing(again) == _without_timing(p)
    big = su.derive_static_policy(bb, eps, memory_budget=10 ** 7, seed=3, **SMALL)
    assert big["contributions"]["objective"] >= c["objective"] - 1e-9
    assert len(big["ratios"]) > len(p["ratios"]) and big["memory_bytes"] > budget      # the budget was binding


def test_too_small_budget_raises_before_training(setup, monkeypatch):
    bb, eps = setup
    smallest = _smallest_budget(bb)

    def no_training(*a, **k):
        raise AssertionError("the budget check must come before any fine-tuning")

    monkeypatch.setattr("tinytrain.methods.common.finetune", no_training)
    with pytest.raises(ValueError, match=f"at least {smallest} B"):
        su.derive_static_policy(bb, eps, memory_budget=smallest - 1, **SMALL)


def test_contributions_are_real(setup):
    bb, eps = setup
    head = CosineClassifier()
    p = su.derive_static_policy(bb, eps, memory_budget=10 ** 7, iterations=5, lr=1e-2, candidates=[15],
                                ratios=(1.0,), bias_blocks=(1,), head=head, augment=False)
    c = p["contributions"]
    with torch.no_grad():     # "before" is the query cross-entropy of the untouched backbone, as stated
        losses = [F.cross_entropy(head(bb(qx), class_prototypes(bb(sx), sy)), qy).item() for sx, sy, qx, qy in eps]
    assert c["before"]["query_loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    # the last layer's weights on a learnable task lower the held-out query loss, beyond the biases alone
    (w,) = c["weights"]
    assert w["layer"] == 15 and w["gain"] > 0.05
    assert c["bias"][0]["gain"] + w["gain"] > 0
    assert p["ratios"] == {"15": 1.0}
    # a layer that cannot change the output (a residual branch whose BN scale is zero) contributes exactly
    # nothing and is never selected
    dead = su.private_copy(bb)
    dead.blocks[4].pw2.bn.weight.data.zero_()
    q = su.derive_static_policy(dead, eps, memory_budget=10 ** 7, iterations=5, lr=1e-2, candidates=[13, 15],
                                ratios=(1.0,), bias_blocks=(1,), augment=False)
    g13 = next(r["gain"] for r in q["contributions"]["weights"] if r["layer"] == 13)
    assert abs(g13) < su.MIN_GAIN and "13" not in q["ratios"]


def test_bad_calibration_input(setup):
    bb, eps = setup
    sx, sy, qx, qy = eps[0]
    with pytest.raises(ValueError, match="query"):
        su.derive_static_policy(bb, [(sx, sy, None, None)], **SMALL)
    with pytest.raises(ValueError, match="non-empty"):
        su.derive_static_policy(bb, [], **SMALL)
    with pytest.raises(ValueError, match="candidate layers"):
        su.derive_static_policy(bb, eps, **{**SMALL, "candidates": [99]})


@pytest.fixture(scope="module")
def policy_file(setup, tmp_path_factory):
    bb, eps = setup
    p = su.derive_static_policy(bb, eps, memory_budget=40_000, **SMALL)
    path = tmp_path_factory.mktemp("policy") / "tiny-test-sparseupdate.json"
    path.write_text(json.dumps(p))
    return p, path


def _plan(bb, eps, options, memory_budget=None):
    m = make_method("sparseupdate", bb, AdaptConfig(iterations=1, resolution=RES, augment=False, lr=1e-3,
                                                     options=options, memory_budget=memory_budget))
    return m.plan(eps[0][0], eps[0][1])


def test_method_uses_a_derived_policy_and_reports_its_source(setup, policy_file, monkeypatch, tmp_path):
    bb, eps = setup
    p, path = policy_file
    n = len(bb.conv_layers(RES))
    expect_layers = sorted(int(i) for i in p["ratios"])
    for options, source in (({"policy": str(path)}, f"given ({path})"), ({"policy": p}, "given"),
                            ({"derived_policy": str(path)}, f"derived ({path})"),
                            ({"derived_policy": str(path.parent)}, f"derived ({path})")):
        rep = _plan(bb, eps, options)
        assert rep.extra["policy_source"] == source
        assert sorted(r.layer for r in rep.rows) == expect_layers
        assert rep.engine_plan.biases[0] == n - p["n_bias"]
        assert rep.extra["policy"]["n_bias"] == p["n_bias"]
    # a folder without this model's file, and no shipped one: the structural fallback
    monkeypatch.setattr(su, "shipped_policy_path", lambda model: tmp_path / f"{model}-sparseupdate.json")
    assert _plan(bb, eps, {"derived_policy": str(tmp_path)}).extra["policy_source"] == "structural fallback"
    assert _plan(bb, eps, {}).extra["policy_source"] == "structural fallback"
    # a shipped zoo/<model>-sparseupdate.json is found without any option
    monkeypatch.setattr(su, "shipped_policy_path", lambda model: path)
    assert _plan(bb, eps, {}).extra["policy_source"] == f"derived ({path})"
    # fit() trains with it and reports the same source
    m = make_method("sparseupdate", bb, AdaptConfig(iterations=1, resolution=RES, lr=1e-3,
                                                     options={"policy": str(path)}))
    m.fit(eps[0][0], eps[0][1])
    assert m.report.extra["policy_source"] == f"given ({path})" and m.report.measured_saved_bytes > 0


def test_policy_of_another_model_or_malformed_is_refused(setup, policy_file, tmp_path):
    bb, eps = setup
    p, _ = policy_file
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**p, "model": "mcunet-5fps"}))
    for options in ({"policy": str(other)}, {"derived_policy": str(other)}):
        with pytest.raises(ValueError, match="mcunet-5fps.*not 'tiny-test'"):
            _plan(bb, eps, options)
    with pytest.raises(FileNotFoundError):
        _plan(bb, eps, {"derived_policy": str(tmp_path / "missing.json")})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        _plan(bb, eps, {"policy": str(bad)})
    with pytest.raises(ValueError, match="n_bias"):
        _plan(bb, eps, {"policy": {"ratios": {}}})


def test_published_policy_comes_before_a_derived_one(tmp_path, policy_file):
    p, _ = policy_file
    mc = build_backbone("mcunet-5fps").eval()
    derived = tmp_path / "mcunet-5fps-sparseupdate.json"
    derived.write_text(json.dumps({**p, "model": "mcunet-5fps"}))
    x = torch.randn(2, 3, RES, RES)
    m = make_method("sparseupdate", mc, AdaptConfig(resolution=RES, options={"derived_policy": str(tmp_path)}))
    assert m.plan(x, torch.tensor([0, 1])).extra["policy_source"] == "published 99 KB"


# --- the CLI --------------------------------------------------------------------------------------

def _folder_source(root, classes=10, per_class=3):
    """A class-per-folder source: every 5th class (2 of 10) is held out as validation classes."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        d = root / f"c{c:02d}"
        d.mkdir(parents=True)
        colour = rng.integers(0, 256, 3)
        for i in range(per_class):
            a = (colour + rng.integers(-30, 30, (12, 12, 3))).clip(0, 255).astype("uint8")
            Image.fromarray(a).save(d / f"{i}.png")
    return root


CLI = ["sparseupdate-policy", "--model", "tiny-test", "--checkpoint", "random", "--resolution", str(RES),
       "--episodes", "1", "--ways", "5", "--shots", "1", "--queries", "1", "--iterations", "2",
       "--bias-blocks", "1-2", "--memory-budget", "40KB", "--quiet"]


def test_cli_writes_the_policy(tmp_path, capsys):
    data = _folder_source(tmp_path / "src")
    out = tmp_path / "p.json"
    assert main(CLI + ["--data", str(data), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    p = json.loads(out.read_text())
    assert p["model"] == "tiny-test" and p["resolution"] == RES and p["memory_budget"] == 40 * 1024
    assert p["memory_bytes"] <= 40 * 1024 and f"{p['memory_bytes']} B" in text and str(out) in text
    w = p["derived_with"]
    assert w["split"] == "val" and w["ways"] == 2 and w["dataset"].endswith(":val")   # 2 held-out classes
    assert not [f for f in tmp_path.iterdir() if f.name.endswith(".tmp")]
    # the method reads what the CLI wrote
    bb = build_backbone("tiny-test").eval()
    rep = _plan(bb, _episodes(1), {"policy": str(out)})
    assert rep.extra["policy_source"] == f"given ({out})"


def test_cli_errors_leave_nothing_half_written(tmp_path, capsys):
    data = _folder_source(tmp_path / "src")
    out = tmp_path / "p.json"
    out.write_text("previous")
    assert main(CLI[:-3] + ["--memory-budget", "1KB", "--quiet", "--data", str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "too small" in err and "at least" in err
    assert out.read_text() == "previous" and len(list(tmp_path.iterdir())) == 2
    assert main(CLI + ["--data", str(data), "--out", str(tmp_path / "nope" / "p.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    few = _folder_source(tmp_path / "few", classes=4)
    assert main(CLI + ["--data", str(few), "--out", str(out)]) == 2
    assert "validation classes" in capsys.readouterr().err
    assert main(CLI + ["--data", str(data), "--out", str(out), "--episodes", "0"]) == 2
    assert out.read_text() == "previous"


def test_structural_fallback_refuses_a_budget_its_biases_exceed(setup, monkeypatch, tmp_path):
    bb, eps = setup
    monkeypatch.setattr(su, "shipped_policy_path", lambda model: tmp_path / f"{model}-sparseupdate.json")
    with pytest.raises(ValueError, match=r"too small .* at least \d+ B"):
        _plan(bb, eps, {}, memory_budget=100)


def test_cli_passes_a_policy_to_adapt_and_embeds_it_in_eval_runs(policy_file, tmp_path):
    from tinytrain.cli import build_parser
    from tinytrain.cli.evaluate import config_from_args
    p, path = policy_file
    args = build_parser().parse_args(["eval", "--model", "tiny-test", "--checkpoint", "random", "--resolution",
                                      str(RES), "--methods", "none,sparseupdate", "--sparseupdate-policy", str(path),
                                      "--out", str(tmp_path / "run")])
    variants = {v.method: v for v in config_from_args(args).variants}
    assert variants["sparseupdate"].options["policy"] == {"n_bias": p["n_bias"], "ratios": p["ratios"]}
    assert variants["none"].options == {}
    bad = build_parser().parse_args(["eval", "--model", "mcunet-5fps", "--methods", "sparseupdate",
                                     "--sparseupdate-policy", str(path)])
    with pytest.raises(ValueError, match="not 'mcunet-5fps'"):
        config_from_args(bad)
