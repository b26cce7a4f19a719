"""Student-stage throughput with 1 and 2 processes (torchrun, gloo) on this machine's CPU cores.

Runs the same small tailoring (ResNet-20 on `digits`, 2 student epochs) as one process with all
cores, then under `torchrun --nproc-per-node 2` with one thread per process, one after the other,
and compares images per second of the student stage. Writes docs/benchmarks/ddp_throughput.md.

    python benchmarks/ddp_throughput.py [--doc FILE]

It takes about a minute, so it has no --quick mode.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import provenance, write_doc  # noqa: E402

ARGS = ["-m", "archsearch", "tailor", "--backbone", "resnet20", "--data", "digits", "--quiet",
        "--teacher-epochs", "1", "--student-epochs", "2", "--retrain-epochs", "1", "--sweep", "1"]


def run(out: Path, nproc: int) -> dict:
    weights = str(ROOT / "archsearch" / "weights" / "resnet20-fashion-mnist.pt")
    cmd = [sys.executable, *ARGS, "--weights", weights, "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-addr",
               "127.0.0.1", "--master-port", "29611", *cmd[1:]]
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 2) // nproc))
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    return json.loads((out / "report.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks" / "ddp_throughput.md")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="archsearch-ddp-"))
    reports = {n: run(tmp / f"p{n}", n) for n in (1, 2)}
    images = 2 * 1438  # two student epochs over digits' 1,438 training images
    ips = {n: images / r["stage_seconds"]["student"] for n, r in reports.items()}
    lines = ["# Student-stage throughput: 1 and 2 processes", "",
             *provenance("freed memory kept (set by the archsearch command)",
                         threads=f"torch's default threads with 1 process, {max(1, (os.cpu_count() or 2) // 2)} "
                                 "per process with 2"), "Backend: gloo.", "",
             "| processes | student stage seconds | images / s | student accuracy |", "|---|---|---|---|"]
    for n, r in reports.items():
        lines.append(f"| {n} | {r['stage_seconds']['student']:.1f} | {ips[n]:.1f} | {r['student_accuracy']:.2f} % |")
    lines += ["", f"Ratio 2 processes / 1 process: **{ips[2] / ips[1]:.2f}x**. Both ranks ended with identical "
              f"gates: {reports[2]['distributed']['gates_identical_across_ranks']}."]
    write_doc(args.doc, lines)


if __name__ == "__main__":
    main()
