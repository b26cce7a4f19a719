"""Load a task's data: resolve the spec, split, cap, preprocess once, wrap as datasets."""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from archsearch.data.dataset import TensorImageDataset
from archsearch.data.raw import ImageSet
from archsearch.data.sources import open_source
from archsearch.data.split import limit_indices, split_indices
from archsearch.data.transform import to_uint8
from archsearch.errors import UserError


@dataclass
class TaskData:
    """A task's train and test sets, ready for a network of ``input_size``."""

    train: TensorImageDataset
    test: TensorImageDataset
    classes: list[str]
    name: str
    source: str
    input_size: tuple[int, int, int]

    @property
    def num_classes(self) -> int:
        """Number of classes the classifier needs (labels are 0..num_classes-1)."""
        return len(self.classes)

    def digest(self) -> str:
        """SHA-256 of the images, labels and class names of both splits: a run resumes only on the
        very data it started with, whatever its path."""
        h = hashlib.sha256("\n".join(self.classes).encode())
        for part in (self.train, self.test):
            for t in (part.images, part.labels):
                h.update(str(tuple(t.shape)).encode())
                h.update(t.contiguous().numpy())
        return h.hexdigest()


def _check_args(input_size: Sequence[int], mean: Sequence[float] | float,
                std: Sequence[float] | float, test_fraction: float, train_limit: int | None
                ) -> tuple[tuple[int, int, int], list[float], list[float]]:
    size = tuple(int(v) for v in input_size)
    if len(size) != 3 or size[0] not in (1, 3) or size[1] < 1 or size[2] < 1:
        raise UserError(f"input size {tuple(input_size)} is not (C, H, W) with C = 1 or 3 and "
                        f"H, W >= 1; give e.g. (3, 32, 32)")
    stats = []
    for what, v in (("mean", mean), ("std", std)):
        vals = [float(v)] if isinstance(v, (int, float)) else [float(a) for a in v]
        if len(vals) == 1:
            vals = vals * size[0]
        if len(vals) != size[0] or not all(math.isfinite(a) for a in vals):
            raise UserError(f"{what} {v} does not match {size[0]} input channel(s); give one "
                            f"finite value per channel")
        stats.append(vals)
    if any(a <= 0 for a in stats[1]):
        raise UserError(f"std {std} has a value <= 0; give positive standard deviations")
    if not (isinstance(test_fraction, (int, float)) and 0 < test_fraction < 1):
        raise UserError(f"--test-fraction {test_fraction} is not between 0 and 1 (exclusive); "
                        f"give e.g. 0.2")
    if train_limit is not None and train_limit < 1:
        raise UserError(f"--train-limit {train_limit} is less than 1; give a positive number of "
                        f"training images or leave it out")
    return size, stats[0], stats[1]  # type: ignore[return-value]


def _build(images: ImageSet, idx: np.ndarray, size: tuple[int, int, int], mean: list[float],
           std: list[float]) -> TensorImageDataset:
    if hasattr(images, "draft_size"):
        images.draft_size = (size[2], size[1])  # type: ignore[attr-defined]
    x = to_uint8(images.chunks(idx, grey=size[0] == 1), images.value_max, size[0], size[1:])
    y = torch.from_numpy(images.labels[idx])
    return TensorImageDataset(x, y, size[0], mean, std)


def load_task_data(spec: str, *, input_size: tuple[int, int, int],
                   mean: Sequence[float] | float, std: Sequence[float] | float, seed: int = 0,
                   test_fraction: float = 0.2, train_limit: int | None = None) -> TaskData:
    """Load ``spec`` (fashion-mnist, mnist-5k, digits, a folder or a .npz) as a task.

    Data without its own test split is split by ``seed`` (stratified, exactly
    ``round(N * test_fraction)`` test images); ``train_limit`` keeps a seeded, class-balanced
    subset of the training images. Raises :class:`UserError` for anything wrong with the data.
    """
    size, mean_l, std_l = _check_args(input_size, mean, std, test_fraction, train_limit)
    raw = open_source(spec)
    if len(raw.train) == 0:
        raise UserError(f"{raw.source} holds no training images; give a data set with images")
    if raw.test is not None and len(raw.test) == 0:
        raise UserError(f"{raw.source} has an empty test set; add test images or remove it so "
                        f"that the data is split by --test-fraction")
    if raw.test is None:
        if len(raw.train) < 2:
            raise UserError(f"{raw.source} holds {len(raw.train)} image; too few to split into "
                            f"train and test")
        train_idx, test_idx = split_indices(raw.train.labels, test_fraction, seed)
        test_set = raw.train
    else:
        train_idx = np.arange(len(raw.train))
        test_idx = np.arange(len(raw.test))
        test_set = raw.test
    if train_limit is not None:
        train_idx = limit_indices(train_idx, raw.train.labels, train_limit, seed)
    return TaskData(train=_build(raw.train, train_idx, size, mean_l, std_l),
                    test=_build(test_set, test_idx, size, mean_l, std_l),
                    classes=raw.classes, name=raw.name, source=raw.source, input_size=size)


def describe(td: TaskData) -> str:
    """One line for logs and reports: name, sizes, classes and input shape."""
    c, h, w = td.input_size
    return (f"{td.name}: {len(td.train)} train / {len(td.test)} test images, "
            f"{td.num_classes} classes, input {c}x{h}x{w} (from {td.source})")
