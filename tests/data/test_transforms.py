import numpy as np
import pytest
import torch
from PIL import Image

from tinytrain.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, eval_transform, finetune_augment,
                                       train_transform)


def test_eval_transform_resize_crop_normalise():
    a = np.zeros((20, 40, 3), dtype=np.uint8)
    a[:, 10:30] = 255  # the centre half is white: after resize to 16 high and centre crop, all white
    x = eval_transform(16)(Image.fromarray(a))
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    white = torch.tensor([(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)])
    assert torch.allclose(x[:, 8, 8], white, atol=1e-4)
    g = eval_transform(8)(Image.fromarray(np.full((8, 8), 128, dtype=np.uint8), "L"))
    assert g.shape == (3, 8, 8)
    with pytest.raises(ValueError, match="resolution"):
        eval_transform(3)


def test_train_transform_seeded():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 30, 3), dtype=np.uint8))
    a = [train_transform(16, seed=1)(img) for _ in range(2)]
    assert torch.equal(a[0], a[1])
    t = train_transform(16, seed=1)
    assert not torch.equal(t(img), t(img))  # advances its own generator
    assert t(img).shape == (3, 16, 16)


def test_finetune_augment():
    x = torch.randn(6, 3, 16, 16)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    y1, y2 = finetune_augment(x, g1), finetune_augment(x, g2)
    assert torch.equal(y1, y2) and y1.shape == x.shape and not y1.requires_grad
    assert torch.equal(finetune_augment(x, torch.Generator().manual_seed(0), p=0.0), x)
    # translation pads with zeros: a constant image gains zero borders after colour ops on most seeds
    ones = torch.ones(4, 3, 16, 16, requires_grad=True)
    outs = [finetune_augment(ones, torch.Generator().manual_seed(s), p=1.0) for s in range(5)]
    assert any((o == 0).any() for o in outs)
    with pytest.raises(ValueError, match="batch"):
        finetune_augment(torch.randn(3, 8, 8), torch.Generator())
