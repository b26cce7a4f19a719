"""Pre-train a backbone from scratch: how the built-in default weights are made (no download)."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import backbones
from archsearch.data import load_task_data
from archsearch.io.atomic import atomic_torch_save
from archsearch.models import DEFAULT_WEIGHTS
from archsearch.train.loop import Stage, evaluate, run_stage


def pretrain(backbone: str, data: str, *, epochs: int, batch_size: int, lr: float, seed: int,
             train_limit: int | None, output: str | None, device: str, progress: bool) -> dict:
    """Train ``backbone`` on ``data`` and save its state dict; returns accuracy and timing."""
    torch.manual_seed(seed)
    shape = backbones.default_input_size(backbone)
    mean, std = backbones.default_normalization(backbone)
    task = load_task_data(data, input_size=shape, mean=mean, std=std, seed=seed, train_limit=train_limit)
    model = backbones.get_backbone(backbone, num_classes=task.num_classes, in_channels=shape[0]).to(device)
    train = DataLoader(task.train, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    test = DataLoader(task.test, batch_size=512)

    def step(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
        logits = net(x)
        return F.cross_entropy(logits, y), logits, {}

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        stage = Stage("pretrain", model, [{"params": list(model.parameters()), "lr": lr, "weight_decay": 5e-4}],
                      step, epochs, Path(tmp) / "pretrain.pt")
        run_stage(stage, train, device, resume=False, progress=progress, seed=seed)
    model.eval()
    accuracy = evaluate(model, test, device)
    out = Path(output) if output else DEFAULT_WEIGHTS
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out)
    return {"backbone": backbone, "data": task.name, "epochs": epochs, "test_accuracy": accuracy,
            "train_images": len(task.train), "seconds": time.perf_counter() - start, "output": str(out)}
