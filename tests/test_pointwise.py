"""A slim node's proxy sums, emitted as torch operations: equal to the pruned student, NaN kept, and
nothing but torch in the code (no archsearch function, no compiled kernel)."""
from __future__ import annotations

import io

import pytest
import torch

from archsearch.graph.trace import trace
from archsearch.io.pack import check_method, function_name
from archsearch.passes.codegen import build_slim, build_student, read_gates
from archsearch.passes.insert_proxies import insert_proxies
from archsearch.passes.prune import prune
from randnets import BlockSpec, RandNet, randomize_batchnorm


def _slim_and_student(memory_format=torch.channels_last):
    """16- and 32-channel blocks, three proxies per block, gates drawn at random, two blocks pruned."""
    torch.manual_seed(0)
    net = RandNet(16, [BlockSpec(16, 1, False, True, False), BlockSpec(32, 2, True, True, False),
                       BlockSpec(32, 1, False, True, False), BlockSpec(32, 1, False, True, False)]).eval()
    randomize_batchnorm(net, 0)
    bg = insert_proxies(trace(net, (3, 8, 8)), 3)
    student = build_student(bg)
    with torch.no_grad():
        for name, p in student.named_parameters():
            if name.startswith("gates."):
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 3)
    pruned = prune(read_gates(bg, student.state_dict()), k=2, theta=0.0)
    slim = build_slim(pruned, memory_format=memory_format).eval()
    return slim.to(memory_format=memory_format), build_student(pruned).eval()


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
def test_a_slim_network_with_proxy_sums_equals_its_pruned_student(layout):
    slim, student = _slim_and_student(layout)
    assert any(n.target in ("addmm_", "baddbmm_") for n in slim.graph.nodes if n.op == "call_method")
    for x in (torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8).contiguous(memory_format=torch.channels_last)):
        with torch.no_grad():
            torch.testing.assert_close(slim(x), student(x)[0], rtol=1e-4, atol=1e-5)


def test_the_slim_code_calls_only_torch():
    """torch.*, torch.nn.functional.*, operator.* and Tensor methods, torch.nn layers: nothing of archsearch."""
    slim, _ = _slim_and_student()
    for n in slim.graph.nodes:
        if n.op == "call_function":
            function_name(n.target)  # raises for anything outside the allowlist
        elif n.op == "call_method":
            check_method(n.target)
    assert all(type(m).__module__.startswith("torch.") for m in slim.modules())
    assert "archsearch" not in slim.code
    buf = io.BytesIO()
    torch.save(slim, buf)
    assert b"archsearch" not in buf.getvalue()


def test_a_nan_stays_nan_through_the_node_relu():
    """A diverged network must not look healthy: relu(NaN) is NaN, in the emitted code too."""
    slim, _ = _slim_and_student()
    bias = next(t for name, t in slim.named_parameters() if name.startswith("proxies.bias_"))
    with torch.no_grad():
        bias[0] = float("nan")
        out = slim(torch.randn(2, 3, 8, 8))
    assert torch.isnan(out).all()


def test_no_kernel_is_built_and_no_compiler_runs(monkeypatch):
    """Building and running a slim network never reaches torch's C++ extension builder."""
    from torch.utils import cpp_extension

    def refuse(*args, **kwargs):
        raise AssertionError("a C++ build was started")

    monkeypatch.setattr(cpp_extension, "load", refuse)
    monkeypatch.setattr(cpp_extension, "load_inline", refuse)
    slim, _ = _slim_and_student()
    with torch.no_grad():
        slim(torch.randn(1, 3, 8, 8))
