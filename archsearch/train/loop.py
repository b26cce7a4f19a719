"""One resumable training loop shared by the teacher, student and retraining stages.

A stage trains until its validation score stops improving, not for an epoch count that suits one
data set: after a warm-up the rate is constant; when the score has not improved for ``patience``
epochs the rate drops (and training goes on from the best state); after the last drop the next
plateau ends the stage, once it has taken its floor of optimiser steps (small data sets still get
enough of them) and never past its cap. The best state (by validation score) is what the stage
leaves in its module. A loss that turns non-finite, or a validation accuracy that collapses (loses a
quarter of the best while the epoch's training cross-entropy is worse than guessing), sends the stage
back to its best state with a smaller rate instead of training on from a wrecked one.

A fixed length (``Length(epochs=N)``, what ``--teacher-epochs`` and friends ask for) runs N epochs
with warm-up and cosine decay, and still keeps the best validated state when there is a score.

Every epoch ends with an atomic checkpoint (trainable state, optimiser, counters, best state), so
``--resume`` continues from the last finished epoch of the stage a run was in.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from archsearch.io.checkpoint import load_checkpoint, save_checkpoint
from archsearch.platform.memory_format import training_layout
from archsearch.train.distributed import SINGLE, Dist, all_reduce_sum, barrier, wrap

# (model to call, images, labels) -> (loss, logits, extra scalars to show); the model is the stage's
# module, or its DistributedDataParallel wrapper under torchrun.
StepFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, dict[str, float]]]


@dataclass(frozen=True)
class Length:
    """How long a stage trains: a fixed number of epochs, or until validation stops improving."""

    epochs: int | None = None  # fixed length; None: until the validation score stops improving
    min_steps: int = 0  # optimiser steps before an adaptive stage may stop
    max_epochs: int = 40  # an adaptive stage's cap
    patience: int = 2  # epochs without improvement before the rate drops, or the stage stops
    decays: int = 1  # rate drops before a plateau ends the stage
    decay_factor: float = 0.1
    warmup_steps: int = 100  # linear warm-up (at most one epoch)
    max_restarts: int = 4  # returns to the best state after a divergence, each with a smaller rate
    restart_factor: float = 0.3
    min_delta: float = 0.0  # a score must rise by more than this to count as an improvement for patience
    min_delta_share: float = 0.0  # ... and by more than this share of the best score's size

    @property
    def fixed(self) -> bool:
        """Whether the length is a fixed epoch count."""
        return self.epochs is not None


@dataclass
class Stage:
    """What a training stage trains, how, how long, on what score, and where it checkpoints.

    ``key`` identifies the stage (its checkpoint file and its random streams derive from it);
    ``name`` is what progress bars and logs show.
    """

    key: str
    module: nn.Module
    param_groups: list[dict]
    step: StepFn
    length: Length
    checkpoint: Path
    score: Callable[[], float] | None = None  # validation score of ``module`` (higher is better)
    state_prefixes: tuple[str, ...] | None = None  # which state_dict keys are saved (None: all)
    set_mode: Callable[[bool], None] | None = None
    name: str = ""
    start_is_candidate: bool = True  # whether the untrained starting point may be the state kept
    calm_mode: Callable[[bool], None] | None = None  # the mode setter after a restart (e.g. batch norms frozen)
    score_is_accuracy: bool = True  # an accuracy can collapse; an objective's fall is only a worse epoch
    chance_loss: float | None = None  # cross-entropy of guessing (ln K): a collapse trains above it
    restarted: bool = False
    history: list[dict] = field(default_factory=list)

    def state(self) -> dict[str, torch.Tensor]:
        """The trainable part of the module's state (all of it for the teacher)."""
        sd = self.module.state_dict()
        if self.state_prefixes is None:
            return sd
        return {k: v for k, v in sd.items() if k.startswith(self.state_prefixes)}

    def train_mode(self, on: bool) -> None:
        """Put the stage's module in training (``on``) or eval mode, through its own setter where it
        has one (a student keeps its shared blocks in eval mode)."""
        if self.restarted and self.calm_mode is not None:
            self.calm_mode(on)
        elif self.set_mode is not None:
            self.set_mode(on)
        else:
            self.module.train(on)


@torch.no_grad()
def evaluate(forward: Callable[[torch.Tensor], torch.Tensor], loader: Iterable, device: str,
             d: Dist = SINGLE) -> float:
    """Top-1 accuracy in percent of ``forward`` (returning logits) over ``loader`` (this rank's
    shard under torchrun; counts are summed over ranks so every rank gets the same figure)."""
    correct = total = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        correct += int((forward(x).argmax(1) == y).sum())
        total += int(y.numel())
    correct, total = all_reduce_sum(d, [correct, total], device)  # NCCL reduces GPU tensors only
    return 100.0 * correct / max(total, 1)


def stage_seed(seed: int, key: str) -> int:
    """The base of a stage's random streams: from the run's seed and the stage's key alone."""
    return seed * 1000 + zlib.crc32(key.encode())


@dataclass
class _Progress:
    """A stage's counters, saved with every checkpoint."""

    epoch: int = 0
    step: int = 0
    factor: float = 1.0  # the rate's multiplier after drops and restarts
    bad: int = 0  # epochs since the score last improved
    decays: int = 0
    restarts: int = 0
    best_score: float = -math.inf
    best_epoch: int = 0
    stopped: str = ""  # why the stage ended

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _clone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


def _learning_rate(length: Length, progress: _Progress, steps_per_epoch: int) -> float:
    """The multiplier of every group's base rate at this step: warm-up, then cosine (fixed length)
    or the plateau factor (adaptive)."""
    warmup = max(1, min(length.warmup_steps, steps_per_epoch))
    scale = min(1.0, (progress.step + 1) / warmup)
    if length.fixed:
        total = max(1, length.epochs * steps_per_epoch)
        scale *= 0.5 * (1 + math.cos(math.pi * min(progress.step, total) / total))
    return scale * progress.factor


COLLAPSE = 0.75  # a validation accuracy under this share of the best one is a wreck, not noise


CALM_STEP = 1e-3  # after a restart, no step moves a clipped tensor by more than this share of its norm


def _clip_relative_steps(optimizer: torch.optim.Optimizer) -> None:
    """Scale each gradient of a group marked ``clip`` so that ``lr * |g| <= CALM_STEP * |w|``: a
    pre-trained network whose gradients are large against its weights (converted models with tiny
    batch-norm variances: 12x the weights' norm on MobileNetV2 from iNaturalist) cannot be wrecked
    in a few steps, whatever its scale (adaptive gradient clipping, Brock et al. 2021, per tensor)."""
    for group in optimizer.param_groups:
        if not group.get("clip"):
            continue
        for p in group["params"]:
            if p.grad is None:
                continue
            limit = CALM_STEP * float(p.detach().norm()) / max(group["lr"], 1e-12)
            norm = float(p.grad.norm())
            if norm > limit > 0:
                p.grad.mul_(limit / norm)


def _collapsed(score: float, best: float, train_ce: float, chance_loss: float | None) -> bool:
    """A validation accuracy that lost more than a quarter of the best one in an epoch (and that was
    worth something) while training learnt nothing (its cross-entropy above ``chance_loss``, where
    given): fine-tuning at too high a rate wrecking pre-trained features looks like this. A first
    epoch whose moving batch-norm statistics cost a starting classifier accuracy for a while, while
    its training loss falls, is not one (docs/design-choices.md, *Stage lengths*, has both cases)."""
    if not math.isfinite(score):
        return True
    wrecked = best > 0 and score < COLLAPSE * best
    return wrecked and (chance_loss is None or not train_ce <= chance_loss)


def run_stage(stage: Stage, train_loader: DataLoader, device: str, *, resume: bool = True,
              progress: bool = True, seed: int = 0, d: Dist = SINGLE, amp: bool = False) -> list[dict]:
    """Train ``stage`` (SGD with momentum) for its length; resumable per epoch; returns its history.

    Under torchrun the module runs under DDP, each rank sees its shard of every epoch, the score is
    the same on every rank, and only rank 0 writes checkpoints. ``amp`` runs forward passes in
    bfloat16 autocast. The module ends in its best validated state (its last one without a score).
    """
    length = stage.length
    optimizer = torch.optim.SGD(stage.param_groups, momentum=0.9)
    model = wrap(d, stage.module)
    autocast = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=amp)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    steps_per_epoch = max(1, len(train_loader))
    p = _Progress()
    best: dict[str, torch.Tensor] | None = None
    if resume and stage.checkpoint.exists():
        ckpt = load_checkpoint(stage.checkpoint)
        stage.module.load_state_dict(ckpt["state"], strict=False)
        optimizer.load_state_dict(ckpt["optimizer"])
        p = _Progress(**ckpt["progress"])
        stage.restarted = p.restarts > 0
        stage.history = ckpt["history"]
        best = ckpt.get("best")
        if ckpt.get("done"):
            if best is not None:
                stage.module.load_state_dict(best, strict=False)
            stage.train_mode(False)
            return stage.history
    elif stage.score is not None and stage.start_is_candidate:  # a stage never ends worse than it began
        stage.train_mode(False)
        p.best_score = stage.score()
        best = _clone(stage.state())
        stage.history.append({"epoch": 0, "val": p.best_score})
    layout = training_layout(device)
    base = stage_seed(seed, stage.key)
    while True:
        if length.fixed and p.epoch >= length.epochs:
            p.stopped = f"{length.epochs} epochs"
            if stage.history:
                stage.history[-1]["stopped"] = p.stopped
            if best is not None:
                stage.module.load_state_dict(best, strict=False)
            _save(stage, optimizer, p, best, True, d)
            break
        # every random draw of an epoch (shuffle included) follows from the seed, the stage and the
        # epoch alone, so a resumed run trains exactly as an uninterrupted one
        torch.manual_seed(base + p.epoch)
        if getattr(train_loader, "generator", None) is not None:
            train_loader.generator.manual_seed(base + p.epoch)
        if hasattr(train_loader.sampler, "set_epoch"):  # DistributedSampler: shuffles by its seed + epoch
            train_loader.sampler.seed = base
            train_loader.sampler.set_epoch(p.epoch)
        stage.train_mode(True)
        seen = correct = 0
        loss_sum = 0.0
        extra_sums: dict[str, float] = {}
        diverged = False
        label = f"{stage.name or stage.key} {p.epoch + 1}" + (f"/{length.epochs}" if length.fixed else "")
        bar = tqdm(train_loader, desc=label, disable=not (progress and d.is_main), leave=False, dynamic_ncols=True)
        for x, y in bar:
            scale = _learning_rate(length, p, steps_per_epoch)
            for g, lr in zip(optimizer.param_groups, base_lrs):
                g["lr"] = lr * scale
            x, y = x.to(device).contiguous(memory_format=layout), y.to(device)
            with autocast:
                loss, logits, extra = stage.step(model, x, y)
            if not torch.isfinite(loss.detach()):
                diverged = True
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if stage.restarted:
                _clip_relative_steps(optimizer)
            optimizer.step()
            p.step += 1
            seen += int(y.numel())
            correct += int((logits.detach().argmax(1) == y).sum())
            loss_sum += float(loss.detach()) * int(y.numel())
            for k, v in extra.items():
                extra_sums[k] = extra_sums.get(k, 0.0) + v * int(y.numel())
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}",
                            **{k: f"{v:.3f}" for k, v in extra.items()})
        bar.close()
        p.epoch += 1
        entry = {"epoch": p.epoch, "loss": loss_sum / max(seen, 1), "train_accuracy": 100.0 * correct / max(seen, 1),
                 "lr_factor": p.factor, **{k: v / max(seen, 1) for k, v in extra_sums.items()}}
        stage.train_mode(False)
        score = None if diverged or stage.score is None else stage.score()
        if score is not None:
            entry["val"] = score
        collapsed = (stage.score_is_accuracy and score is not None and best is not None
                     and _collapsed(score, p.best_score, entry.get("ce", entry["loss"]), stage.chance_loss))
        if diverged or collapsed:
            entry["restart"] = "loss not finite" if diverged else "validation collapsed"
            p.restarts += 1
            stage.restarted = True
            p.factor *= length.restart_factor
            p.bad = 0
            if best is not None:
                stage.module.load_state_dict(best, strict=False)
            optimizer.state.clear()  # momentum from the wrecked steps would push the same way again
        elif score is not None and score > p.best_score:
            # the best state is always kept; only a real gain gives the stage more patience
            gain = max(length.min_delta, length.min_delta_share * abs(p.best_score)) if math.isfinite(p.best_score) \
                else 0.0
            p.bad = 0 if score > p.best_score + gain else p.bad + 1
            p.best_score, p.best_epoch = score, p.epoch
            best = _clone(stage.state())
        else:
            p.bad += 1
        stage.history.append(entry)
        if p.restarts > length.max_restarts:
            p.stopped = f"diverged {p.restarts} times"
        elif not length.fixed:
            if p.epoch >= length.max_epochs:
                p.stopped = f"cap of {length.max_epochs} epochs"
            elif p.bad >= length.patience and stage.score is not None and p.step >= length.min_steps:
                # before its floor of steps a stage keeps its rate: the first epochs of a fine-tuning
                # often fall below the starting point before they climb past it
                if p.decays < length.decays:
                    p.decays += 1
                    p.factor *= length.decay_factor
                    p.bad = 0
                    stage.module.load_state_dict(best, strict=False)  # go on from the best state, slower
                    optimizer.state.clear()
                else:
                    p.stopped = f"no improvement in {length.patience} epochs after {p.decays} rate drops"
        done = bool(p.stopped)
        if done:
            entry["stopped"] = p.stopped
        if done and best is not None:
            stage.module.load_state_dict(best, strict=False)
        _save(stage, optimizer, p, best, done, d)
        if done:
            break
    stage.train_mode(False)
    return stage.history


def _save(stage: Stage, optimizer: torch.optim.Optimizer, p: _Progress, best: dict | None, done: bool,
          d: Dist) -> None:
    if d.is_main:
        save_checkpoint(stage.checkpoint, {"state": stage.state(), "optimizer": optimizer.state_dict(),
                                           "progress": p.as_dict(), "history": stage.history, "best": best,
                                           "done": done})
    barrier(d)


def stage_summary(stage: Stage) -> dict:
    """What a report says of a finished stage: epochs, the best epoch and score, restarts, why it stopped."""
    epochs = [h for h in stage.history if h.get("epoch", 0) > 0]
    scored = [h for h in stage.history if "val" in h]
    best = max(scored, key=lambda h: h["val"]) if scored else None
    return {"epochs": len(epochs), "best_epoch": best["epoch"] if best else len(epochs),
            "best_val": best["val"] if best else None,
            "restarts": sum(1 for h in epochs if "restart" in h),
            "stopped": next((h["stopped"] for h in reversed(epochs) if "stopped" in h), "")}
