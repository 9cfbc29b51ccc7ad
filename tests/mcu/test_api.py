"""The API of tinytrain.h on an exported tree (built as a shared library with the host gcc)."""
from __future__ import annotations

import ctypes
import json
import subprocess

import numpy as np
import pytest
import torch

from tinytrain.deploy.adapted import load_adapted
from tinytrain.mcu import build
from tinytrain.mcu.reference import to_input
from tinytrain.models.head import class_prototypes

from .conftest import frames

FP = ctypes.POINTER(ctypes.c_float)
U8P = ctypes.POINTER(ctypes.c_uint8)


@pytest.fixture
def runtime(tiny_model, tmp_path):
    from tinytrain.cli import main
    assert main(["export", "--model-dir", str(tiny_model), "--format", "c", "--out", str(tmp_path / "c")]) == 0
    lib = tmp_path / "libtt.so"
    subprocess.run([build.host_compiler(), *build.COMMON_FLAGS, "-Werror", "-shared", "-fPIC", "-o", str(lib),
                    *map(str, sorted((tmp_path / "c").glob("*.c"))), "-lm"], check=True, capture_output=True)
    tt = ctypes.CDLL(str(lib))
    tt.tt_train_step.restype = ctypes.c_float
    tt.tt_input_buffer.restype = U8P
    tt.tt_arena_bytes.restype = ctypes.c_uint32
    meta = json.loads((tmp_path / "c" / "tt_export.json").read_text())
    tt.tt_init()
    return tt, meta, load_adapted(tiny_model)


def u8(img: np.ndarray):
    return np.ascontiguousarray(img).ctypes.data_as(U8P)


def arena(tt, meta) -> np.ndarray:
    n = meta["memory_plan"]["arena_floats"]
    return np.ctypeslib.as_array((ctypes.c_float * n).in_dll(tt, "tt_arena"))


def test_sizes_and_bad_arguments(runtime):
    tt, meta, _ = runtime
    assert (tt.tt_resolution(), tt.tt_num_classes(), tt.tt_feature_dim()) == (32, 3, 32)
    assert tt.tt_arena_bytes() == meta["arena_bytes"]
    img = frames(1, 32, 3)[0][0]
    assert tt.tt_train_step(u8(img), 3) == -1.0 and tt.tt_train_step(u8(img), -1) == -1.0
    assert tt.tt_prototypes_add(u8(img), 7) == -1
    protos = np.zeros((2, 32), np.float32)
    assert tt.tt_set_prototypes(protos.ctypes.data_as(FP), 2) == -1
    # the frame slot lies inside the arena
    base = ctypes.addressof(ctypes.c_float.in_dll(tt, "tt_arena"))
    slot = ctypes.cast(tt.tt_input_buffer(), ctypes.c_void_p).value
    assert base <= slot and slot + 32 * 32 * 3 <= base + meta["arena_bytes"]


def test_predict_with_set_prototypes_matches_pytorch(runtime):
    tt, meta, adapted = runtime
    imgs, _ = frames(4, 32, 3, seed=3)
    protos = torch.randn(3, 32, generator=torch.Generator().manual_seed(5))
    assert tt.tt_set_prototypes(protos.numpy().ctypes.data_as(FP), 3) == 0
    with torch.no_grad():
        want = adapted.predictor.head(adapted.predictor.backbone(to_input(imgs)), protos).numpy()
    for img, row in zip(imgs, want):
        logits = np.zeros(3, np.float32)
        cls = tt.tt_predict(u8(img), logits.ctypes.data_as(FP))
        np.testing.assert_allclose(logits, row, rtol=1e-5, atol=1e-5)
        assert cls == int(row.argmax())
    assert tt.tt_predict(u8(imgs[0]), None) == int(want[0].argmax())


def test_update_prototypes_are_class_means_and_report_missing_classes(runtime):
    tt, meta, adapted = runtime
    imgs, labels = frames(5, 32, 3, seed=4)
    keep = [np.ascontiguousarray(im) for im in imgs]    # the pointers below point into these
    ptrs = (U8P * 5)(*[k.ctypes.data_as(U8P) for k in keep])
    assert tt.tt_update_prototypes(ptrs, (ctypes.c_int * 5)(*labels.tolist()), 5) == 0
    with torch.no_grad():
        want = class_prototypes(adapted.predictor.backbone(to_input(imgs)), torch.as_tensor(labels), 3).numpy()
    at = meta["memory_plan"]["globals"]["protos"]
    got = arena(tt, meta)[at:at + 3 * 32].reshape(3, 32)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # a class without an image: end() says so
    tt.tt_prototypes_begin()
    assert tt.tt_prototypes_add(keep[0].ctypes.data_as(U8P), 0) == 0
    assert tt.tt_prototypes_end() == -1
