"""What does the search cost? One student training step against one teacher fine-tuning step.

Same backbone, batch and device, the two steps interleaved in one process (median of repeats).
The student step includes the teacher's forward pass (for Omega) and E[C]. Writes
docs/benchmarks/search_cost.md.

    python benchmarks/search_cost.py [--backbone resnet20] [--batch 64] [--repeats 20] [--quick]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import backbones  # noqa: E402
from benchmarks.common import provenance, set_allocator, write_doc  # noqa: E402
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


def median_steps(steps: dict, y: torch.Tensor, repeats: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds of one optimizer step of each ``name: (stage, input)``, all interleaved step by
    step (SGD with momentum, as training runs), after ``warmup`` steps of each."""
    opts = {k: torch.optim.SGD(stage.param_groups, momentum=0.9) for k, (stage, _) in steps.items()}
    times: dict[str, list[float]] = {k: [] for k in steps}
    for i in range(warmup + repeats):
        for k, (stage, x) in steps.items():
            t = _step(stage, opts[k], x, y)
            if i >= warmup:
                times[k].append(t)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="resnet20")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--skips", default="3")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks" / "search_cost.md"))
    args = ap.parse_args()
    allocator = set_allocator()
    repeats = 5 if args.quick else args.repeats
    shape = backbones.default_input_size(args.backbone)
    bg = replace_classifier(trace(backbones.get_backbone(args.backbone), shape), 10)
    teacher = build_module(BlockGraph(bg.g.copy(), copy.deepcopy(bg.gm)), "student", "all")
    teacher_cl = copy.deepcopy(teacher).to(memory_format=torch.channels_last)
    sbg = insert_proxies(bg, args.skips)
    x = torch.randn(args.batch, *shape)
    y = torch.randint(0, 10, (args.batch,))
    steps = {"teacher": (teacher_stage(teacher, 1, 0.01, Path("/dev/null")), x),
             "teacher, channels-last": (teacher_stage(teacher_cl, 1, 0.01, Path("/dev/null")),
                                        x.contiguous(memory_format=torch.channels_last))}
    for name, fp32 in (("student", False), ("student, float32 targets", True)):
        student = build_module(sbg, "student", "all")
        steps[name] = (student_stage("student", student, sbg, teacher, epochs=1, lr=0.05, gate_lr=0.05,
                                     gamma1=0.3, gamma2=10.0, checkpoint=Path("/dev/null"), fp32_targets=fp32), x)
        student_mode_setter(student, sbg)(True)
    teacher.train()
    teacher_cl.train()
    med = median_steps(steps, y, repeats)
    ratio = med["student"] / med["teacher"]
    lines = ["# Search cost: student step against teacher step", "",
             *provenance(allocator), f"The four steps interleaved, median of {repeats}.", "",
             "| step | median seconds | / teacher step |", "|---|---|---|"]
    labels = {"teacher": "teacher fine-tuning (all weights; as `tailor` runs it)",
              "student": "student (proxies, gates, classifier; teacher targets for Omega; E[C]; as `tailor` runs it)",
              "student, float32 targets": "student with `--fp32-targets`",
              "teacher, channels-last": "teacher fine-tuning, channels-last (not what `tailor` runs on CPU)"}
    for k in ("teacher", "student", "student, float32 targets", "teacher, channels-last"):
        lines.append(f"| {labels[k]} | {med[k]:.4f} | {med[k] / med['teacher']:.2f}x |")
    lines += ["", f"Ratio student / teacher: **{ratio:.2f}x** (target: at most 1.5x; "
              f"{'met' if ratio <= 1.5 else 'NOT met'}). Against a channels-last teacher step: "
              f"{med['student'] / med['teacher, channels-last']:.2f}x."]
    write_doc(Path(args.doc), lines)


if __name__ == "__main__":
    main()
