"""E[C] with its backward pass per training step: the compiled form against the per-edge loop it
replaced, on ResNet-20 (3 skips), ResNet-110 (3 skips) and ResNet-110 (dense proxies).

    python benchmarks/complexity_speed.py [--repeats 20]

Writes docs/benchmarks/complexity_speed.md (with this command, date, machine and torch version).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import backbones  # noqa: E402
from archsearch.complexity import Complexity  # noqa: E402
from archsearch.graph.trace import trace  # noqa: E402
from archsearch.passes.codegen import build_module, gate_tensors  # noqa: E402
from archsearch.passes.insert_proxies import insert_proxies  # noqa: E402
from common import provenance, write_doc  # noqa: E402
from test_graph_properties import _loop_expected_complexity  # noqa: E402


def _time(fn, gates, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        torch.autograd.grad(value, gates, allow_unused=True)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    rows = []
    for name, skips in (("resnet20", "3"), ("resnet110", "3"), ("resnet110", "dense")):
        bg = insert_proxies(trace(backbones.get_backbone(name), (3, 32, 32)), skips)
        student = build_module(bg, "student")
        gates = [p for n, p in student.named_parameters() if n.startswith("gates.")]
        compiled = Complexity(bg)
        loop = _time(lambda: _loop_expected_complexity(bg, gate_tensors(bg, student)), gates, max(3, args.repeats // 5))
        fast = _time(lambda: compiled(compiled.alphas(student)), gates, args.repeats)
        rows.append(f"| {name}, skips {skips} | {len(bg.gated_edges())} | {loop * 1e3:.1f} ms | {fast * 1e3:.2f} ms "
                    f"| {loop / fast:.0f}x |")
        print(rows[-1], flush=True)
    lines = ["# E[C] per training step, forward and backward", "", *provenance("n/a"), "",
             "| network | gated edges | per-edge loop (before) | compiled | speed-up |", "|---|---|---|---|---|", *rows]
    write_doc(Path("docs/benchmarks/complexity_speed.md"), lines)


if __name__ == "__main__":
    main()
