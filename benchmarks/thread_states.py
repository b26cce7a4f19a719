"""Does the speed-up against MACs depend on how many threads run it, and on the machine's moment?

Alternates, for a fixed time, short interleaved measurements of one run's original and tailored
networks at batch 64 with torch's default thread count and with one thread, and after each a
256x256 matrix product at the default thread count as a probe of the machine's state. One row per
round, then per thread count the median and range of the ratio (speed-up / MAC factor) and how
many rounds reach 80 %. Writes docs/benchmarks/thread_states.md.

    python benchmarks/thread_states.py RUN_DIR [--seconds 150] [--passes 10] [--quick]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (at_least_one, load_pair, provenance, run_layout, run_line,  # noqa: E402
                               probe_ms, set_allocator, write_doc)
from archsearch.latency import interleaved_latency  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--seconds", type=float, default=150.0, help="how long to keep measuring (at least one round)")
    ap.add_argument("--passes", type=at_least_one, default=10, help="timed passes per network, thread count and round")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks" / "thread_states.md")
    ap.add_argument("--quick", action="store_true", help="20 seconds")
    args = ap.parse_args()
    allocator = set_allocator()
    if args.quick:
        args.seconds = 20.0
    default_threads = torch.get_num_threads()
    counts = [default_threads, 1] if default_threads > 1 else [1]
    report, original, tailored = load_pair(args.run)
    layout = run_layout(report)
    models = {"original": original.to(memory_format=layout), "tailored": tailored.to(memory_format=layout)}
    shape = tuple(report["input_shape"])
    factor = report["original_macs"] / report["tailored_macs"]
    probe = torch.randn(256, 256)
    header = " | ".join(f"{n} thread{'s' * (n > 1)}: original → tailored (ms), ratio" for n in counts)
    rows = [f"| time | {header} | probe (ms) |", "|---|" + "---|" * len(counts) + "---|"]
    ratios: dict[int, list[float]] = {n: [] for n in counts}
    end = time.time() + args.seconds
    with torch.no_grad():
        while time.time() < end or not ratios[counts[0]]:
            cells = []
            for n in counts:
                torch.set_num_threads(n)
                t = interleaved_latency(models, shape, 64, repeats=args.passes, warmup=2, memory_format=layout)
                ratios[n].append(t["original"] / t["tailored"] / factor * 100)
                cells.append(f"{t['original'] * 1e3:.1f} → {t['tailored'] * 1e3:.2f}, {ratios[n][-1]:.0f} %")
            torch.set_num_threads(default_threads)
            rows.append(f"| {time.strftime('%H:%M:%S')} | {' | '.join(cells)} | {probe_ms(probe):.3f} |")
            print(rows[-1], flush=True)
    summary = ["| threads | rounds | median ratio | range | rounds at 80 % or more |", "|---|---|---|---|---|"]
    for n in counts:
        r = ratios[n]
        summary.append(f"| {n} | {len(r)} | **{statistics.median(r):.1f} %** | {min(r):.1f}–{max(r):.1f} % | "
                       f"{sum(x >= 80 for x in r)} of {len(r)} |")
    lines = ["# Speed-up against MACs: threads and the machine's moment", "", *provenance(allocator),
             run_line(report), "",
             f"Batch 64; in each round, per thread count, original and tailored interleaved, median of {args.passes} "
             "after 2 warm-up passes; ratio = speed-up / MAC factor. "
             f"Probe: a 256x256 matrix product on {default_threads} threads.", "",
             *summary, "", *rows]
    write_doc(args.doc, lines)


if __name__ == "__main__":
    main()
