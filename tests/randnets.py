"""Random residual networks for property tests: depth, widths, strides, shortcut kinds, activations,
squeeze-excitation, and channel-split blocks joined by concatenation."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import strategies as st


@dataclass(frozen=True)
class BlockSpec:
    out_channels: int
    stride: int
    projection: bool
    post_activation: bool
    bottleneck: bool
    preact: bool = False
    activation: str = "relu"  # after the join: relu, gelu, or prelu (a post op with a parameter)
    excite: bool = False  # squeeze-excitation on the body's output: a product of two paths, no join
    split: bool = False  # ShuffleNet-style: half the channels pass, half go through the body, concatenated


class RandBlock(nn.Module):
    def __init__(self, c_in: int, spec: BlockSpec) -> None:
        super().__init__()
        c_out = spec.out_channels
        self.split = spec.split and c_in == c_out and c_out % 2 == 0 and spec.stride == 1 and not spec.preact
        self.spec = spec
        if self.split:  # the body sees and yields half the channels; there is no shortcut to add
            c_in = c_out = c_out // 2
        mid = max(1, c_out // 2) if spec.bottleneck else c_out
        if spec.bottleneck:
            self.body = nn.Sequential(nn.Conv2d(c_in, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
                                      nn.Conv2d(mid, mid, 3, spec.stride, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
                                      nn.Conv2d(mid, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        else:
            self.body = nn.Sequential(nn.Conv2d(c_in, c_out, 3, spec.stride, 1, bias=False), nn.BatchNorm2d(c_out),
                                      nn.ReLU(), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
        needs = spec.projection or c_in != c_out or spec.stride != 1
        self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, spec.stride, bias=False), nn.BatchNorm2d(c_out)) if needs else None
        self.pre = nn.Sequential(nn.BatchNorm2d(c_in), nn.ReLU()) if spec.preact else None
        self.excite = nn.Linear(c_out, c_out) if spec.excite else None
        if self.split:
            self.shortcut, c_out = None, 2 * c_out
        self.act = nn.PReLU(c_out, init=0.1) if spec.post_activation and spec.activation == "prelu" else None

    def _post(self, out: torch.Tensor) -> torch.Tensor:
        if not self.spec.post_activation:
            return out
        if self.act is not None:
            return self.act(out)
        return F.gelu(out) if self.spec.activation == "gelu" else F.relu(out)

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if self.excite is None:
            return out
        return out * torch.sigmoid(self.excite(out.mean((2, 3))))[:, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.split:
            passed, worked = x.chunk(2, 1)
            return self._post(torch.cat([passed, self._body(worked)], 1))
        if self.pre is not None:  # pre-activation: a projection reads the activated input
            x_act = self.pre(x)
            skip = self.shortcut(x_act) if self.shortcut is not None else x
            return self._post(self._body(x_act) + skip)
        skip = self.shortcut(x) if self.shortcut is not None else x
        return self._post(self._body(x) + skip)


class RandNet(nn.Module):
    """A stem, a list of residual blocks and a classifier head: never seen by backbones/."""

    def __init__(self, stem_channels: int, specs: list[BlockSpec], num_classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, stem_channels, 3, 1, 1, bias=False), nn.BatchNorm2d(stem_channels), nn.ReLU())
        blocks, c = [], stem_channels
        for spec in specs:
            blocks.append(RandBlock(c, spec))
            c = spec.out_channels
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def randomize_batchnorm(model: nn.Module, seed: int) -> None:
    """Give every batch-norm non-trivial statistics and affine terms, so eval mode matters."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


block_specs = st.builds(BlockSpec, out_channels=st.sampled_from([2, 4, 6, 8, 16, 32]), stride=st.sampled_from([1, 1, 2]),
                        projection=st.booleans(), post_activation=st.booleans(), bottleneck=st.booleans(),
                        preact=st.booleans(), activation=st.sampled_from(["relu", "relu", "gelu", "prelu"]),
                        excite=st.booleans(), split=st.sampled_from([False, False, True]))


@st.composite
def rand_nets(draw: st.DrawFn) -> RandNet:
    specs = draw(st.lists(block_specs, min_size=1, max_size=6))
    stride_budget, kept = 2, []
    for s in specs:
        if s.stride == 2:
            if stride_budget == 0:
                s = dataclasses.replace(s, stride=1)
            else:
                stride_budget -= 1
        kept.append(s)
    torch.manual_seed(draw(st.integers(0, 2**16)))
    net = RandNet(draw(st.sampled_from([2, 4, 8, 16])), kept)  # 16 and 32: widths the fused kernel takes
    randomize_batchnorm(net, draw(st.integers(0, 2**16)))
    return net.eval()


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.sum() > 0 else -x


class Plain(nn.Module):
    """A straight chain of convolutions: no residual block at all."""

    def __init__(self, depth: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*[nn.Sequential(nn.Conv2d(3 if i == 0 else 4, 4, 3, padding=1), nn.ReLU())
                                    for i in range(depth)])
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).mean((2, 3)))


@st.composite
def any_models(draw: st.DrawFn) -> tuple[nn.Module, str]:
    """A residual net, a plain chain, or a residual net with an untraceable module inside; and its kind."""
    kind = draw(st.sampled_from(["residual", "plain", "untraceable"]))
    if kind == "plain":
        return Plain(draw(st.integers(1, 4))), kind
    net = draw(rand_nets())
    if kind == "untraceable":
        block = net.blocks[draw(st.integers(0, len(net.blocks) - 1))]
        block.body.append(Untraceable())
    return net, kind
