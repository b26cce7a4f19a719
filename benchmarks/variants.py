"""One option varied, everything else fixed: gamma1 (the complexity weight) or the proxy skips.

Tailors one backbone to one task once per value, every run starting from the same fine-tuned
teacher (its checkpoint is copied, so only the student and the sweep differ). Reports, per value,
the student's final gates of the universal blocks, the chosen k, blocks and MACs kept, parameters,
task-specific parameters and the accuracies (feature extraction, teacher, student, tailored).
Writes docs/benchmarks/<option>_<backbone>.md.

    python benchmarks/variants.py --vary gamma1 --values 0.1,0.3,1,3 [--backbone resnet20] [--quick]
    python benchmarks/variants.py --vary skips --values 1,3,5,dense
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from archsearch.config import TailorConfig  # noqa: E402
from archsearch.io.atomic import atomic_write_json  # noqa: E402
from archsearch.io.jsonfile import read_json_dict  # noqa: E402
from benchmarks.common import (CIFAR_WEIGHTS as WEIGHTS, SHARED, chosen, finished_report, first_run_seconds,  # noqa: E402
                               minutes, provenance, set_allocator, sweep_summary, timed_tailor, write_doc)



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vary", required=True, choices=["gamma1", "skips"])
    ap.add_argument("--values", required=True, help="comma-separated values of the varied option")
    ap.add_argument("--backbone", default="resnet20", choices=sorted(WEIGHTS))
    ap.add_argument("--data", default=str(SHARED / "mnist-test"))
    ap.add_argument("--train-limit", type=int, default=2000)
    ap.add_argument("--teacher-epochs", type=int, default=12,
                    help="12 x 2,000 images: the steps of the tool's default 3 epochs x 8,000")
    ap.add_argument("--student-epochs", type=int, default=10)
    ap.add_argument("--retrain-epochs", type=int, default=6)
    ap.add_argument("--max-retrains", type=int, default=3)
    ap.add_argument("--gamma1", type=float, default=None, help="when varying skips (default: the tool's)")
    ap.add_argument("--quick", action="store_true", help="500 images, 2 student and 1 retraining epochs")
    ap.add_argument("--workdir", default="/tmp/archsearch-variants")
    ap.add_argument("--table-only", action="store_true",
                    help="rewrite the table from the finished runs in --workdir, training nothing")
    args = ap.parse_args()
    allocator = set_allocator()
    if args.quick:
        args.train_limit, args.teacher_epochs, args.student_epochs, args.retrain_epochs, args.max_retrains = \
            500, 2, 2, 1, 2
    values = [v.strip() for v in args.values.split(",")]
    work = Path(args.workdir) / f"{args.vary}-{args.backbone}"
    rows, first = [], None
    for value in values:
        out = work / value
        if args.table_only:
            r = finished_report(out) or ap.error(f"--table-only: {out} holds no finished run; run without it first")
            rows.append((value, r, first_run_seconds(out, float("nan")), _student_gate_values(out)))
            continue
        option = {"gamma1": float(value)} if args.vary == "gamma1" else {"skips": value}
        if args.vary != "gamma1" and args.gamma1 is not None:
            option["gamma1"] = args.gamma1
        fresh = not (out / "config.json").exists()
        if first is not None and fresh:
            share_teacher(first, out, option)  # timed as a fresh run that skips its teacher
        cfg = TailorConfig(backbone=args.backbone, weights=str(SHARED / "cifar10-resnets" / WEIGHTS[args.backbone]),
                           data=args.data, out=str(out), train_limit=args.train_limit, teacher_epochs=args.teacher_epochs,
                           student_epochs=args.student_epochs, retrain_epochs=args.retrain_epochs,
                           max_retrains=args.max_retrains, progress=False, resume=(out / "config.json").exists(),
                           **option)
        r, seconds = timed_tailor(cfg, log=lambda m, v=value: print(f"[{args.vary} {v}] {m}", flush=True),
                                  fresh=fresh)
        first = first or out
        rows.append((value, r, seconds, _student_gate_values(out)))
        write_table(args, allocator, rows, done=len(rows) == len(values))
    if args.table_only:
        write_table(args, allocator, rows, done=True)


def share_teacher(first: Path, out: Path, option: dict) -> None:
    """Start run ``out`` as a resumable copy of run ``first`` holding only its teacher checkpoint (the
    varied option does not change the teacher): ``first``'s config with the varied option replaced, so
    that ``out`` resumes after the teacher and every other option must still match."""
    config = read_json_dict(first / "config.json", "run the variants again in a new --workdir")
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    shutil.copy(first / "checkpoints" / "teacher.pt", out / "checkpoints" / "teacher.pt")
    atomic_write_json(out / "config.json", {**config, **option})


def write_table(args: argparse.Namespace, allocator: str, rows: list, done: bool) -> None:
    """The table of the values finished so far (rewritten after each run)."""
    fixed = ", ".join(f"{k} {rows[0][1]['config'][k]}" for k in ("gamma1", "skips") if k != args.vary)
    lines = [f"# {args.vary} variants: {args.backbone} (CIFAR-10) → {Path(args.data).name}"
             + ("" if done else " (run not finished)"), "",
             *provenance(allocator),
             f"Training: {args.train_limit} images, teacher {args.teacher_epochs} epochs (one teacher shared by all rows), student "
             f"{args.student_epochs}, retraining {args.retrain_epochs} epochs, auto sweep of at most "
             f"{args.max_retrains} retrainings; {fixed}; other options at their defaults.", "",
             f"| {args.vary} | student gates of the universal blocks | gates < 0.5 | chosen k | blocks kept | MACs kept "
             "| params | task-specific params | feature extraction | teacher | student | tailored | within 0.5 "
             "| sweep (k: accuracy, MACs kept) | wall time |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for value, r, seconds, gates in rows:
        lines.append(f"| {value} | {' '.join(f'{g:.2f}' for g in gates)} | {sum(1 for g in gates if g < 0.5)} | "
                     f"{chosen(r)} | {r['universal_blocks_kept']}/{r['universal_blocks_total']} | "
                     f"{r['tailored_macs'] / r['original_macs'] * 100:.1f} % | {r['tailored_params']:,} | "
                     f"{r['task_specific_params']:,} | {_pct(r.get('feature_extraction_accuracy'))} | "
                     f"{_pct(r['teacher_accuracy'])} | {_pct(r['student_accuracy'])} | {_pct(r['tailored_accuracy'])} | "
                     f"{'yes' if r['within_tolerance'] else 'no'} | {sweep_summary(r)} | {minutes(seconds)} |")
    write_doc(ROOT / "docs" / "benchmarks" / f"{args.vary}_{args.backbone}.md", lines)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} %"


def _student_gate_values(run: Path) -> list[float]:
    """The trained student's gate of each universal block (before pruning), from its checkpoint."""
    from archsearch.io.checkpoint import load_checkpoint
    from archsearch.passes.codegen import gate_target

    state = load_checkpoint(run / "checkpoints" / "student.pt")["state"]
    prefix = gate_target("x")
    gates = {int(k[len(prefix):]): v for k, v in state.items() if k.startswith(prefix)}
    return [float(torch.softmax(gates[i], 0)[0]) for i in sorted(gates)]


if __name__ == "__main__":
    main()
