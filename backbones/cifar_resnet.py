"""CIFAR ResNet-20/32/44/56/110 (He et al. 2016, section 4.2) in akamaster's layout.

Module names match akamaster/pytorch_resnet_cifar10, so its checkpoints (keys ``module.conv1.weight``,
``module.layer1.0.conv1.weight``, ..., ``module.linear.weight``) load after the ``module.`` prefix is
stripped. Shortcuts are "option A": parameter-free stride-2 subsampling plus zero channel padding.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "PadShortcut",
    "BasicBlock",
    "CifarResNet",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
]


def _weights_init(m: nn.Module) -> None:
    """akamaster's init: Kaiming-normal (fan_in, ReLU gain) on conv and linear weights."""
    if isinstance(m, (nn.Linear, nn.Conv2d)):
        nn.init.kaiming_normal_(m.weight)


class PadShortcut(nn.Module):
    """Option-A shortcut: keep every second pixel and zero-pad ``planes // 4`` channels each side."""

    def __init__(self, planes: int) -> None:
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad), "constant", 0)

    def extra_repr(self) -> str:
        return f"pad={self.pad}"


class BasicBlock(nn.Module):
    """conv-bn-relu-conv-bn, add the shortcut, then ReLU."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        # An empty Sequential is an identity that torch.fx inlines away (no graph node).
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = PadShortcut(planes)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = F.relu(out + self.shortcut(x))
        return out


class CifarResNet(nn.Module):
    """Three stages of 16/32/64 channels on 32x32 inputs, global average pool, ``linear``."""

    def __init__(self, num_blocks: list[int], num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.in_planes = 16
        self.conv1 = nn.Conv2d(in_channels, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(16, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(32, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(64, num_blocks[2], stride=2)
        self.linear = nn.Linear(64, num_classes)
        self.apply(_weights_init)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers: list[nn.Module] = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(out, out.size()[3])
        out = out.view(out.size(0), -1)
        return self.linear(out)


def _make(depth: int, num_classes: int, in_channels: int) -> CifarResNet:
    n = (depth - 2) // 6
    model = CifarResNet([n, n, n], num_classes, in_channels)
    model.backbone_name = f"resnet{depth}"  # used in error messages (load_weights)
    return model


def resnet20(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """ResNet-20 for 32x32 images (269,722 parameters at 10 classes)."""
    return _make(20, num_classes, in_channels)


def resnet32(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """ResNet-32 for 32x32 images."""
    return _make(32, num_classes, in_channels)


def resnet44(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """ResNet-44 for 32x32 images."""
    return _make(44, num_classes, in_channels)


def resnet56(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """ResNet-56 for 32x32 images."""
    return _make(56, num_classes, in_channels)


def resnet110(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """ResNet-110 for 32x32 images."""
    return _make(110, num_classes, in_channels)
