"""What does the search cost? One student training step against one teacher fine-tuning step.

Same backbone, batch and device, the two steps interleaved in one process (median of repeats).
The student step includes the teacher's forward pass (for Omega) and E[C]. Writes
docs/benchmarks/search_cost.md.

    python benchmarks/search_cost.py [--backbone resnet20] [--batch 64] [--repeats 20] [--quick]
"""
from __future__ import annotations

import argparse
import copy
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import backbones  # noqa: E402
from archsearch.graph.blockgraph import BlockGraph  # noqa: E402
from archsearch.graph.classifier import replace_classifier  # noqa: E402
from archsearch.graph.trace import trace  # noqa: E402
from archsearch.passes.codegen import build_module  # noqa: E402
from archsearch.passes.insert_proxies import insert_proxies  # noqa: E402
from archsearch.train.stages import student_mode_setter, student_stage, teacher_stage  # noqa: E402


def _step(stage, opt, x, y) -> float:
    start = time.perf_counter()
    loss, _, _ = stage.step(stage.module, x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="resnet20")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--skips", default="3")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks" / "search_cost.md"))
    args = ap.parse_args()
    repeats = 5 if args.quick else args.repeats
    shape = backbones.default_input_size(args.backbone)
    bg = replace_classifier(trace(backbones.get_backbone(args.backbone), shape), 10)
    teacher = build_module(BlockGraph(bg.g.copy(), copy.deepcopy(bg.gm)), "student", "all")
    sbg = insert_proxies(bg, args.skips)
    student = build_module(sbg, "student", "all")
    t_stage = teacher_stage(teacher, 1, 0.01, Path("/dev/null"))
    s_stage = student_stage("student", student, sbg, copy.deepcopy(teacher), epochs=1, lr=0.05, gate_lr=0.05,
                            gamma1=0.3, gamma2=10.0, checkpoint=Path("/dev/null"))
    t_opt = torch.optim.SGD(t_stage.param_groups, momentum=0.9)
    s_opt = torch.optim.SGD(s_stage.param_groups, momentum=0.9)
    teacher.train()
    student_mode_setter(student, sbg)(True)
    x = torch.randn(args.batch, *shape)
    y = torch.randint(0, 10, (args.batch,))
    times = {"teacher": [], "student": []}
    for i in range(3 + repeats):
        t = _step(t_stage, t_opt, x, y)
        s = _step(s_stage, s_opt, x, y)
        if i >= 3:
            times["teacher"].append(t)
            times["student"].append(s)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["student"] / med["teacher"]
    lines = ["# Search cost: student step against teacher step", "",
             f"Command: `python benchmarks/search_cost.py --backbone {args.backbone} --batch {args.batch} "
             f"--repeats {repeats}`  ",
             f"Date: {datetime.date.today()}, CPU, {torch.get_num_threads()} threads, torch {torch.__version__}", "",
             "| step | median seconds |", "|---|---|",
             f"| teacher fine-tuning (all weights) | {med['teacher']:.4f} |",
             f"| student (proxies, gates, classifier; teacher forward for Omega; E[C]) | {med['student']:.4f} |", "",
             f"Ratio student / teacher: **{ratio:.2f}x** (target: at most 1.5x; "
             f"{'met' if ratio <= 1.5 else 'NOT met'})."]
    Path(args.doc).parent.mkdir(parents=True, exist_ok=True)
    Path(args.doc).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
