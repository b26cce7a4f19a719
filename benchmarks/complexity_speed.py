"""E[C] with its backward pass per training step: the compiled form against the per-edge loop it
replaced, on ResNet-20 (3 skips), ResNet-110 (3 skips) and ResNet-110 (dense proxies); and a whole
student step (CE + gamma1 E[C] + gamma2 Omega, the frozen teacher's forward included) against a
teacher step, at batch 64 on 32-px images.

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

from archsearch.train.complexity import Complexity  # noqa: E402
from archsearch.graph.classifier import replace_classifier  # noqa: E402
from archsearch.train.stages import OmegaTeacher, student_stage, teacher_stage  # noqa: E402
from archsearch.train.loop import Length  # noqa: E402
from archsearch.graph.trace import trace  # noqa: E402
from archsearch.passes.codegen import build_student, gate_tensors  # noqa: E402
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


def _step_seconds(stage, repeats: int, batch: int = 64) -> float:
    """Median seconds of one optimiser step of ``stage`` (forward, loss, backward, update)."""
    optimizer = torch.optim.SGD(stage.param_groups, momentum=0.9)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    stage.train_mode(True)
    runs = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        loss, _, _ = stage.step(stage.module, x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= 2:  # two warm-up steps
            runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def step_ratio(name: str, repeats: int, work: Path) -> str:
    """A table row: a teacher step and a student step (3 skips) of ``name``, and their ratio."""
    bg = replace_classifier(trace(backbones.get_backbone(name), (3, 32, 32)), 10)
    teacher = build_student(bg)
    t_stage = teacher_stage(teacher, bg.g.graph["classifier"], Length(epochs=1), 0.01, 0.1, work / "t.pt")
    student_bg = insert_proxies(bg, "3")
    student = build_student(student_bg, matmul_pointwise=True)
    s_stage = student_stage("s", student, student_bg, OmegaTeacher(teacher), length=Length(epochs=1), lr=0.05,
                            head_lr=0.05, gate_lr=0.05, gamma1=3.0, gamma2=10.0, checkpoint=work / "s.pt")
    t, s = _step_seconds(t_stage, repeats), _step_seconds(s_stage, repeats)
    return f"| {name}, skips 3 | {t * 1e3:.1f} ms | {s * 1e3:.1f} ms | {s / t:.2f} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    rows = []
    for name, skips in (("resnet20", "3"), ("resnet110", "3"), ("resnet110", "dense")):
        bg = insert_proxies(trace(backbones.get_backbone(name), (3, 32, 32)), skips)
        student = build_student(bg)
        gates = [p for n, p in student.named_parameters() if n.startswith("gates.")]
        compiled = Complexity(bg)
        loop = _time(lambda: _loop_expected_complexity(bg, gate_tensors(bg, student)), gates, max(3, args.repeats // 5))
        fast = _time(lambda: compiled(compiled.alphas(student)), gates, args.repeats)
        rows.append(f"| {name}, skips {skips} | {len(bg.gated_edges())} | {loop * 1e3:.1f} ms | {fast * 1e3:.2f} ms "
                    f"| {loop / fast:.0f}x |")
        print(rows[-1], flush=True)
    import tempfile
    with tempfile.TemporaryDirectory() as work:
        steps = [step_ratio(name, args.repeats, Path(work)) for name in ("resnet20", "resnet56")]
    print(*steps, sep="\n")
    lines = ["# E[C] per training step, forward and backward", "", *provenance("n/a"), "",
             "| network | gated edges | per-edge loop (before) | compiled | speed-up |", "|---|---|---|---|---|", *rows,
             "", "Whole training steps at batch 64 (32-px images, 10 classes; median after two warm-up steps):", "",
             "| network | teacher step | student step | student / teacher |", "|---|---|---|---|", *steps]
    write_doc(Path("docs/benchmarks/complexity_speed.md"), lines)


if __name__ == "__main__":
    main()
