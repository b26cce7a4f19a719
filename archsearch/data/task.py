"""Load a task's data: resolve the spec, split, cap, carve a validation set, preprocess once (or
stream from disk when an image folder would not fit the memory budget), wrap as datasets."""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from archsearch.data.augment import check_augment, resolve_augment
from archsearch.data.dataset import (FileRefs, ImageDataset, StreamingImageDataset,
                                     TensorImageDataset)
from archsearch.data.imagefolder import FileImages
from archsearch.data.memory import memory_budget
from archsearch.data.raw import ImageSet, RawData
from archsearch.data.sources import open_source
from archsearch.data.split import limit_indices, split_indices, val_indices
from archsearch.data.transform import to_uint8
from archsearch.errors import UserError


@dataclass
class TaskData:
    """A task's train, validation and test sets, ready for a network of ``input_size``.

    ``train`` augments by ``augment`` (resolved: none, light or standard); ``val`` and ``test``
    never augment. All three are :class:`TensorImageDataset` (uint8 in memory) unless
    ``streaming``, where all three are :class:`StreamingImageDataset` (decoded from disk per batch:
    give the DataLoader workers).
    """

    train: ImageDataset
    val: ImageDataset
    test: ImageDataset
    classes: list[str]
    name: str
    source: str
    input_size: tuple[int, int, int]
    augment: str = "none"
    streaming: bool = False

    @property
    def num_classes(self) -> int:
        """Number of classes the classifier needs (labels are 0..num_classes-1)."""
        return len(self.classes)

    def digest(self) -> str:
        """SHA-256 of the class names, the input size and, for train, validation and test, the
        labels and the images: a run resumes only on the very data it started with, whatever its
        path. Images from files (ImageFolder) count by their paths relative to the data's root and
        their sizes, streamed or not (nothing is decoded, and the digest does not change with the
        memory budget); images from arrays by their preprocessed pixels."""
        h = hashlib.sha256("\n".join(self.classes).encode())
        h.update(f"\ninput {self.input_size}\n".encode())
        for name, part in (("train", self.train), ("val", self.val), ("test", self.test)):
            h.update(f"\n{name}\n".encode())
            part.fingerprint(h)
        return h.hexdigest()


def _check_args(input_size: Sequence[int], mean: Sequence[float] | float,
                std: Sequence[float] | float, test_fraction: float, train_limit: int | None,
                val_fraction: float, augment: str
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
    if not (isinstance(val_fraction, (int, float)) and not isinstance(val_fraction, bool)
            and 0 < val_fraction <= 0.5):
        raise UserError(f"--val-fraction {val_fraction} is not in (0, 0.5]; give e.g. 0.1 (the "
                        f"share of the training images set aside for validation)")
    check_augment(augment)
    return size, stats[0], stats[1]  # type: ignore[return-value]


def _files(images: ImageSet, idx: np.ndarray) -> FileRefs | None:
    if isinstance(images, FileImages):
        return FileRefs(images.root, [images.paths[i] for i in idx])
    return None


def _build(images: ImageSet, idx: np.ndarray, size: tuple[int, int, int], mean: list[float],
           std: list[float], augment: str, streaming: bool) -> ImageDataset:
    if isinstance(images, FileImages):
        images.draft_size = (size[2], size[1])  # JPEG: decode at the smallest DCT scale >= needed
    if streaming:
        assert isinstance(images, FileImages)
        images.check_headers(idx)
        return StreamingImageDataset(images, idx, size[0], size[1:], mean, std, augment)
    x = to_uint8(images.chunks(idx, grey=size[0] == 1), images.value_max, size[0], size[1:])
    y = torch.from_numpy(images.labels[idx])
    return TensorImageDataset(x, y, size[0], mean, std, augment, _files(images, idx))


def load_task_data(spec: str | RawData, *, input_size: tuple[int, int, int],
                   mean: Sequence[float] | float, std: Sequence[float] | float, seed: int = 0,
                   test_fraction: float = 0.2, train_limit: int | None = None,
                   val_fraction: float = 0.1, augment: str = "auto",
                   max_memory: int | str | None = None) -> TaskData:
    """Load ``spec`` (fashion-mnist, mnist-5k, digits, a folder, a .npz, or images already opened as
    :class:`RawData`) as a task.

    Data without its own test split is split by ``seed`` (stratified, exactly
    ``round(N * test_fraction)`` test images); ``train_limit`` keeps a seeded, class-balanced
    subset of the training images; then ``val_fraction`` of those (stratified, seeded, at least 2
    per class of 3 or more, never a class's last image; see
    :func:`~archsearch.data.split.val_indices`) become the validation set.

    Images are resized (shorter side to scale, centre crop) and channel-converted once into uint8
    tensors in memory. An ImageFolder whose preprocessed train + validation + test images would
    take more than ``max_memory`` bytes (default: :func:`~archsearch.data.memory.memory_budget`:
    ``$ARCHSEARCH_MAX_MEMORY``, else half the available memory) is streamed from disk instead
    (``TaskData.streaming``), giving the same pixels. Built-in data, IDX pairs and .npz files are
    arrays in memory already and always stay there.

    ``augment`` (none, light, standard or auto = light) applies to the training set only.
    Raises :class:`UserError` for anything wrong with the data or the arguments.
    """
    size, mean_l, std_l = _check_args(input_size, mean, std, test_fraction, train_limit,
                                      val_fraction, augment)
    aug = resolve_augment(augment)
    budget = memory_budget(max_memory)
    raw = spec if isinstance(spec, RawData) else open_source(spec)
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
    train_idx, val_idx = val_indices(train_idx, raw.train.labels, val_fraction, seed)
    # uint8 bytes of the preprocessed images (an upper bound: all-grey data keeps one channel)
    preprocessed = (len(train_idx) + len(val_idx) + len(test_idx)) * size[0] * size[1] * size[2]
    streaming = (isinstance(raw.train, FileImages) and isinstance(test_set, FileImages)
                 and preprocessed > budget)
    parts = [_build(images, idx, size, mean_l, std_l, a, streaming) for images, idx, a in
             ((raw.train, train_idx, aug), (raw.train, val_idx, "none"), (test_set, test_idx, "none"))]
    return TaskData(train=parts[0], val=parts[1], test=parts[2], classes=raw.classes,
                    name=raw.name, source=raw.source, input_size=size, augment=aug,
                    streaming=streaming)


def describe(td: TaskData) -> str:
    """One line for logs and reports: name, sizes, classes, input shape, augmentation."""
    c, h, w = td.input_size
    return (f"{td.name}: {len(td.train):,} train / {len(td.val):,} validation / "
            f"{len(td.test):,} test images, {td.num_classes} classes, input {c}x{h}x{w}, "
            f"{td.augment} augmentation{', streamed from disk' if td.streaming else ''} "
            f"(from {td.source})")
