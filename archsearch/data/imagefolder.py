"""ImageFolder data: ``DIR/<class>/<image>`` or ``DIR/train/<class>/...`` + ``DIR/test/<class>/...``.

Classes are the sorted folder names (as torchvision's ImageFolder numbers them); images may sit in
sub-folders of a class folder. Every non-hidden file in a class folder must be an image PIL can
read: a stray file is reported by name rather than skipped, so a class never silently shrinks.
Files are decoded only when their indices are asked for, on a few threads (PIL releases the GIL;
one thread inside a DataLoader worker, where the workers are the parallelism).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image
from torch.utils.data import get_worker_info

from archsearch.data.raw import CHUNK, Chunk, ImageSet, RawData
from archsearch.errors import UserError

_UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
_GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "P;grey"}


def _visible(names: list[str]) -> list[str]:
    return sorted(n for n in names if not n.startswith("."))


def _class_dirs(folder: Path) -> list[Path]:
    return [folder / n for n in _visible(os.listdir(folder)) if (folder / n).is_dir()]


def _files_under(folder: Path) -> list[Path]:
    out: list[Path] = []
    for here, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = _visible(dirs)
        out.extend(Path(here) / f for f in _visible(files))
    return out


def _is_split_layout(root: Path) -> bool:
    train, test = root / "train", root / "test"
    return (train.is_dir() and test.is_dir() and bool(_class_dirs(train))
            and bool(_class_dirs(test)))


class FileImages(ImageSet):
    """Image files with their labels; decoded chunk by chunk when asked for."""

    value_max = 255.0

    def __init__(self, root: Path, paths: list[Path], labels: np.ndarray) -> None:
        self.root = root
        self.paths = paths
        self.labels = labels
        self.draft_size: tuple[int, int] | None = None  # (W, H) hint for JPEG DCT scaling

    def _decode(self, path: Path, grey: bool) -> np.ndarray:
        try:
            with Image.open(path) as im:
                mode = "L" if grey or im.mode in _GREY_MODES else "RGB"
                if self.draft_size is not None:
                    im.draft(mode, self.draft_size)  # JPEG only: decode at >= the needed size
                arr = np.asarray(im.convert(mode))
        except _UNREADABLE as exc:
            raise self._not_an_image(path, exc) from exc
        return arr[..., None] if arr.ndim == 2 else arr

    def _not_an_image(self, path: Path, exc: BaseException) -> UserError:
        reason = str(exc).split(" '")[0] or type(exc).__name__
        return UserError(f"{path} is not an image ({reason}); remove it or move it out of "
                         f"{self.root}")

    def _check_header(self, path: Path) -> None:
        try:
            with Image.open(path):
                pass
        except _UNREADABLE as exc:
            raise self._not_an_image(path, exc) from exc

    def check_headers(self, idx: np.ndarray) -> None:
        """Open (not decode) the files at ``idx``, so that a stray non-image file is reported by
        name up front also when the images are streamed; a file whose header is fine but whose
        pixels are damaged is reported when it is decoded."""
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            list(pool.map(lambda i: self._check_header(self.paths[i]), idx))

    def chunks(self, idx: np.ndarray, grey: bool) -> Iterator[Chunk]:
        if get_worker_info() is not None or len(idx) <= 1:
            # in a DataLoader worker the workers are the parallelism: decode in this thread
            for start in range(0, len(idx), CHUNK):
                yield [self._decode(self.paths[i], grey) for i in idx[start:start + CHUNK]]
            return
        workers = min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for start in range(0, len(idx), CHUNK):
                paths = [self.paths[i] for i in idx[start:start + CHUNK]]
                yield list(pool.map(lambda p: self._decode(p, grey), paths))


def _scan(folder: Path, root: Path, classes: list[str] | None) -> tuple[list[str], FileImages]:
    """Label every file under ``folder``'s class folders; ``classes`` fixes the numbering (test)."""
    dirs = _class_dirs(folder)
    if not dirs:
        if _files_under(folder):
            raise UserError(f"{folder} holds files but no class folders; put each class's images "
                            f"in {folder}/<class>/")
        raise UserError(f"{folder} holds no images; expected class folders ({folder}/<class>/"
                        f"<image>), train/ + test/ folders, or an IDX images/labels pair")
    names = [d.name for d in dirs]
    is_train = classes is None
    if classes is None:
        classes = names
    index = {c: i for i, c in enumerate(classes)}
    paths: list[Path] = []
    labels: list[int] = []
    for d in dirs:
        if d.name not in index:
            raise UserError(f"{d} is a class the training folder lacks; add "
                            f"{root / 'train' / d.name} or remove it from {folder}")
        files = _files_under(d)
        if not files and is_train:
            raise UserError(f"class folder {d} holds no images; add some or remove the folder")
        paths.extend(files)
        labels.extend([index[d.name]] * len(files))
    return classes, FileImages(root, paths, np.asarray(labels, dtype=np.int64))


def load_image_folder(root: Path) -> RawData:
    """Scan an ImageFolder (with or without its own train/test split); decode nothing yet."""
    if _is_split_layout(root):
        classes, train = _scan(root / "train", root, None)
        _, test = _scan(root / "test", root, classes)
        found: ImageSet | None = test
    else:
        classes, train = _scan(root, root, None)
        found = None
    if len(classes) < 2:
        raise UserError(f"{root} holds only one class ({classes[0]!r}); a classifier needs at "
                        f"least two class folders")
    return RawData(train=train, test=found, classes=classes, name=root.name, source=str(root))
