"""Does a slim ResNet-50 at 224 px export? ONNX and torch.export against the slim module, and onnxruntime's
CPU latency next to torch's.

Builds ResNet-50 (random weights: no ImageNet weights ship with the project; the check is about the
computation, not accuracy) with a 10-class classifier, through the real passes: trace,
replace_classifier, insert_proxies, gates drawn at random, every batch-norm's statistics taken from
two batches of random images (so that logits vary from image to image), read_gates/prune with ``--k``
blocks removed, and the slim module emitted channels-last, as a run emits it. Exports it as archsearch
export does (archsearch/runtime/export.py: a torch.export program with a dynamic batch, and ONNX opset 18
through torch's dynamo exporter), then at batch 1 and 8 compares the ONNX model under onnxruntime
and the reloaded ExportedProgram with the slim module (max absolute difference of the logits, bar
1e-4), and times the slim module (torch, eager), the ExportedProgram and onnxruntime on the CPU:
median of ``--repeats`` passes after two warm-up passes, one after another.

    python benchmarks/export_check.py                      # writes docs/benchmarks/export_check.md
    python benchmarks/export_check.py --quick --doc /tmp/export_check.md   # 64 px, for a check of the script
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import backbones  # noqa: E402
from benchmarks.common import at_least_one, provenance, set_allocator, write_doc  # noqa: E402
from archsearch.runtime.export import OPSET, export_program, onnx_model_bytes  # noqa: E402
from archsearch.graph.classifier import replace_classifier  # noqa: E402
from archsearch.graph.trace import trace  # noqa: E402
from archsearch.passes.codegen import build_slim, build_student, read_gates  # noqa: E402
from archsearch.passes.insert_proxies import insert_proxies  # noqa: E402
from archsearch.passes.prune import prune  # noqa: E402

BAR = 1e-4


def calibrate(module: torch.nn.Module, side: int) -> None:
    """Batch-norm statistics from two batches of random images, so that the random network's features
    depend on its input and its logits vary from image to image, as a trained network's do."""
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the calibration batches
    module.train()
    with torch.no_grad():
        for seed in range(2):
            module(images(4, (3, side, side), 100 + seed))
    module.eval()


def slim_resnet50(side: int, k: int, seed: int) -> tuple[torch.nn.Module, int, int, int]:
    """The slim module of a pruned ResNet-50 with random gates and calibrated batch-norms; its MACs
    before and after, and the blocks it keeps."""
    torch.manual_seed(seed)
    shape = (3, side, side)
    bg = replace_classifier(trace(backbones.get_backbone("resnet50"), shape), 10)
    student_bg = insert_proxies(bg, 3)
    student = build_student(student_bg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in student.named_parameters():
            if name.startswith("gates."):
                p.copy_(torch.randn(p.shape, generator=g) * 2)
    calibrate(student, side)  # the student's modules are the graph's: the slim module folds these statistics
    pruned = prune(read_gates(student_bg, student.state_dict()), k=k, theta=0.05)
    slim = build_slim(pruned, memory_format=torch.channels_last).eval()
    return slim.to(memory_format=torch.channels_last), bg.total_macs, pruned.macs(), len(pruned.universal())


def images(batch: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Noise images of differing brightness and contrast: white noise alone gives every image nearly the
    same globally pooled features, and so nearly the same logits."""
    g = torch.Generator().manual_seed(seed)
    scale = 0.5 + 1.5 * torch.rand(batch, 1, 1, 1, generator=g)
    shift = 2 * torch.rand(batch, shape[0], 1, 1, generator=g) - 1
    return torch.randn(batch, *shape, generator=g) * scale + shift


def median_ms(fn, x, repeats: int) -> float:
    for _ in range(2):
        fn(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=at_least_one, default=8, help="universal blocks removed (of 16)")
    ap.add_argument("--repeats", type=at_least_one, default=5, help="timed passes per network and batch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="64 px, 2 timed passes: a check of the script")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks" / "export_check.md")
    args = ap.parse_args()
    import onnxruntime as ort

    allocator = set_allocator()
    side = 64 if args.quick else 224
    repeats = 2 if args.quick else args.repeats
    slim, macs0, macs1, kept = slim_resnet50(side, args.k, args.seed)
    shape = (3, side, side)
    clock = time.perf_counter()
    program = export_program(slim, shape)
    buf = io.BytesIO()
    torch.export.save(program, buf)
    buf.seek(0)
    loaded = torch.export.load(buf).module()
    pt2_seconds, clock = time.perf_counter() - clock, time.perf_counter()
    onnx_bytes = onnx_model_bytes(slim, shape)
    onnx_seconds = time.perf_counter() - clock
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # as many threads as torch uses
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "slim.onnx"
        path.write_bytes(onnx_bytes)
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run_ort(x: torch.Tensor) -> np.ndarray:
        return session.run(None, {"images": x.numpy()})[0]

    rows = ["| batch | max abs logit | max abs diff, onnxruntime | max abs diff, ExportedProgram | "
            "float32 itself: torch float32 vs float64 | torch eager (ms) | "
            "ExportedProgram (ms) | onnxruntime (ms) | onnxruntime / torch |", "|---|---|---|---|---|---|---|---|---|"]
    worst = 0.0
    for batch in (1, 8):
        x = images(batch, shape, batch)
        with torch.no_grad():
            expected = slim(x)
            diff_pt2 = float((loaded(x) - expected).abs().max())
            diff_onnx = float(np.abs(run_ort(x) - expected.numpy()).max())
            worst = max(worst, diff_pt2, diff_onnx)
            floor = float((slim.double()(x.double()) - expected.double()).abs().max())  # float32's own rounding
            slim.float()
            t_torch = median_ms(slim, x, repeats)
            t_pt2 = median_ms(loaded, x, repeats)
            t_ort = median_ms(run_ort, x, repeats)
        ratio = f"{t_torch / t_ort:.2f}x faster" if t_ort < t_torch else f"{t_ort / t_torch:.2f}x slower"
        rows.append(f"| {batch} | {float(expected.abs().max()):.3f} | {diff_onnx:.2e} | {diff_pt2:.2e} | {floor:.2e} | "
                    f"{t_torch:.1f} | {t_pt2:.1f} | {t_ort:.1f} | {ratio} |")
        print(rows[-1], flush=True)
    verdict = "within" if worst <= BAR else "**over**"
    lines = ["# A slim ResNet-50 exported as ONNX and as a torch.export program", "", *provenance(allocator),
             f"onnxruntime {ort.__version__} (CPUExecutionProvider, {options.intra_op_num_threads} intra-op threads), "
             f"ONNX opset {OPSET}", "",
             f"Network: ResNet-50 at {side} px, random weights, 10 classes; {args.k} blocks removed by random gates "
             f"({kept} of 16 kept), proxies kept where their gates pass 0.05; {macs0 / 1e9:.2f} → {macs1 / 1e9:.2f} "
             f"GMAC per image; emitted channels-last. Export: torch.export {pt2_seconds:.0f} s (with save and load), "
             f"ONNX {onnx_seconds:.0f} s, {len(onnx_bytes) / 1e6:.1f} MB.", "",
             f"Logits of each export against the slim module's (bar {BAR:g}: {verdict} it), and CPU latency, median "
             f"of {repeats} passes after 2 warm-up passes, NCHW float32 images (the slim module and the "
             "ExportedProgram keep channels-last weights):", "", *rows]
    write_doc(args.doc, lines)
    if worst > BAR:
        raise SystemExit(f"an export is off by {worst:.2e}, over {BAR:g}")


if __name__ == "__main__":
    main()
