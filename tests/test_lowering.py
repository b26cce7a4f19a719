"""Each lowering pass on its own: what it rewrites, what it leaves, and that values do not change."""
from __future__ import annotations

import operator

import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from archsearch.passes.lower import (fold_gates, functional_task_layers, fuse_pointwise_sums, halving_pools,
                                     relu_in_place, share_pooling)


def _eval_equal(before: nn.Module, after: fx.GraphModule, *inputs: torch.Tensor) -> None:
    with torch.no_grad():
        torch.testing.assert_close(after(*inputs), before(*inputs), rtol=1e-5, atol=1e-5)


def _frozen(*shape: int) -> nn.Parameter:
    """A random tensor as a slim network holds it: a parameter that takes no gradient."""
    return nn.Parameter(torch.randn(*shape), requires_grad=False)


def _targets(gm: fx.GraphModule) -> list:
    return [n.target for n in gm.graph.nodes if n.op in ("call_function", "call_method", "call_module")]


class ConvBnRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


def _randomized(module: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 2)
            m.bias.data.uniform_(-1, 1)
    return module.eval()


def test_functional_task_layers_folds_the_batchnorm_and_leaves_the_module_it_read_alone():
    model = _randomized(ConvBnRelu())
    weight = model.conv.weight.detach().clone()
    gm = fx.symbolic_trace(model)
    assert functional_task_layers(gm, lambda target: True) == 2  # the convolution (its batch-norm in it) and the ReLU
    assert _targets(gm) == [F.conv2d, F.relu]
    assert not list(gm.modules())[1:] or all(type(m) is nn.Module for m in list(gm.modules())[1:])
    _eval_equal(model, gm, torch.randn(2, 4, 5, 5))
    assert torch.equal(model.conv.weight, weight) and isinstance(model.bn, nn.BatchNorm2d)  # the source is untouched
    assert not any(p.requires_grad for p in gm.parameters())


def test_functional_task_layers_lowers_only_what_is_task_specific():
    gm = fx.symbolic_trace(_randomized(ConvBnRelu()))
    assert functional_task_layers(gm, lambda target: target == "act") == 1
    assert _targets(gm) == ["conv", "bn", F.relu]


def test_fold_gates_scales_the_convolution_instead_of_its_output():
    class Holder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = _frozen(3, 2, 1, 1)
            self.b = _frozen(3)

        def forward(self, x):
            return 0.25 * F.conv2d(x, self.w, self.b, (1, 1), (0, 0), (1, 1), 1)

    model = Holder()
    gm = fx.symbolic_trace(Holder())
    gm.load_state_dict(model.state_dict())
    assert fold_gates(gm) == 1
    assert operator.mul not in _targets(gm)
    _eval_equal(model, gm, torch.randn(2, 2, 4, 4))


def test_share_pooling_computes_equal_poolings_once():
    def f(x):
        return F.max_pool2d(x, 2, 2, 0, 1, False) + F.max_pool2d(x, 2, 2, 0, 1, False) + F.max_pool2d(x, 3, 2, 1, 1, False)

    gm = fx.symbolic_trace(f)
    x = torch.randn(1, 2, 8, 8)
    expected = f(x)
    assert share_pooling(gm) == 1
    assert _targets(gm).count(F.max_pool2d) == 2
    torch.testing.assert_close(gm(x), expected)


@pytest.mark.parametrize("size, lowered", [(8, 1), (6, 0)])
def test_halving_pools_needs_sides_the_window_divides(size, lowered):
    def f(x):
        return F.max_pool2d(x, 4, 4, 0, 1, False)

    gm = fx.symbolic_trace(f)
    next(n for n in gm.graph.nodes if n.op == "placeholder").meta["shape"] = (3, size, size)
    x = torch.randn(2, 3, size, size)
    assert halving_pools(gm) == lowered
    assert (F.max_pool2d in _targets(gm)) == (not lowered)
    torch.testing.assert_close(gm(x), f(x))


def test_relu_in_place_only_after_a_marked_sum_it_owns():
    def f(x, y):
        s = x + y
        return F.relu(s) + F.relu(x)

    gm = fx.symbolic_trace(f)
    s = next(n for n in gm.graph.nodes if n.target is operator.add)
    s.meta["sum_of"] = "x1"
    x, y = torch.randn(2, 3), torch.randn(2, 3)
    assert relu_in_place(gm) == 1  # relu(x) would overwrite an input: left alone
    assert torch.relu_ in _targets(gm)
    x0 = x.clone()
    torch.testing.assert_close(gm(x, y), f(x, y))
    assert torch.equal(x, x0)


@pytest.mark.parametrize("pixels_major", [False, True])
def test_fuse_pointwise_sums_accumulates_products_into_the_sum(pixels_major):
    class Sum(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w1 = _frozen(4, 3, 1, 1)
            self.b1 = _frozen(4)
            self.w2 = _frozen(4, 5, 1, 1)
            self.b2 = _frozen(4)

        def forward(self, u, x, z):
            one = F.conv2d(x, self.w1, self.b1, (1, 1), (0, 0), (1, 1), 1)
            two = F.conv2d(z, self.w2, self.b2, (1, 1), (0, 0), (1, 1), 1)
            return u * 0.5 + one + two

    model = Sum()
    gm = fx.symbolic_trace(model)
    root = [n for n in gm.graph.nodes if n.op == "output"][0].args[0]
    root.meta.update(sum_of="x3", shape=(4, 6, 6))
    layout = torch.channels_last if pixels_major else torch.contiguous_format
    inputs = [torch.randn(2, c, 6, 6).contiguous(memory_format=layout) for c in (4, 3, 5)]
    expected = model(*inputs)
    assert fuse_pointwise_sums(gm, pixels_major) == 1
    assert F.conv2d not in _targets(gm) or pixels_major  # channels-last: the first product may start as a convolution
    assert ("addmm_" if pixels_major else "baddbmm_") in _targets(gm)
    assert any(name.startswith("proxies.bias_x3") for name, _ in gm.named_parameters())
    torch.testing.assert_close(gm(*inputs), expected, rtol=1e-5, atol=1e-5)


def test_drop_identities_keeps_a_module_that_returns_an_equal_copy():
    """A 1x1 max-pool copies its input: dropped, the in-place ReLU after it would overwrite what the skip reads."""
    from archsearch.passes.lower import drop_identities

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pool, self.drop, self.act = nn.MaxPool2d(1), nn.Dropout(0.5), nn.ReLU(inplace=True)

        def forward(self, x):
            return self.act(self.pool(self.drop(x))) + x

    model = Net().eval()
    gm = fx.symbolic_trace(Net().eval())
    assert drop_identities(gm) == 1  # the dropout, which returns its very input in evaluation
    assert [n.target for n in gm.graph.nodes if n.op == "call_module"] == ["pool", "act"]
    x = torch.randn(2, 3, 4, 4)
    _eval_equal(model, gm, x.clone())


def test_a_shared_modules_tensors_are_never_rewritten():
    """A block called as a module that also reads its weight with get_attr: folding a gate into that
    weight would change a module other networks share, so the pass leaves the multiplication."""
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = _frozen(3, 2, 1, 1)
            self.bias = _frozen(3)

        def forward(self, x):
            return x

    shared = Shared()
    g = fx.Graph()
    x = g.placeholder("x")
    conv = g.call_function(F.conv2d, (g.call_module("block", (x,)), g.get_attr("block.weight"),
                                      g.get_attr("block.bias"), (1, 1), (0, 0), (1, 1), 1))
    g.output(g.call_function(operator.mul, (conv, 0.5)))
    gm = fx.GraphModule({"block": shared, "block.weight": shared.weight, "block.bias": shared.bias}, g)
    before = shared.weight.detach().clone()
    assert gm.block is shared
    assert fold_gates(gm) == 0
    assert torch.equal(shared.weight, before) and gm.block.weight is shared.weight
