"""Are tailored networks faster in proportion to their MACs? Real runs, original against tailored.

For each run directory: the original network (the backbone with the task's classifier, an eager
nn.Module as a user would run it) and the run's tailored.pt, timed interleaved in one process
(warm-up, median of repeats) at batch 1 and batch 64 on CPU. Reports each speed-up next to the MAC
factor. Writes docs/benchmarks/tailored_speed.md.

    python benchmarks/tailored_speed.py RUN_DIR [RUN_DIR ...] [--repeats 20] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import backbones  # noqa: E402
from benchmarks.common import provenance, set_allocator, write_doc  # noqa: E402
from archsearch.latency import interleaved_latency  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks" / "tailored_speed.md")
    ap.add_argument("--glibc-malloc", action="store_true",
                    help="leave glibc's allocator at its defaults (freed tensors go back to the kernel)")
    args = ap.parse_args()
    allocator = set_allocator(args.glibc_malloc)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = ["| run | k | MACs kept | MAC factor | batch 1 (ms) | batch 64 (ms) | speed-up b1 | speed-up b64 "
            "| b64 speed-up / MAC factor |", "|---|---|---|---|---|---|---|---|---|"]
    for run in args.runs:
        report = json.loads((run / "report.json").read_text())
        original = backbones.get_backbone(report["backbone"], num_classes=report["num_classes"]).eval()
        tailored = torch.load(run / "tailored.pt", weights_only=False).eval()
        shape = tuple(report["input_shape"])
        t = {b: interleaved_latency({"original": original, "tailored": tailored}, shape, b, repeats=args.repeats)
             for b in (1, 64)}
        factor = report["original_macs"] / report["tailored_macs"]
        s1, s64 = (t[b]["original"] / t[b]["tailored"] for b in (1, 64))
        rows.append(f"| {run.name} ({report['dataset']}) | {report['chosen_k']} | "
                    f"{report['tailored_macs'] / report['original_macs'] * 100:.1f} % | {factor:.2f}x | "
                    f"{t[1]['original'] * 1e3:.2f} → {t[1]['tailored'] * 1e3:.2f} | "
                    f"{t[64]['original'] * 1e3:.1f} → {t[64]['tailored'] * 1e3:.1f} | {s1:.2f}x | {s64:.2f}x | "
                    f"**{s64 / factor * 100:.0f} %** |")
    lines = ["# Tailored networks: measured CPU speed against MACs", "",
             *provenance(allocator), "",
             "Original: the backbone with the task's classifier (eager). Tailored: the run's tailored.pt. "
             f"Interleaved in one process, median of {args.repeats} after 3 warm-up passes.", "", *rows]
    write_doc(args.doc, lines)


if __name__ == "__main__":
    main()
