"""Preprocessing: shorter side to scale, then a centre crop (nothing squashed)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from archsearch.data import load_task_data, resize_centre_crop
from archsearch.data.transform import centre_crop_box, resized_size

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def banded(w: int = 40, h: int = 20) -> np.ndarray:
    """An h x w RGB image: left quarter red, right quarter blue, the middle half green."""
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[:, : w // 4] = RED
    img[:, w // 4: w - w // 4] = GREEN
    img[:, w - w // 4:] = BLUE
    return img


def test_sizes_follow_torchvision():
    # Resize(int): the shorter side to the size, the longer int(size * long / short)
    assert resized_size(20, 40, (10, 10)) == (10, 20)
    assert resized_size(60, 30, (16, 16)) == (32, 16)
    assert resized_size(33, 50, (32, 32)) == (32, 48)  # int(32 * 50 / 33) = int(48.48)
    assert resized_size(100, 100, (20, 10)) == (20, 20)  # non-square target: cover it
    assert resized_size(8, 8, (8, 8)) == (8, 8)
    # CenterCrop: int(round((h - H) / 2))
    assert centre_crop_box(10, 20, (10, 10)) == (0, 5)
    assert centre_crop_box(32, 48, (32, 32)) == (0, 8)
    assert centre_crop_box(11, 10, (10, 10)) == (0, 0)  # round(0.5) = 0, as torchvision
    assert centre_crop_box(13, 10, (10, 10)) == (2, 0)  # round(1.5) = 2


def test_non_square_image_loses_its_sides(tmp_path):
    for c in ("a", "b"):
        (tmp_path / "set" / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(banded()).save(tmp_path / "set" / c / f"{i}.png")
    td = load_task_data(str(tmp_path / "set"), input_size=(3, 20, 20), mean=0, std=1,
                        augment="none")
    for part in (td.train, td.val, td.test):
        im = part.images
        assert im.shape[1:] == (3, 20, 20)
        # no resize needed (height 20 already): the crop keeps exactly the green middle half
        assert torch.equal(im, torch.tensor(GREEN, dtype=torch.uint8).view(1, 3, 1, 1).expand_as(im))
    # downscaled 2x first: still centred, the red and blue quarters gone but for the blur at the
    # band edges (antialiasing reaches a pixel or so)
    td = load_task_data(str(tmp_path / "set"), input_size=(3, 10, 10), mean=0, std=1,
                        augment="none")
    im = td.test.images[0].to(torch.int64)
    assert torch.all(im[1, :, 1:-1] == 255) and torch.all(im[0, :, 1:-1] == 0)
    assert torch.all(im[2, :, 1:-1] == 0)
    assert im[0].sum() == im[2].sum()  # symmetric: as much red at the left as blue at the right


def test_tall_image_and_non_square_target(tmp_path):
    img = np.moveaxis(banded(40, 20), 0, 1).copy()  # 40 tall, 20 wide: bands top to bottom
    x = np.stack([img] * 4)
    np.savez(tmp_path / "t.npz", x=x, y=[0, 1, 0, 1])
    td = load_task_data(str(tmp_path / "t.npz"), input_size=(3, 20, 20), mean=0, std=1,
                        augment="none", test_fraction=0.5)
    assert torch.all(td.test.images[:, 1] == 255) and torch.all(td.test.images[:, 0] == 0)
    # a wide (H, W) = (10, 20) target from the 40 x 20 image: width decides, 40 x 20 kept, crop
    # rows 15..25 (all green)
    td = load_task_data(str(tmp_path / "t.npz"), input_size=(3, 10, 20), mean=0, std=1,
                        augment="none", test_fraction=0.5)
    assert td.test.images.shape[1:] == (3, 10, 20) and torch.all(td.test.images[:, 1] == 255)


def test_square_images_unchanged():
    rng = np.random.default_rng(0)
    t = torch.from_numpy(rng.uniform(0, 255, (3, 3, 24, 24)).astype(np.float32))
    squash = F.interpolate(t, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
    assert torch.equal(resize_centre_crop(t, (16, 16)), squash)
    assert resize_centre_crop(t, (24, 24)) is t
