"""Image folders over the memory budget stream from disk, with the same pixels; memory helpers."""
from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from archsearch.data import (StreamingImageDataset, TensorImageDataset, load_task_data,
                             memory_budget, parse_memory, peak_rss_bytes)
from archsearch.data import memory
from archsearch.data.imagefolder import FileImages
from archsearch.errors import UserError

RGB = dict(input_size=(3, 16, 16), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """60 images in 3 classes: PNG and JPEG, grey and RGB, square and not, smaller and larger."""
    root = tmp_path_factory.mktemp("stream") / "pics"
    rng = np.random.default_rng(0)
    for ci, name in enumerate(("ant", "bee", "cow")):
        (root / name).mkdir(parents=True)
        for i in range(20):
            h, w = int(rng.integers(10, 60)), int(rng.integers(10, 60))
            if i % 4 == 1:
                img = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L")
            else:
                img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
            img.save(root / name / (f"{i}.jpg" if i % 5 == 0 else f"{i}.png"))
    return root


def batches(part, workers: int):
    loader = DataLoader(part, batch_size=16, shuffle=False, num_workers=workers)
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


@pytest.mark.parametrize("size", [(3, 16, 16), (1, 12, 20)])
def test_streaming_equals_in_memory(folder, size):
    kw = dict(input_size=size, mean=0.5, std=0.25, seed=2, augment="light")
    mem = load_task_data(str(folder), **kw)
    assert not mem.streaming and isinstance(mem.test, TensorImageDataset)
    preprocessed = 60 * size[0] * size[1] * size[2]
    st = load_task_data(str(folder), **kw, max_memory=preprocessed - 1)
    assert st.streaming and isinstance(st.train, StreamingImageDataset)
    assert isinstance(st.val, StreamingImageDataset) and isinstance(st.test, StreamingImageDataset)
    assert load_task_data(str(folder), **kw, max_memory=preprocessed).streaming is False
    assert (len(st.train), len(st.val), len(st.test)) == (len(mem.train), len(mem.val),
                                                          len(mem.test))
    assert st.augment == mem.augment == "light" and st.train.augment == "light"
    assert st.val.augment == st.test.augment == "none"
    for s_part, m_part in ((st.val, mem.val), (st.test, mem.test)):
        sx, sy = batches(s_part, workers=2)
        mx, my = batches(m_part, workers=0)
        assert torch.equal(sy, my) and sx.shape == mx.shape == (len(m_part), *size)
        assert (sx - mx).abs().max() < 1e-5  # the very same preprocessing: equal pixels
    # training images too, seen without augmentation
    sx, _ = st.train.with_augment("none").batch(range(len(st.train)))
    mx, _ = mem.train.with_augment("none").batch(range(len(mem.train)))
    assert (sx - mx).abs().max() < 1e-5
    # augmentation draws the same way in both
    torch.manual_seed(7)
    sa, _ = st.train.batch(range(16))
    torch.manual_seed(7)
    ma, _ = mem.train.batch(range(16))
    assert (sa - ma).abs().max() < 1e-5
    # the digest counts files, not pixels: the same whether streamed or not
    assert st.digest() == mem.digest()


def test_streaming_pickles_and_digest_decodes_nothing(folder, monkeypatch):
    st = load_task_data(str(folder), **RGB, max_memory=1000)
    again = pickle.loads(pickle.dumps(st.test))
    assert torch.equal(again.batch(range(5))[0], st.test.batch(range(5))[0])
    before = st.digest()

    def refuse(*args, **kwargs):
        raise AssertionError("digest decoded an image")

    monkeypatch.setattr(FileImages, "_decode", refuse)
    assert st.digest() == before
    # renaming a file changes the digest (the paths are part of it)
    monkeypatch.undo()
    victim = sorted((folder / "cow").iterdir())[-1]
    moved = victim.with_name("zz" + victim.name)
    victim.rename(moved)
    try:
        assert load_task_data(str(folder), **RGB, max_memory=1000).digest() != before
    finally:
        moved.rename(victim)


def test_env_var_and_arrays_stay_in_memory(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHSEARCH_MAX_MEMORY", "1K")
    assert load_task_data(str(folder), **RGB).streaming
    monkeypatch.setenv("ARCHSEARCH_MAX_MEMORY", "1G")
    assert not load_task_data(str(folder), **RGB).streaming
    monkeypatch.setenv("ARCHSEARCH_MAX_MEMORY", "lots")
    with pytest.raises(UserError, match="ARCHSEARCH_MAX_MEMORY=lots"):
        load_task_data(str(folder), **RGB)
    monkeypatch.delenv("ARCHSEARCH_MAX_MEMORY")
    np.savez(tmp_path / "a.npz", x=np.zeros((20, 8, 8), np.uint8), y=np.arange(20) % 2)
    td = load_task_data(str(tmp_path / "a.npz"), **RGB, max_memory=1)
    assert not td.streaming and isinstance(td.train, TensorImageDataset)
    assert load_task_data(str(folder), **RGB, max_memory="1K").streaming


def test_parse_memory():
    assert parse_memory("1048576") == 1 << 20
    assert parse_memory("512M") == parse_memory("512m") == parse_memory("512MB") == 512 << 20
    assert parse_memory("2G") == parse_memory("2GiB") == parse_memory(" 2 g ") == 2 << 30
    assert parse_memory("1.5G") == 3 << 29
    assert parse_memory("100k") == 102400 and parse_memory("1T") == 1 << 40
    assert parse_memory(4096) == 4096
    for bad in ("", "M", "two G", "-1G", "1Q", "1e9"):
        with pytest.raises(UserError, match="not a size"):
            parse_memory(bad)
    with pytest.raises(UserError, match="negative"):
        parse_memory(-5)


def test_memory_budget(monkeypatch):
    monkeypatch.delenv("ARCHSEARCH_MAX_MEMORY", raising=False)
    assert memory_budget(123) == 123 and memory_budget("2K") == 2048
    with pytest.raises(UserError, match="--max-memory"):
        memory_budget("plenty")
    monkeypatch.setattr(memory, "available_memory", lambda: 8 << 30)
    assert memory_budget() == 4 << 30
    monkeypatch.setenv("ARCHSEARCH_MAX_MEMORY", "512M")
    assert memory_budget() == 512 << 20 and memory_budget(7) == 7


def test_available_memory_and_peak_rss():
    avail = memory.available_memory()
    assert avail is None or avail > 0
    x = torch.ones(40 << 20, dtype=torch.uint8)  # 40 MiB touched
    x.add_(1)
    assert peak_rss_bytes() > 40 << 20


def test_streaming_names_a_stray_file_up_front(folder, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(folder, root)
    (root / "bee" / "notes.txt").write_text("not a picture")
    with pytest.raises(UserError) as info:
        load_task_data(str(root), **RGB, max_memory=1000)
    msg = str(info.value)
    assert f"{root.resolve() / 'bee' / 'notes.txt'} is not an image" in msg and "\n" not in msg
