"""Read IDX files (the MNIST / Fashion-MNIST format), gzipped or not, and find image/label pairs.

An IDX file is a 4-byte magic number (0, 0, dtype code, number of dimensions), one big-endian
int32 per dimension, then the values. A folder may hold one pair (split by seed later) or a
``train-*`` and a ``t10k-*``/``test-*`` pair, used as the train and test sets.
"""
from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path

import numpy as np

from archsearch.data.raw import ArrayImages, as_nhwc, check_labels, value_max_of
from archsearch.errors import UserError

_DTYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
           0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

# train-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte, train-images.idx3-ubyte, ...
_NAME = re.compile(r"^(?P<prefix>.+?)[-_.](?P<kind>images|labels)[-_.]idx(?P<ndim>\d)[-_.]ubyte"
                   r"(?P<gz>\.gz)?$", re.IGNORECASE)
_TRAIN = ("train",)
_TEST = ("t10k", "test")


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file into a native-endian numpy array."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"cannot read {path}: {exc}; replace it with an intact copy") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise UserError(f"{path} is not an IDX file (bad magic number); give MNIST-style "
                        f"*-images-idx3-ubyte / *-labels-idx1-ubyte files")
    dtype, ndim = _DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"{path} is truncated (header cut short); replace it with an intact copy")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(shape)) if shape else 0
    if len(data) - header != count * dtype.itemsize:
        raise UserError(f"{path} holds {len(data) - header} bytes of values but its header says "
                        f"{shape} ({count * dtype.itemsize} bytes); replace it with an intact copy")
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def find_idx_pairs(folder: Path) -> dict[str, tuple[Path, Path]]:
    """Map each prefix (``train``, ``t10k``, ...) to its (images, labels) files in ``folder``."""
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(folder.iterdir()):
        m = _NAME.match(path.name)
        if not m or not path.is_file():
            continue
        slot = found.setdefault(m["prefix"], {})
        kind = m["kind"].lower()
        # an uncompressed copy beside the .gz (after `gunzip -k`) is the same data, faster to read
        if kind not in slot or not m["gz"]:
            slot[kind] = path
    pairs = {}
    for prefix, slot in found.items():
        if "images" not in slot:
            raise UserError(f"{slot['labels']} has no images file beside it (expected "
                            f"{prefix}-images-idx3-ubyte[.gz]); add it or remove the labels file")
        if "labels" not in slot:
            raise UserError(f"{slot['images']} has no labels file beside it (expected "
                            f"{prefix}-labels-idx1-ubyte[.gz]); add it or remove the images file")
        pairs[prefix] = (slot["images"], slot["labels"])
    return pairs


def load_idx_pair(images_path: Path, labels_path: Path) -> ArrayImages:
    """Read one images/labels pair and check that they agree."""
    x = as_nhwc(read_idx(images_path), str(images_path))
    y = read_idx(labels_path)
    y = check_labels(y, x.shape[0], str(labels_path), str(images_path))
    return ArrayImages(x, y, value_max_of(x, str(images_path)))


def split_roles(folder: Path, pairs: dict[str, tuple[Path, Path]]) -> tuple[str, str | None]:
    """Pick which prefix is the training set and which (if any) the test set."""
    if len(pairs) == 1:
        return next(iter(pairs)), None
    train = [p for p in pairs if p.lower() in _TRAIN]
    test = [p for p in pairs if p.lower() in _TEST]
    if len(pairs) == 2 and len(train) == 1 and len(test) == 1:
        return train[0], test[0]
    raise UserError(f"{folder} holds IDX pairs {', '.join(sorted(pairs))}; keep one pair, or one "
                    f"train-* and one t10k-* (or test-*) pair")
