"""Model-zoo coverage: which torchvision and timm classification models archsearch traces and tailors.

For every torchvision classification model and the smallest model of each timm family named below,
with random weights (nothing is downloaded): trace, universal blocks, MACs and parameters against
torch's own counters, and one tailoring step (archsearch/tools/check.py: student forward and backward,
prune half the blocks under random gates, slim build, slim module against the pruned student).
Inputs are small (64 px, or the smallest of 96, 128, 224 a model runs at) to fit 2 CPU cores. Results
are kept in a cache, so an interrupted run goes on where it stopped. Writes docs/zoo.md.

    nice -n 19 env OMP_NUM_THREADS=1 python benchmarks/zoo.py
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import backbones  # noqa: E402
from archsearch.tools.check import TOLERANCE, check_model  # noqa: E402
from archsearch.errors import UserError  # noqa: E402
from archsearch.graph.trace import trace  # noqa: E402
from archsearch.io.atomic import atomic_write_text  # noqa: E402
from archsearch.sources.zoo import import_timm, import_torchvision, zoo_model  # noqa: E402
from benchmarks.common import provenance, set_allocator, write_doc  # noqa: E402

# The smallest model of each timm family the issue names (timm 1.0: by parameters).
TIMM = ("resnet10t", "resnext26ts", "seresnet18", "regnetx_002", "efficientnet_b0", "mobilenetv3_small_050",
        "convnext_atto", "densenet121", "dla46_c", "resnet50d")
TRANSFORMERS = ("vit_", "swin_")  # torchvision's classification models without convolutional feature maps
SIZES = (64, 96, 128, 224)
WRONG_SIZE = "the model does not run on input of shape"


def specs() -> list[str]:
    """Every torchvision classification model, then the timm models of :data:`TIMM`."""
    tv = import_torchvision()
    import_timm()
    return [f"torchvision:{n}" for n in tv.models.list_models(module=tv.models)] + [f"timm:{n}" for n in TIMM]


def measure(spec: str, sizes: tuple[int, ...]) -> dict:
    """One row: the smallest size of ``sizes`` the model runs at, and :func:`check_model` there."""
    torch.manual_seed(0)
    try:
        model = zoo_model(spec).model
    except UserError as exc:
        return {"spec": spec, "size": None, "reason": str(exc)}
    for size in sizes:
        with contextlib.redirect_stderr(io.StringIO()):  # a failing GraphModule prints its code
            result = check_model(model, (3, size, size))
        if not (result.reason or "").startswith(WRONG_SIZE):
            break
    return {"spec": spec, "size": size, **result.as_dict()}


def _g(n: int | None) -> str:
    return "—" if n is None else f"{n / 1e9:.3f} G" if n >= 1e8 else f"{n / 1e6:.1f} M"


def _match(ours: int | None, theirs: int | None) -> str:
    if ours is None:
        return "—"
    return f"{_g(ours)} ✓" if ours == theirs else f"{_g(ours)} (torch: {_g(theirs)})"


def _params(ours: int | None, theirs: int | None) -> str:
    if ours is None:
        return "—"
    return f"{ours:,} ✓" if ours == theirs else f"{ours:,} (torch: {theirs:,})"


def row(r: dict) -> str:
    step = "—" if r.get("slim_error") is None else f"{'yes' if r['equal'] else 'NO'} ({r['slim_error']:.1e})"
    blocks = "—" if r.get("blocks") is None else f"{r['blocks']}" + (f" → {r['kept_blocks']}" if r.get("kept_blocks") else "")
    size = f"{r['size']} px" if r.get("size") else "—"
    reason = (r.get("reason") or "").replace("|", "\\|")
    return (f"| {r['spec']} | {size} | {'yes' if r.get('traced') else 'no'} | {blocks} | "
            f"{_match(r.get('macs'), r.get('torch_macs'))} | {_params(r.get('params'), r.get('torch_params'))} | "
            f"{step} | {r.get('seconds', 0):.1f} | {reason} |")


def resnet50_line() -> str:
    """torchvision's ResNet-50 at 224 px against the built-in --backbone resnet50."""
    ours = trace(zoo_model("torchvision:resnet50").model, (3, 224, 224))
    builtin = trace(backbones.get_backbone("resnet50"), (3, 224, 224))
    same = (len(ours.universal()), ours.total_macs, ours.total_params) == (
        len(builtin.universal()), builtin.total_macs, builtin.total_params)
    return (f"torchvision:resnet50 at 3x224x224: {len(ours.universal())} universal blocks, "
            f"{ours.total_macs / 1e9:.2f} G MACs, {ours.total_params:,} parameters; `--backbone resnet50`: "
            f"{len(builtin.universal())} blocks, {builtin.total_macs / 1e9:.2f} G MACs, {builtin.total_params:,} "
            f"parameters ({'the same' if same else 'DIFFERENT'}).")


def summary(rows: list[dict]) -> list[str]:
    tv = [r for r in rows if r["spec"].startswith("torchvision:")]
    conv = [r for r in tv if not r["spec"].split(":")[1].startswith(TRANSFORMERS)]
    ok = [r for r in conv if r.get("equal")]
    timm = [r for r in rows if r["spec"].startswith("timm:")]
    return [f"- torchvision: {len(tv)} classification models, {len(conv)} of them convolutional (all but ViT and "
            f"Swin); **{len(ok)} of {len(conv)} ({len(ok) / max(1, len(conv)):.0%})** trace, tailor one step and "
            "build a slim module equal to the pruned student.",
            f"- timm: {sum(1 for r in timm if r.get('equal'))} of {len(timm)} families' smallest models do.",
            f"- {resnet50_line()}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="Measure these specs only (e.g. torchvision:resnet18).")
    ap.add_argument("--cache", type=Path, default=ROOT / "runs" / "zoo.json", help="Results kept between runs.")
    ap.add_argument("--fresh", action="store_true", help="Measure every model again, ignoring the cache.")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "zoo.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cache = {} if args.fresh or not args.cache.exists() else json.loads(args.cache.read_text())
    todo = args.only or specs()
    for spec in todo:
        if spec not in cache:
            cache[spec] = measure(spec, SIZES)
            args.cache.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(args.cache, json.dumps(cache, indent=1))
            gc.collect()
        r = cache[spec]
        print(f"{spec}: {'ok' if r.get('equal') else r.get('reason')} ({r.get('seconds', 0):.1f} s)", flush=True)
    if args.only:
        return
    rows = [cache[s] for s in todo]
    lines = ["# Model zoo coverage", "",
             "Which torchvision and timm classification models archsearch traces and tailors "
             "(`--model torchvision:NAME`, `--model timm:NAME`, or the model object in Python). Random weights; "
             "each model at 64 px, or the smallest of 96, 128 and 224 px it runs at. *Blocks*: universal blocks "
             "found → kept after pruning half of them under random gates. *MACs*, *parameters*: archsearch's "
             "count, ✓ where torch's own (FlopCounterMode FLOPs / 2, `sum(p.numel())`) agrees. *Step*: a "
             "random-weight tailoring step (student forward and backward, prune k = half, slim build) gives a "
             f"slim module equal to the pruned student within {TOLERANCE:g} (largest difference over the largest "
             "logit, at least 1). *Reason*: the first failure, as archsearch says it.", "",
             *provenance(set_allocator(), drop=()), "", *summary(rows), "",
             "| model | input | traced | blocks | MACs | parameters | step | s | reason |",
             "|---|---|---|---|---|---|---|---|---|",
             *[row(r) for r in rows]]
    write_doc(args.doc, lines)


if __name__ == "__main__":
    main()
