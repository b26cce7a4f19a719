"""Would training run faster channels-last on CPU? Teacher and student steps in both layouts.

One teacher fine-tuning step and one student step (proxies, gates, classifier, teacher targets for
Omega, E[C]) per layout, each on its own copy of the network (the student's universal blocks are
modules it shares with its graph, so a layout change would otherwise reach the other student), all
four interleaved, median after 3 warm-up steps. Writes docs/benchmarks/training_layout_<backbone>.md.

    python benchmarks/training_layout.py [--backbone resnet20] [--repeats 15] [--quick]
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import backbones  # noqa: E402
from benchmarks.common import at_least_one, provenance, set_allocator, write_doc  # noqa: E402
from benchmarks.search_cost import median_steps  # noqa: E402
from archsearch.graph.blockgraph import BlockGraph  # noqa: E402
from archsearch.graph.classifier import replace_classifier  # noqa: E402
from archsearch.graph.trace import trace  # noqa: E402
from archsearch.passes.codegen import build_module  # noqa: E402
from archsearch.passes.insert_proxies import insert_proxies  # noqa: E402
from archsearch.train.stages import student_mode_setter, student_stage, teacher_stage  # noqa: E402

LAYOUTS = {"NCHW": torch.contiguous_format, "channels-last": torch.channels_last}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="resnet20")
    ap.add_argument("--batch", type=at_least_one, default=64)
    ap.add_argument("--repeats", type=at_least_one, default=15)
    ap.add_argument("--quick", action="store_true", help="5 repeats")
    ap.add_argument("--doc", type=Path)
    args = ap.parse_args()
    allocator = set_allocator()
    repeats = 5 if args.quick else args.repeats
    shape = backbones.default_input_size(args.backbone)
    bg = replace_classifier(trace(backbones.get_backbone(args.backbone), shape), 10)

    def fresh() -> BlockGraph:
        return BlockGraph(bg.g.copy(), copy.deepcopy(bg.gm))

    x = torch.randn(args.batch, *shape)
    y = torch.randint(0, 10, (args.batch,))
    steps = {}
    for name, layout in LAYOUTS.items():  # every teacher before any student: a student stage freezes its blocks
        teacher = build_module(fresh(), "student", "all").to(memory_format=layout)
        steps[f"teacher, {name}"] = (teacher_stage(teacher, 1, 0.01, Path("/dev/null")),
                                     x.contiguous(memory_format=layout))
    for name, layout in LAYOUTS.items():
        targets = build_module(fresh(), "student", "all").to(memory_format=layout)
        sbg = insert_proxies(fresh(), 3)
        student = build_module(sbg, "student", "all").to(memory_format=layout)
        steps[f"student, {name}"] = (student_stage("student", student, sbg, targets, epochs=1, lr=0.05, gate_lr=0.05,
                                                   gamma1=0.3, gamma2=10.0, checkpoint=Path("/dev/null")),
                                     x.contiguous(memory_format=layout))
        student_mode_setter(student, sbg)(True)
    for stage, _ in steps.values():
        if stage.name == "teacher":
            stage.module.train()
    med = median_steps(steps, y, repeats)
    rows = ["| step | NCHW (ms) | channels-last (ms) | NCHW / channels-last |", "|---|---|---|---|"]
    for what in ("teacher", "student"):
        a, b = med[f"{what}, NCHW"], med[f"{what}, channels-last"]
        rows.append(f"| {what} | {a * 1e3:.1f} | {b * 1e3:.1f} | {a / b:.2f}x |")
    rows += ["", f"Student / teacher: NCHW {med['student, NCHW'] / med['teacher, NCHW']:.2f}x, channels-last "
                 f"{med['student, channels-last'] / med['teacher, channels-last']:.2f}x."]
    lines = [f"# Training steps in both layouts: {args.backbone}, batch {args.batch}", "", *provenance(allocator),
             f"The four steps interleaved, median of {repeats} after 3 warm-up steps.", "", *rows]
    write_doc(args.doc or ROOT / "docs" / "benchmarks" / f"training_layout_{args.backbone}.md", lines)


if __name__ == "__main__":
    main()
