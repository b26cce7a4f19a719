"""A finished run's folder: the names of the files ``archsearch tailor`` writes, and reading them back.

Everything that reads a run folder (``latency``, ``export``, ``render``, the Python API) goes
through here, so a folder is recognised, and refused, the same way everywhere.
"""
from __future__ import annotations

from pathlib import Path

from archsearch.errors import UserError
from archsearch.io.jsonfile import read_json_dict

REPORT = "report.json"
ARCHITECTURE = "architecture.json"
TAILORED = "tailored.pt"
PACK = "task.pack"
UNIVERSAL = "universal.pt"

# What the latency and export commands read of a report, checked before any work.
REPORT_KEYS = {"config", "input_shape", "num_classes", "backbone", "dataset", "original_macs", "tailored_macs"}
REDO = "run 'archsearch tailor' again with --resume to rewrite it"
WHICH = "give the --out directory of a finished 'archsearch tailor'"


def read_report(run: Path) -> dict:
    """The report of a finished run folder, checked for what timing and export read."""
    report_path = run / REPORT
    if not report_path.is_file() or not ((run / TAILORED).is_file() or (run / PACK).is_file()):
        raise UserError(f"'{run}' holds no finished run ({REPORT} and {TAILORED}); {WHICH}")
    report = read_json_dict(report_path, REDO)
    missing = sorted(REPORT_KEYS - report.keys())
    if missing or not isinstance(report["config"], dict):
        raise UserError(f"'{report_path}' is not an archsearch report (no {', '.join(missing) or 'config'}); "
                        f"give the --out directory of a finished run, or {REDO}")
    return report


def architecture_file(run: Path, hint: str) -> Path:
    """The architecture description of run folder ``run`` (``hint`` ends the error if it has none)."""
    f = run / ARCHITECTURE
    if not f.is_file():
        raise UserError(f"{run} has no {ARCHITECTURE}: it is not a run directory of archsearch tailor; {hint}")
    return f
