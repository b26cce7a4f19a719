"""Tailoring with the default options (no epoch options) on data the defaults were not tuned on.

Runs (or resumes, or reads when finished) these tailoring runs under WORKDIR and writes their table:

- CIFAR-10 ResNet-20 → Omniglot-small (242 characters, 15 drawings each to train, 5 to test)
- CIFAR-10 ResNet-20 → notMNIST (test split of ../shared/data, 20 % held out for testing)
- CIFAR-10 ResNet-20 → MNIST (test split of ../shared/data, 20 % held out for testing)
- MobileNetV2 (iNaturalist birds, examples/mobilenet_v2.py) → CIFAR-10 test images at 64 px
- the built-in default (`archsearch tailor` with no options)

    python benchmarks/tailor_runs.py [--workdir /tmp/work] [--only NAME,...] [--threads 1]

Each run is the plain command line shown in the table; `--threads` sets OMP_NUM_THREADS for the runs
(several can then share the machine). Writes docs/benchmarks/tailor_runs.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import provenance, write_doc  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
CIFAR_RESNET20 = SHARED / "cifar10-resnets" / "resnet20-12fca82f.th"


def omniglot_folder(work: Path) -> Path:
    """Omniglot-small as an ImageFolder: one class per character, first 15 drawings train, last 5 test."""
    out = work / "omniglot"
    if (out / "test").exists():
        return out
    tmp = work / "omniglot.partial"
    for archive in sorted((SHARED / "omniglot-small").glob("*.zip")):
        with zipfile.ZipFile(archive) as z:
            by_char: dict[str, list[str]] = {}
            for name in sorted(n for n in z.namelist() if n.endswith(".png")):
                parts = name.split("/")
                by_char.setdefault(f"{parts[-3]}_{parts[-2]}", []).append(name)
            for char, names in by_char.items():
                for i, name in enumerate(sorted(names)):
                    target = tmp / ("train" if i < 15 else "test") / char / Path(name).name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(z.read(name))
    tmp.rename(out)
    return out


def runs(work: Path) -> dict[str, list[str]]:
    """Each run's name and its command-line options (beside --out and --quiet)."""
    resnet20 = ["--backbone", "resnet20", "--weights", str(CIFAR_RESNET20)]
    return {
        "omni": [*resnet20, "--data", str(omniglot_folder(work))],
        "notmnist": [*resnet20, "--data", str(SHARED / "notmnist-test"), "--test-fraction", "0.2"],
        "mnist": [*resnet20, "--data", str(SHARED / "mnist-test"), "--test-fraction", "0.2"],
        "mbv2": ["--model", f"{ROOT / 'examples' / 'mobilenet_v2.py'}:build", "--weights",
                 str(SHARED / "inat-mobilenetv2" / "mobilenet_v2_inat_bird.pth"), "--input-size", "3,64,64",
                 "--data", str(SHARED / "cifar10-test"), "--test-fraction", "0.2", "--augment", "standard"],
        "default": [],
    }


def _minutes(report: dict) -> str:
    """Minutes of each stage this run's own process trained (a stage read back from a checkpoint
    made by an earlier process has no time here)."""
    seconds = report.get("stage_seconds", {})
    names = (("teacher", "teacher"), ("student", "student"), ("sweep", "sweep"), ("theta_sweep", "theta sweep"))
    return ", ".join(f"{label} {seconds[key] / 60:.0f}" for key, label in names if key in seconds)


def _pct(scores: dict) -> str:
    return f"{scores['val']:.2f} / {scores['test']:.2f}"


def row(name: str, run: Path) -> str:
    r = json.loads((run / "report.json").read_text())
    if r.get("status") == "failed":
        return (f"| {r['backbone']} → {r['dataset']} | {_pct(r['feature_extraction'])} | {_pct(r['teacher'])} | "
                f"failed: {r['failure'].split(':')[0]} | | | | |")
    stages = f"{r['teacher']['stage']['epochs']} / {r['student']['stage']['epochs']} / " + \
        ",".join(str(t["stage"]["epochs"]) for t in r["sweep"])
    return (f"| {r['backbone']} → {r['dataset']} ({r['train_images']:,} / {r['val_images']:,} / "
            f"{r['test_images']:,}) | {_pct(r['feature_extraction'])} | {_pct(r['teacher'])} | "
            f"{r['student']['val_accuracy']:.2f} / {r['student']['test_accuracy']:.2f} | {_pct(r['tailored'])} | "
            f"k={r['chosen_k']}, {r['universal_blocks_kept']}/{r['universal_blocks_total']} blocks, "
            f"{r['tailored_macs'] / r['original_macs']:.1%} of the MACs; "
            f"{'within' if r['within_tolerance'] else '**not within**'} {r['tolerance']} (validation) | "
            f"{stages} | {_minutes(r)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="/tmp/work", type=Path)
    ap.add_argument("--only", default="", help="comma-separated run names (default: all)")
    ap.add_argument("--threads", default=None, help="OMP_NUM_THREADS for the runs")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    chosen = runs(args.workdir)
    if args.only:
        chosen = {k: v for k, v in chosen.items() if k in args.only.split(",")}
    env = {**os.environ, **({"OMP_NUM_THREADS": args.threads} if args.threads else {})}
    lines = ["# Tailoring with the default options", "", *provenance("the archsearch command's"), "",
             "Accuracies are validation / test (percent); every choice read validation. Stage epochs: teacher / "
             "student / each retraining of the sweep.", "",
             "| run (train / validation / test images) | feature extraction | teacher | student | tailored | "
             "pick | stage epochs | minutes per stage |", "|---|---|---|---|---|---|---|---|"]
    commands = []
    for name, options in chosen.items():
        run = args.workdir / name
        cmd = ["archsearch", "tailor", *options, "--out", str(run), "--quiet"]
        if not (run / "report.json").exists():
            resume = ["--resume"] if (run / "config.json").exists() else []
            subprocess.run([*cmd, *resume], env=env, check=False)
        if (run / "report.json").exists():
            lines.append(row(name, run))
            commands.append(f"- `{' '.join(cmd)}`")
    write_doc(ROOT / "docs" / "benchmarks" / "tailor_runs.md", [*lines, "", "Commands:", "", *commands])


if __name__ == "__main__":
    main()
