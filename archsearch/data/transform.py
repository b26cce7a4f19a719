"""Bring raw images to the network's input size once, up front, as compact uint8 tensors.

Resizing every image on every epoch would dominate training time for these small data sets, so it
happens once: values scaled to 0..255, channels converted (RGB to grey by ITU-R 601 luma, as PIL's
"L"), bilinear antialiased resize of the shorter side to the target scale (aspect ratio kept) and a
centre crop to (H, W) -- for a square target exactly torchvision's ``Resize(size)`` followed by
``CenterCrop(size)``, the usual evaluation transform, so nothing is squashed -- then rounded to
uint8. Grey images stay one channel in memory even for a 3-channel network; the datasets in
:mod:`archsearch.data.dataset` repeat the channel when they hand an image out. Normalisation by
mean/std (and training augmentation) also happens there, on the fly. Data streamed from disk goes
through the very same :func:`to_uint8`, one batch at a time.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from archsearch.data.raw import Chunk

_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def resized_size(h: int, w: int, size: tuple[int, int]) -> tuple[int, int]:
    """(h', w') that an h x w image is resized to before the centre crop to ``size`` = (H, W).

    The scale is the larger of H/h and W/w, so the resized image covers (H, W) and one side fits it
    exactly; the other side is truncated as torchvision's ``Resize(int)`` does (int(H * w / h)).
    """
    th, tw = int(size[0]), int(size[1])
    if th * w >= tw * h:  # the height decides: H/h >= W/w
        return th, max(tw, (th * w) // h)
    return max(th, (tw * h) // w), tw


def centre_crop_box(h: int, w: int, size: tuple[int, int]) -> tuple[int, int]:
    """(top, left) of the centred (H, W) window in an h x w image, rounded as torchvision's
    ``CenterCrop`` (``int(round((h - H) / 2))``)."""
    return int(round((h - size[0]) / 2.0)), int(round((w - size[1]) / 2.0))


def resize_centre_crop(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Float (n, C, h, w) -> (n, C, H, W): shorter side to scale (bilinear, antialiased), then a
    centre crop. Images already (H, W) come back untouched. Also what single images to predict on
    should go through, so that they look as the training images did."""
    h, w = int(t.shape[-2]), int(t.shape[-1])
    size = (int(size[0]), int(size[1]))
    if (h, w) == size:
        return t
    rh, rw = resized_size(h, w, size)
    if (rh, rw) != (h, w):
        t = F.interpolate(t, size=(rh, rw), mode="bilinear", align_corners=False, antialias=True)
    top, left = centre_crop_box(rh, rw, size)
    return t[..., top:top + size[0], left:left + size[1]]


def _convert(x: np.ndarray, value_max: float, channels: int, size: tuple[int, int]
             ) -> torch.Tensor:
    """One same-sized (n, H, W, C) batch -> uint8 (n, C', h, w)."""
    t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).to(torch.float32)
    if value_max != 255.0:
        t = t * (255.0 / value_max)
    if channels == 1 and t.shape[1] == 3:
        t = (t * _LUMA).sum(dim=1, keepdim=True)
    t = resize_centre_crop(t, size)
    return t.round().clamp_(0, 255).to(torch.uint8)


def _convert_chunk(chunk: Chunk, value_max: float, channels: int, size: tuple[int, int]
                   ) -> list[torch.Tensor]:
    """Convert a chunk; a list of differently sized images is grouped by shape first."""
    if isinstance(chunk, np.ndarray):
        return [_convert(chunk, value_max, channels, size)]
    out: list[torch.Tensor | None] = [None] * len(chunk)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(chunk):
        groups.setdefault(img.shape, []).append(i)
    for members in groups.values():
        done = _convert(np.stack([chunk[i] for i in members]), value_max, channels, size)
        for i, t in zip(members, done):
            out[i] = t
    if len({t.shape[0] for t in out}) == 1:  # type: ignore[union-attr]
        return [torch.stack(out)]  # type: ignore[arg-type]
    # grey (1-channel) and colour images mixed: keep them apart until to_uint8 expands the grey
    return [t.unsqueeze(0) for t in out]  # type: ignore[union-attr]


def to_uint8(chunks: Iterable[Chunk], value_max: float, channels: int, size: tuple[int, int]
             ) -> torch.Tensor:
    """Resize and channel-convert all chunks into one uint8 (N, C, h, w) tensor.

    C is 1 when ``channels`` is 1 or when every image is grey, else 3.
    """
    parts: list[torch.Tensor] = []
    for chunk in chunks:
        parts.extend(_convert_chunk(chunk, value_max, channels, size))
    if not parts:
        return torch.zeros((0, 1, *size), dtype=torch.uint8)
    if any(p.shape[1] == 3 for p in parts):
        parts = [p.expand(-1, 3, -1, -1) if p.shape[1] == 1 else p for p in parts]
    return torch.cat(parts)
