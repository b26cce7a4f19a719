"""WRN-26, the Visual Decathlon backbone (Rebuffi et al. 2017, "residual adapters"), for 72 px inputs.

Layout: 3x3 stem to 32 channels + BN + ReLU; three stages of 4 basic blocks, widths 64/128/256,
strides 1/2/2 (72 -> 72 -> 36 -> 18 px); global average pool; ``fc``. 1 + 3*4*2 + 1 = 26 layers.

Choices (documented deviations from Rebuffi's code, which uses stride 2 in every stage,
parameter-free "DownsampleB" shortcuts and pre-activation): blocks here are *post-activation*
(conv-BN-ReLU-conv-BN, add, ReLU), the same shape as the other backbones, so the tailoring passes see
one block pattern; shortcuts are 1x1 conv + BN projections wherever the shape changes. Rebuffi's
checkpoints therefore do not load into this module; it is meant to be trained by this project.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["WideBasicBlock", "WideResNet", "wide_resnet26"]


class WideBasicBlock(nn.Module):
    """Post-activation basic block with an identity or 1x1-conv+BN projection ``shortcut``."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()  # empty = identity, inlined away by torch.fx
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return self.relu(out)


class WideResNet(nn.Module):
    """Stem, three stages of ``WideBasicBlock``, global average pool, ``fc``."""

    def __init__(
        self,
        blocks_per_stage: int = 4,
        widths: tuple[int, int, int] = (64, 128, 256),
        strides: tuple[int, int, int] = (1, 2, 2),
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.in_planes = 32
        self.conv1 = nn.Conv2d(in_channels, 32, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(widths[0], blocks_per_stage, strides[0])
        self.layer2 = self._make_layer(widths[1], blocks_per_stage, strides[1])
        self.layer3 = self._make_layer(widths[2], blocks_per_stage, strides[2])
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[2], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers: list[nn.Module] = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(WideBasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


def wide_resnet26(num_classes: int = 10, in_channels: int = 3) -> WideResNet:
    """WRN-26 for 72x72 inputs (Visual Decathlon resolution)."""
    model = WideResNet(num_classes=num_classes, in_channels=in_channels)
    model.backbone_name = "wide_resnet26"  # used in error messages (load_weights)
    return model
