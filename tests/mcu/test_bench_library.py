"""`bench mcu` as a library (`measure_mcu` returns its result object and prints nothing) and its command lines:
`bench mcu --help` imports no torch, `tinytrain data samples` writes the sample folders."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tinytrain.mcu.bench import McuResult, McuSettings, measure_mcu

from .conftest import frames, write_folder
from .test_board import needs_board


@needs_board
def test_measure_mcu_returns_its_result_and_prints_nothing(tiny_model, tmp_path, capsys):
    train, labels = frames(6, 32, 3)
    test, test_labels = frames(3, 32, 3, seed=1)
    support = write_folder(tmp_path / "support", train, labels, ["a", "b", "c"])
    query = write_folder(tmp_path / "query", test, test_labels, ["a", "b", "c"])
    r = measure_mcu(McuSettings(model_dir=tiny_model, support=support, query=query))
    assert isinstance(r, McuResult) and r.int8 is None and r.fit is not None and r.images.train == 6
    out = r.to_dict()
    assert json.loads(json.dumps(out)) == out
    assert out["device"] == "mcu-1mb" and out["images"]["held_out"] == 3 and "int8" not in out and "fit" not in out
    assert "measured on the emulated Cortex-M7" in r.table()
    assert capsys.readouterr() == ("", "")


def test_bench_mcu_help_imports_neither_torch_nor_numpy():
    code = ("import contextlib, io, sys\nfrom tinytrain.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    try:\n        main(['bench', 'mcu', '--help'])\n    except SystemExit as e:\n        assert e.code == 0\n"
            "assert '--model-dir' in out.getvalue()\n"
            "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_data_samples_writes_the_folders_and_says_so(tmp_path):
    pytest.importorskip("skimage")
    cmd = [sys.executable, "-m", "tinytrain", "data", "samples", str(tmp_path / "img"), "--classes", "2",
           "--support", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"wrote {tmp_path / 'img' / 'support'} and {tmp_path / 'img' / 'query'}\n"
    assert sorted(p.name for p in (tmp_path / "img" / "support").iterdir()) == ["chelsea", "coffee"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)     # not into a non-empty folder
    assert proc.returncode == 2 and proc.stderr.startswith("tinytrain data samples: error: ") \
        and "is not empty" in proc.stderr
