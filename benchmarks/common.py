"""What the benchmarks share: where the shared data lives, how a run is timed and loaded, and how a
table states the command, machine and settings it was measured with."""
from __future__ import annotations

import argparse
import datetime
import json
import os
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

import backbones
from archsearch.platform.allocator import keep_freed_memory
from archsearch.runtime.compare import load_run
from archsearch.errors import UserError
from archsearch.graph.trace import trace
from archsearch.io.atomic import atomic_write_text
from archsearch.platform.memory_format import layout_named
from archsearch.passes.codegen import build_slim, build_student, gate_target, read_gates
from archsearch.passes.insert_proxies import insert_proxies
from archsearch.passes.prune import prune

if TYPE_CHECKING:
    from archsearch.pipeline.config import TailorConfig

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
_THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")  # settings that change CPU timings
CIFAR_WEIGHTS = {"resnet20": "resnet20-12fca82f.th", "resnet56": "resnet56-4bfd9763.th"}


def first_run_seconds(run: Path, seconds: float) -> float:
    """The run's wall time when it first finished, kept in its wall_seconds.txt: a resumed run's report
    only times what the resume redid. NaN (not timed here) is returned as is and never recorded."""
    record = run / "wall_seconds.txt"
    if record.exists():
        return float(record.read_text())
    if not math.isnan(seconds):
        atomic_write_text(record, f"{seconds:.1f}\n")
    return seconds


def timed_tailor(cfg: TailorConfig, log: Callable[[str], None], fresh: bool | None = None) -> tuple[dict, float]:
    """``tailor(cfg)`` and the run's first wall time: recorded when this call ran it from the start,
    read back when an earlier call did; NaN (never recorded) when this call only resumed a run that
    has no recorded time, since a resume's time is not the run's. ``fresh``: whether this call starts
    the run (default: its directory holds no config.json yet)."""
    # Imported here, not at the top: the timing scripts need none of the training pipeline, and
    # gpu_speed.py must run on a lent GPU whose image has no graphviz.
    from archsearch.pipeline import tailor

    run = Path(cfg.out)
    fresh = not (run / "config.json").exists() if fresh is None else fresh
    start = time.perf_counter()
    report = tailor(cfg, log=log)
    return report, first_run_seconds(run, time.perf_counter() - start if fresh else float("nan"))


def at_least_one(text: str) -> int:
    """argparse type: a whole number of 1 or more."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of 1 or more, not '{text}'")
    return int(text)


def minutes(seconds: float) -> str:
    """A wall time for a table: minutes, or a dash where none was kept."""
    return "—" if math.isnan(seconds) else f"{seconds / 60:.1f} min"


def finished_report(run: Path) -> dict | None:
    """A finished run's report.json, or None when the run has not finished."""
    path = run / "report.json"
    return json.loads(path.read_text()) if path.exists() else None


def load_pair(run: Path) -> tuple[dict, torch.nn.Module, torch.fx.GraphModule]:
    """A finished run's report, its original network (the backbone with the task's classifier, eager, as a
    user would run it) and its tailored.pt, both in eval mode."""
    try:
        report, tailored = load_run(run)
    except UserError as exc:
        raise SystemExit(str(exc)) from None
    return report, backbones.get_backbone(report["backbone"], num_classes=report["num_classes"]).eval(), tailored


def run_layout(report: dict) -> torch.memory_format:
    """The layout a run's tailored code was emitted for, and so both networks are timed in (NCHW for runs
    made before reports named one)."""
    return layout_named(report.get("memory_format"), "cpu")


def require_nchw_run(run: Path, report: dict) -> None:
    """Stop with one line unless the run's code was emitted for NCHW maps (a study of that form)."""
    if run_layout(report) != torch.contiguous_format:
        raise SystemExit(f"{run}: its network was emitted for {report['memory_format']} maps; this benchmark studies "
                         "the NCHW form: give a run made before reports named a memory_format")


def run_line(report: dict) -> str:
    """The run a table measured, in words: source → target, the chosen k and the MACs it kept."""
    kept = report["tailored_macs"] / report["original_macs"]
    return (f"Run: {report['backbone']} → {report['dataset']}, k={chosen(report)}, "
            f"{kept * 100:.1f} % of the MACs ({1 / kept:.2f}x fewer)")


def _swept_theta(report: dict, theta: float | None) -> str:
    """' theta 0.15' for a retraining of the theta sweep, '' otherwise (older reports have no theta)."""
    return f" theta {theta:g}" if theta not in (None, report["config"]["theta"]) else ""


def trial_label(report: dict, trial: dict) -> str:
    """'k=3', or 'k=3 theta 0.15' for a retraining of the theta sweep."""
    return f"k={trial['k']}{_swept_theta(report, trial.get('theta'))}"


def chosen(report: dict) -> str:
    """The chosen network in a table cell: '24', or '24, theta 0.15' when the theta sweep chose it."""
    return f"{report['chosen_k']}{_swept_theta(report, report.get('chosen_theta')).replace(' theta', ', theta')}"


def sweep_summary(report: dict) -> str:
    """The sweep as 'k=…: accuracy, MACs kept' items in order of k (then theta)."""
    return "; ".join(f"{trial_label(report, t)}: {t['accuracy']:.2f} %, {t['macs'] / report['original_macs'] * 100:.0f} %"
                     for t in sorted(report["sweep"], key=lambda t: (t["k"], t.get("theta") or 0)))


def set_allocator(glibc_defaults: bool = False) -> str:
    """Keep freed memory, as the archsearch command does (archsearch/platform/allocator.py), unless asked not
    to; returns the setting in words for the table."""
    if glibc_defaults:
        return "glibc defaults"
    return "freed memory kept" if keep_freed_memory() else "the C library's defaults (not glibc)"


def provenance(allocator: str, drop: tuple[str, ...] = ("--table-only",), threads: str | None = None) -> list[str]:
    """The command that ran (less ``drop``: flags that only rewrite a table) and the date, machine,
    threads (``threads`` where the measured work ran in other processes), torch and allocator."""
    return [f"Command: `python {' '.join(a for a in sys.argv if a not in drop)}`  ",
            f"Date: {datetime.date.today()}, machine: {platform.machine()}, {os.cpu_count()} CPU cores, "
            f"{threads or f'{torch.get_num_threads()} torch threads'}, torch {torch.__version__}, allocator: {allocator}"
            + "".join(f", {k}={os.environ[k]}" for k in _THREAD_ENV if k in os.environ) + "  "]


def write_doc(path: Path, lines: list[str]) -> None:
    """Write a benchmark's table atomically (making its folder) and echo it."""
    atomic_write_text(path, "\n".join(lines) + "\n")
    print("\n".join(lines))


def blocks_replaced(model: torch.nn.Module, input_shape: tuple[int, ...], every: int = 3,
                    memory_format: torch.memory_format = torch.contiguous_format,
                    ) -> tuple[torch.fx.GraphModule, torch.fx.GraphModule, int, int, int, int]:
    """A tailored structure without training: every ``every``-th universal block replaced by its nearest
    proxy, through the real proxy, prune and code-generation passes (gates set by hand, as training
    would leave them), its code emitted for ``memory_format`` maps. Returns the original and slim
    modules, their MACs, and blocks in all and removed."""
    bg = insert_proxies(trace(model, input_shape), 3)
    state = build_student(bg).state_dict()
    universal = bg.universal()
    drop = {e[1] for i, e in enumerate(universal) if i % every == every - 1}
    for node in bg.block_nodes():
        edges = bg.in_edges(node)
        if len(edges) < 2:
            continue
        logits = torch.full((len(edges),), -8.0)
        logits[0] = 8.0  # the universal block
        if node in drop:  # its nearest proxy takes over, the block's gate drops
            logits[0], logits[1] = -1.0, 8.0
        state[gate_target(node)] = logits
    pruned = prune(read_gates(bg, state), k=len(drop), theta=0.05)
    original = build_slim(trace(model, input_shape)).eval()
    slim = build_slim(pruned, memory_format=memory_format).eval()
    return original, slim, bg.total_macs, pruned.macs(), len(universal), len(universal) - len(pruned.universal())


def probe_ms(a: torch.Tensor, passes: int = 50) -> float:
    """Median time of a small matrix product: moves with the machine's state, not with our networks."""
    times = []
    for _ in range(passes):
        start = time.perf_counter()
        a @ a
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3
