"""Folding frozen batch-norms into convolutions: exact where it applies, left alone where a module is shared."""
from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn

from archsearch.passes.fold_bn import fold_frozen_batchnorms


def _randomize(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g))
    return model.eval().requires_grad_(False)


class Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


class SharedConvTwoNorms(nn.Module):
    """One convolution called twice, each time with its own batch-norm (weight sharing)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn1, self.bn2 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv(torch.relu(self.bn1(self.conv(x)))))


class SharedConvOneNorm(nn.Module):
    """One convolution called twice, a batch-norm after the first call only."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.relu(self.bn(self.conv(x))))


def _fold(model: nn.Module) -> tuple[int, float]:
    gm = fx.symbolic_trace(_randomize(model))
    x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(1))
    before = gm(x)
    count = fold_frozen_batchnorms(gm)
    return count, float((gm(x) - before).abs().max())


def test_a_frozen_pair_is_folded_exactly():
    count, diff = _fold(Plain())
    assert count == 1 and diff < 1e-5


def test_a_shared_convolution_is_left_alone():
    for model in (SharedConvTwoNorms(), SharedConvOneNorm()):
        count, diff = _fold(model)
        assert count == 0 and diff == 0.0, type(model).__name__


def test_trainable_modules_are_left_alone():
    gm = fx.symbolic_trace(_randomize(Plain()).requires_grad_(True))
    assert fold_frozen_batchnorms(gm) == 0


def test_a_proxy_folds_on_the_device_it_trained_on():
    """Proxies without a bias get a zero bias beside their weight, not on the CPU (a GPU run's fold)."""
    from archsearch.nn.fold import fold_proxy
    from archsearch.nn.proxy import make_proxy

    proxy = make_proxy((8, 4, 4), (8, 4, 4), block_macs=0).to("meta").eval()
    steps = fold_proxy(proxy, 0.5)
    assert all(s.weight.device.type == s.bias.device.type == "meta" for s in steps if s.kind == "conv")


def test_a_proxy_gives_the_same_values_and_gradients_in_either_layout():
    """A channels-last map is multiplied as pixel rows: same output and gradients, and it stays channels-last."""
    from archsearch.nn.proxy import make_proxy

    torch.manual_seed(0)
    proxy = make_proxy((8, 6, 6), (16, 3, 3), block_macs=10**6).train()
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    x_cl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    out, out_cl = proxy(x), proxy(x_cl)
    assert out_cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out, out_cl, atol=1e-5)
    grad = torch.randn_like(out)
    (out * grad).sum().backward()
    (out_cl * grad).sum().backward()
    assert torch.allclose(x.grad, x_cl.grad, atol=1e-5)
