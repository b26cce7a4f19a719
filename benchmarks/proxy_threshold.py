"""How fast would a tailored network be with fewer proxies? Timing only, no retraining.

Rebuilds a finished run's student from its checkpoint, prunes it at the run's chosen k with several
proxy thresholds (theta), and times each slim network against the slim original at batch 64,
interleaved in one process. Accuracies are not measured: each network would need its retraining.

    python benchmarks/proxy_threshold.py RUN_DIR [--thetas 0.05,0.15,0.25,0.34] [--repeats 10] [--threads N] [--doc FILE]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import backbones  # noqa: E402
from benchmarks.common import finished_report, provenance, run_line, set_allocator, write_doc  # noqa: E402
from archsearch.graph.classifier import replace_classifier  # noqa: E402
from archsearch.graph.trace import trace  # noqa: E402
from archsearch.io.checkpoint import load_checkpoint  # noqa: E402
from archsearch.latency import interleaved_latency  # noqa: E402
from archsearch.passes.codegen import build_module, read_gates  # noqa: E402
from archsearch.passes.insert_proxies import insert_proxies  # noqa: E402
from archsearch.passes.prune import prune  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--thetas", default="0.05,0.15,0.25,0.34")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks" / "proxy_threshold.md")
    args = ap.parse_args()
    allocator = set_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    report = finished_report(args.run) or ap.error(f"{args.run} holds no finished run (no report.json)")
    k = max(report["chosen_k"], 0)  # -1: the unpruned student was chosen; prune proxies only
    shape = tuple(report["input_shape"])
    bg = replace_classifier(trace(backbones.get_backbone(report["backbone"]), shape), report["num_classes"])
    student_bg = insert_proxies(bg, report["config"]["skips"])
    student = build_module(student_bg, "student", "all")
    student.load_state_dict(load_checkpoint(args.run / "checkpoints" / "student.pt")["state"], strict=False)
    trained = read_gates(student_bg, student.state_dict())
    original = build_module(bg, "slim", "logits").eval()
    lines = ["# Fewer proxies: the run's student pruned with several theta (timing only, no retraining)", "",
             *provenance(allocator), run_line(report), "",
             f"Batch 64, each network against the slim original, interleaved, median of {args.repeats}.", "",
             "| theta | live proxies | MACs kept | speed-up | MAC factor | ratio |", "|---|---|---|---|---|---|"]
    for theta in (float(t) for t in args.thetas.split(",")):
        pruned = prune(trained, k, theta)
        slim = build_module(pruned, "slim", "logits").eval()
        t = interleaved_latency({"original": original, "tailored": slim}, shape, 64, repeats=args.repeats)
        speedup, factor = t["original"] / t["tailored"], bg.total_macs / pruned.macs()
        lines.append(f"| {theta:g} | {len(pruned.proxies())} | {pruned.macs() / bg.total_macs * 100:.1f} % | "
                     f"{speedup:.2f}x | {factor:.2f}x | {speedup / factor * 100:.0f} % |")
        print(lines[-1], flush=True)
    write_doc(args.doc, lines)


if __name__ == "__main__":
    main()
