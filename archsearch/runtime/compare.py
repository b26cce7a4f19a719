"""A finished run's original and tailored networks, timed again side by side on this machine.

The tailored network is read from the run's ``universal.pt`` and ``task.pack``, which are data
(:mod:`archsearch.runtime.tasks`), and from its ``tailored.pt``, a pickled module, only where those are
missing and ``trust_pickle`` (``--trust-pickle``) says so; the original is rebuilt from the run's recorded
options (the source architecture with the task's classifier, generated as the run measured it).
Latency does not depend on the weights' values, so the source weights are not read. On a GPU both
networks run channels-last with cuDNN autotuning, as a GPU run places and times them; thread
counts apply to the CPU only.
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Callable

import torch
import torch.fx as fx

from archsearch.platform.device import check_device
from archsearch.errors import UserError
from archsearch.graph.classifier import replace_classifier
from archsearch.graph.trace import trace
from archsearch.io.run_folder import PACK, REDO, TAILORED, UNIVERSAL, read_report
from archsearch.platform.latency import latency_rounds
from archsearch.platform.memory_format import layout_name, layout_named
from archsearch.sources.models import resolve_model
from archsearch.passes.codegen import build_slim
from archsearch.runtime.tasks import load_tasks
from backbones import torch_load


def load_run(run: Path, trust_pickle: bool = False) -> tuple[dict, torch.nn.Module]:
    """The report and tailored network of a finished run directory (see the module's docstring)."""
    report = read_report(run)
    return report, tailored_network(run, trust_pickle).eval()


def tailored_network(run: Path, trust_pickle: bool = False, redo: str = REDO) -> torch.nn.Module:
    """A run's tailored network on the CPU: from its task pack where there is one (data, the very
    computation of tailored.pt), else from tailored.pt, which needs ``trust_pickle``."""
    pack, universal, tailored_path = run / PACK, run / UNIVERSAL, run / TAILORED
    if pack.is_file() and universal.is_file():
        (task,) = load_tasks(universal, [pack], trust_pickle=trust_pickle)
        return task.module
    try:
        tailored = torch_load(tailored_path, "tailored network", trust_pickle)  # a GPU run's, on any machine
    except UserError:
        raise
    except Exception as exc:  # torch.load raises many kinds for a damaged or foreign file
        raise UserError(f"'{tailored_path}' cannot be loaded ({type(exc).__name__}); {redo}") from exc
    if not isinstance(tailored, torch.nn.Module):
        raise UserError(f"'{tailored_path}' holds a {type(tailored).__name__}, not a network; {redo}")
    return tailored


def original_network(report: dict) -> fx.GraphModule:
    """The run's source architecture with the task's classifier, as the run timed it (untrained weights)."""
    cfg = report["config"]
    try:
        source = resolve_model(cfg.get("backbone"), cfg.get("model"), None, cfg.get("input_size"),
                               require_weights=False)
    except UserError as exc:
        model = cfg.get("model") or ""
        where = (" (the run names its model file relative to the folder it was started in: run this there)"
                 if model and not Path(model.rpartition(":")[0]).is_absolute() else "")
        raise UserError(f"cannot rebuild the run's original network: {exc}{where}") from exc
    bg = trace(source.model, tuple(report["input_shape"]), cfg.get("leaf_modules") or [])
    return build_slim(replace_classifier(bg, report["num_classes"])).eval()


def parse_counts(text: str, what: str, allow_zero: bool = False) -> list[int]:
    """``"1,32"`` → [1, 32]; anything else is a UserError naming the option."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < (0 if allow_zero else 1):
        least = "0 or more" if allow_zero else "positive"
        example = "0,1" if allow_zero else "1,32"
        raise UserError(f"{what} must be comma-separated {least} whole numbers (e.g. {example}), not '{text}'")
    return values


def compare(run: Path, batches: list[int], threads: list[int], rounds: int = 5, repeats: int = 10,
            device: str = "cpu", log: Callable[[str], None] = lambda m: None, trust_pickle: bool = False) -> dict:
    """Median latency over ``rounds`` of the original and tailored networks for each thread count
    (0: torch's default; CPU only) and batch size, with the speed-up's range over the rounds.
    ``log`` hears of each measurement as it starts (a large network takes minutes)."""
    cuda = device == "cuda"
    check_device(device)
    report = read_report(run)
    layout = layout_named(report.get("memory_format"), device)  # the one its network's code was emitted for
    original = original_network(report)  # a run's options that no longer resolve are said first
    models = {"original": original.to(device, memory_format=layout),
              "tailored": tailored_network(run, trust_pickle).eval().to(device, memory_format=layout)}
    if cuda:
        torch.backends.cudnn.benchmark = True
        threads = [0]
    default_threads = torch.get_num_threads()
    rows = []
    try:
        for n in threads:
            torch.set_num_threads(n or default_threads)
            for b in batches:
                log(f"timing batch {b}, {n or default_threads} threads: {rounds} rounds of {repeats} passes each")
                t = latency_rounds(models, tuple(report["input_shape"]), b, rounds, repeats, device, layout)
                speedups = [o / s for o, s in zip(t["original"], t["tailored"])]
                rows.append({"threads": n or default_threads, "batch": b,
                             "original_ms": statistics.median(t["original"]) * 1e3,
                             "tailored_ms": statistics.median(t["tailored"]) * 1e3,
                             "speedup": statistics.median(t["original"]) / statistics.median(t["tailored"]),
                             "speedup_range": [min(speedups), max(speedups)]})
    finally:
        torch.set_num_threads(default_threads)
    return {"run": str(run), "backbone": report["backbone"], "dataset": report["dataset"], "device": device,
            "memory_format": layout_name(layout),
            "mac_factor": report["original_macs"] / report["tailored_macs"], "rounds": rounds, "repeats": repeats,
            "rows": rows}


def table(result: dict) -> str:
    """The comparison as aligned lines, speed-up next to the MAC factor."""
    factor = result["mac_factor"]
    lines = [f"{result['backbone']} → {result['dataset']} ({result['run']}), {result['device']}, "
             f"{result['memory_format'].replace('_', '-')}: "
             f"{factor:.2f}x fewer MACs; median of {result['rounds']} rounds of {result['repeats']} passes",
             f"{'batch':>6} {'threads':>8} {'original':>11} {'tailored':>11} {'speed-up':>9} {'range':>13} "
             f"{'of MAC factor':>14}"]
    for r in result["rows"]:
        low, high = r["speedup_range"]
        lines.append(f"{r['batch']:>6} {r['threads']:>8} {r['original_ms']:>8.2f} ms {r['tailored_ms']:>8.2f} ms "
                     f"{r['speedup']:>8.2f}x {f'{low:.2f}–{high:.2f}x':>13} {r['speedup'] / factor * 100:>12.0f} %")
    return "\n".join(lines)
