"""Bring raw images to the network's input size once, up front, as compact uint8 tensors.

Resizing every image on every epoch would dominate training time for these small data sets, so it
happens once: values scaled to 0..255, channels converted (RGB to grey by ITU-R 601 luma, as PIL's
"L"), bilinear antialiased resize to (H, W) (aspect ratio is not kept, as torchvision's
``Resize((h, w))``), then rounded to uint8. Grey images stay one channel in memory even for a
3-channel network; :class:`~archsearch.data.dataset.TensorImageDataset` repeats the channel when it
hands an image out. Normalisation by mean/std also happens there, on the fly.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from archsearch.data.raw import Chunk

_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def _convert(x: np.ndarray, value_max: float, channels: int, size: tuple[int, int]
             ) -> torch.Tensor:
    """One same-sized (n, H, W, C) batch -> uint8 (n, C', h, w)."""
    t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).to(torch.float32)
    if value_max != 255.0:
        t = t * (255.0 / value_max)
    if channels == 1 and t.shape[1] == 3:
        t = (t * _LUMA).sum(dim=1, keepdim=True)
    if tuple(t.shape[-2:]) != tuple(size):
        t = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=True)
    return t.round_().clamp_(0, 255).to(torch.uint8)


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
