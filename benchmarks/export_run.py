"""A finished run's network through `archsearch export`: ONNX under onnxruntime and the torch.export
program against the run's tailored.pt, logits at batch 1 and 8 (bar 1e-4), and CPU latency side by side.

    python benchmarks/export_run.py RUN_DIR [--repeats 20]

Writes docs/benchmarks/export_run.md.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import provenance, write_doc  # noqa: E402


def _median_ms(fn, repeats: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    import onnxruntime as ort

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    report = json.loads((args.run / "report.json").read_text())
    slim = torch.load(args.run / "tailored.pt", weights_only=False).eval()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path, pt2_path = Path(tmp) / "net.onnx", Path(tmp) / "net.pt2"
        for fmt, path in (("onnx", onnx_path), ("pt2", pt2_path)):
            subprocess.run(["archsearch", "export", str(args.run), "--format", fmt, "-o", str(path)], check=True)
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        program = torch.export.load(str(pt2_path)).module()
        gen = torch.Generator().manual_seed(0)
        for batch in (1, 8):
            x = torch.randn(batch, *report["input_shape"], generator=gen)
            with torch.inference_mode():
                want = slim(x)
                got_pt2 = program(x)
            got_onnx = torch.from_numpy(session.run(None, {name: x.numpy()})[0])
            with torch.inference_mode():
                t_torch = _median_ms(lambda: slim(x), args.repeats)
                t_pt2 = _median_ms(lambda: program(x), args.repeats)
            t_ort = _median_ms(lambda: session.run(None, {name: x.numpy()}), args.repeats)
            rows.append(f"| {batch} | {float(want.abs().max()):.3f} | {float((got_onnx - want).abs().max()):.2e} | "
                        f"{float((got_pt2 - want).abs().max()):.2e} | {t_torch:.2f} | {t_pt2:.2f} | {t_ort:.2f} |")
            print(rows[-1], flush=True)
    lines = ["# A run's network exported as ONNX and as a torch.export program", "", *provenance("default"),
             f"onnxruntime {ort.__version__}, numpy {np.__version__}", "",
             f"Run: {report['backbone']} → {report['dataset']} (k={report['chosen_k']}, "
             f"{report['tailored_macs'] / 1e6:.2f} M MACs), exported with `archsearch export RUN --format onnx|pt2`.", "",
             "| batch | max abs logit | max abs diff, onnxruntime | max abs diff, ExportedProgram | tailored.pt (ms) "
             "| ExportedProgram (ms) | onnxruntime (ms) |", "|---|---|---|---|---|---|---|", *rows]
    write_doc(ROOT / "docs" / "benchmarks" / "export_run.md", lines)


if __name__ == "__main__":
    main()
