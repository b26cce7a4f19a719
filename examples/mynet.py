"""A residual network archsearch has never seen: a plain nn.Module, tailored via --model.

    archsearch inspect --model examples/mynet.py:build --input-size 3,32,32
    archsearch tailor --model examples/mynet.py:build --input-size 3,32,32 --data digits
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class PreActBlock(nn.Module):
    """Pre-activation residual block (BN-ReLU-conv twice), optional strided projection."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in), nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(c_out), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.proj = nn.Conv2d(c_in, c_out, 1, stride, bias=False) if stride != 1 or c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = self.proj(out) if self.proj is not None else x
        out = self.conv2(F.relu(self.bn2(self.conv1(out))))
        return out + skip


class MyNet(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.stage1 = nn.Sequential(PreActBlock(width, width), PreActBlock(width, width))
        self.stage2 = nn.Sequential(PreActBlock(width, 2 * width, 2), PreActBlock(2 * width, 2 * width))
        self.norm = nn.BatchNorm2d(2 * width)
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.stage1(self.stem(x)))
        x = F.relu(self.norm(x)).mean(dim=(2, 3))
        return self.classifier(x)


def build() -> nn.Module:
    """Factory named on the command line: examples/mynet.py:build."""
    torch.manual_seed(0)
    return MyNet()
