"""Wall time of the built-in default, `archsearch tailor` with no options, end to end.

    python benchmarks/default_run.py [--out DIR]

Writes docs/benchmarks/default_run.md with the time, the machine and the run's headline figures.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import provenance, trial_label, write_doc  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="run directory (default: a temporary one)")
    ap.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks" / "default_run.md"))
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="archsearch-default-")) / "run"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "archsearch", "tailor", "--quiet", "--out", str(out)], check=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - start
    r = json.loads((out / "report.json").read_text())
    lines = [
        "# The built-in default run", "",
        *provenance("freed memory kept (set by the archsearch command)"),
        "It runs `archsearch tailor` with no options.", "",
        f"Wall time: **{seconds / 60:.1f} min** ({seconds:.0f} s; stages: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in r["stage_seconds"].items()) + ")", "",
        "| | teacher (fine-tuned) | tailored |", "|---|---|---|",
        f"| accuracy on {r['dataset']} | {r['teacher_accuracy']:.2f} % | {r['tailored_accuracy']:.2f} % |",
        f"| MACs | {r['original_macs'] / 1e6:.2f} M | {r['tailored_macs'] / 1e6:.2f} M |",
        f"| parameters | {r['original_params']:,} | {r['tailored_params']:,} |",
        f"| universal blocks | {r['universal_blocks_total']} | {r['universal_blocks_kept']} |", "",
        f"Within tolerance: {r['within_tolerance']} ({r['selection']}).", "",
        "Sweep: " + "; ".join(f"{trial_label(r, t)}: {t['accuracy']:.2f} %, {t['macs'] / 1e6:.2f} M MACs" for t in r["sweep"]),
    ]
    write_doc(Path(args.doc), lines)


if __name__ == "__main__":
    main()
