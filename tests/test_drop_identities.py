"""The slim module leaves out what evaluation passes through (drop-path, dropout): no foreign class in
tailored.pt, the same logits as the pruned student, and the source network untouched."""
from __future__ import annotations

import torch
import torch.nn as nn

from archsearch.graph.classifier import replace_classifier
from archsearch.graph.trace import trace
from archsearch.passes.codegen import build_slim, build_student
from archsearch.passes.lower.drop_identities import passes_through
from archsearch.passes.insert_proxies import insert_proxies
from archsearch.passes.prune import prune


class MyDropPath(nn.Module):
    """A user's stochastic depth: drops the whole branch at random while training."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        keep = (torch.rand(x.shape[0], 1, 1, 1, device=x.device) >= self.p).to(x.dtype)
        return x * keep / (1 - self.p)


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)
        self.drop = MyDropPath(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.drop(self.bn(self.conv(x))))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.Sequential(*[Block(8) for _ in range(4)])
        self.dropout = nn.Dropout(0.3)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(torch.relu(self.stem(x)))
        return self.fc(self.dropout(x.mean((2, 3))))


def test_passes_through_is_measured_on_the_module():
    assert passes_through(MyDropPath(0.5)) and passes_through(nn.Dropout(0.5)) and passes_through(nn.Identity())
    assert not passes_through(nn.ReLU()) and not passes_through(nn.Conv2d(8, 8, 1)) and not passes_through(nn.Flatten())
    drop = MyDropPath(0.5).train()
    passes_through(drop)
    assert drop.training  # the probe leaves the module's mode as it found it


def test_slim_module_drops_drop_path_and_matches_the_pruned_student():
    torch.manual_seed(0)
    model = Net().eval()
    bg = replace_classifier(trace(model, (3, 12, 12), [MyDropPath]), 3)
    pruned = prune(insert_proxies(bg, 2), 1, 0.05)
    slim = build_slim(pruned).eval()
    student = build_student(pruned, block_outputs=False).eval()
    assert not any(isinstance(m, (MyDropPath, nn.Dropout)) for m in slim.modules())
    x = torch.randn(4, 3, 12, 12)
    with torch.no_grad():
        assert torch.allclose(slim(x), student(x), atol=1e-5)
    assert all(isinstance(b.drop, MyDropPath) for b in model.blocks)  # the shared blocks keep theirs
