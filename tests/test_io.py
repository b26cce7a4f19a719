"""Atomic writes and checkpoints: never a half file, never a stray temporary file."""
from __future__ import annotations

import json
import os
import stat

import pytest
import torch

from archsearch.errors import UserError
from archsearch.io import (atomic_torch_save, atomic_write_bytes, atomic_write_json,
                           atomic_write_text, atomic_write_with, load_checkpoint, save_checkpoint)


def names(folder) -> list[str]:
    return sorted(os.listdir(folder))


def test_write_bytes_text_json(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    atomic_write_text(tmp_path / "b.txt", "héllo\n")
    atomic_write_json(tmp_path / "c.json", {"macs": 12, "ok": [1, 2]})
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "héllo\n"
    assert json.loads((tmp_path / "c.json").read_text()) == {"macs": 12, "ok": [1, 2]}
    assert (tmp_path / "c.json").read_text().endswith("\n")
    assert names(tmp_path) == ["a.bin", "b.txt", "c.json"]


def test_overwrite_replaces_and_keeps_usual_mode(tmp_path):
    target = tmp_path / "r.txt"
    target.write_text("old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and names(tmp_path) == ["r.txt"]
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask


def test_creates_missing_parents(tmp_path):
    atomic_write_text(tmp_path / "runs" / "x" / "report.json", "{}")
    assert (tmp_path / "runs" / "x" / "report.json").read_text() == "{}"


def test_writer_that_raises_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(b"previous")

    def half_then_fail(f):
        f.write(b"half of a new file")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        atomic_write_with(target, half_then_fail)
    assert target.read_bytes() == b"previous" and names(tmp_path) == ["model.pt"]


def test_writer_that_raises_creates_nothing(tmp_path):
    def fail(f):
        f.write(b"x" * 1000)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write_with(tmp_path / "new.bin", fail)
    assert names(tmp_path) == []


def test_torch_save_failure_keeps_old_checkpoint(tmp_path):
    target = tmp_path / "ckpt.pt"
    atomic_torch_save({"step": 1}, target)
    with pytest.raises(Exception):
        atomic_torch_save({"step": 2, "bad": lambda: None}, target)  # lambdas do not pickle
    assert torch.load(target, weights_only=True) == {"step": 1}
    assert names(tmp_path) == ["ckpt.pt"]


def test_json_that_cannot_serialise_touches_nothing(tmp_path):
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "r.json", {"x": object()})
    assert names(tmp_path) == []


def test_directory_in_the_way_is_a_user_error(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(UserError, match="cannot write .*out"):
        atomic_write_text(tmp_path / "out", "x")
    assert names(tmp_path) == ["out"] and names(tmp_path / "out") == []


def test_checkpoint_round_trip(tmp_path):
    state = {"epoch": 3, "model": {"w": torch.arange(4.0)}, "opt": {"lr": 0.1}, "name": "t"}
    save_checkpoint(tmp_path / "c.pt", state)
    back = load_checkpoint(tmp_path / "c.pt")
    assert back["epoch"] == 3 and back["name"] == "t" and torch.equal(back["model"]["w"],
                                                                       torch.arange(4.0))
    assert names(tmp_path) == ["c.pt"]


def test_checkpoint_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")
    save_checkpoint(tmp_path / "c.pt", {"w": torch.ones(100)})
    (tmp_path / "cut.pt").write_bytes((tmp_path / "c.pt").read_bytes()[:200])
    for bad in ("cut.pt", "text.pt"):
        (tmp_path / "text.pt").write_text("hello")
        with pytest.raises(UserError, match=f"{bad} is not a readable checkpoint") as info:
            load_checkpoint(tmp_path / bad)
        assert "\n" not in str(info.value)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(UserError, match="not a checkpoint dict"):
        load_checkpoint(tmp_path / "list.pt")
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "x.pt", [1])  # type: ignore[arg-type]
