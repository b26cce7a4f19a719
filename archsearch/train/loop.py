"""One resumable training loop shared by the teacher, student and retraining stages.

Every epoch ends with an atomic checkpoint of the trainable state, the optimizer and the epoch
count, so ``--resume`` continues from the last finished epoch of the stage a run was in.
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
from archsearch.layout import training_layout
from archsearch.train.distributed import SINGLE, Dist, all_reduce_sum, barrier, wrap

# (model to call, images, labels) -> (loss, logits, extra scalars to show); the model is the stage's
# module, or its DistributedDataParallel wrapper under torchrun.
StepFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, dict[str, float]]]


@dataclass
class Stage:
    """What a training stage trains, how, and where it checkpoints."""

    name: str
    module: nn.Module
    param_groups: list[dict]
    step: StepFn
    epochs: int
    checkpoint: Path
    state_prefixes: tuple[str, ...] | None = None  # which state_dict keys are saved (None: all)
    set_mode: Callable[[bool], None] | None = None
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
        if self.set_mode is not None:
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


def run_stage(stage: Stage, train_loader: DataLoader, device: str, *, resume: bool = True,
              progress: bool = True, seed: int = 0, d: Dist = SINGLE, amp: bool = False) -> list[dict]:
    """Train ``stage`` for its epochs with SGD + momentum and cosine decay; resumable per epoch.

    Under torchrun the module runs under DDP, each rank sees its shard of every epoch, and only
    rank 0 writes checkpoints. ``amp`` runs forward passes in bfloat16 autocast.
    """
    optimizer = torch.optim.SGD(stage.param_groups, momentum=0.9)
    model = wrap(d, stage.module)
    autocast = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=amp)
    total_steps = max(1, stage.epochs * len(train_loader))
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    start = 0
    if resume and stage.checkpoint.exists():
        ckpt = load_checkpoint(stage.checkpoint)
        stage.module.load_state_dict(ckpt["state"], strict=False)
        optimizer.load_state_dict(ckpt["optimizer"])
        start, stage.history = ckpt["epoch"], ckpt["history"]
        if ckpt.get("done"):
            return stage.history
    step_index = start * len(train_loader)
    layout = training_layout(device)
    for epoch in range(start, stage.epochs):
        # every random draw of an epoch (shuffle included) follows from the seed, the stage and the
        # epoch alone, so a resumed run trains exactly as an uninterrupted one
        stage_seed = seed * 1000 + zlib.crc32(stage.name.encode())
        torch.manual_seed(stage_seed + epoch)
        if getattr(train_loader, "generator", None) is not None:
            train_loader.generator.manual_seed(stage_seed + epoch)
        if hasattr(train_loader.sampler, "set_epoch"):  # DistributedSampler: shuffles by its seed + epoch
            train_loader.sampler.seed = stage_seed
            train_loader.sampler.set_epoch(epoch)
        stage.train_mode(True)
        seen = correct = 0
        loss_sum = 0.0
        bar = tqdm(train_loader, desc=f"{stage.name} {epoch + 1}/{stage.epochs}", disable=not (progress and d.is_main),
                   leave=False, dynamic_ncols=True)
        for x, y in bar:
            for g, base in zip(optimizer.param_groups, base_lrs):
                g["lr"] = base * 0.5 * (1 + math.cos(math.pi * step_index / total_steps))
            x, y = x.to(device).contiguous(memory_format=layout), y.to(device)
            with autocast:
                loss, logits, extra = stage.step(model, x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step_index += 1
            seen += int(y.numel())
            correct += int((logits.detach().argmax(1) == y).sum())
            loss_sum += float(loss.detach()) * int(y.numel())
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}",
                            **{k: f"{v:.3f}" for k, v in extra.items()})
        stage.history.append({"epoch": epoch + 1, "loss": loss_sum / max(seen, 1),
                              "train_accuracy": 100.0 * correct / max(seen, 1)})
        _save(stage, optimizer, epoch + 1, d)
    stage.train_mode(False)
    if stage.epochs == 0:
        _save(stage, optimizer, 0, d)
    return stage.history


def _save(stage: Stage, optimizer: torch.optim.Optimizer, epoch: int, d: Dist) -> None:
    if d.is_main:
        save_checkpoint(stage.checkpoint, {"state": stage.state(), "optimizer": optimizer.state_dict(),
                                           "epoch": epoch, "history": stage.history,
                                           "done": epoch == stage.epochs})
    barrier(d)
