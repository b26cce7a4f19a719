"""Export: the chosen network as a slim module, checked, timed against the original, and written out.

:func:`export_network` makes the :class:`Artifacts` (the slim module in the layout it runs fastest
in, its scores, its difference from the pruned student, both networks' latency); :func:`write_outputs`
writes the run directory's files from them: ``architecture.json`` and its picture, ``tailored.pt``,
``universal.pt`` and ``task.pack``. Each file is written atomically.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

import torch
import torch.fx as fx

from archsearch.errors import UserError
from archsearch.graph.blockgraph import BlockGraph
from archsearch.graph.serialize import ARCHITECTURE_ATTR, architecture_dict
from archsearch.io.atomic import atomic_torch_save, atomic_write_json
from archsearch.io.pack import write_pack, write_universal
from archsearch.io.run_folder import ARCHITECTURE, PACK, TAILORED, UNIVERSAL
from archsearch.passes.codegen import build_slim, build_student
from archsearch.pipeline.rundir import RunDir
from archsearch.pipeline.search import Found, Scores, Search
from archsearch.platform.latency import median_latency
from archsearch.platform.memory_format import DEPLOYMENT_LAYOUT, deployable_layout, layout_name
from archsearch.render.draw import render, to_dot
from archsearch.sources.models import SourceModel

PROBE_IMAGES = 8  # images of the check that the slim module equals the pruned student
LATENCY_BATCHES = (1, 32)


@dataclass(frozen=True)
class Artifacts:
    """The chosen network, exported: its slim module (on the CPU, in ``layout``), its scores, and,
    on the main rank, its largest difference from the pruned student and the latency of original and
    tailored networks side by side (``{"batch1": {"original": s, "tailored": s}, ...}``)."""

    slim: fx.GraphModule
    scores: Scores
    layout: torch.memory_format
    slim_error: float | None = None
    latency: dict | None = None


def export_network(search: Search, source: SourceModel, teacher_bg: BlockGraph, final_bg: BlockGraph,
                   bg: BlockGraph, is_main: bool) -> Artifacts:
    """The slim module of ``final_bg`` in the layout it runs fastest in, scored, checked against the
    pruned student, and timed beside the original (the fine-tuned teacher in slim form)."""
    device = search.device
    pruned_student = build_student(final_bg).eval()
    probe = next(iter(search.loaders.test))[0][:PROBE_IMAGES].to(device)
    original_module = build_slim(teacher_bg).eval()
    slim = build_slim(final_bg, memory_format=DEPLOYMENT_LAYOUT).eval()
    deployed, refused = deployable_layout([original_module, slim], probe, device)
    if refused:
        search.log(f"note: this network does not run in {layout_name(DEPLOYMENT_LAYOUT)} ({refused}); it is "
                   f"emitted, timed and saved {layout_name(deployed)}")
        slim = build_slim(final_bg, memory_format=deployed).eval()
    scores = search.scores(slim)
    if not is_main:
        return Artifacts(slim, scores, deployed)
    with torch.no_grad():
        slim_error = float((slim(probe) - pruned_student.to(device)(probe)[0]).abs().max())
    for module in (original_module, slim):  # both timed as they are best run: in the deployment layout
        module.to(device, memory_format=deployed)
    latency = {f"batch{b}": median_latency({"original": original_module, "tailored": slim}, source.input_shape,
                                           b, device=device, memory_format=deployed) for b in LATENCY_BATCHES}
    for module in (slim, bg.gm):  # saved on the CPU in its layout: torch.load(...)(images) runs as measured
        module.to("cpu", memory_format=deployed)
    return Artifacts(slim, scores, deployed, slim_error, latency)


def write_outputs(run: RunDir, artifacts: Artifacts, found: Found, bg: BlockGraph, name: str,
                  pack_meta: dict, log: Callable[[str], None]) -> dict[str, int]:
    """The run directory's network files; returns the sizes the report gives (``task_pack_bytes``,
    ``universal_bytes``). ``pack_meta`` is what the task pack says of its task (classes, input, ...)."""
    slim = artifacts.slim
    arch = architecture_dict(found.trained_bg, found.final_bg, name=name)
    setattr(slim, ARCHITECTURE_ATTR, json.dumps(arch, sort_keys=True))
    atomic_write_json(run.path / ARCHITECTURE, arch)
    try:
        render(to_dot(arch), run.path / "architecture.svg")
    except UserError as exc:  # Graphviz missing or failing: keep the run, leave the DOT text
        render(to_dot(arch), run.path / "architecture.dot")
        log(f"note: {exc}")
    atomic_torch_save(slim, run.path / TAILORED)
    classifier = bg.g.graph["classifier"]
    universal_sha256 = write_universal(bg.gm, classifier, run.path / UNIVERSAL)
    pack_bytes = write_pack(slim, bg.gm, classifier, universal_sha256, run.path / PACK, pack_meta)
    return {"task_pack_bytes": pack_bytes, "universal_bytes": (run.path / UNIVERSAL).stat().st_size}
