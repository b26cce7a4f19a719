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
    from archsearch.nn.proxy import make_proxy
    from archsearch.passes.lower import functional_task_layers

    proxy = make_proxy((8, 4, 4), (8, 4, 4), block_macs=0).to("meta").eval()
    gm = fx.symbolic_trace(proxy)
    assert functional_task_layers(gm, lambda target: True) == 1  # the convolution, its batch-norm folded in
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gm.modules())
    assert all(t.device.type == "meta" for t in gm.parameters())


def test_pointwise_as_matmul_gives_the_convolutions_values_and_gradients():
    """The student's CPU form of its proxies' 1x1 convolutions: same output, same gradients, same parameters."""
    from archsearch.passes.codegen import build_student
    from archsearch.passes.insert_proxies import insert_proxies
    from archsearch.graph.trace import trace
    from randnets import BlockSpec, RandNet

    torch.manual_seed(0)
    net = RandNet(8, [BlockSpec(8, 1, False, True, False), BlockSpec(16, 2, True, True, False)]).eval()
    bg = insert_proxies(trace(net, (3, 8, 8)), 2)
    plain, lowered = build_student(bg), build_student(bg, matmul_pointwise=True)
    assert any(n.target is torch.bmm for n in lowered.graph.nodes) and not any(n.target is torch.bmm for n in plain.graph.nodes)
    assert [n for n, _ in plain.named_parameters()] == [n for n, _ in lowered.named_parameters()]
    x = torch.randn(4, 3, 8, 8)
    out = [m.train()(x)[0] for m in (plain, lowered)]
    torch.testing.assert_close(out[0], out[1], rtol=1e-5, atol=1e-5)
    grads = []
    for m, o in zip((plain, lowered), out):
        m.zero_grad()
        o.square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters() if n.startswith("proxies.") and p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-5)
