"""Property tests of the graph core over random residual networks (hypothesis)."""
from __future__ import annotations

import networkx as nx
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archsearch.train.complexity import expected_complexity
from archsearch.graph.cost import module_macs
from archsearch.graph.trace import trace
from archsearch.passes.codegen import build_slim, build_student, gate_tensors, read_gates
from archsearch.passes.insert_proxies import insert_proxies
from archsearch.passes.measure import apply_edge_seconds, edge_key, measure_edge_seconds
from archsearch.passes.prune import prune
from randnets import rand_nets

INPUT = (3, 8, 8)
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _randomize_gates(student: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in student.named_parameters():
            if name.startswith("gates."):
                p.copy_(torch.randn(p.shape, generator=g) * 3)


def _x(seed: int = 0) -> torch.Tensor:
    return torch.randn((3, *INPUT), generator=torch.Generator().manual_seed(seed))


@SETTINGS
@given(net=rand_nets())
def test_blocks_found_and_student_without_proxies_equals_original(net):
    bg = trace(net, INPUT)
    assert len(bg.universal()) == len(net.blocks)
    student = build_student(bg).eval()
    with torch.no_grad():
        assert torch.allclose(student(_x())[0], net(_x()), atol=1e-6)


@SETTINGS
@given(net=rand_nets(), skips=st.sampled_from([1, 2, 3, "dense"]), hw=st.sampled_from([(8, 8), (8, 12), (7, 9)]))
def test_student_with_proxies_switched_off_equals_original(net, skips, hw):
    """Proxies present in the student but gated off (softmax weight exactly 0): the original, bit for bit."""
    shape = (3, *hw)
    student_bg = insert_proxies(trace(net, shape), skips)
    student = build_student(student_bg).eval()
    assert student_bg.proxies()
    with torch.no_grad():
        for node in student_bg.block_nodes() + ["logits"]:
            edges = student_bg.in_edges(node)
            if len(edges) > 1:
                logits = [-100.0 if student_bg.edge(e)["kind"] == "proxy" else 100.0 for e in edges]
                student.get_parameter(f"gates.{node}").copy_(torch.tensor(logits))
        x = torch.randn((3, *shape), generator=torch.Generator().manual_seed(0))
        assert torch.equal(student(x)[0], net(x))
    no_proxies = prune(read_gates(student_bg, student.state_dict()), k=0, theta=0.5)
    assert not no_proxies.proxies()
    with torch.no_grad():
        assert torch.equal(build_student(no_proxies).eval()(x)[0], net(x))


@SETTINGS
@given(net=rand_nets())
def test_graph_totals_count_the_whole_network(net):
    """Every parameter (PReLU's in trailing ops included) and every MAC belongs to the graph once."""
    bg = trace(net, INPUT)
    assert bg.params() == bg.total_params == sum(p.numel() for p in net.parameters())
    assert bg.macs() == bg.total_macs == module_macs(net, INPUT)  # blocks partition the whole network


FORMATS = st.sampled_from([torch.contiguous_format, torch.channels_last])


@SETTINGS
@given(net=rand_nets(), skips=st.sampled_from([1, 3, "dense"]), seed=st.integers(0, 1000),
       k_frac=st.floats(0, 1), theta=st.sampled_from([0.0, 0.05, 0.2]), hw=st.sampled_from([(8, 8), (8, 12), (7, 9)]),
       emitted=FORMATS, run_in=FORMATS)
def test_slim_equals_pruned_student_and_stays_connected(net, skips, seed, k_frac, theta, hw, emitted, run_in):
    """The slim module computes the pruned student, whichever layout its products were emitted for and
    whichever layout its maps and weights are in when it runs."""
    shape = (3, *hw)
    student_bg = insert_proxies(trace(net, shape), skips)
    student = build_student(student_bg)
    _randomize_gates(student, seed)
    trained = read_gates(student_bg, student.state_dict())
    k = round(k_frac * len(trained.universal()))
    pruned = prune(trained, k=k, theta=theta)
    assert len(pruned.universal()) <= len(trained.universal()) - k
    pruned_student = build_student(pruned).eval()
    slim = build_slim(pruned, memory_format=emitted).eval().to(memory_format=run_in)
    x = torch.randn((3, *shape), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = pruned_student(x)[0]
        assert (expected - slim(x.contiguous(memory_format=run_in))).abs().max() <= 1e-5
        assert (expected - slim(x.contiguous(memory_format=run_in))).abs().max() <= 1e-5  # in-place sums left no trace
    first, last = "x0", pruned.last
    for n in pruned.block_nodes():
        assert nx.has_path(pruned.g, first, n) and nx.has_path(pruned.g, n, last), n
    assert not any(n.startswith("gates") for n, _ in slim.named_parameters())


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(net=rand_nets(), seed=st.integers(0, 1000), emitted=FORMATS)
def test_slim_runs_under_autocast(net, seed, emitted):
    """Under bfloat16 autocast (how many deploy on GPUs) the float32 proxy tensors meet lower-precision
    sums: the in-place products must still run, and give about the float32 logits."""
    bg = insert_proxies(trace(net, INPUT), 3)
    student = build_student(bg)
    _randomize_gates(student, seed)
    slim = build_slim(prune(read_gates(bg, student.state_dict()), k=1, theta=0.0), memory_format=emitted).eval().to(memory_format=emitted)
    x = _x(seed).contiguous(memory_format=emitted)
    with torch.no_grad():
        expected = slim(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = slim(x)
    assert (low.float() - expected).abs().max() <= 0.05 * (1 + expected.abs().max())


def test_slim_runs_under_autocast_when_a_proxy_reads_the_float32_input():
    """No stem: the first node is the network's input, which autocast leaves in float32 while the sums
    it feeds are bfloat16."""
    import torch.nn as nn
    import torch.nn.functional as F
    from randnets import BlockSpec, RandBlock, randomize_batchnorm

    class NoStem(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.Sequential(RandBlock(3, BlockSpec(8, 1, True, True, False)),
                                        RandBlock(8, BlockSpec(8, 1, False, True, False)),
                                        RandBlock(8, BlockSpec(8, 1, False, True, False)))
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.blocks(x), 1), 1))

    torch.manual_seed(0)
    net = NoStem().eval()
    randomize_batchnorm(net, 0)
    bg = insert_proxies(trace(net, INPUT), 3)
    every_edge = read_gates(bg, {k: torch.zeros_like(v) for k, v in build_student(bg).state_dict().items()
                                 if k.startswith("gates.")})
    for emitted in (torch.contiguous_format, torch.channels_last):
        slim = build_slim(prune(every_edge, k=0, theta=0.0), memory_format=emitted).eval()
        x = _x().contiguous(memory_format=emitted)
        with torch.no_grad():
            expected = slim(x)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                low = slim(x)
        assert (low.float() - expected).abs().max() <= 0.05 * (1 + expected.abs().max())


@SETTINGS
@given(net=rand_nets(), seed=st.integers(0, 1000), emitted=FORMATS)
def test_slim_code_uses_only_names_a_task_pack_provides(net, seed, emitted):
    """A data-only task pack runs the slim module's generated code with forward_namespace()'s names;
    any other global would make it fall back to a pickled module."""
    from archsearch.io.pack import forward_namespace

    bg = insert_proxies(trace(net, INPUT), 3)
    student = build_student(bg)
    _randomize_gates(student, seed)
    slim = build_slim(prune(read_gates(bg, student.state_dict()), k=1, theta=0.0), memory_format=emitted)
    assert set(slim.graph.python_code("self").globals) <= set(forward_namespace())


def _direct_expected_complexity(bg, alpha, cost: str = "macs") -> float:
    """Loop-by-loop evaluation of DESIGN.md's E[C] formula, written independently."""
    gated = [(u, v, k) for u, v, k in bg.g.edges(keys=True) if k in ("universal", "proxy")]
    total = 0.0
    for (s, d, k) in gated:
        r_e = 1.0 - float(alpha[(s, d, k)].detach())
        p_in = 0.0
        if s != "x0":
            p_in = 1.0
            entering = [(u, v, kk) for (u, v, kk) in gated if v == s]
            for e in entering:
                p_in *= 1.0 - float(alpha[e].detach())
            if not entering:
                p_in = 0.0
        p_out = 0.0
        if d != bg.last:
            p_out = 1.0
            leaving = [(u, v, kk) for (u, v, kk) in gated if u == d]
            for e in leaving:
                p_out *= 1.0 - float(alpha[e].detach())
            if not leaving:
                p_out = 0.0
        c_e = (bg.g.edges[s, d, k]["seconds"] / bg.g.graph["total_seconds"] if cost == "latency"
               else bg.g.edges[s, d, k]["macs"] / bg.g.graph["total_macs"])
        total += c_e * (1.0 - r_e - p_in - p_out)
    return total


@SETTINGS
@given(net=rand_nets(), skips=st.sampled_from([1, 3, "dense"]), seed=st.integers(0, 1000))
def test_expected_complexity_matches_direct_formula_and_is_differentiable(net, skips, seed):
    bg = insert_proxies(trace(net, INPUT), skips)
    student = build_student(bg)
    _randomize_gates(student, seed)
    alpha = gate_tensors(bg, student)
    value = expected_complexity(bg, alpha)
    assert abs(float(value.detach()) - _direct_expected_complexity(bg, alpha)) < 1e-5
    value.backward()
    grads = [p.grad for n, p in student.named_parameters() if n.startswith("gates.")]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(net=rand_nets(), skips=st.sampled_from([1, 3]), seed=st.integers(0, 1000))
def test_measured_costs_cover_every_edge_and_drive_expected_complexity(net, skips, seed):
    bg = insert_proxies(trace(net, INPUT), skips)
    student = build_student(bg)
    seconds = measure_edge_seconds(bg, batch=2, repeats=2)
    assert {edge_key(e) for e in bg.edges()} | {""} == set(seconds) and len(seconds) == len(bg.edges()) + 1
    assert all(v >= 0 for v in seconds.values()) and seconds[""] > 0
    universal = sum(seconds[edge_key(e)] for e in bg.edges(("stem", "universal", "head")))
    assert universal <= seconds[""] * (1 + 1e-9)  # the network's other nodes (joins, post ops) fill the rest
    apply_edge_seconds(bg, seconds)
    _randomize_gates(student, seed)
    alpha = gate_tensors(bg, student)
    value = float(expected_complexity(bg, alpha).detach())
    assert abs(value - _direct_expected_complexity(bg, alpha, cost="latency")) < 1e-5
    kept = sum(seconds[edge_key(e)] for e in bg.edges()) / seconds[""]
    assert abs(bg.cost() - kept) < 1e-9


@SETTINGS
@given(net=rand_nets(), seed=st.integers(0, 1000))
def test_traced_and_slim_modules_survive_save_and_load(net, seed):
    """Annotated forwards (``from __future__ import annotations``) must not break pickling."""
    import io

    bg = insert_proxies(trace(net, INPUT), 2)
    student = build_student(bg)
    _randomize_gates(student, seed)
    slim = build_slim(prune(read_gates(bg, student.state_dict()), k=1, theta=0.05)).eval()
    for module in (bg.gm, slim):
        buf = io.BytesIO()
        torch.save(module, buf)
        buf.seek(0)
        loaded = torch.load(buf, weights_only=False).eval()
        with torch.no_grad():
            assert torch.equal(loaded(_x(seed)), module.eval()(_x(seed)))


def _loop_expected_complexity(bg, alpha):
    """The per-edge torch form E[C] had before it was compiled (kept to check the compiled one)."""
    gated = bg.gated_edges()
    r = {e: 1.0 - alpha[e] for e in gated}
    zero = torch.zeros(())
    first, last = bg.block_nodes()[0], bg.last

    def product(edges, skip):
        return zero if skip or not edges else torch.stack([r[e] for e in edges]).prod()

    p_in = {n: product([e for e in gated if e[1] == n], n == first) for n in bg.block_nodes()}
    p_out = {n: product([e for e in gated if e[0] == n], n == last) for n in bg.block_nodes()}
    total = zero
    for e in gated:
        total = total + bg.cost_share(e) * (1.0 - r[e] - p_in[e[0]] - p_out[e[1]])
    return total


@SETTINGS
@given(net=rand_nets(), skips=st.sampled_from([1, 2, "dense"]), seed=st.integers(0, 1000))
def test_compiled_expected_complexity_equals_the_loop_form_in_value_and_gradient(net, skips, seed):
    from archsearch.train.complexity import Complexity, gate_vector

    bg = insert_proxies(trace(net, INPUT), skips)
    student = build_student(bg)
    _randomize_gates(student, seed)
    gates = [p for n, p in student.named_parameters() if n.startswith("gates.")]
    loop = _loop_expected_complexity(bg, gate_tensors(bg, student))
    loop_grads = torch.autograd.grad(loop, gates, allow_unused=True)
    compiled = Complexity(bg)(gate_vector(bg, student))
    grads = torch.autograd.grad(compiled, gates, allow_unused=True)
    assert abs(float(compiled.detach()) - float(loop.detach())) < 1e-6
    for a, b in zip(loop_grads, grads):
        assert (a is None and b is None) or torch.allclose(a, b, atol=1e-6)
