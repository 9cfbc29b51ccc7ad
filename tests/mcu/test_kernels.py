"""Each C kernel against PyTorch, one by one (the kernels compiled with the host gcc, called via ctypes)."""
from __future__ import annotations

import ctypes

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tinytrain.models.head import CosineClassifier

FP = ctypes.POINTER(ctypes.c_float)
AXIS = {"out": 0, "in": 1}


class Slice(ctypes.Structure):
    _fields_ = [("axis", ctypes.c_int), ("n", ctypes.c_int), ("sel", ctypes.POINTER(ctypes.c_uint16)),
                ("slot", ctypes.POINTER(ctypes.c_int16)), ("w", FP),
                ("q", ctypes.POINTER(ctypes.c_int8)), ("q_scale", FP)]


def ptr(a: np.ndarray):
    assert a.flags["C_CONTIGUOUS"]
    return a.ctypes.data_as(FP)


def f32(t) -> np.ndarray:
    return np.ascontiguousarray(t.detach().numpy() if isinstance(t, torch.Tensor) else t, dtype=np.float32)


def make_slice(axis: str, channels, size: int, trained: np.ndarray | None):
    """A tt_slice plus the arrays it points into (kept alive by the caller)."""
    sel = np.array(channels, dtype=np.uint16)
    slot = np.full(size, -1, dtype=np.int16)
    slot[sel] = np.arange(len(sel))
    s = Slice(AXIS[axis], len(sel), sel.ctypes.data_as(ctypes.POINTER(ctypes.c_uint16)),
              slot.ctypes.data_as(ctypes.POINTER(ctypes.c_int16)), ptr(trained) if trained is not None else None)
    return s, (sel, slot, trained)


def close(got, want, tol=2e-6):
    got = np.asarray(got)
    want = want.detach().numpy() if isinstance(want, torch.Tensor) else np.asarray(want)
    assert got.shape == want.shape
    scale = max(float(np.abs(want).max()), 1e-12)
    assert float(np.abs(got - want).max()) <= tol * scale, f"max diff {np.abs(got - want).max()} at scale {scale}"


g = torch.Generator().manual_seed(0)


def randn(*shape):
    return torch.randn(*shape, generator=g)


# ---------------------------------------------------------------------------------------------------
# 1x1 conv

@pytest.mark.parametrize("axis", ["out", "in"])
def test_pointwise_forward_and_backward_with_a_trained_slice(kernels, axis):
    cin, cout, h = 6, 5, 7
    hw = h * h
    x, w = randn(1, cin, h, h), randn(cout, cin, 1, 1)
    channels = [0, 3, 4] if axis == "out" else [1, 5]
    size = cout if axis == "out" else cin
    # the working weight: the slice holds values different from the frozen array (as after training)
    w_work = w.clone()
    if axis == "out":
        w_work[channels] += 0.5
        trained = f32(w_work[channels].reshape(len(channels), cin))
    else:
        w_work[:, channels] += 0.5
        trained = f32(w_work[:, channels].reshape(cout, len(channels)))
    s, keep = make_slice(axis, channels, size, trained)
    frozen = f32(w.reshape(cout, cin))

    y = np.zeros((cout, hw), np.float32)
    kernels.tt_pw_forward(ptr(f32(x)), ptr(y), cin, cout, hw, ptr(frozen), ctypes.byref(s))
    xr = x.clone().requires_grad_(True)
    wr = w_work.clone().requires_grad_(True)
    ref = F.conv2d(xr, wr)
    close(y, ref.reshape(cout, hw))

    gy = randn(1, cout, h, h)
    ref.backward(gy)
    gx = np.zeros((cin, hw), np.float32)
    kernels.tt_pw_backward_input(ptr(f32(gy)), ptr(gx), cin, cout, hw, ptr(frozen), ctypes.byref(s))
    close(gx, xr.grad.reshape(cin, hw))

    saved = f32(x.reshape(cin, hw)) if axis == "out" else f32(x[0, channels].reshape(len(channels), hw))
    gw = np.zeros_like(trained)
    kernels.tt_pw_backward_weight(ptr(f32(gy)), ptr(saved), ptr(gw), cin, cout, hw, ctypes.byref(s))
    want = wr.grad[channels] if axis == "out" else wr.grad[:, channels]
    close(gw, want.reshape(gw.shape))


def test_pointwise_all_frozen_reads_only_the_frozen_array(kernels):
    cin, cout, h = 4, 3, 5
    x, w = randn(1, cin, h, h), randn(cout, cin, 1, 1)
    s = Slice(0, 0, None, None, None)
    y = np.zeros((cout, h * h), np.float32)
    kernels.tt_pw_forward(ptr(f32(x)), ptr(y), cin, cout, h * h, ptr(f32(w.reshape(cout, cin))), ctypes.byref(s))
    close(y, F.conv2d(x, w).reshape(cout, -1))


# ---------------------------------------------------------------------------------------------------
# depthwise conv

@pytest.mark.parametrize("k,stride,h,in_place", [(3, 1, 8, False), (3, 2, 8, True), (5, 1, 7, True),
                                                 (7, 2, 9, False), (5, 2, 4, True)])
def test_depthwise_forward_and_backward(kernels, k, stride, h, in_place):
    c = 6
    h_out = (h + 2 * (k // 2) - k) // stride + 1
    x, w = randn(1, c, h, h), randn(c, 1, k, k)
    channels = [1, 2, 5]
    w_work = w.clone()
    w_work[channels] *= -1.5
    trained = f32(w_work[channels].reshape(len(channels), k * k))
    s, keep = make_slice("out", channels, c, trained)
    frozen = f32(w.reshape(c, k * k))

    xr = x.clone().requires_grad_(True)
    wr = w_work.clone().requires_grad_(True)
    ref = F.conv2d(xr, wr, None, stride, k // 2, 1, c)
    assert ref.shape[-1] == h_out
    buf = f32(x.reshape(c, h * h)).copy()
    tmp = np.zeros(h_out * h_out, np.float32)
    if in_place:
        kernels.tt_dw_forward(ptr(buf), ptr(buf), ptr(tmp), c, h, h_out, k, stride, ptr(frozen), ctypes.byref(s))
        y = buf.ravel()[:c * h_out * h_out]
    else:
        y = np.zeros(c * h_out * h_out, np.float32)
        kernels.tt_dw_forward(ptr(buf), ptr(y), None, c, h, h_out, k, stride, ptr(frozen), ctypes.byref(s))
    close(y, ref.reshape(-1))

    gy = randn(*ref.shape)
    ref.backward(gy)
    gx = np.zeros((c, h * h), np.float32)
    kernels.tt_dw_backward_input(ptr(f32(gy)), ptr(gx), c, h, h_out, k, stride, ptr(frozen), ctypes.byref(s))
    close(gx, xr.grad.reshape(c, -1))
    saved = f32(x[0, channels].reshape(len(channels), h * h))
    gw = np.zeros_like(trained)
    kernels.tt_dw_backward_weight(ptr(f32(gy)), ptr(saved), ptr(gw), h, h_out, k, stride, ctypes.byref(s))
    close(gw, wr.grad[channels].reshape(gw.shape))


# ---------------------------------------------------------------------------------------------------
# the stem's general conv

@pytest.mark.parametrize("k,stride,h", [(3, 2, 9), (3, 1, 6), (5, 2, 8)])
def test_general_conv_forward(kernels, k, stride, h):
    cin, cout = 3, 4
    x, w = randn(1, cin, h, h), randn(cout, cin, k, k)
    ref = F.conv2d(x, w, None, stride, k // 2)
    h_out = ref.shape[-1]
    y = np.zeros(cout * h_out * h_out, np.float32)
    kernels.tt_conv_forward(ptr(f32(x)), ptr(y), cin, cout, h, h_out, k, stride, ptr(f32(w)))
    close(y, ref.reshape(-1))


# ---------------------------------------------------------------------------------------------------
# affine (folded BN), ReLU6, residual, pooling

def test_affine_forward_and_backward(kernels):
    c, hw = 5, 12
    x, s, t = randn(1, c, 3, 4), randn(c), randn(c)
    xr, tr = x.clone().requires_grad_(True), t.clone().requires_grad_(True)
    ref = torch.addcmul(tr[None, :, None, None], xr, s[None, :, None, None])
    y = f32(x.reshape(c, hw)).copy()
    kernels.tt_affine_forward(ptr(y), ptr(f32(s)), ptr(f32(t)), c, hw)
    close(y, ref.reshape(c, hw), tol=1e-6)       # torch may fuse the multiply-add: within an ulp
    gy = randn(1, c, 3, 4)
    ref.backward(gy)
    gx = np.zeros((c, hw), np.float32)
    kernels.tt_affine_backward(ptr(f32(gy)), ptr(gx), ptr(f32(s)), c, hw)
    close(gx, xr.grad.reshape(c, hw), tol=0)
    gshift = np.full(c, 0.25, np.float32)        # overwritten: one step's gradient, nothing accumulated
    kernels.tt_affine_backward_shift(ptr(f32(gy)), ptr(gshift), c, hw)
    close(gshift, tr.grad)


def test_relu6_keeps_one_bit_per_element_and_masks_the_gradient(kernels):
    n = 77                                       # not a multiple of 32
    x = (randn(n) * 5).numpy().astype(np.float32)
    x[:3] = [0.0, 6.0, 3.0]                      # the edges: no gradient at exactly 0 or 6
    xr = torch.from_numpy(x.copy()).requires_grad_(True)
    ref = torch.clamp(xr, 0, 6)
    y = x.copy()
    mask = np.full((n + 31) // 32, 0xFFFFFFFF, np.uint32)   # stale bits must be cleared
    kernels.tt_relu6_forward_mask(ptr(y), mask.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)), n)
    close(y, ref.detach(), tol=0)
    bits = np.unpackbits(mask.view(np.uint8), bitorder="little")[:n].astype(bool)
    assert (bits == ((x > 0) & (x < 6))).all()
    g = randn(n).numpy().astype(np.float32)
    ref.backward(torch.from_numpy(g.copy()))
    want = g * ((x > 0) & (x < 6))               # ReLU6Mask's rule in the sparse engine
    kernels.tt_relu6_backward(ptr(g), mask.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)), n)
    close(g, want, tol=0)
    y2 = x.copy()
    kernels.tt_relu6_forward(ptr(y2), n)
    close(y2, ref.detach(), tol=0)


def test_residual_add_forward_and_backward(kernels):
    a, b = f32(randn(50)), f32(randn(50))
    y = a.copy()
    kernels.tt_residual_forward(ptr(y), ptr(b), 50)
    close(y, torch.from_numpy(b) + torch.from_numpy(a), tol=0)
    gx = a.copy()
    kernels.tt_residual_backward(ptr(gx), ptr(b), 50)
    close(gx, a + b, tol=0)


def test_global_pool_forward_and_backward(kernels):
    c, h = 6, 5
    x = randn(1, c, h, h).requires_grad_(True)
    ref = x.mean((2, 3))
    f = np.zeros(c, np.float32)
    kernels.tt_pool_forward(ptr(f32(x.reshape(c, -1))), ptr(f), c, h * h)
    close(f, ref[0])
    gf = randn(1, c)
    ref.backward(gf)
    gy = np.zeros((c, h * h), np.float32)
    kernels.tt_pool_backward(ptr(f32(gf)), ptr(gy), c, h * h)
    close(gy, x.grad.reshape(c, -1))


# ---------------------------------------------------------------------------------------------------
# the cosine-prototype head and its cross-entropy

@pytest.mark.parametrize("label", [0, 3])
def test_head_logits_loss_and_feature_gradient(kernels, label):
    k, d = 4, 20
    head = CosineClassifier(7.5, 0.2)
    f, protos = randn(1, d).requires_grad_(True), randn(k, d)
    logits_ref = head(f, protos)
    loss_ref = F.cross_entropy(logits_ref, torch.tensor([label]))
    loss_ref.backward()
    logits = np.zeros(k, np.float32)
    kernels.tt_head_forward(ptr(f32(f[0])), ptr(f32(protos)), k, d, ctypes.c_float(7.5), ctypes.c_float(0.2),
                            ptr(logits))
    close(logits, logits_ref.detach()[0])
    gf = np.zeros(d, np.float32)
    kernels.tt_head_backward.restype = ctypes.c_float
    loss = kernels.tt_head_backward(ptr(f32(f[0])), ptr(f32(protos)), ptr(logits), k, d, ctypes.c_float(7.5),
                                    label, ptr(gf))
    loss_ref = float(loss_ref.detach())
    assert abs(loss - loss_ref) <= 1e-5 * max(1.0, loss_ref)
    close(gf, f.grad[0], tol=1e-5)


# ---------------------------------------------------------------------------------------------------
# optimizers

@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_optimizer_steps_match_torch(kernels, optimizer):
    n, lr = 40, 1e-2
    p0 = randn(n)
    p = torch.nn.Parameter(p0.clone())
    opt = torch.optim.Adam([p], lr=lr) if optimizer == "adam" else torch.optim.SGD([p], lr=lr)
    pc, m, v = f32(p0).copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)
    for step in range(1, 6):
        grad = randn(n) * (10.0 ** -step)        # shrinking gradients: the bias corrections matter
        p.grad = grad.clone()
        opt.step()
        if optimizer == "adam":
            kernels.tt_adam_step(ptr(pc), ptr(f32(grad)), ptr(m), ptr(v), n, ctypes.c_double(lr),
                                 ctypes.c_double(0.9), ctypes.c_double(0.999), ctypes.c_double(1e-8), step)
        else:
            kernels.tt_sgd_step(ptr(pc), ptr(f32(grad)), n, ctypes.c_double(lr))
        close(pc, p.detach(), tol=1e-6)
