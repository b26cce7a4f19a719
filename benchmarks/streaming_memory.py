"""Data larger than memory: an image folder whose preprocessed images are about twice an artificially
lowered budget (``--max-memory``) tailors through the streaming path, and the run's peak resident
memory (main process and its DataLoader workers) stays under that budget.

    python benchmarks/streaming_memory.py [--budget 700M] [--workdir /tmp/archsearch-streaming]

The folder is ../shared/data/cifar10-test (10,000 images) at 224x224 input: 1.5 GB as uint8 tensors.
The network is a small residual network (random weights, defined below) so that one epoch at 224 px
takes minutes on 2 cores; the stages run a fixed epoch or two: this measures memory, not accuracy.
Writes docs/benchmarks/streaming_memory.md.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from archsearch.data.memory import parse_memory  # noqa: E402
from common import provenance, write_doc  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"

MODEL = '''
import torch, torch.nn as nn, torch.nn.functional as F

class Block(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.a = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.na = nn.BatchNorm2d(cout)
        self.b = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.nb = nn.BatchNorm2d(cout)
        self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)) \\
            if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        return F.relu(self.nb(self.b(F.relu(self.na(self.a(x))))) + self.skip(x))

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 7, 4, 3, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2))
        self.body = nn.Sequential(Block(16, 16), Block(16, 16), Block(16, 32, 2), Block(32, 32))
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.body(self.stem(x)), 1), 1))

def build():
    torch.manual_seed(0)
    return Net()
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="700M")
    ap.add_argument("--workdir", default="/tmp/archsearch-streaming")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    (work / "smallnet.py").write_text(MODEL)
    out = work / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    cmd = ["archsearch", "tailor", "--model", f"{work / 'smallnet.py'}:build", "--input-size", "3,224,224",
           "--data", str(SHARED / "cifar10-test"), "--test-fraction", "0.2", "--max-memory", args.budget,
           "--batch-size", "16", "--teacher-epochs", "2", "--student-epochs", "1", "--retrain-epochs", "1",
           "--sweep", "1", "--theta-sweep", "none", "--out", str(out), "--quiet"]
    start = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"the run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    report = json.loads((out / "report.json").read_text())
    max_rss_kb = next(int(line.split(":")[1]) for line in done.stderr.splitlines() if "Maximum resident" in line)
    budget = parse_memory(args.budget)
    images = report["train_images"] + report["val_images"] + report["test_images"]
    data_bytes = images * 3 * 224 * 224
    lines = ["# Streaming data larger than memory", "", *provenance("the archsearch command's"), "",
             f"Run: `{' '.join(cmd)}` ({seconds / 60:.1f} min).", "",
             "| | |", "|---|---|",
             f"| memory budget (`--max-memory`) | {budget / 2**20:.0f} MiB |",
             f"| preprocessed images (uint8, {images:,} x 3 x 224 x 224) | {data_bytes / 2**20:.0f} MiB "
             f"({data_bytes / budget:.1f}x the budget) |",
             f"| streamed from disk | {report['streaming']} |",
             f"| peak RSS, report (largest of the process and its workers) | {report['peak_rss_bytes'] / 2**20:.0f} MiB |",
             f"| peak RSS of the main process, /usr/bin/time | {max_rss_kb / 1024:.0f} MiB |",
             f"| under the budget | {max(report['peak_rss_bytes'], max_rss_kb * 1024) < budget} |",
             f"| teacher / tailored accuracy (test) | {report['teacher_accuracy']:.2f} % / "
             f"{report['tailored_accuracy']:.2f} % |"]
    write_doc(ROOT / "docs" / "benchmarks" / "streaming_memory.md", lines)


if __name__ == "__main__":
    main()
