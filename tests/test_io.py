"""Atomic writes and checkpoints: never a half-written file, clear errors for broken ones."""
from __future__ import annotations

import pytest
import torch

from archsearch.errors import UserError
from archsearch.io.atomic import atomic_torch_save, atomic_write_json, atomic_write_with
from archsearch.io.checkpoint import load_checkpoint, save_checkpoint


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "report.json"
    atomic_write_json(target, {"a": 1})

    def broken(f):
        f.write(b'{"half": ')
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write_with(target, broken)
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_checkpoint_round_trip(tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"state": {"w": torch.ones(3)}, "epoch": 2})
    back = load_checkpoint(tmp_path / "c.pt")
    assert back["epoch"] == 2 and torch.equal(back["state"]["w"], torch.ones(3))


def test_truncated_checkpoint_is_a_user_error(tmp_path):
    path = tmp_path / "c.pt"
    atomic_torch_save({"state": {"w": torch.randn(1000)}}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_write_into_a_file_path_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot write"):
        atomic_write_json(blocker / "r.json", {})
