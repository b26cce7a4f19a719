"""Training augmentation, applied to whole batches at once with per-image random parameters.

``light``: pad each side by 1/8 of the size (4 px at 32x32, at least 1 px) by *reflection* and crop
a random (H, W) window back out -- the CIFAR recipe, but reflecting instead of padding with zeros,
so that white-background images (text, scans) get no black frame and no image gets an edge it never
had. No flips: safe for digits and text. Done on the uint8 images with two ``gather`` calls.

``standard``: torchvision's ``RandomResizedCrop(scale=(0.25, 1), ratio=(3/4, 4/3))`` back to
(H, W) (bilinear) plus a horizontal flip with p = 0.5, for natural images; one
``affine_grid``/``grid_sample`` call per batch.

``none``: the images as they are. ``auto`` resolves (:func:`resolve_augment`) to ``light``.

Every draw comes from torch's global generator (in a DataLoader worker, the worker's own, which the
DataLoader seeds from the main process), so a training loop that seeds it per epoch is
reproducible. Validation and test data are never augmented.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from archsearch.errors import UserError

AUGMENTS = ("none", "light", "standard")
CHOICES = AUGMENTS + ("auto",)

SCALE = (0.25, 1.0)
RATIO = (3 / 4, 4 / 3)
_TRIES = 10  # as torchvision's RandomResizedCrop.get_params


def check_augment(augment: str) -> str:
    """``augment`` if it is a known name, else a :class:`UserError` naming ``--augment``."""
    if augment not in CHOICES:
        raise UserError(f"--augment {augment!r} is not one of {', '.join(CHOICES)}; give e.g. light "
                        f"(or none to train on the images as they are)")
    return augment


def resolve_augment(augment: str) -> str:
    """The augmentation ``augment`` names; ``auto`` is ``light`` for every source: the built-in
    data (digits and clothes: no flips) and users' folders and files alike, since archsearch cannot
    tell whether they hold text, digits or natural images and ``light`` is safe for all of them.
    Natural images do better with ``standard``, which a user asks for by name."""
    check_augment(augment)
    return "light" if augment == "auto" else augment


def pad_of(n: int) -> int:
    """Light augmentation's padding for a side of ``n`` pixels: n // 8, at least 1 (0 for n = 1)."""
    return 0 if n < 2 else max(1, n // 8)


def _reflect(i: torch.Tensor, n: int) -> torch.Tensor:
    """Reflect positions in [-(n-1), 2n-2] into [0, n-1] (no edge repeat, as ``F.pad`` reflect)."""
    i = i.abs()
    return torch.where(i > n - 1, 2 * (n - 1) - i, i)


def light(x: torch.Tensor) -> torch.Tensor:
    """Reflect-pad by 1/8 of each side and crop a random (H, W) window, per image; keeps the dtype."""
    n, c, h, w = x.shape
    ph, pw = pad_of(h), pad_of(w)
    if n == 0 or (ph == 0 and pw == 0):
        return x
    dy = torch.randint(0, 2 * ph + 1, (n, 1))
    dx = torch.randint(0, 2 * pw + 1, (n, 1))
    rows = _reflect(dy - ph + torch.arange(h), h)  # (n, H): source row of every output row
    cols = _reflect(dx - pw + torch.arange(w), w)  # (n, W)
    x = x.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, w))
    return x.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))


def _crop_params(n: int, h: int, w: int) -> tuple[torch.Tensor, ...]:
    """Per image (top, left, height, width) of a RandomResizedCrop window, torchvision's rule:
    up to 10 draws of area and log-uniform aspect ratio, the first that fits; else the centre
    crop clipped to the ratio range."""
    area = h * w * torch.empty(n, _TRIES).uniform_(*SCALE)
    ratio = torch.exp(torch.empty(n, _TRIES).uniform_(math.log(RATIO[0]), math.log(RATIO[1])))
    cw = torch.round(torch.sqrt(area * ratio))
    ch = torch.round(torch.sqrt(area / ratio))
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = ok.to(torch.int8).argmax(dim=1, keepdim=True)
    cw, ch = cw.gather(1, first)[:, 0], ch.gather(1, first)[:, 0]
    # fallback where no draw fitted: the whole image, clipped to the allowed aspect ratios
    in_ratio = w / h
    if in_ratio < RATIO[0]:
        fw, fh = w, int(round(w / RATIO[0]))
    elif in_ratio > RATIO[1]:
        fw, fh = int(round(h * RATIO[1])), h
    else:
        fw, fh = w, h
    any_ok = ok.any(dim=1)
    cw = torch.where(any_ok, cw, torch.full_like(cw, fw))
    ch = torch.where(any_ok, ch, torch.full_like(ch, fh))
    u = torch.rand(n, 2)
    top = torch.where(any_ok, torch.floor(u[:, 0] * (h - ch + 1)), torch.full_like(ch, (h - fh) // 2))
    left = torch.where(any_ok, torch.floor(u[:, 1] * (w - cw + 1)), torch.full_like(cw, (w - fw) // 2))
    return top, left, ch, cw


def standard(x: torch.Tensor) -> torch.Tensor:
    """Random resized crop back to (H, W) plus a horizontal flip with p = 0.5; float out (0..255)."""
    n, c, h, w = x.shape
    x = x.to(torch.float32)
    if n == 0:
        return x
    top, left, ch, cw = _crop_params(n, h, w)
    flip = torch.rand(n) < 0.5
    # output pixel k samples input column left + (k + 0.5) * cw / W - 0.5 (align_corners=False),
    # the half-pixel mapping of resizing the crop to W columns; likewise for rows
    sx = cw / w
    sy = ch / h
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = torch.where(flip, -sx, sx)
    theta[:, 0, 2] = (2 * left + cw) / w - 1
    theta[:, 1, 1] = sy
    theta[:, 1, 2] = (2 * top + ch) / h - 1
    grid = F.affine_grid(theta, [n, c, h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def augment_batch(x: torch.Tensor, augment: str) -> torch.Tensor:
    """Apply ``augment`` (none, light or standard; resolved, not auto) to a (n, C, H, W) batch."""
    if augment == "none":
        return x
    if augment == "light":
        return light(x)
    if augment == "standard":
        return standard(x)
    raise ValueError(f"unknown augmentation {augment!r}; resolve 'auto' first")
