"""Training augmentation: train only, seeded by torch's generator, vectorised per batch."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from archsearch.data import load_task_data
from archsearch.data.augment import _crop_params, light, pad_of, resolve_augment, standard
from archsearch.errors import UserError

RGB = dict(input_size=(3, 16, 16), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))


@pytest.fixture
def spec(tmp_path) -> str:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (60, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "r.npz", x=x, y=np.arange(60) % 3)
    return str(tmp_path / "r.npz")


def plain(part, idx):
    """Normalised images with no augmentation, straight from the stored uint8."""
    return part.normalise(part.images[idx])


@pytest.mark.parametrize("augment", ["light", "standard"])
def test_train_only_and_seeded(spec, augment):
    td = load_task_data(spec, **RGB, augment=augment)
    assert td.augment == augment and td.train.augment == augment
    assert td.val.augment == td.test.augment == "none"
    idx = list(range(len(td.train)))
    torch.manual_seed(3)
    a, ya = td.train.batch(idx)
    torch.manual_seed(3)
    b, yb = td.train.batch(idx)
    torch.manual_seed(4)
    c, _ = td.train.batch(idx)
    assert torch.equal(a, b) and torch.equal(ya, yb) and not torch.equal(a, c)
    assert torch.equal(ya, td.train.labels)
    assert a.shape == (len(idx), 3, 16, 16)
    changed = (a - plain(td.train, idx)).flatten(1).abs().amax(1) > 1e-5
    assert changed.float().mean() > 0.5  # most images moved (a few draws are the identity)
    for part in (td.val, td.test):
        every = list(range(len(part)))
        torch.manual_seed(3)
        v1, _ = part.batch(every)
        v2, _ = part.batch(every)
        assert torch.equal(v1, v2) and torch.equal(v1, plain(part, every))


def test_none_is_identity_and_auto_is_light(spec):
    td = load_task_data(spec, **RGB, augment="none")
    idx = list(range(len(td.train)))
    assert torch.equal(td.train.batch(idx)[0], plain(td.train, idx))
    assert load_task_data(spec, **RGB).augment == "light"
    assert load_task_data("digits", input_size=(1, 8, 8), mean=0.5, std=0.5).augment == "light"
    assert resolve_augment("standard") == "standard"
    aug = load_task_data(spec, **RGB, augment="standard").train
    assert torch.equal(aug.with_augment("none").batch(idx)[0], plain(td.train, idx))


def test_light_is_a_reflected_shift():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8)
    y = light(x)
    assert y.dtype == torch.uint8 and y.shape == x.shape
    p = pad_of(16)
    assert p == 2 and pad_of(32) == 4 and pad_of(8) == 1 and pad_of(1) == 0
    padded = F.pad(x.float(), (p, p, p, p), mode="reflect")
    for i in range(len(x)):
        windows = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                   if torch.equal(padded[i, :, dy:dy + 16, dx:dx + 16], y[i].float())]
        assert windows, f"image {i} is not a window of its reflect-padded self"
    torch.manual_seed(1)
    shifts = light(torch.arange(16.0).view(1, 1, 1, 16).expand(400, 1, 1, 16))[:, 0, 0, 8]
    assert set(shifts.long().tolist()) == set(range(6, 11))  # every offset -2..2 drawn


def test_standard_crops_and_flips():
    torch.manual_seed(0)
    top, left, h, w = _crop_params(5000, 32, 32)
    assert torch.all((h >= 1) & (h <= 32) & (w >= 1) & (w <= 32))
    assert torch.all((top >= 0) & (top + h <= 32) & (left >= 0) & (left + w <= 32))
    area = h * w / 1024
    assert area.min() > 0.2 and area.max() <= 1 and (area < 0.5).any()
    ratio = w / h
    assert ratio.min() > 0.6 and ratio.max() < 1.6  # 3/4..4/3 up to rounding of the sides
    # a ramp rising left to right: flipped images fall
    ramp = torch.linspace(0, 255, 32).view(1, 1, 1, 32).expand(400, 1, 32, 32)
    out = standard(ramp)
    assert out.shape == (400, 1, 32, 32) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 255
    rising = out[:, 0, 16, -1] > out[:, 0, 16, 0]
    assert 0.4 < rising.float().mean() < 0.6


def test_dataloader_batches_augmented(spec):
    td = load_task_data(spec, **RGB, augment="light")
    torch.manual_seed(0)
    x, y = next(iter(DataLoader(td.train, batch_size=8, shuffle=False)))
    assert x.shape == (8, 3, 16, 16) and y.tolist() == td.train.labels[:8].tolist()


@pytest.mark.parametrize("bad", ["heavy", "", "Light", None])
def test_bad_augment(spec, bad):
    with pytest.raises(UserError) as info:
        load_task_data(spec, **RGB, augment=bad)
    msg = str(info.value)
    assert msg.startswith(f"--augment {bad!r} is not one of none, light, standard, auto")
    assert "\n" not in msg
