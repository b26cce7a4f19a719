"""MobileNetV2 (width 1.0) in plain torch, for tailoring a real pre-trained natural-image backbone.

It needs no torchvision, yet its module tree and its parameter and buffer names are exactly those of
``torchvision.models.mobilenet_v2``, so a state dict saved from torchvision loads strictly, e.g. the
iNaturalist-birds weights in ``../shared/data/inat-mobilenetv2/`` (965 classes, the default here):

    archsearch tailor --model examples/mobilenet_v2.py:build --weights ../shared/data/inat-mobilenetv2/mobilenet_v2_inat_bird.pth --input-size 3,64,64 --data ../shared/data/cifar10-test --test-fraction 0.2 --augment standard

The network expects 3-channel images normalised with the ImageNet mean and std; it was trained at
224x224, and any size that survives five stride-2 stages runs.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn


def _make_divisible(v: float, divisor: int, min_value: Optional[int] = None) -> int:
    """Round ``v`` to the nearest multiple of ``divisor``, never going down by more than 10 %
    (torchvision's rule, from the original TensorFlow implementation)."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class Conv2dNormActivation(nn.Sequential):
    """Conv2d → BatchNorm2d → ReLU6 (indices 0, 1, 2), as torchvision's ``Conv2dNormActivation``."""

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1) -> None:
        padding = (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_planes, out_planes, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_planes),
            nn.ReLU6(inplace=True),
        )
        self.out_channels = out_planes


class InvertedResidual(nn.Module):
    """Expand (1x1, skipped when the ratio is 1) → depthwise 3x3 → linear 1x1 projection; a
    residual connection when the stride is 1 and the channel count is unchanged."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride should be 1 or 2, got {stride}")
        self.stride = stride
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(Conv2dNormActivation(inp, hidden_dim, kernel_size=1))
        layers.extend([
            Conv2dNormActivation(hidden_dim, hidden_dim, stride=stride, groups=hidden_dim),
            nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ])
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


# t (expansion), c (output channels), n (repeats), s (stride of the first repeat): torchvision's table.
INVERTED_RESIDUAL_SETTING = [
    [1, 16, 1, 1],
    [6, 24, 2, 2],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
]


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, round_nearest: int = 8,
                 dropout: float = 0.2) -> None:
        super().__init__()
        input_channel = _make_divisible(32 * width_mult, round_nearest)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult), round_nearest)
        features: list[nn.Module] = [Conv2dNormActivation(3, input_channel, stride=2)]
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            output_channel = _make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                features.append(InvertedResidual(input_channel, output_channel, s if i == 0 else 1, t))
                input_channel = output_channel
        features.append(Conv2dNormActivation(input_channel, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))

        # torchvision's initialisation, for training from scratch; pre-trained weights overwrite it.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
        x = torch.flatten(x, 1)
        return self.classifier(x)


def build(num_classes: int = 965) -> nn.Module:
    """MobileNetV2 1.0 with ``num_classes`` outputs (965: the iNaturalist-birds weights)."""
    return MobileNetV2(num_classes=num_classes)
