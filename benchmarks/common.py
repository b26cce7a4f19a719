"""What the tailoring benchmarks share: where the shared data lives and how a run's wall time is kept."""
from __future__ import annotations

from pathlib import Path

from archsearch.io.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
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
