"""Image datasets that hand out normalised (and, for training, augmented) batches.

:class:`TensorImageDataset` keeps every image as uint8 in memory, preprocessed once: storing uint8
(and grey as one channel) keeps Fashion-MNIST at 32x32x3 to 70 MB instead of the 860 MB that
normalised float32 copies would take; normalising a batch on the fly costs little.
:class:`StreamingImageDataset` is for image folders too large for that: it decodes and
preprocesses the files of each batch when they are asked for (use DataLoader workers; it pickles).

Both normalise the same way and augment the same way (``augment``, training data only), and both
have ``__getitems__``, so that a ``DataLoader`` fetches a whole batch with one vectorised
augmentation and normalisation.
"""
from __future__ import annotations

import copy
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from archsearch.data.augment import AUGMENTS, augment_batch
from archsearch.data.imagefolder import FileImages
from archsearch.data.transform import to_uint8

Indices = Sequence[int] | torch.Tensor | slice


@dataclass
class FileRefs:
    """The files behind a dataset's images, in order: enough to fingerprint them without decoding."""

    root: Path
    paths: list[Path]

    def update(self, h: "hashlib._Hash") -> None:
        """Feed each file's path relative to ``root`` and its size in bytes to ``h``."""
        for p in self.paths:
            h.update(f"{os.path.relpath(p, self.root)}\0{os.stat(p).st_size}\n".encode())


class ImageDataset(Dataset):
    """Labels, normalisation and augmentation; subclasses say how to get uint8 images."""

    def __init__(self, labels: torch.Tensor, channels: int, mean: Sequence[float],
                 std: Sequence[float], augment: str = "none", files: FileRefs | None = None) -> None:
        if augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {', '.join(AUGMENTS)}, not {augment!r}")
        self.labels = labels.to(torch.int64)
        self.channels = channels
        self.augment = augment
        self._files = files
        self.mean = [float(v) for v in torch.as_tensor(mean, dtype=torch.float32).expand(channels)]
        self.std = [float(v) for v in torch.as_tensor(std, dtype=torch.float32).expand(channels)]
        # x_norm = (x / 255 - mean) / std = x * scale + shift
        m = torch.tensor(self.mean).reshape(1, -1, 1, 1)
        s = torch.tensor(self.std).reshape(1, -1, 1, 1)
        self._scale = 1.0 / (255.0 * s)
        self._shift = -m / s

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def files(self) -> FileRefs | None:
        """The image files behind this data, in order, where it came from files (an ImageFolder)."""
        return self._files

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(C, H, W) of the images handed out."""
        raise NotImplementedError

    def uint8(self, indices: Indices) -> torch.Tensor:
        """The preprocessed images at ``indices`` as uint8 (n, 1 or C, H, W), not augmented."""
        raise NotImplementedError

    def with_augment(self, augment: str) -> "ImageDataset":
        """The same images (shared, not copied) with another augmentation, e.g. ``"none"`` for
        features of the training images as they are."""
        if augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {', '.join(AUGMENTS)}, not {augment!r}")
        other = copy.copy(self)
        other.augment = augment
        return other

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 or 0..255 float (n, 1 or C, H, W) -> normalised float32 (n, C, H, W)."""
        # broadcasts a stored grey channel to C channels
        return x.to(torch.float32) * self._scale + self._shift

    def batch(self, indices: Indices) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented (if this dataset augments) and normalised float images (n, C, H, W) and
        labels (n,) for ``indices``, in one go."""
        if not isinstance(indices, slice):
            indices = torch.as_tensor(indices, dtype=torch.int64)
        x = augment_batch(self.uint8(indices), self.augment)
        return self.normalise(x), self.labels[indices]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x, y = self.batch([int(index)])
        return x[0], int(y[0])

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, int]]:
        x, y = self.batch(indices)
        return list(zip(x.unbind(0), y.tolist()))

    def fingerprint(self, h: "hashlib._Hash") -> None:
        """Feed what identifies this data to ``h``: the files (paths relative to the data's root,
        sizes) where it came from files, else the preprocessed images; the labels always."""
        h.update(str(len(self)).encode())
        if self.files is not None:
            h.update(b"files\n")
            self.files.update(h)
        else:
            images = self.uint8(slice(None))
            h.update(str(tuple(images.shape)).encode())
            h.update(images.contiguous().numpy())
        h.update(self.labels.contiguous().numpy())


class TensorImageDataset(ImageDataset):
    """Images as uint8 (N, 1 or C, H, W) in memory plus int64 labels; yields (float (C, H, W),
    int label), augmented by ``augment`` (none, light, standard) and normalised on the fly."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, channels: int,
                 mean: Sequence[float], std: Sequence[float], augment: str = "none",
                 files: FileRefs | None = None) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError("images must be a uint8 (N, C, H, W) tensor")
        if images.shape[0] != labels.shape[0]:
            raise ValueError("one label per image")
        if images.shape[1] not in (1, channels):
            raise ValueError(f"stored images have {images.shape[1]} channels, not 1 or {channels}")
        super().__init__(labels, channels, mean, std, augment, files)
        self.images = images

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (self.channels, int(self.images.shape[2]), int(self.images.shape[3]))

    def uint8(self, indices: Indices) -> torch.Tensor:
        if not isinstance(indices, slice):
            indices = torch.as_tensor(indices, dtype=torch.int64)
        return self.images[indices]


class StreamingImageDataset(ImageDataset):
    """Image files decoded, resized (shorter side, centre crop), channel-converted, augmented and
    normalised batch by batch when asked for: the same pixels as :class:`TensorImageDataset` makes
    of the same files, without holding them. Picklable, for DataLoader worker processes."""

    def __init__(self, images: FileImages, idx: np.ndarray, channels: int, size: tuple[int, int],
                 mean: Sequence[float], std: Sequence[float], augment: str = "none") -> None:
        idx = np.asarray(idx, dtype=np.int64)
        super().__init__(torch.from_numpy(images.labels[idx]), channels, mean, std, augment)
        self.source = images
        self.idx = idx
        self.size = (int(size[0]), int(size[1]))

    @property
    def files(self) -> FileRefs:
        return FileRefs(self.source.root, [self.source.paths[i] for i in self.idx])

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (self.channels, *self.size)

    def uint8(self, indices: Indices) -> torch.Tensor:
        if isinstance(indices, slice):
            chosen = self.idx[indices]
        else:
            chosen = self.idx[torch.as_tensor(indices, dtype=torch.int64).numpy()]
        chunks = self.source.chunks(np.atleast_1d(chosen), grey=self.channels == 1)
        return to_uint8(chunks, self.source.value_max, self.channels, self.size)
