"""Why do a tailored network's proxies cost more per MAC than the original's convolutions? Kernel by kernel.

Part 1, kernels (batch 64): every 1x1 product shape the run's tailored network computes, accumulated
into a sum in each way PyTorch can run it on CPU: MKL's batched GEMM in place (what the slim network
runs; again with its source map fetched from memory, as in a network, where the map was written
nodes earlier, rather than left in cache by the previous call), oneDNN's 1x1 convolution on NCHW
maps, oneDNN's 1x1 convolution on channels-last maps with the sum added or fused in
(``mkldnn._convolution_pointwise_``, also with its source fetched from memory), NNPACK. Beside them
the machine's references: MKL's single-precision GEMM on a 1024x1024x1024 product, and the
original network's own convolutions (oneDNN), with their input in cache and not. Throughput in
GMAC/s: one thread is the default, where this machine is steady.

Part 2, whole networks: original and tailored interleaved in rounds, in each deployment form a user
could pick: eager NCHW (as archsearch emits it), eager channels-last (the tailored network's proxy
products rewritten as 1x1 convolutions), and with --compile, torch.compile of each (inductor; needs
a C++ compiler). Each form's speed-up is set against the MAC factor.

    python benchmarks/product_kernels.py RUN_DIR [--threads 1] [--repeats 20] [--rounds 3] [--compile] [--quick]
"""
from __future__ import annotations

import argparse
import copy
import itertools
import math
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.passes.shape_prop import ShapeProp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (at_least_one, load_pair, provenance, require_nchw_run, run_line,  # noqa: E402
                               set_allocator, write_doc)
from archsearch.latency import latency_rounds  # noqa: E402

BATCH = 64
COLD_BYTES = 96 << 20  # source maps cycled through to keep them out of the caches (L3 here: 32 MiB)


def _seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall seconds of ``fn`` after three warm-up calls."""
    times = []
    for i in range(repeats + 3):
        start = time.perf_counter()
        fn()
        if i >= 3:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _is_product(node: fx.Node) -> bool:
    return (node.op == "call_function" and node.target is torch.baddbmm) or \
        (node.op == "call_method" and node.target == "baddbmm_")


def product_shapes(tailored: fx.GraphModule, input_shape: tuple[int, ...]) -> Counter:
    """(out channels, in channels, height, width) of each proxy product in the slim network, counted."""
    ShapeProp(tailored).propagate(torch.randn(2, *input_shape))
    shapes: Counter = Counter()
    for node in tailored.graph.nodes:
        if _is_product(node):
            source = node.args[2].args[0]  # torch.flatten(source, 2)
            _, c_in, h, w = source.meta["tensor_meta"].shape
            c_out = node.meta["tensor_meta"].shape[1]
            shapes[(c_out, c_in, h, w)] += 1
    return shapes


def _fused_add() -> Callable | None:
    """oneDNN's in-place convolution-plus-sum, where this torch build has it."""
    try:
        return torch.ops.mkldnn._convolution_pointwise_.binary
    except (AttributeError, RuntimeError):
        return None


def product_kernels(shape: tuple[int, int, int, int], repeats: int) -> dict[str, float]:
    """GMAC/s of one accumulated 1x1 product of ``shape`` at batch 64, per kernel."""
    c_out, c_in, h, w = shape
    x = torch.randn(BATCH, c_in, h, w).relu_()
    weight = torch.randn(c_out, c_in) / c_in ** 0.5
    acc = torch.randn(BATCH, c_out, h, w)
    flat, acc_flat, batched = x.flatten(2), acc.flatten(2), weight.expand(BATCH, -1, -1)
    w4 = weight[:, :, None, None].contiguous()
    x_cl, acc_cl = x.contiguous(memory_format=torch.channels_last), acc.contiguous(memory_format=torch.channels_last)
    w4_cl = w4.contiguous(memory_format=torch.channels_last)
    cold = _cold(flat)
    kernels: dict[str, Callable[[], object]] = {
        "MKL batched GEMM, in place (archsearch)": lambda: acc_flat.baddbmm_(batched, flat),
        "MKL, source map not in cache": lambda: acc_flat.baddbmm_(batched, cold()),
        "oneDNN 1x1 conv, NCHW, + add": lambda: acc.add_(F.conv2d(x, w4)),
        "oneDNN 1x1 conv, channels-last, + add": lambda: acc_cl.add_(F.conv2d(x_cl, w4_cl)),
    }
    fused = _fused_add()
    if fused is not None:
        cold_cl = _cold(x_cl)
        kernels["oneDNN 1x1 conv, channels-last, sum fused"] = lambda: fused(
            acc_cl, x_cl, w4_cl, None, [0, 0], [1, 1], [1, 1], 1, "add", 1.0, None, [], "")
        kernels["oneDNN fused, source map not in cache"] = lambda: fused(
            acc_cl, cold_cl(), w4_cl, None, [0, 0], [1, 1], [1, 1], 1, "add", 1.0, None, [], "")
    if torch.backends.nnpack.is_available():
        zero = torch.zeros(c_out)
        kernels["NNPACK 1x1 conv, + add"] = lambda: acc.add_(
            torch._nnpack_spatial_convolution(x, w4, zero, [0, 0], [1, 1]))
    macs = BATCH * c_out * c_in * h * w
    return {name: macs / _seconds(fn, repeats) / 1e9 for name, fn in kernels.items()}


def mean_rate(work: list[tuple[float, float]]) -> float:
    """GMAC/s of several kernels run together, from (MACs, GMAC/s) pairs: all MACs over all time."""
    return sum(m for m, _ in work) / sum(m / r for m, r in work)


def _cold(x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """Copies of ``x`` handed out in turn, enough of them that each comes from memory, not cache."""
    pool = [x.clone() for _ in range(max(2, COLD_BYTES // (x.numel() * x.element_size())))]
    turn = itertools.cycle(pool)
    return lambda: next(turn)


def reference_rates(original: nn.Module, input_shape: tuple[int, ...], repeats: int
                    ) -> list[tuple[str, int, int, float, float]]:
    """(what, how many in the network, MACs per call, GMAC/s, GMAC/s with its input not in cache): MKL's large GEMM,
    then each distinct convolution of the original network at batch 64 as its module runs it."""
    big = torch.randn(1024, 1024)
    rate = 1024 ** 3 / _seconds(lambda: big @ big, repeats) / 1e9
    rows = [("MKL GEMM 1024x1024x1024 (no network)", 0, 1024 ** 3, rate, math.nan)]
    seen: dict[tuple, list] = {}

    def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        key = (module.in_channels, module.out_channels, module.kernel_size, module.stride, tuple(args[0].shape[2:]))
        seen.setdefault(key, [module, args[0], out, 0])[3] += 1

    handles = [m.register_forward_hook(hook) for m in original.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        original(torch.randn(BATCH, *input_shape))
    for handle in handles:
        handle.remove()
    with torch.no_grad():
        for (c_in, c_out, k, stride, hw), (module, x, out, count) in seen.items():
            macs = out.numel() * c_in * k[0] * k[1] // module.groups
            cold = _cold(x)
            rows.append((f"original {k[0]}x{k[1]} conv {c_in}→{c_out}, stride {stride[0]}, {hw[0]}x{hw[1]} in",
                         count, macs, macs / _seconds(lambda: module(x), repeats) / 1e9,
                         macs / _seconds(lambda: module(cold()), repeats) / 1e9))
    return rows


def _is_bias_sum(node: fx.Node) -> bool:
    """``torch.add(bias column, …)``: how the slim code starts a node's sum from its proxies' biases."""
    first = node.args[0] if node.args else None
    return node.op == "call_function" and node.target is torch.add and isinstance(first, fx.Node) \
        and first.op == "get_attr" and first.target.startswith("proxies.bias_")


def _feeds_products_only(node: fx.Node) -> bool:
    """Whether every user of ``node`` is a proxy product, a bias sum, or the batch-size read for the expands."""
    return bool(node.users) and all(_is_product(u) or _is_bias_sum(u) or (u.op == "call_method" and u.target == "size")
                                    for u in node.users)


def products_as_convolutions(tailored: fx.GraphModule) -> fx.GraphModule:
    """A copy of a slim network whose proxy products are 1x1 convolutions on 4-d maps instead of batched
    matrix products on flattened ones, so that it runs in any memory format (channels-last included).
    Only the flattens, expands and unflattens around proxy sums are touched."""
    gm = copy.deepcopy(tailored)
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target is torch.unflatten and isinstance(node.args[0], fx.Node) \
                and (_is_product(node.args[0]) or _is_bias_sum(node.args[0])):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    for node in list(graph.nodes):
        flat = node.op == "call_function" and node.target is torch.flatten and node.args[1:] == (2,)
        if (flat or (node.op == "call_method" and node.target == "expand")) and _feeds_products_only(node):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    for node in list(graph.nodes):
        if _is_bias_sum(node):  # a (C, 1) bias column, now added to 4-d maps
            with graph.inserting_before(node):
                node.args = (graph.call_method("view", (node.args[0], 1, -1, 1, 1)), *node.args[1:])
        if not _is_product(node):
            continue
        acc, weight, x = node.args
        with graph.inserting_before(node):
            w4 = graph.call_function(torch.unsqueeze, (graph.call_function(torch.unsqueeze, (weight, -1)), -1))
            if node.op == "call_function":  # the sum's first product: its bias column becomes the conv's bias
                new = graph.call_function(F.conv2d, (x, w4, graph.call_method("view", (acc, -1))))
            else:
                new = graph.call_method("add_", (acc, graph.call_function(F.conv2d, (x, w4))))
        node.replace_all_uses_with(new)
        graph.erase_node(node)
    graph.eliminate_dead_code()
    graph.lint()
    gm.recompile()
    return gm


def _channels_last(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    return lambda x: model(x.contiguous(memory_format=torch.channels_last))


def network_forms(original: nn.Module, tailored: fx.GraphModule, input_shape: tuple[int, ...],
                  compile_too: bool) -> dict[str, tuple[Callable, Callable]]:
    """Deployment form → (original, tailored) callables, each checked at the timed batch size against the
    eager original and tailored.pt (which also compiles the compiled ones for that size: static shapes)."""
    as_convs = products_as_convolutions(tailored)
    forms = {"eager, NCHW (as emitted)": (original, tailored),
             "eager, channels-last (products as 1x1 convs)": (_channels_last(original), _channels_last(as_convs))}
    if compile_too:
        compiled = torch.compile(original, dynamic=False)
        forms["torch.compile, NCHW (as emitted)"] = (compiled, torch.compile(tailored, dynamic=False))
        forms["torch.compile, products as 1x1 convs"] = (compiled, torch.compile(as_convs, dynamic=False))
    x = torch.randn(BATCH, *input_shape)
    with torch.no_grad():
        expect = {"original": original(x), "tailored": tailored(x)}
        for form, models in forms.items():
            for which, model in zip(("original", "tailored"), models):
                error = (model(x) - expect[which]).abs().max().item() / expect[which].abs().max().item()
                if error > 1e-5:  # relative to the largest output: the untrained original's logits reach 1e4-1e5
                    raise SystemExit(f"{form}: the {which} network does not reproduce its eager form "
                                     f"(largest difference {error:.1e} of the largest output)")
    return forms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--threads", type=at_least_one, default=1, help="torch CPU threads (default 1: steady here)")
    ap.add_argument("--repeats", type=at_least_one, default=20, help="timed calls per kernel and per network round")
    ap.add_argument("--rounds", type=at_least_one, default=3, help="interleaved rounds per network form")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of both networks")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks" / "product_kernels.md")
    ap.add_argument("--quick", action="store_true", help="5 repeats, 1 round")
    args = ap.parse_args()
    allocator = set_allocator()
    if args.quick:
        args.repeats, args.rounds = 5, 1
    before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        report, original, tailored = load_pair(args.run)
        require_nchw_run(args.run, report)
        shape = tuple(report["input_shape"])
        factor = report["original_macs"] / report["tailored_macs"]

        shapes = product_shapes(tailored, shape)
        rates = {s: product_kernels(s, args.repeats) for s in sorted(shapes, key=lambda s: (-s[2], s[0], s[1]))}
        names = list(next(iter(rates.values())))
        kernel_rows = [f"| product (out←in, map) | count | {' | '.join(names)} |", "|---|---|" + "---|" * len(names)]
        for (c_out, c_in, h, w), per_kernel in rates.items():
            best = max(per_kernel.values())
            cells = [f"**{v:.1f}**" if v == best else f"{v:.1f}" for v in per_kernel.values()]
            kernel_rows.append(f"| {c_out}←{c_in}, {h}x{w} | {shapes[(c_out, c_in, h, w)]} | {' | '.join(cells)} |")
        mean = {n: mean_rate([(shapes[s] * math.prod(s), rates[s][n]) for s in rates]) for n in names}
        kernel_rows.append(f"| **all products (MAC-weighted)** | {sum(shapes.values())} | "
                           f"{' | '.join(f'{mean[n]:.1f}' for n in names)} |")
        ref_rows = ["| reference | in the original | GMAC/s | input not in cache |", "|---|---|---|---|"]
        refs = reference_rates(original, shape, args.repeats)
        ref_rows += [f"| {what} | {count or '–'} | {rate:.1f} | {'–' if math.isnan(cold) else f'{cold:.1f}'} |"
                     for what, count, _, rate, cold in refs]
        convs = [r for r in refs if r[1]]
        together = [mean_rate([(r[1] * r[2], r[col]) for r in convs]) for col in (3, 4)]
        ref_rows.append(f"| **all the original's convolutions (MAC-weighted)** | {sum(r[1] for r in convs)} | "
                        f"{together[0]:.1f} | {together[1]:.1f} |")

        forms = network_forms(original, tailored, shape, args.compile)
        form_rows = ["| form | original (ms) | tailored (ms) | speed-up | of the MAC factor | range over rounds |",
                     "|---|---|---|---|---|---|"]
        with torch.no_grad():
            for form, (orig, tail) in forms.items():
                per_round = latency_rounds({"original": orig, "tailored": tail}, shape, BATCH, args.rounds,
                                           args.repeats)
                o, t = (statistics.median(per_round[k]) for k in ("original", "tailored"))
                ratios = [a / b / factor * 100 for a, b in zip(per_round["original"], per_round["tailored"])]
                mark = "" if o / t / factor >= 0.8 else " (short)"
                form_rows.append(f"| {form} | {o * 1e3:.1f} | {t * 1e3:.1f} | {o / t:.2f}x | "
                                 f"**{o / t / factor * 100:.0f} %**"
                                 f"{mark} | {min(ratios):.0f}–{max(ratios):.0f} % |")
    finally:
        torch.set_num_threads(before)
    lines = ["# Proxy products, kernel by kernel", "",
             *provenance(allocator, threads=f"{args.threads} torch threads"),
             run_line(report), "",
             f"## Kernels: GMAC/s of each 1x1 product at batch {BATCH}, accumulated into a sum "
             f"(median of {args.repeats} calls; the fastest in bold)", "", *kernel_rows, "", *ref_rows, "",
             f"## Whole networks at batch {BATCH}: median over {args.rounds} interleaved rounds "
             f"of {args.repeats} passes",
             "", *form_rows]
    write_doc(args.doc, lines)


if __name__ == "__main__":
    main()
