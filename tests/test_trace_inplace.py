"""A residual join written as an in-place statement (``out.add_(x)``) is part of its block."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from archsearch.graph.trace import trace
from archsearch.passes.codegen import build_slim, build_student
from randnets import randomize_batchnorm


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.c2, self.b2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        out = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
        out.add_(x)  # a statement: its result is not read
        return F.relu(out)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.blocks = nn.Sequential(Block(4), Block(4), Block(4))
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


def test_an_in_place_join_is_traced_as_the_blocks_sum():
    net = Net().eval()
    randomize_batchnorm(net, 0)
    bg = trace(net, (3, 8, 8))
    assert len(bg.universal()) == 3
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = net(x)
        torch.testing.assert_close(build_student(bg)(x)[0], expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(build_slim(bg)(x), expected, rtol=1e-5, atol=1e-5)
