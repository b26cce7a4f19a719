"""The validation split: stratified sizes, minimums, determinism by seed, disjointness; its errors."""
from __future__ import annotations

import numpy as np
import pytest

from archsearch.data import describe, load_task_data
from archsearch.data.split import val_indices
from archsearch.errors import UserError

SIZE = dict(input_size=(1, 4, 4), mean=0.5, std=0.25, augment="none")


def numbered_npz(path, counts) -> str:
    """One 4x4 image per index i carrying i in its first two pixels; class c has counts[c] images."""
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    x = np.zeros((len(y), 4, 4), dtype=np.uint8)
    i = np.arange(len(y))
    x[:, 0, 0], x[:, 0, 1] = i % 256, i // 256
    np.savez(path, x=x, y=y)
    return str(path)


def ids(part) -> set[int]:
    im = part.images[:, 0].numpy().astype(np.int64)
    out = im[:, 0, 0] + 256 * im[:, 0, 1]
    assert len(set(out.tolist())) == len(out)
    return set(out.tolist())


def test_val_sizes_stratified_and_disjoint(tmp_path):
    spec = numbered_npz(tmp_path / "n.npz", [200, 80, 20])
    td = load_task_data(spec, **SIZE, test_fraction=0.2, seed=5)
    assert (len(td.train), len(td.val), len(td.test)) == (216, 24, 60)
    # train has 160 / 64 / 16 per class; 10 % in proportion: 16, 6.4, 1.6 -> 16, 6, 2
    assert np.bincount(td.val.labels.numpy()).tolist() == [16, 6, 2]
    tr, va, te = ids(td.train), ids(td.val), ids(td.test)
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert len(tr | va | te) == 300
    # labels travel with their images
    for part in (td.train, td.val, td.test):
        im = part.images[:, 0].numpy().astype(np.int64)
        idx = im[:, 0, 0] + 256 * im[:, 0, 1]
        expect = np.concatenate([np.full(n, c) for c, n in enumerate([200, 80, 20])])[idx]
        assert part.labels.numpy().tolist() == expect.tolist()
    assert "216 train / 24 validation / 60 test images" in describe(td)


def test_val_deterministic_by_seed_and_test_untouched(tmp_path):
    spec = numbered_npz(tmp_path / "n.npz", [50, 50])
    a = load_task_data(spec, **SIZE, seed=1)
    b = load_task_data(spec, **SIZE, seed=1)
    c = load_task_data(spec, **SIZE, seed=2)
    assert ids(a.val) == ids(b.val) and ids(a.train) == ids(b.train)
    assert ids(a.val) != ids(c.val)
    # the test split does not depend on the validation fraction
    d = load_task_data(spec, **SIZE, seed=1, val_fraction=0.5)
    assert ids(d.test) == ids(a.test) and ids(d.train) | ids(d.val) == ids(a.train) | ids(a.val)
    assert (len(d.train), len(d.val)) == (40, 40)
    assert a.digest() == b.digest() != c.digest()


def test_val_minimum_two_per_class_never_the_last():
    labels = np.array([0] * 3 + [1] * 2 + [2] * 1 + [3] * 30)
    idx = np.arange(len(labels))
    train, val = val_indices(idx, labels, 0.1, seed=0)
    got = np.bincount(labels[val], minlength=4).tolist()
    # count = max(round(3.6), 2 * 2 classes of >= 3) = 4: 2 from class 0 (its minimum), 2 from
    # class 3; class 1 (2 images) and class 2 (1 image) keep theirs by proportion / their last one
    assert got[0] == 2 and got[2] == 0 and got[3] >= 2 and sum(got) == 4
    assert np.bincount(labels[train], minlength=4).min() >= 1
    assert sorted(np.concatenate([train, val]).tolist()) == idx.tolist()
    # subsets of positions: the result is in the caller's index space
    sub = idx[::-1][:20]
    tr2, va2 = val_indices(sub, labels, 0.2, seed=0)
    assert set(tr2) | set(va2) == set(sub) and not set(tr2) & set(va2)


def test_val_tiny_classes():
    labels = np.array([0, 1, 1])
    train, val = val_indices(np.arange(3), labels, 0.5, seed=0)
    assert labels[val].tolist() == [1] and sorted(labels[train].tolist()) == [0, 1]
    train, val = val_indices(np.arange(2), np.array([0, 1]), 0.5, seed=0)
    assert len(val) == 0 and len(train) == 2


@pytest.mark.parametrize("frac", [0, -0.1, 0.51, 1, 2])
def test_bad_val_fraction(tmp_path, frac):
    spec = numbered_npz(tmp_path / "n.npz", [10, 10])
    with pytest.raises(UserError) as info:
        load_task_data(spec, **SIZE, val_fraction=frac)
    msg = str(info.value)
    assert msg.startswith(f"--val-fraction {frac} is not in (0, 0.5]") and "\n" not in msg


def test_val_fraction_half_allowed(tmp_path):
    spec = numbered_npz(tmp_path / "n.npz", [10, 10])
    td = load_task_data(spec, **SIZE, val_fraction=0.5, test_fraction=0.5)
    assert (len(td.train), len(td.val), len(td.test)) == (5, 5, 10)
