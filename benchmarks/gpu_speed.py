"""Is a tailored ResNet-50 at 224 px faster in proportion to its MACs on a GPU? One prepared script.

Builds ResNet-50 (224x224 inputs, 1,000 classes) and a tailored structure of it: every
``--remove-every``-th of its 16 bottleneck blocks replaced by its nearest (bottleneck) proxy,
through the real proxy, prune and code-generation passes (blocks_replaced in common.py; gates set
by hand, no training: latency does not depend on the weights' values, and no ImageNet weights ship
with the project). Times original and tailored interleaved on one device at each batch size
(cuDNN autotuning on, warm-up, CUDA synchronised, median), both in the layout archsearch runs
finished networks in (channels-last, the tailored code emitted for it), and writes the table with
the GPU's name.

On a lent GPU, as one call:  python3 benchmarks/gpu_speed.py --doc $OUT/gpu_speed.md
Here, to check the script:   python benchmarks/gpu_speed.py --device cpu --quick --doc /tmp/gpu_speed.md
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import backbones  # noqa: E402
from benchmarks.common import at_least_one, blocks_replaced, provenance, set_allocator, write_doc  # noqa: E402
from archsearch.platform.latency import interleaved_latency  # noqa: E402
from archsearch.platform.memory_format import DEPLOYMENT_LAYOUT, layout_name  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batches", default="1,64", help="comma-separated batch sizes")
    ap.add_argument("--repeats", type=at_least_one, default=50)
    ap.add_argument("--remove-every", type=at_least_one, default=2, help="replace every n-th block by its proxy (2: 8 of 16)")
    ap.add_argument("--quick", action="store_true", help="batches 1 and 4 at 5 repeats, for a check on CPU")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks" / "gpu_speed.md")
    args = ap.parse_args()
    allocator = set_allocator()
    batches = [1, 4] if args.quick else [int(b) for b in args.batches.split(",")]
    repeats = 5 if args.quick else args.repeats
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch sees no CUDA device here; use --device cpu")
        torch.backends.cudnn.benchmark = True
    shape = (3, 224, 224)
    layout = DEPLOYMENT_LAYOUT
    original, slim, macs0, macs1, blocks, removed = blocks_replaced(backbones.get_backbone("resnet50").eval(),
                                                                    shape, args.remove_every, layout)
    original, slim = original.to(args.device, memory_format=layout), slim.to(args.device, memory_format=layout)
    factor = macs0 / macs1
    rows = ["| batch | original (ms) | tailored (ms) | speed-up | MAC factor | speed-up / MAC factor |",
            "|---|---|---|---|---|---|"]
    for b in batches:
        t = interleaved_latency({"original": original, "tailored": slim}, shape, b, repeats=repeats, device=args.device,
                                memory_format=layout)
        speedup = t["original"] / t["tailored"]
        rows.append(f"| {b} | {t['original'] * 1e3:.2f} | {t['tailored'] * 1e3:.2f} | {speedup:.2f}x | {factor:.2f}x | "
                    f"**{speedup / factor * 100:.0f} %**{'' if speedup >= 0.8 * factor else ' (short)'} |")
        print(rows[-1], flush=True)
    device = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    lines = ["# Tailored ResNet-50 at 224 px: latency against MACs", "", *provenance(allocator),
             f"Device: {args.device} ({device}), cuDNN autotuning {'on' if args.device.startswith('cuda') else 'n/a'}, "
             f"float32, {layout_name(layout)}", "",
             f"Structure: {removed} of {blocks} bottleneck blocks replaced by their nearest proxy; "
             f"{macs0 / 1e9:.2f} → {macs1 / 1e9:.2f} GMAC per image ({factor:.2f}x fewer). Interleaved, "
             f"median of {repeats} after 3 warm-up passes.", "", *rows]
    write_doc(args.doc, lines)


if __name__ == "__main__":
    main()
