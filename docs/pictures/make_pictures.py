"""Redraw the example pictures in this folder: ``python docs/pictures/make_pictures.py [--png DIR]``.

No training happens here. Each "tailoring" is simulated: a real student is built from the backbone
(``--skips 3``), its gate logits are set by hand (some universal blocks weak, some proxies strong),
and the real pruning pass removes the ``k`` weakest blocks. The pictures therefore show real block
names, shapes, MACs and gate values of a plausible result, not a measured one.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # run from a checkout without installing

import backbones  # noqa: E402
from archsearch.graph.serialize import architecture_dict  # noqa: E402
from archsearch.graph.trace import trace  # noqa: E402
from archsearch.passes.codegen import build_student, gate_target, read_gates  # noqa: E402
from archsearch.passes.insert_proxies import insert_proxies  # noqa: E402
from archsearch.passes.prune import prune  # noqa: E402
from archsearch.render.draw import render, stack_dot, to_dot  # noqa: E402


def student(backbone: str, side: int):
    return insert_proxies(trace(backbones.get_backbone(backbone), (3, side, side)), 3)


def simulated(bg, weak: set[int], strong: set[tuple[int, int]], k: int | None, name: str) -> dict:
    """Architecture dict after hand-set gates: blocks in ``weak`` low, proxies (s, d) in ``strong`` high."""
    state = build_student(bg).state_dict()
    for node in bg.block_nodes():
        edges = bg.in_edges(node)
        if len(edges) < 2:
            continue
        logits = state[gate_target(node)]
        for i, e in enumerate(edges):
            s, d = bg.node(e[0])["index"], bg.node(e[1])["index"]
            if e[2] == "universal":
                logits[i] = -1.0 if d in weak else 2.0 + 0.25 * (d % 3)
            else:
                logits[i] = 1.0 + 0.5 * (s % 2) if (s, d) in strong else -2.0 - 0.5 * (d - s)
    trained = read_gates(bg, state)
    return architecture_dict(trained, prune(trained, k) if k is not None else None, name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(HERE), help="folder for the SVG files (default: this folder)")
    ap.add_argument("--png", metavar="DIR", help="also write PNG copies here, to look at them")
    args = ap.parse_args()

    r20 = student("resnet20", 32)
    light = simulated(r20, weak={3, 8}, strong={(0, 3), (2, 3), (4, 5), (7, 8), (6, 9)}, k=2,
                      name="resnet20 → task A (simulated tailoring, k=2)")
    heavy = simulated(r20, weak={2, 3, 5, 6, 8, 9}, strong={(1, 3), (4, 6), (7, 9), (0, 1), (3, 4)}, k=6,
                      name="resnet20 → task B (simulated tailoring, k=6)")
    r56 = simulated(student("resnet56", 32), weak={3, 5, 6, 8, 11, 13, 16, 17, 22, 24, 25, 27},
                    strong={(2, 3), (4, 6), (7, 8), (10, 11), (12, 13), (15, 17), (21, 22), (23, 25), (26, 27),
                            (9, 12), (18, 20), (16, 18)},
                    k=12, name="resnet56 → simulated tailoring (k=12)")
    r50 = simulated(student("resnet50", 224), weak={2, 3, 6, 9, 11, 12, 15},
                    strong={(1, 3), (3, 4), (5, 6), (8, 9), (10, 12), (13, 15), (14, 16)},
                    k=7, name="resnet50 (3x224x224) → simulated tailoring (k=7)")
    pictures = {
        "resnet20-student": to_dot(architecture_dict(r20, None, "resnet20 student, --skips 3 (gates as initialised)")),
        "resnet20-task-a": to_dot(light),
        "resnet20-task-b": to_dot(heavy),
        "resnet20-task-b-removed": to_dot(heavy, show_removed=True),
        "resnet20-two-tasks": stack_dot([light, heavy]),
        "resnet56-tailored": to_dot(r56),
        "resnet50-tailored": to_dot(r50),
    }
    for name, dot in pictures.items():
        print(render(dot, Path(args.out) / f"{name}.svg"))
        if args.png:
            render(dot, Path(args.png) / f"{name}.png")


if __name__ == "__main__":
    main()
