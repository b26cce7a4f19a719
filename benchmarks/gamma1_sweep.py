"""How hard should the complexity term push? gamma1 against gates, blocks removed and accuracy.

Tailors one backbone to one task once per gamma1, all runs starting from the same fine-tuned teacher
(its checkpoint is copied, so only the student and the sweep differ). Reports, per gamma1, the
student's final gates of the universal blocks, the chosen k, the MACs kept and the accuracies.
Writes docs/benchmarks/gamma1_<backbone>.md.

    python benchmarks/gamma1_sweep.py [--backbone resnet20] [--gammas 0.1,0.3,1,3] [--train-limit 2000] [--quick]
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from archsearch.tailor import TailorConfig, tailor  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
WEIGHTS = {"resnet20": "resnet20-12fca82f.th", "resnet56": "resnet56-4bfd9763.th"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="resnet20", choices=sorted(WEIGHTS))
    ap.add_argument("--data", default=str(SHARED / "mnist-test"))
    ap.add_argument("--gammas", default="0.1,0.3,1,3")
    ap.add_argument("--train-limit", type=int, default=2000)
    ap.add_argument("--student-epochs", type=int, default=10)
    ap.add_argument("--retrain-epochs", type=int, default=6)
    ap.add_argument("--max-retrains", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="500 images, 2 student and 1 retraining epochs")
    ap.add_argument("--workdir", default="/tmp/archsearch-gamma1")
    args = ap.parse_args()
    if args.quick:
        args.train_limit, args.student_epochs, args.retrain_epochs, args.max_retrains = 500, 2, 1, 2
    gammas = [float(g) for g in args.gammas.split(",")]
    work = Path(args.workdir) / args.backbone
    rows, teacher_ckpt = [], None
    for gamma1 in gammas:
        out = work / f"g{gamma1:g}"
        if teacher_ckpt is not None and not (out / "checkpoints" / "teacher.pt").exists():
            (out / "checkpoints").mkdir(parents=True, exist_ok=True)
            shutil.copy(teacher_ckpt, out / "checkpoints" / "teacher.pt")
        cfg = TailorConfig(backbone=args.backbone, weights=str(SHARED / "cifar10-resnets" / WEIGHTS[args.backbone]),
                           data=args.data, out=str(out), gamma1=gamma1, train_limit=args.train_limit,
                           teacher_epochs=3, student_epochs=args.student_epochs, retrain_epochs=args.retrain_epochs,
                           max_retrains=args.max_retrains, progress=False, resume=True)
        start = time.perf_counter()
        r = tailor(cfg, log=lambda m: print(f"[gamma1 {gamma1:g}] {m}", flush=True))
        teacher_ckpt = out / "checkpoints" / "teacher.pt"
        rows.append((gamma1, r, time.perf_counter() - start))
    lines = [f"# gamma1 sweep: {args.backbone} (CIFAR-10) → {Path(args.data).name}", "",
             f"Command: `python benchmarks/gamma1_sweep.py --backbone {args.backbone} --gammas {args.gammas} "
             f"--train-limit {args.train_limit}{' --quick' if args.quick else ''}`  ",
             f"Date: {datetime.date.today()}, machine: {platform.machine()}, {os.cpu_count()} CPU cores, "
             f"torch {torch.__version__}  ",
             f"Training: {args.train_limit} images, teacher 3 (shared), student {args.student_epochs}, "
             f"retraining {args.retrain_epochs} epochs, auto sweep of at most {args.max_retrains} retrainings.", "",
             "| gamma1 | student gates of the universal blocks (trained student) | gates < 0.5 | chosen k | "
             "MACs kept | teacher | student | tailored | within 0.5 | wall time |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for gamma1, r, seconds in rows:
        lines.append(f"| {gamma1:g} | {_student_gates(work / f'g{gamma1:g}')} | "
                     f"{sum(1 for g in _student_gate_values(work / f'g{gamma1:g}') if g < 0.5)} | {r['chosen_k']} | "
                     f"{r['tailored_macs'] / r['original_macs'] * 100:.1f} % | {r['teacher_accuracy']:.2f} % | "
                     f"{r['student_accuracy']:.2f} % | {r['tailored_accuracy']:.2f} % | "
                     f"{'yes' if r['within_tolerance'] else 'no'} | {seconds / 60:.1f} min |")
    doc = ROOT / "docs" / "benchmarks" / f"gamma1_{args.backbone}.md"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _student_gate_values(run: Path) -> list[float]:
    """The trained student's gate of each universal block (before pruning), from its checkpoint."""
    from archsearch.io.checkpoint import load_checkpoint

    state = load_checkpoint(run / "checkpoints" / "student.pt")["state"]
    gates = {int(k[len("gates.x"):]): v for k, v in state.items() if k.startswith("gates.x")}
    return [float(torch.softmax(gates[i], 0)[0]) for i in sorted(gates)]


def _student_gates(run: Path) -> str:
    return " ".join(f"{g:.2f}" for g in _student_gate_values(run))


if __name__ == "__main__":
    main()
