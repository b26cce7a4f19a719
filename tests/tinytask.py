"""A tiny user model and data set for end-to-end tests: seconds, not minutes."""
from __future__ import annotations

from pathlib import Path

import numpy as np

# A plain nn.Module written here, not taken from backbones/: archsearch has never seen it.
USER_MODEL = '''
import torch, torch.nn as nn, torch.nn.functional as F

class Block(nn.Module):
    def __init__(self, c, stride=1):
        super().__init__()
        self.a = nn.Conv2d(c if stride == 1 else c // 2, c, 3, stride, 1, bias=False)
        self.na = nn.BatchNorm2d(c)
        self.b = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.nb = nn.BatchNorm2d(c)
        self.down = nn.Conv2d(c // 2, c, 1, stride, bias=False) if stride != 1 else None

    def forward(self, x):
        y = self.nb(self.b(F.relu(self.na(self.a(x)))))
        return F.relu(y + (self.down(x) if self.down is not None else x))

class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.body = nn.Sequential(Block(8), Block(8), Block(16, 2), Block(16))
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        return self.out(torch.flatten(F.adaptive_avg_pool2d(self.body(self.stem(x)), 1), 1))

def build():
    torch.manual_seed(0)
    return Tiny()
'''


def tiny_data(path: Path) -> Path:
    """Three separable classes of 12x12 images: bright top, bright left, dark."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 60, size=(300, 12, 12), dtype=np.uint8)
    y = np.arange(300) % 3
    x[y == 0, :4] += 150
    x[y == 1, :, :4] += 150
    np.savez(path, x=x, y=y)
    return path


