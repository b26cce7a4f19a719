"""The feature-extraction baseline: the pre-trained network frozen, only a new classifier trained.

This is what a user gets without NetTailor or fine-tuning, so every report carries it next to the
teacher and the tailored network. The classifier's inputs are computed once (one pass over the
data), then a fresh classifier of the same shape is trained on them, which takes seconds.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader


@torch.no_grad()
def classifier_inputs(model: nn.Module, classifier: nn.Module, loader: DataLoader,
                      device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``classifier`` receives when ``model`` (eval mode) runs over ``loader``, with the labels."""
    captured: list[torch.Tensor] = []
    handle = classifier.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0].detach().cpu()))
    labels = []
    was_training = model.training
    model.eval()
    try:
        for x, y in loader:
            model(x.to(device))
            labels.append(y)
    finally:
        handle.remove()
        model.train(was_training)
    return torch.cat(captured), torch.cat(labels)


def linear_probe(model: nn.Module, classifier: nn.Module, train: DataLoader, test: DataLoader, device: str, *,
                 epochs: int = 30, lr: float = 0.05, batch_size: int = 256, seed: int = 0) -> float:
    """Test accuracy (percent) of a fresh copy of ``classifier`` trained on the frozen model's features."""
    x_train, y_train = classifier_inputs(model, classifier, train, device)
    x_test, y_test = classifier_inputs(model, classifier, test, device)
    torch.manual_seed(seed)
    head = copy.deepcopy(classifier).cpu()
    head.reset_parameters()
    head.train()
    optimizer = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    steps = epochs * math.ceil(len(x_train) / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x_train), generator=generator)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            loss = F.cross_entropy(head(x_train[idx]), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    head.eval()
    with torch.no_grad():
        correct = sum(int((head(x_test[i:i + 1024]).argmax(1) == y_test[i:i + 1024]).sum())
                      for i in range(0, len(x_test), 1024))
    return 100.0 * correct / max(len(x_test), 1)
