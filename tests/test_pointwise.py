"""The fused proxy sum: compiled kernel and torch form against a direct evaluation, and when each runs."""
from __future__ import annotations

import shutil

import pytest
import torch
import torch.fx as fx
from hypothesis import given, settings
from hypothesis import strategies as st

from archsearch.nn import pointwise
from archsearch.nn.pointwise import pointwise_sum

SETTINGS = settings(max_examples=40, deadline=None)


@pytest.fixture
def kernel_calls(monkeypatch) -> list:
    """The argument tuples of every call of the compiled kernel during a test (empty: never called)."""
    calls: list = []
    real = pointwise.kernel()
    if real is None:
        return calls

    class Spy:
        def pointwise_sum(self, *args):
            calls.append(args)
            return real.pointwise_sum(*args)

    monkeypatch.setattr(pointwise, "kernel", lambda: Spy())
    return calls


def _torch_form(*args):
    """pointwise_sum(*args) with the kernel turned off, as where nothing could be built."""
    original = pointwise.kernel
    try:
        pointwise.kernel = lambda: None
        return pointwise_sum(*args)
    finally:
        pointwise.kernel = original


def _direct(start, maps, weights, bias, relu):
    """act(bias + start + sum_s W_s x_s), written out with einsum over NCHW maps."""
    out = bias[None, :, None, None] + sum(torch.einsum("nchw,cd->ndhw", m, w) for m, w in zip(maps, weights))
    if start is not None:
        out = out + start
    return out.relu() if relu else out


@st.composite
def sums(draw):
    """A node's sum: 1-3 sources of any width, output channels the kernel takes or not, rows that
    are views of channels-last maps, copies of NCHW ones, or column slices of a wider matrix."""
    n, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
    co = draw(st.sampled_from([16, 32, 48, 64, 128, 8, 24, 144]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    maps, rows, weights = [], [], []
    for _ in range(draw(st.integers(1, 3))):
        cin = draw(st.integers(1, 70))
        kind = draw(st.sampled_from(["channels_last", "nchw", "slice"]))
        if kind == "slice":
            wide = torch.randn(n * h * w, cin + 5, generator=gen)
            r = wide[:, 2:2 + cin]
            m = r.reshape(n, h, w, cin).permute(0, 3, 1, 2)
        else:
            m = torch.randn(n, cin, h, w, generator=gen)
            if kind == "channels_last":
                m = m.contiguous(memory_format=torch.channels_last)
            r = pointwise._rows(m)
        maps.append(m)
        rows.append(r)
        weights.append(torch.randn(cin, co, generator=gen) / cin ** 0.5)
    bias = torch.randn(co, generator=gen)
    start = torch.randn(n, co, h, w, generator=gen) if draw(st.booleans()) else None
    return start, maps, rows, weights, bias, (h, w), draw(st.booleans())


@SETTINGS
@given(case=sums())
def test_both_forms_equal_the_direct_sum(case):
    start, maps, rows, weights, bias, hw, relu = case
    expected = _direct(start, maps, weights, bias, relu)
    with torch.no_grad():
        fused = pointwise_sum(start, rows, weights, bias, hw, relu)
        plain = _torch_form(start, rows, weights, bias, hw, relu)
    for got in (fused, plain):
        assert got.shape == expected.shape and got.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    if start is not None:
        assert fused.data_ptr() != start.data_ptr() and plain.data_ptr() != start.data_ptr()


@pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler: the torch form runs")
def test_the_kernel_builds_and_runs_where_it_applies(kernel_calls):
    assert pointwise.kernel() is not None, "the fused proxy kernel did not build (see the warning above)"
    calls = kernel_calls
    maps = [torch.randn(2, 16, 4, 4).contiguous(memory_format=torch.channels_last) for _ in range(2)]
    weights = [torch.randn(16, 32, requires_grad=True) for _ in maps]
    bias = torch.randn(32, requires_grad=True)
    rows = [pointwise._rows(m) for m in maps]
    with torch.no_grad():
        pointwise_sum(None, rows, weights, bias, (4, 4), True)
    assert len(calls) == 1
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():  # lower precision: the torch form
        low = pointwise_sum(None, rows, weights, bias, (4, 4), True)
    pointwise_sum(None, rows, weights, bias, (4, 4), True).sum().backward()  # a gradient wanted: the torch form
    assert len(calls) == 1 and low.dtype == torch.bfloat16 and bias.grad is not None


def test_gradients_flow_through_the_torch_form():
    maps = [torch.randn(2, 16, 3, 3).contiguous(memory_format=torch.channels_last) for _ in range(3)]
    weights = [torch.randn(16, 16, requires_grad=True) for _ in maps]
    bias = torch.randn(16, requires_grad=True)
    start = torch.randn(2, 16, 3, 3, requires_grad=True)
    pointwise_sum(start, [pointwise._rows(m) for m in maps], weights, bias, (3, 3), True).square().sum().backward()
    got = [w.grad.clone() for w in weights] + [bias.grad.clone(), start.grad.clone()]
    for t in [*weights, bias, start]:
        t.grad = None
    _direct(start, maps, weights, bias, True).square().sum().backward()
    for g, t in zip(got, [*weights, bias, start]):
        torch.testing.assert_close(g, t.grad)


def test_it_is_one_leaf_when_fx_traces_code_that_calls_it():
    class Node(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(16, 16))
            self.b = torch.nn.Parameter(torch.randn(16))

        def forward(self, x):
            return pointwise_sum(None, [torch.flatten(torch.permute(x, (0, 2, 3, 1)), 0, 2)], [self.w], self.b, (4, 4))

    gm = fx.symbolic_trace(Node())
    assert [n.target for n in gm.graph.nodes if n.op == "call_function"].count(pointwise_sum) == 1
    x = torch.randn(2, 16, 4, 4).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), Node.forward(gm, x))


def test_a_slim_network_of_kernel_widths_runs_the_kernel_and_equals_its_pruned_student(kernel_calls):
    """End to end: 16- and 32-channel blocks, proxies, gates, pruning, channels-last code; the
    kernel (where a compiler is) computes what the pruned student computes."""
    from randnets import BlockSpec, RandNet, randomize_batchnorm

    from archsearch.graph.trace import trace
    from archsearch.passes.codegen import build_module, read_gates
    from archsearch.passes.insert_proxies import insert_proxies
    from archsearch.passes.prune import prune

    torch.manual_seed(0)
    net = RandNet(16, [BlockSpec(16, 1, False, True, False), BlockSpec(32, 2, True, True, False),
                       BlockSpec(32, 1, False, True, False), BlockSpec(32, 1, False, True, False)]).eval()
    randomize_batchnorm(net, 0)
    bg = insert_proxies(trace(net, (3, 8, 8)), 3)
    student = build_module(bg, "student")
    with torch.no_grad():
        for name, p in student.named_parameters():
            if name.startswith("gates."):
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 3)
    pruned = prune(read_gates(bg, student.state_dict()), k=2, theta=0.0)
    slim = build_module(pruned, "slim", "logits", memory_format=torch.channels_last).eval()
    slim = slim.to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(slim(x), build_module(pruned, "student").eval()(x)[0], rtol=1e-4, atol=1e-5)
    assert kernel_calls or shutil.which("c++") is None, "no node of this network went through the kernel"


def test_a_nan_stays_nan_through_the_relu_in_both_forms():
    """A diverged network must not look healthy: relu(NaN) is NaN in torch, and so in the kernel."""
    maps = [torch.randn(1, 16, 2, 2).contiguous(memory_format=torch.channels_last) for _ in range(2)]
    maps[0][0, 3, 1, 1] = float("nan")
    rows, weights, bias = [pointwise._rows(m) for m in maps], [torch.randn(16, 16) for _ in maps], torch.randn(16)
    with torch.no_grad():
        fused = pointwise_sum(None, rows, weights, bias, (2, 2), True)
        plain = _torch_form(None, rows, weights, bias, (2, 2), True)
    assert torch.isnan(plain[0, :, 1, 1]).all() and torch.equal(torch.isnan(fused), torch.isnan(plain))


def test_it_is_a_leaf_when_only_the_sources_are_traced():
    """A task pack's tensors are buffers, which fx's default tracer passes as plain tensors."""
    class Node(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("w", torch.randn(16, 16))
            self.register_buffer("b", torch.randn(16))

        def forward(self, x):
            return pointwise_sum(None, [torch.flatten(torch.permute(x, (0, 2, 3, 1)), 0, 2)], [self.w], self.b, (4, 4))

    gm = fx.symbolic_trace(Node())
    assert [n.target for n in gm.graph.nodes if n.op == "call_function"].count(pointwise_sum) == 1


def test_no_compiler_means_one_warning_and_the_torch_form(monkeypatch):
    """Where the build fails (no gcc, no headers), the tool says so once and the sums still come out right."""
    from torch.utils import cpp_extension

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Error building extension 'x': c++: not found")

    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    monkeypatch.setattr(pointwise, "_built", lambda name: True)
    pointwise.kernel.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="could not be built.*c\\+\\+: not found"):
            assert pointwise.kernel() is None
        maps = [torch.randn(1, 16, 2, 2).contiguous(memory_format=torch.channels_last)]
        weights, bias = [torch.randn(16, 16)], torch.randn(16)
        with torch.no_grad():
            got = pointwise_sum(None, [pointwise._rows(m) for m in maps], weights, bias, (2, 2), True)
        torch.testing.assert_close(got, _direct(None, maps, weights, bias, True))
    finally:
        pointwise.kernel.cache_clear()
