"""Does removing blocks make the network faster in proportion to its MACs?

Builds a ResNet-56 student, removes 9 of its 27 universal blocks (every third one, each replaced by
its nearest proxy) through the real prune pass and code generator, and times the slim GraphModule
against the original, interleaved in one process. Writes docs/benchmarks/slim_speed.md.

    python benchmarks/slim_speed.py [--batch 64] [--repeats 20] [--quick]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import backbones  # noqa: E402
from benchmarks.common import CIFAR_WEIGHTS, SHARED, blocks_replaced, provenance, set_allocator, write_doc  # noqa: E402
from archsearch.latency import interleaved_latency  # noqa: E402

WEIGHTS = SHARED / "cifar10-resnets" / CIFAR_WEIGHTS["resnet56"]


def slim_resnet56(removed_every: int = 3) -> tuple[torch.nn.Module, torch.nn.Module, int, int, int]:
    model = backbones.get_backbone("resnet56")
    if WEIGHTS.exists():
        backbones.load_weights(model, WEIGHTS)
    original, slim, macs0, macs1, _, removed = blocks_replaced(model.eval(), (3, 32, 32), removed_every)
    return original, slim, macs0, macs1, removed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="5 repeats")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "slim_speed.md"))
    args = ap.parse_args()
    allocator = set_allocator()
    repeats = 5 if args.quick else args.repeats
    original, slim, macs0, macs1, removed = slim_resnet56()
    lat = interleaved_latency({"original": original, "slim": slim}, (3, 32, 32), args.batch, repeats=repeats)
    mac_factor = macs0 / macs1
    speedup = lat["original"] / lat["slim"]
    verdict = "meets" if speedup >= 0.8 * mac_factor else "FALLS SHORT of"
    lines = [
        "# Slim ResNet-56: latency against MACs", "",
        *provenance(allocator), "",
        "| network | universal blocks | MACs | median latency (batch %d) |" % args.batch,
        "|---|---|---|---|",
        f"| original ResNet-56 | 27 | {macs0 / 1e6:.2f} M | {lat['original'] * 1e3:.1f} ms |",
        f"| slim ({removed} blocks removed) | {27 - removed} | {macs1 / 1e6:.2f} M | {lat['slim'] * 1e3:.1f} ms |", "",
        f"MAC reduction factor {mac_factor:.3f}x; measured speed-up {speedup:.3f}x "
        f"= {speedup / mac_factor * 100:.0f} % of the MAC factor ({verdict} the 80 % bar).", "",
        "Both networks were timed in one process, interleaved, after warm-up; the figure is the median.",
    ]
    write_doc(Path(args.out), lines)


if __name__ == "__main__":
    main()
