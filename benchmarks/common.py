"""What the tailoring benchmarks share: where the shared data lives and how a run's wall time is kept."""
from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from pathlib import Path

import torch

from archsearch.allocator import keep_freed_memory
from archsearch.io.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
_THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")  # settings that change CPU timings
CIFAR_WEIGHTS = {"resnet20": "resnet20-12fca82f.th", "resnet56": "resnet56-4bfd9763.th"}


def first_run_seconds(run: Path, seconds: float) -> float:
    """The run's wall time when it first finished, kept in its wall_seconds.txt: a resumed run's report
    only times what the resume redid. NaN (not timed here) is returned as is and never recorded."""
    record = run / "wall_seconds.txt"
    if record.exists():
        return float(record.read_text())
    if seconds == seconds:
        atomic_write_text(record, f"{seconds:.1f}\n")
    return seconds


def finished_report(run: Path) -> dict | None:
    """A finished run's report.json, or None when the run has not finished."""
    path = run / "report.json"
    return json.loads(path.read_text()) if path.exists() else None


def sweep_summary(report: dict) -> str:
    """The sweep as 'k=…: accuracy, MACs kept' items in order of k."""
    return "; ".join(f"k={t['k']}: {t['accuracy']:.2f} %, {t['macs'] / report['original_macs'] * 100:.0f} %"
                     for t in sorted(report["sweep"], key=lambda t: t["k"]))


def set_allocator(glibc_defaults: bool = False) -> str:
    """Keep freed memory, as the archsearch command does (archsearch/allocator.py), unless asked not
    to; returns the setting in words for the table."""
    if glibc_defaults or not keep_freed_memory():
        return "glibc defaults"
    return "freed memory kept"


def provenance(allocator: str) -> list[str]:
    """The command that ran and the date, machine, threads, torch and allocator it ran with."""
    return [f"Command: `python {' '.join(sys.argv)}`  ",
            f"Date: {datetime.date.today()}, machine: {platform.machine()}, {os.cpu_count()} CPU cores, "
            f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, allocator: {allocator}"
            + "".join(f", {k}={os.environ[k]}" for k in _THREAD_ENV if k in os.environ) + "  "]


def write_doc(path: Path, lines: list[str]) -> None:
    """Write a benchmark's table atomically and echo it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "\n".join(lines) + "\n")
    print("\n".join(lines))
