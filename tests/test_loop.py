"""The training loop: adaptive length on a validation score, best state kept, restarts after divergence."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from archsearch.train.loop import Length, Stage, run_stage, stage_summary


def _data(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return x, y


def _stage(tmp_path, model: nn.Module, length: Length, score=None, lr: float = 0.1, key: str = "s") -> Stage:
    def step(m, x, y):
        logits = m(x)
        return F.cross_entropy(logits, y), logits, {}
    return Stage(key, model, [{"params": list(model.parameters()), "lr": lr}], step, length,
                 tmp_path / f"{key}.pt", score=score)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return 100.0 * float((model(x).argmax(1) == y).float().mean())


def test_adaptive_stage_stops_on_a_plateau_and_keeps_the_best_state(tmp_path):
    torch.manual_seed(0)
    x, y = _data()
    vx, vy = _data(128, seed=1)
    model = nn.Linear(8, 2)
    scores: list[float] = []

    def score() -> float:
        scores.append(_accuracy(model, vx, vy))
        return scores[-1]

    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=torch.Generator())
    stage = _stage(tmp_path, model, Length(min_steps=20, max_epochs=30, patience=2, decays=1), score)
    history = run_stage(stage, loader, "cpu", progress=False)
    summary = stage_summary(stage)
    assert 3 <= summary["epochs"] < 30, summary  # stopped by the plateau, not the cap
    assert summary["stopped"].startswith("no improvement")
    assert _accuracy(model, vx, vy) == max(scores)  # the module ends in its best validated state
    assert history[0]["epoch"] == 0  # the starting point was scored too


def test_min_steps_keeps_a_small_data_set_training(tmp_path):
    x, y = _data(64)
    model = nn.Linear(8, 2)
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    stage = _stage(tmp_path, model, Length(min_steps=40, max_epochs=50, patience=1, decays=0), score=lambda: 50.0)
    run_stage(stage, loader, "cpu", progress=False)
    assert stage_summary(stage)["epochs"] == 20  # 2 steps an epoch: 40 steps before the flat score may stop it


def test_divergence_returns_to_the_best_state_with_a_smaller_rate(tmp_path):
    torch.manual_seed(0)
    x, y = _data()
    model = nn.Linear(8, 2)
    vx, vy = _data(128, seed=1)
    calls = {"n": 0}

    def step(m, xb, yb):
        calls["n"] += 1
        logits = m(xb)
        loss = F.cross_entropy(logits, yb)
        if calls["n"] == 12:  # one blow-up in the second epoch
            loss = loss * float("nan")
        return loss, logits, {}

    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    stage = Stage("d", model, [{"params": list(model.parameters()), "lr": 0.1}], step,
                  Length(min_steps=10, max_epochs=6, patience=3, decays=0), tmp_path / "d.pt",
                  score=lambda: _accuracy(model, vx, vy))
    history = run_stage(stage, loader, "cpu", progress=False)
    restarts = [h for h in history if "restart" in h]
    assert len(restarts) == 1 and restarts[0]["restart"] == "loss not finite"
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert history[-1]["lr_factor"] < 1.0


def test_a_finished_stage_resumes_to_its_best_state(tmp_path):
    torch.manual_seed(0)
    x, y = _data()
    vx, vy = _data(128, seed=1)
    model = nn.Linear(8, 2)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=torch.Generator())
    stage = _stage(tmp_path, model, Length(epochs=3), lambda: _accuracy(model, vx, vy))
    run_stage(stage, loader, "cpu", progress=False)
    done = {k: v.clone() for k, v in model.state_dict().items()}
    again = nn.Linear(8, 2)
    stage2 = _stage(tmp_path, again, Length(epochs=3), lambda: _accuracy(again, vx, vy))
    run_stage(stage2, loader, "cpu", progress=False)
    assert all(torch.equal(done[k], again.state_dict()[k]) for k in done)


def test_no_rate_drop_before_the_floor_of_steps(tmp_path):
    x, y = _data(64)
    model = nn.Linear(8, 2)
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    stage = _stage(tmp_path, model, Length(min_steps=20, max_epochs=50, patience=1, decays=1), score=lambda: 50.0)
    history = run_stage(stage, loader, "cpu", progress=False)
    trained = [h for h in history if h["epoch"] > 0]
    assert all(h["lr_factor"] == 1.0 for h in trained[:10])  # 2 steps an epoch: 20 steps at the full rate
    assert trained[10]["lr_factor"] == 0.1 and len(trained) == 11  # then one epoch at the dropped rate, and the stop


def _scripted_stage(tmp_path, key: str, scores: list[float], chance_loss: float | None) -> Stage:
    """A stage whose validation scores are scripted: 80, then a fall to 50, then a climb."""
    torch.manual_seed(0)
    x, y = _data()
    model = nn.Linear(8, 2)
    it = iter(scores)
    stage = _stage(tmp_path, model, Length(min_steps=0, max_epochs=len(scores) - 1, patience=5, decays=0),
                   score=lambda: next(it), key=key)
    stage.chance_loss = chance_loss
    return stage


def test_a_dip_while_training_loss_falls_is_not_a_collapse(tmp_path):
    # the training cross-entropy of this easy task stays far under ln 2 = 0.69
    stage = _scripted_stage(tmp_path, "dip", [80.0, 50.0, 85.0, 90.0], chance_loss=0.69)
    history = run_stage(stage, DataLoader(TensorDataset(*_data()), batch_size=32), "cpu", progress=False)
    assert not [h for h in history if "restart" in h]
    assert history[1]["loss"] < 0.69 and history[-1]["lr_factor"] == 1.0


def test_a_fall_while_training_learns_nothing_restarts(tmp_path):
    # chance_loss 0 stands for a training loss above guessing: the same fall is now a wreck
    stage = _scripted_stage(tmp_path, "wreck", [80.0, 50.0, 85.0, 90.0], chance_loss=0.0)
    history = run_stage(stage, DataLoader(TensorDataset(*_data()), batch_size=32), "cpu", progress=False)
    restarts = [h for h in history if "restart" in h]
    assert len(restarts) == 1 and restarts[0]["restart"] == "validation collapsed" and restarts[0]["epoch"] == 1
    assert history[-1]["lr_factor"] < 1.0
