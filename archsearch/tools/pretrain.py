"""Pre-train a backbone from scratch: how the built-in default weights are made (no download)."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import backbones
from archsearch.pipeline.config import check_batch_size, check_seed
from archsearch.data import load_task_data
from archsearch.platform.device import check_device
from archsearch.errors import UserError
from archsearch.io.atomic import atomic_torch_save, check_writable
from archsearch.train.loop import Length, Stage, evaluate, run_stage


def pretrain(backbone: str, data: str, *, epochs: int, batch_size: int, lr: float, seed: int,
             train_limit: int | None, output: str | None, device: str, progress: bool) -> dict:
    """Train ``backbone`` on ``data`` and save its state dict to ``output`` (default
    ``./<backbone>-<data>.pt``; never the package's built-in file unless named); returns accuracy and
    timing. Options and the output path are checked before any training."""
    if epochs < 1:
        raise UserError(f"--epochs must be at least 1, not {epochs}")
    check_batch_size(batch_size)
    check_seed(seed)
    if not lr > 0:
        raise UserError(f"--lr must be a positive learning rate, not {lr}")
    if train_limit is not None and train_limit < 1:
        raise UserError(f"--train-limit must be at least 1, not {train_limit}")
    check_device(device)
    shape = backbones.default_input_size(backbone)  # an unknown backbone is a UserError here
    out = check_writable(output if output else f"{backbone}-{Path(data).stem or 'data'}.pt")
    torch.manual_seed(seed)
    mean, std = backbones.default_normalization(backbone)
    task = load_task_data(data, input_size=shape, mean=mean, std=std, seed=seed, train_limit=train_limit,
                          augment="none")
    model = backbones.get_backbone(backbone, num_classes=task.num_classes, in_channels=shape[0]).to(device)
    train = DataLoader(task.train, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    test = DataLoader(task.test, batch_size=512)

    def step(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
        logits = net(x)
        return F.cross_entropy(logits, y), logits, {}

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        stage = Stage("pretrain", model, [{"params": list(model.parameters()), "lr": lr, "weight_decay": 5e-4}],
                      step, Length(epochs=epochs), Path(tmp) / "pretrain.pt")
        run_stage(stage, train, device, resume=False, progress=progress, seed=seed)
    model.eval()
    accuracy = evaluate(model, test, device)
    atomic_torch_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out)
    return {"backbone": backbone, "data": task.name, "epochs": epochs, "test_accuracy": accuracy,
            "train_images": len(task.train), "seconds": time.perf_counter() - start, "output": str(out)}
