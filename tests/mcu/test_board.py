"""On the emulated Cortex-M7 (QEMU mps2-an500): skipped with a reason where the cross toolchain is absent."""
from __future__ import annotations

import json

import pytest

from tinytrain.cli import main
from tinytrain.mcu import build

from .conftest import frames, write_folder

TOOLS = build.cross_tools()
needs_board = pytest.mark.skipif(TOOLS is None, reason="needs gcc-arm-none-eabi, libnewlib-arm-none-eabi and "
                                 f"qemu-system-arm: {build.INSTALL_HINT}")


@needs_board
def test_bench_mcu_measures_the_emulated_board(tiny_model, tmp_path, capsys):
    train, labels = frames(6, 32, 3)
    test, test_labels = frames(3, 32, 3, seed=1)
    support = write_folder(tmp_path / "support", train, labels, ["a", "b", "c"])
    query = write_folder(tmp_path / "query", test, test_labels, ["a", "b", "c"])
    assert main(["bench", "mcu", "--model-dir", str(tiny_model), "--support", str(support), "--query", str(query),
                 "--epochs", "2", "--out", str(tmp_path / "work"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    for key in ("total_ram_bytes", "arena_bytes", "predicted_arena_bytes", "stack_bytes", "flash_bytes",
                "instructions_per_step", "predictions_equal_host"):
        assert key in r
    assert r["predictions_equal_host"] is True and r["predictions_equal_pytorch"] is True
    assert r["logits_max_rel_diff_pytorch"] <= 1e-4 and r["weights_max_rel_diff_pytorch"] <= 1e-4
    assert abs(r["arena_bytes"] / r["predicted_arena_bytes"] - 1) <= 0.10
    # QEMU's mps2 core clock is 25 MHz and -icount shift=0 makes one instruction one virtual ns
    assert r["instructions_per_tick"] == pytest.approx(40.0, rel=1e-3)
    assert 0 < r["stack_bytes"] < r["stack_reserved_bytes"] and r["heap_bytes"] == 0
    assert r["total_ram_bytes"] == r["data_bytes"] + r["bss_bytes"] + r["stack_bytes"]
    assert r["arena_bytes"] <= r["bss_bytes"]
    assert r["images"]["steps"] == 12 and r["instructions_per_step"] > r["instructions_per_prediction"] > 0
    sizes = build.elf_sizes(TOOLS, tmp_path / "work" / "bench" / "bench-m7.elf")
    assert r["flash_bytes"] == sizes.flash_bytes and ".bench_data" in sizes.sections   # images kept apart


def test_bench_mcu_without_the_cross_toolchain_says_how_to_install_it(tiny_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))          # no arm-none-eabi-gcc, no qemu-system-arm
    assert main(["bench", "mcu", "--model-dir", str(tiny_model)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tinytrain bench mcu: error:") and "apt-get install" in err and "gcc-arm-none-eabi" in err


@needs_board
def test_bench_mcu_int8_is_bit_identical_on_the_board(tiny_model, tmp_path, capsys):
    train, labels = frames(6, 32, 3)
    test, test_labels = frames(3, 32, 3, seed=1)
    support = write_folder(tmp_path / "support", train, labels, ["a", "b", "c"])
    query = write_folder(tmp_path / "query", test, test_labels, ["a", "b", "c"])
    assert main(["bench", "mcu", "--model-dir", str(tiny_model), "--support", str(support), "--query", str(query),
                 "--precision", "int8", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["precision"] == "int8" and r["int8_layers"] == 6 and r["calibration_images"] == 6
    assert r["prefix_equal_pytorch"] is True and r["prefix_equal_host"] is True
    assert r["predictions_equal_host"] is True and r["logits_max_rel_diff_host"] == 0.0
    assert r["predictions_equal_pytorch"] is True and r["weights_max_rel_diff_pytorch"] <= 1e-4
    assert r["arena_bytes"] == r["predicted_arena_bytes"]
    # the constants: the cost model's estimate covers all but libm's tables (about 6.2 KiB for expf and pow),
    # the layer table (180 B a layer on the M7) and the class names
    extra = r["constant_bytes"] - r["predicted_flash_constants_bytes"]
    assert 0 <= extra <= 8192 + 256 * 16
