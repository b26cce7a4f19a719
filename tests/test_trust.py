"""Results a user can trust: the test split decides nothing, and nothing depends on the scale of a
model's activations (linear probe, fine-tuning, the teacher term)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from archsearch.errors import RunFailed
from archsearch.io.checkpoint import load_checkpoint
from archsearch.pipeline import TailorConfig, tailor
from tinytask import USER_MODEL

# A residual network without batch norm: its activations scale with its first convolution's weights.
UNNORMALISED_MODEL = '''
import torch, torch.nn as nn, torch.nn.functional as F

SCALE = {scale}

class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.a = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.b = nn.Conv2d(c, c, 3, padding=1, bias=False)

    def forward(self, x):
        return F.relu(x + self.b(F.relu(self.a(x))))

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.body = nn.Sequential(Block(16), Block(16), Block(16))
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.body(F.relu(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

def build():
    torch.manual_seed(0)
    net = Net()
    for block in net.body:  # small residual branches: a stable network without normalisation
        nn.init.normal_(block.b.weight, std=0.01)
    with torch.no_grad():
        net.stem.weight.mul_(SCALE)
    return net
'''


def _run(tmp: Path, name: str, scale: float) -> tuple[dict, Path]:
    (tmp / f"{name}.py").write_text(UNNORMALISED_MODEL.format(scale=scale))
    cfg = TailorConfig(model=f"{tmp / name}.py:build", input_size="1,8,8", data="digits", out=str(tmp / name),
                       teacher_epochs=4, student_epochs=1, retrain_epochs=1, sweep="1", theta_sweep="none",
                       batch_size=32, progress=False)
    return tailor(cfg, log=lambda m: None), tmp / name


@pytest.fixture(scope="module")
def scaled_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scale")
    return {scale: _run(tmp, f"x{int(scale)}", scale) for scale in (1.0, 100.0)}


def test_fine_tuning_improves_on_feature_extraction_whatever_the_activation_scale(scaled_runs):
    for scale, (report, _) in scaled_runs.items():
        assert report["teacher"]["val"] > report["feature_extraction"]["val"], scale
        assert report["teacher_accuracy"] > 60, scale
    rms = {scale: r["feature_rms"] for scale, (r, _) in scaled_runs.items()}
    assert rms[100.0] > 50 * rms[1.0]  # the activations really are about 100x larger


def test_the_teacher_term_is_scale_free(scaled_runs):
    omega = {}
    for scale, (_, run) in scaled_runs.items():
        history = load_checkpoint(run / "checkpoints" / "student.pt")["history"]
        omega[scale] = [h["omega"] for h in history if "omega" in h][0]
    assert 0.1 < omega[100.0] / omega[1.0] < 10, omega


def _npz(path: Path, x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> Path:
    np.savez(path, x=x, y=y, x_test=x_test, y_test=y_test)
    return path


def test_permuting_the_test_labels_changes_no_choice_and_no_weight(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 60, size=(360, 12, 12), dtype=np.uint8)
    y = np.arange(360) % 3
    x[y == 0, :4] += 150
    x[y == 1, :, :4] += 150
    x[:, 4:8, 4:8] += rng.integers(0, 90, size=(360, 1, 1), dtype=np.uint8)  # noise the task must learn to ignore
    train, test = slice(0, 300), slice(300, 360)
    (tmp_path / "tiny.py").write_text(USER_MODEL)
    reports = {}
    for name, y_test in (("plain", y[test]), ("permuted", rng.permutation(y[test]))):
        data = _npz(tmp_path / f"{name}.npz", x[train], y[train], x[test], y_test)
        cfg = TailorConfig(model=f"{tmp_path / 'tiny.py'}:build", input_size="3,12,12", data=str(data),
                           out=str(tmp_path / name), teacher_epochs=2, student_epochs=2, retrain_epochs=1,
                           sweep="auto", max_retrains=2, batch_size=32, progress=False)
        try:
            reports[name] = tailor(cfg, log=lambda m: None)
        except RunFailed as exc:  # the same failure for both is as good a check of the decisions
            reports[name] = {"failed": str(exc)}
    plain, permuted = reports["plain"], reports["permuted"]
    if "failed" in plain:
        assert plain == permuted
        return
    assert permuted["tailored_accuracy"] != plain["tailored_accuracy"]  # the test labels did change
    for key in ("chosen_k", "chosen_theta", "within_tolerance", "selection", "tailored_macs"):
        assert plain[key] == permuted[key], key
    assert [t["val_accuracy"] for t in plain["sweep"]] == [t["val_accuracy"] for t in permuted["sweep"]]
    a = torch.load(tmp_path / "plain" / "tailored.pt", weights_only=False).state_dict()
    b = torch.load(tmp_path / "permuted" / "tailored.pt", weights_only=False).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
