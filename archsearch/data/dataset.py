"""An in-memory image dataset: uint8 tensors stored once, normalised when handed out.

Storing uint8 (and grey as one channel) keeps Fashion-MNIST at 32x32x3 to 70 MB instead of the
860 MB that normalised float32 copies would take; normalising a batch on the fly costs little.
``__getitems__`` lets a ``DataLoader`` fetch a whole batch with one vectorised normalisation.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import Dataset


class TensorImageDataset(Dataset):
    """Images as uint8 (N, 1 or C, H, W) plus int64 labels; yields (float (C, H, W), int label)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, channels: int,
                 mean: Sequence[float], std: Sequence[float]) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError("images must be a uint8 (N, C, H, W) tensor")
        if images.shape[0] != labels.shape[0]:
            raise ValueError("one label per image")
        if images.shape[1] not in (1, channels):
            raise ValueError(f"stored images have {images.shape[1]} channels, not 1 or {channels}")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.channels = channels
        # x_norm = (x / 255 - mean) / std = x * scale + shift
        m = torch.as_tensor(mean, dtype=torch.float32).expand(channels).reshape(1, -1, 1, 1)
        s = torch.as_tensor(std, dtype=torch.float32).expand(channels).reshape(1, -1, 1, 1)
        self._scale = 1.0 / (255.0 * s)
        self._shift = -m / s

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(C, H, W) of the images handed out."""
        return (self.channels, int(self.images.shape[2]), int(self.images.shape[3]))

    def batch(self, indices: Sequence[int] | torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised float images (n, C, H, W) and labels (n,) for ``indices``, in one go."""
        if not isinstance(indices, slice):
            indices = torch.as_tensor(indices, dtype=torch.int64)
        x = self.images[indices].to(torch.float32)
        x = x * self._scale + self._shift  # broadcasts a stored grey channel to C channels
        return x, self.labels[indices]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x, y = self.batch([int(index)])
        return x[0], int(y[0])

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, int]]:
        x, y = self.batch(indices)
        return list(zip(x.unbind(0), y.tolist()))
