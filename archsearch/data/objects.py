"""Python data objects as a task's raw images: a Dataset, a DataLoader, ``(images, labels)`` tensors or
arrays, or a path (what ``--data`` takes). What the Python API (:func:`archsearch.tailor`) accepts.

Images must be as stored, not normalised: uint8 0..255 or floats 0..1, (C,H,W) or (H,W,C) per image,
PIL images too; archsearch resizes and normalises them for the network itself. A torchvision
ImageFolder without a transform is read from its folder, as ``--data DIR`` is (streamed where large).
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from archsearch.data.raw import CHUNK, ArrayImages, Chunk, ImageSet, RawData, as_nhwc, check_labels, label_classes, value_max_of
from archsearch.data.sources import open_source
from archsearch.errors import UserError

_UNNORMALISED = "give the images as stored (uint8 0..255 or floats 0..1): archsearch normalises them for the network"


class ListImages(ImageSet):
    """Images of different sizes in memory, as a list of (H, W, C) arrays."""

    def __init__(self, images: list[np.ndarray], labels: np.ndarray, value_max: float) -> None:
        self.images = images
        self.labels = labels
        self.value_max = float(value_max)

    def chunks(self, idx: np.ndarray, grey: bool) -> Iterator[Chunk]:
        for start in range(0, len(idx), CHUNK):
            yield [self.images[i] for i in idx[start:start + CHUNK]]


def _array(image: Any, what: str) -> np.ndarray:
    """One image as an (H, W, C) array."""
    if hasattr(image, "convert") and hasattr(image, "mode"):  # a PIL image
        image = np.asarray(image.convert("L" if image.mode in ("1", "L", "I", "F") else "RGB"))
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise UserError(f"{what} yields {type(image).__name__} images; give tensors, arrays or PIL images")
    return as_nhwc(image[None], what)[0]


def _label(value: Any, what: str) -> int:
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else None
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise UserError(f"{what} yields labels of type {type(value).__name__}; give one class number 0..K-1 per image")
    return int(value)


def _images_and_labels(pairs: Iterable[Any], what: str) -> tuple[list[np.ndarray], np.ndarray]:
    images, labels = [], []
    for item in pairs:
        if not (isinstance(item, (tuple, list)) and len(item) >= 2):
            raise UserError(f"{what} yields {type(item).__name__} items; it must yield (image, label) pairs")
        images.append(_array(item[0], what))
        labels.append(_label(item[1], what))
    if not images:
        raise UserError(f"{what} holds no images")
    return images, check_labels(np.asarray(labels), len(images), f"{what}'s labels", what)


def _image_set(images: list[np.ndarray], labels: np.ndarray, what: str) -> ImageSet:
    same = len({(a.shape, a.dtype) for a in images}) == 1
    x = np.stack(images) if same else None
    probe = x if x is not None else np.concatenate([a.reshape(-1) for a in images])
    try:
        value_max = value_max_of(probe, what)
    except UserError as exc:
        raise UserError(f"{exc}; {_UNNORMALISED}") from None
    return ArrayImages(x, labels, value_max) if x is not None else ListImages(images, labels, value_max)


def _batches(loader: DataLoader, what: str) -> tuple[list[np.ndarray], np.ndarray]:
    images, labels = [], []
    for batch in loader:
        if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
            raise UserError(f"{what} yields {type(batch).__name__} batches; it must yield (images, labels)")
        x = batch[0].detach().cpu().numpy() if isinstance(batch[0], torch.Tensor) else np.asarray(batch[0])
        images.extend(as_nhwc(x, what))
        labels.append(np.asarray(batch[1].cpu() if isinstance(batch[1], torch.Tensor) else batch[1]).reshape(-1))
    if not images:
        raise UserError(f"{what} holds no images")
    return images, check_labels(np.concatenate(labels), len(images), f"{what}'s labels", what)


def _folder_of(dataset: Any) -> str | None:
    """The folder of a torchvision ImageFolder that has no transform of its own (read as --data DIR)."""
    if all(hasattr(dataset, a) for a in ("root", "samples", "classes")) and getattr(dataset, "transform", None) is None \
            and getattr(dataset, "target_transform", None) is None:
        return os.fspath(dataset.root)
    return None


def image_set(data: Any, what: str) -> tuple[ImageSet, list[str] | None, str]:
    """``data`` as an ImageSet, the class names it carries (or None), and a description of it."""
    if isinstance(data, (str, os.PathLike)) or _folder_of(data) is not None:
        path = _folder_of(data) or os.fspath(data)
        raw = open_source(path)
        if raw.test is not None:
            raise UserError(f"{what} '{path}' holds its own train and test splits; pass its train and test "
                            "folders separately, or the folder alone as the training data")
        return raw.train, raw.classes, raw.source
    if isinstance(data, DataLoader):
        images, labels = _batches(data, what)
        return _image_set(images, labels, what), getattr(data.dataset, "classes", None), "a DataLoader"
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], (torch.Tensor, np.ndarray)):
        x = data[0].detach().cpu().numpy() if isinstance(data[0], torch.Tensor) else data[0]
        y = data[1].detach().cpu().numpy() if isinstance(data[1], torch.Tensor) else np.asarray(data[1])
        x = as_nhwc(x, f"{what} images")
        labels = check_labels(y, len(x), f"{what} labels", f"{what} images")
        return _image_set(list(x), labels, what), None, "tensors"
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        images, labels = _images_and_labels((data[i] for i in range(len(data))), what)
        return _image_set(images, labels, what), getattr(data, "classes", None), f"a {type(data).__name__}"
    raise UserError(f"{what} is a {type(data).__name__}; give a Dataset, a DataLoader, (images, labels) tensors, "
                    "or a path (ImageFolder, IDX folder, .npz) or built-in name")


def raw_data(train: Any, test: Any = None, classes: Sequence[str] | None = None, name: str | None = None) -> str | RawData:
    """The task's raw data: a path or built-in name as it is (as ``--data``), anything else as
    :class:`RawData` (its own test split where ``test`` is given)."""
    if isinstance(train, (str, os.PathLike)) and test is None and classes is None:
        return os.fspath(train)
    train_set, train_classes, source = image_set(train, "the training data")
    test_set, test_classes, _ = image_set(test, "the test data") if test is not None else (None, None, "")
    if classes is None:
        classes = train_classes if train_classes is not None else test_classes
    labels = [train_set.labels] + ([test_set.labels] if test_set is not None else [])
    found = label_classes(labels, f"the data ({source})", names=list(classes) if classes is not None else None)
    default = os.path.basename(source.rstrip("/")) if os.path.exists(source) else source.removeprefix("a ")
    return RawData(train=train_set, test=test_set, classes=found, name=name or default, source=source)
