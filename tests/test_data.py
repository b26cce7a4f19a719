"""Task data: every source kind, splits, preprocessing and the user errors, on small fixtures."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from archsearch.data import FASHION_MNIST_CLASSES, describe, load_task_data
from archsearch.data import sources
from archsearch.errors import UserError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GREY = dict(input_size=(1, 8, 8), mean=0.5, std=0.25)
RGB = dict(input_size=(3, 16, 16), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


# ---------------------------------------------------------------- fixture builders

def write_image_folder(root: Path, classes=("cat", "dog", "eel"), per_class: int = 6) -> Path:
    """Class folders of small PNG/JPEG images of mixed sizes and modes (grey and RGB)."""
    rng = np.random.default_rng(0)
    for ci, name in enumerate(classes):
        d = root / name
        d.mkdir(parents=True)
        for i in range(per_class):
            h, w = 10 + i, 12 + 2 * ci
            if i % 2:
                img = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L")
            else:
                img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
            img.save(d / (f"{i}.png" if i % 3 else f"{i}.jpg"))
    return root


def write_idx(path: Path, arr: np.ndarray, gz: bool = True) -> None:
    code = {np.dtype(np.uint8): 0x08}[arr.dtype]
    data = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">i", s) for s in arr.shape)
    data += arr.tobytes()
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def idx_arrays(n: int, classes: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, 12, 12), dtype=np.uint8),
            (np.arange(n) % classes).astype(np.uint8))


def write_idx_pair(folder: Path, prefix: str, n: int, gz: bool = True, n_labels: int | None = None,
                   seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    x, y = idx_arrays(n, seed=seed)
    ext = ".gz" if gz else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", x, gz)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", y[:n_labels] if n_labels else y, gz)


def user_error(spec, **kw) -> str:
    with pytest.raises(UserError) as info:
        load_task_data(str(spec), **{**GREY, **kw})
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# ---------------------------------------------------------------- ImageFolder

def test_image_folder_mixed_sizes_and_modes(tmp_path):
    root = write_image_folder(tmp_path / "pets")
    td = load_task_data(str(root), **RGB, test_fraction=1 / 3)
    assert td.classes == ["cat", "dog", "eel"] and td.num_classes == 3
    # 12 training images: validation takes at least 2 from each class of 3 or more
    assert (len(td.train), len(td.val), len(td.test)) == (6, 6, 6)
    assert td.name == "pets" and td.source == str(root.resolve())
    x, y = td.train[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and isinstance(y, int)
    # stratified: every class gives 2 of its 6 images to the test set, 2 to validation
    assert np.bincount(td.test.labels.numpy()).tolist() == [2, 2, 2]
    assert np.bincount(td.val.labels.numpy()).tolist() == [2, 2, 2]


def test_image_folder_to_grey(tmp_path):
    root = write_image_folder(tmp_path / "pets")
    td = load_task_data(str(root), **GREY)
    assert td.train[0][0].shape == (1, 8, 8) and td.train.images.shape[1] == 1


def test_image_folder_own_split(tmp_path):
    write_image_folder(tmp_path / "ds" / "train", per_class=4)
    write_image_folder(tmp_path / "ds" / "test", classes=("cat", "eel"), per_class=2)
    td = load_task_data(str(tmp_path / "ds"), **RGB)
    assert td.classes == ["cat", "dog", "eel"]
    assert (len(td.train), len(td.val), len(td.test)) == (6, 6, 4)
    assert sorted(set(td.test.labels.tolist())) == [0, 2]


def test_image_folder_test_class_unknown(tmp_path):
    write_image_folder(tmp_path / "ds" / "train", classes=("cat", "dog"), per_class=2)
    write_image_folder(tmp_path / "ds" / "test", classes=("cat", "yak"), per_class=2)
    assert "yak is a class the training folder lacks" in user_error(tmp_path / "ds")


def test_image_folder_non_image_named(tmp_path):
    root = write_image_folder(tmp_path / "pets")
    (root / "dog" / "notes.txt").write_text("not a picture")
    msg = user_error(root)
    assert f"{root.resolve() / 'dog' / 'notes.txt'} is not an image" in msg and "remove it" in msg


def test_image_folder_corrupt_image_named(tmp_path):
    root = write_image_folder(tmp_path / "pets")
    good = (root / "cat" / "1.png").read_bytes()
    (root / "cat" / "broken.png").write_bytes(good[:40])
    assert "cat/broken.png is not an image" in user_error(root)


def test_image_folder_hidden_files_ignored(tmp_path):
    root = write_image_folder(tmp_path / "pets")
    (root / "cat" / ".DS_Store").write_bytes(b"\0\1junk")
    (root / "README.md").write_text("loose files beside the class folders are not images")
    td = load_task_data(str(root), **GREY)
    assert len(td.train) + len(td.val) + len(td.test) == 18


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    assert "holds no images" in user_error(tmp_path / "empty")


def test_files_without_class_folders(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    Image.new("L", (4, 4)).save(root / "a.png")
    assert "no class folders" in user_error(root)


def test_empty_class_folder(tmp_path):
    root = write_image_folder(tmp_path / "pets")
    (root / "gnu").mkdir()
    assert "class folder" in user_error(root) and "gnu holds no images" in user_error(root)


def test_one_class_folder(tmp_path):
    root = write_image_folder(tmp_path / "pets", classes=("cat",))
    assert "only one class ('cat')" in user_error(root)


# ---------------------------------------------------------------- IDX

def test_idx_single_pair_is_split_by_seed(tmp_path):
    write_idx_pair(tmp_path / "idx", "t10k", 40)
    td = load_task_data(str(tmp_path / "idx"), **GREY, test_fraction=0.25)
    assert (len(td.train), len(td.val), len(td.test)) == (22, 8, 10)
    assert td.classes == ["0", "1", "2", "3"]
    # values survive: a 12x12 image resized to 8x8 from uint8, then normalised
    x, _ = load_task_data(str(tmp_path / "idx"), input_size=(1, 12, 12), mean=0.0,
                          std=1.0).train[0]
    assert float(x.min()) >= 0 and float(x.max()) <= 1


def test_idx_train_and_test_pairs(tmp_path):
    write_idx_pair(tmp_path / "idx", "train", 24, gz=False)
    write_idx_pair(tmp_path / "idx", "t10k", 8, seed=1)
    td = load_task_data(str(tmp_path / "idx"), **GREY)
    assert (len(td.train), len(td.val), len(td.test)) == (16, 8, 8)
    raw = idx_arrays(8, seed=1)[0]
    direct = load_task_data(str(tmp_path / "idx"), input_size=(1, 12, 12), mean=0, std=1)
    assert torch.equal(direct.test.images[:, 0], torch.from_numpy(raw))


def test_idx_counts_disagree(tmp_path):
    write_idx_pair(tmp_path / "idx", "t10k", 10, n_labels=9)
    msg = user_error(tmp_path / "idx")
    assert "holds 10 images but" in msg and "holds 9 labels" in msg


def test_idx_truncated_and_bad_magic(tmp_path):
    write_idx_pair(tmp_path / "a", "t10k", 10, gz=False)
    images = tmp_path / "a" / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-7])
    assert "t10k-images-idx3-ubyte holds" in user_error(tmp_path / "a")
    images.write_bytes(b"PK\3\4 not idx at all")
    assert "is not an IDX file" in user_error(tmp_path / "a")


def test_idx_unpaired_file(tmp_path):
    write_idx_pair(tmp_path / "idx", "t10k", 10)
    (tmp_path / "idx" / "t10k-labels-idx1-ubyte.gz").unlink()
    assert "has no labels file beside it" in user_error(tmp_path / "idx")


# ---------------------------------------------------------------- npz

def write_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def test_npz_layouts_agree(tmp_path):
    rng = np.random.default_rng(0)
    nhwc = rng.integers(0, 256, (20, 6, 6, 3), dtype=np.uint8)
    y = np.arange(20) % 2
    a = write_npz(tmp_path / "a.npz", x=nhwc, y=y)
    b = write_npz(tmp_path / "b.npz", x=np.moveaxis(nhwc, -1, 1).copy(), y=y)
    c = write_npz(tmp_path / "c.npz", x=nhwc.astype(np.float32) / 255, y=y)
    loaded = [load_task_data(str(p), input_size=(3, 6, 6), mean=0, std=1) for p in (a, b, c)]
    for td in loaded[1:]:
        assert torch.equal(td.train.images, loaded[0].train.images)
    # same size: no resize, the stored images are the input images themselves
    stored = {bytes(t.permute(1, 2, 0).numpy()) for t in loaded[0].train.images}
    assert stored <= {bytes(img) for img in nhwc}
    assert loaded[0].classes == ["0", "1"] and loaded[0].name == "a"


def test_npz_grey_nhw_and_own_test(tmp_path):
    x = np.full((10, 5, 5), 255, dtype=np.uint8)
    p = write_npz(tmp_path / "g.npz", x=x, y=np.arange(10) % 2, x_test=x[:4], y_test=[0, 1, 1, 0],
                  classes=np.array(["no", "yes"]))
    td = load_task_data(str(p), input_size=(3, 5, 5), mean=0.5, std=0.25)
    assert (len(td.train), len(td.val), len(td.test)) == (6, 4, 4) and td.classes == ["no", "yes"]
    x0, _ = td.test[0]
    assert x0.shape == (3, 5, 5) and torch.allclose(x0, torch.full((3, 5, 5), 2.0))


def test_npz_rgb_to_grey_and_resize(tmp_path):
    x = np.zeros((4, 4, 4, 3), dtype=np.uint8)
    x[..., 0] = 255  # pure red
    p = write_npz(tmp_path / "red.npz", x=x, y=[0, 1, 0, 1])
    td = load_task_data(str(p), input_size=(1, 9, 7), mean=0, std=1, test_fraction=0.5)
    # one training image per class: none can be spared for validation
    assert td.train.images.shape == (2, 1, 9, 7) and len(td.val) == 0
    assert torch.all(td.train.images == 76)  # 0.299 * 255, as PIL's "L"


def test_npz_errors(tmp_path):
    x = np.zeros((6, 4, 4), dtype=np.uint8)
    assert "has no array 'y'" in user_error(write_npz(tmp_path / "a.npz", x=x))
    assert "negative labels" in user_error(write_npz(tmp_path / "b.npz", x=x, y=[0, 1, -1, 0, 1, 0]))
    msg = user_error(write_npz(tmp_path / "c.npz", x=x, y=[0, 1, 7, 0, 1, 0]))
    assert "labels up to 7 but only 3 distinct" in msg
    msg = user_error(write_npz(tmp_path / "d.npz", x=x, y=[0, 1, 2, 0, 1, 0],
                               classes=np.array(["a", "b"])))
    assert "holds label 2 but names only 2 classes" in msg
    assert "only one class" in user_error(write_npz(tmp_path / "e.npz", x=x, y=np.zeros(6, int)))
    msg = user_error(write_npz(tmp_path / "f.npz", x=x, y=[0, 1, 0, 1, 0]))
    assert "holds 6 images but" in msg and "holds 5 labels" in msg
    assert "holds values from" in user_error(write_npz(tmp_path / "g.npz", x=x - 3.0, y=[0, 1] * 3))
    (tmp_path / "h.npz").write_text("not a zip")
    assert "is not a .npz file" in user_error(tmp_path / "h.npz")
    np.savez(tmp_path / "i.npz", x=np.array([object()] * 6), y=[0, 1] * 3)
    assert "object (pickled) arrays" in user_error(tmp_path / "i.npz")


# ---------------------------------------------------------------- arguments and specs

def test_argument_errors(tmp_path):
    p = write_npz(tmp_path / "ok.npz", x=np.zeros((6, 4, 4), np.uint8), y=[0, 1] * 3)
    for frac in (0, 1, 1.5, -0.1):
        assert "--test-fraction" in user_error(p, test_fraction=frac)
    assert "--train-limit 0 is less than 1" in user_error(p, train_limit=0)
    assert "input size" in user_error(p, input_size=(2, 8, 8))
    assert "does not match 3 input channel" in user_error(p, input_size=(3, 8, 8), mean=(0, 0))
    assert "std" in user_error(p, std=0)


def test_missing_path_and_wrong_file(tmp_path):
    msg = user_error(tmp_path / "nowhere")
    assert "not found" in msg and "fashion-mnist" in msg
    (tmp_path / "x.csv").write_text("1,2")
    assert "not .npz" in user_error(tmp_path / "x.csv")


def test_fashion_mnist_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "FASHION_MNIST_DIR", tmp_path / "absent")
    assert "apt-get install dataset-fashion-mnist" in user_error("fashion-mnist")


# ---------------------------------------------------------------- built-in and shared data

def test_digits_split_and_determinism():
    a = load_task_data("digits", **GREY, seed=3)
    b = load_task_data("digits", **GREY, seed=3)
    c = load_task_data("digits", **GREY, seed=4)
    assert (len(a.train), len(a.val), len(a.test)) == (1294, 144, 359)
    assert a.classes == [str(d) for d in range(10)]
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert not torch.equal(a.train.images, c.train.images)
    assert a.train.images.max() == 255  # digits' 0..16 scale reaches white


def test_mnist_5k_and_train_limit():
    td = load_task_data("mnist-5k", **RGB, train_limit=100, seed=1)
    # the cap comes first, then validation takes 10 % (at least 2 per class) of those 100
    assert (len(td.train), len(td.val), len(td.test)) == (80, 20, 1000)
    assert np.bincount(td.train.labels.numpy()).tolist() == [8] * 10
    assert np.bincount(td.val.labels.numpy()).tolist() == [2] * 10
    plain = td.train.with_augment("none")
    x, y = next(iter(DataLoader(plain, batch_size=8, shuffle=False)))
    bx, by = plain.batch(range(8))
    assert x.shape == (8, 3, 16, 16) and torch.equal(x, bx) and torch.equal(y, by)
    line = describe(td)
    assert "MNIST-5k" in line and "80 train / 20 validation / 1,000 test" in line
    assert "10 classes" in line and "light augmentation" in line and "\n" not in line


@pytest.mark.skipif(not (sources.FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist():
    td = load_task_data("fashion-mnist", input_size=(3, 32, 32), mean=0.5, std=0.5)
    assert (len(td.train), len(td.val), len(td.test)) == (54000, 6000, 10000)
    assert td.classes == FASHION_MNIST_CLASSES and td.num_classes == 10
    assert td.train.images.shape == (54000, 1, 32, 32) and td.train.images.dtype == torch.uint8
    assert td.train[0][0].shape == (3, 32, 32)


@pytest.mark.skipif(not (SHARED_DATA / "mnist-test").is_dir(), reason="shared/data absent")
def test_shared_mnist_test_idx():
    td = load_task_data(str(SHARED_DATA / "mnist-test"), **GREY, test_fraction=0.2)
    assert (len(td.train), len(td.val), len(td.test)) == (7200, 800, 2000)
    assert td.classes == [str(d) for d in range(10)]
