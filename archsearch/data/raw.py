"""Raw image sets as the sources find them, before any resizing or normalisation.

A source (built-in data set, ImageFolder, IDX pair, ``.npz``) only has to say which labels it holds
and how to hand over the images of some indices, in chunks. Chunks keep memory bounded when
decoding thousands of files or converting a large uint8 array to floats.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence, Union

import numpy as np

from archsearch.errors import UserError

# One chunk of images: an (n, H, W, C) array, or a list of (H, W, C) arrays of any sizes.
Chunk = Union[np.ndarray, Sequence[np.ndarray]]

CHUNK = 2048


class ImageSet:
    """Labels plus a way to read the images at given indices, ``CHUNK`` images at a time."""

    labels: np.ndarray  # int64, (N,)
    value_max: float  # the value that means white (255 for uint8, 16 for sklearn digits, ...)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def chunks(self, idx: np.ndarray, grey: bool) -> Iterator[Chunk]:
        """Yield the images at ``idx`` in order; ``grey`` asks for one channel where possible."""
        raise NotImplementedError


class ArrayImages(ImageSet):
    """Images already in memory as an (N, H, W, C) array (C is 1 or 3)."""

    def __init__(self, x: np.ndarray, labels: np.ndarray, value_max: float) -> None:
        self.x = x
        self.labels = labels
        self.value_max = float(value_max)

    def chunks(self, idx: np.ndarray, grey: bool) -> Iterator[Chunk]:
        for start in range(0, len(idx), CHUNK):
            yield self.x[idx[start:start + CHUNK]]


@dataclass
class RawData:
    """What a source found: a training set, its own test set if it has one, and class names."""

    train: ImageSet
    test: ImageSet | None
    classes: list[str]
    name: str
    source: str


def as_nhwc(x: np.ndarray, what: str) -> np.ndarray:
    """Bring (N,H,W), (N,H,W,C) or (N,C,H,W) images with C in {1, 3} to (N,H,W,C)."""
    if x.ndim == 3:
        return x[..., None]
    if x.ndim == 4:
        if x.shape[-1] in (1, 3):
            return x
        if x.shape[1] in (1, 3):
            return np.moveaxis(x, 1, -1)
    raise UserError(f"{what} has shape {tuple(x.shape)}; expected images as (N,H,W), (N,H,W,C) or "
                    f"(N,C,H,W) with C = 1 (grey) or 3 (RGB)")


def value_max_of(x: np.ndarray, what: str) -> float:
    """Find the value that means white: 255 for uint8 and 0..255 data, 1 for 0..1 data."""
    if x.dtype == np.uint8:
        return 255.0
    if x.dtype == np.bool_:
        return 1.0
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise UserError(f"{what} holds {x.dtype} values; store images as uint8 0..255 or floats 0..1")
    if x.size == 0:
        return 255.0
    lo, hi = float(np.min(x)), float(np.max(x))
    if np.isnan(lo) or np.isnan(hi):
        raise UserError(f"{what} holds NaN values; store images as uint8 0..255 or floats 0..1")
    if lo < 0 or hi > 255:
        raise UserError(f"{what} holds values from {lo:g} to {hi:g}; store images as uint8 0..255 "
                        f"or floats 0..1")
    return 1.0 if hi <= 1 else 255.0


def check_labels(y: np.ndarray, n: int, what: str, images_what: str) -> np.ndarray:
    """Check that ``y`` is one integer label >= 0 per image; return it as int64."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise UserError(f"{what} has shape {tuple(y.shape)}; expected one label per image, shape (N,)")
    if y.shape[0] != n:
        raise UserError(f"{images_what} holds {n} images but {what} holds {y.shape[0]} labels; "
                        f"give exactly one label per image")
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise UserError(f"{what} holds non-integer labels; labels must be class numbers 0..K-1")
    elif not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"{what} holds {y.dtype} values; labels must be integer class numbers 0..K-1")
    if y.size and np.min(y) < 0:
        raise UserError(f"{what} holds negative labels (lowest {int(np.min(y))}); labels must be "
                        f"class numbers 0..K-1")
    return y.astype(np.int64)


def label_classes(labels: Sequence[np.ndarray], what: str, names: Sequence[str] | None = None,
                  hint: str = "") -> list[str]:
    """Class names for labels 0..K-1: ``names`` if given, else str(label); labels must be dense."""
    every = np.concatenate([np.asarray(y, dtype=np.int64) for y in labels])
    if every.size == 0:
        raise UserError(f"{what} holds no images; give a data set with at least two classes")
    top = int(every.max())
    present = np.unique(every)
    if names is not None:
        if top >= len(names):
            raise UserError(f"{what} holds label {top} but names only {len(names)} classes; labels "
                            f"must be 0..{len(names) - 1}")
        classes = [str(c) for c in names]
    else:
        if present.size != top + 1:
            raise UserError(f"{what} holds labels up to {top} but only {present.size} distinct ones; "
                            f"relabel the classes 0..{present.size - 1}{hint}")
        classes = [str(c) for c in range(top + 1)]
    if present.size < 2:
        raise UserError(f"{what} holds only one class ({classes[int(present[0])]!r}); a classifier "
                        f"needs at least two")
    return classes
