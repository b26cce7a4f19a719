"""Will archsearch tailor this network? One random-weight tailoring step, checked end to end.

Trace it, count its MACs and parameters against torch's own counters (``FlopCounterMode``,
``sum(p.numel())``), give it a new classifier and proxies, run the student forward and backward,
prune half its blocks under random gates, build the slim module and compare it with the pruned
student. ``benchmarks/zoo.py`` runs it over torchvision's and timm's models (``docs/zoo.md``).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from archsearch.errors import UserError
from archsearch.graph.blockgraph import BlockGraph
from archsearch.graph.classifier import replace_classifier
from archsearch.graph.trace import feature_map_problem, trace
from archsearch.platform.memory_format import DEPLOYMENT_LAYOUT, deployable_layout
from archsearch.passes.codegen import build_slim, build_student, gate_target, read_gates
from archsearch.passes.insert_proxies import insert_proxies
from archsearch.passes.prune import prune

TOLERANCE = 1e-4  # slim and pruned student agree within this, relative to the largest logit (at least 1)
CLASSES = 10


@dataclass
class ModelCheck:
    """What :func:`check_model` found; ``reason`` is the first failure in one line (None: all passed)."""

    reason: str | None = None
    traced: bool = False
    blocks: int | None = None
    macs: int | None = None
    params: int | None = None
    torch_macs: int | None = None
    torch_params: int | None = None
    kept_blocks: int | None = None
    slim_error: float | None = None  # max |slim - pruned student| over max(1, max |logit|)
    seconds: float = 0.0

    @property
    def equal(self) -> bool:
        """Whether the slim module equals the pruned student within :data:`TOLERANCE`."""
        return self.slim_error is not None and self.slim_error <= TOLERANCE

    def as_dict(self) -> dict:
        """JSON-ready fields, ``equal`` included."""
        return {**asdict(self), "equal": self.equal}


def reference_counts(model: nn.Module, input_shape: Sequence[int]) -> tuple[int, int]:
    """torch's own count of one sample's multiply-accumulates (FlopCounterMode's FLOPs / 2, in
    evaluation mode) and the model's parameters, ``sum(p.numel())``."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros((1, *input_shape)))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2, sum(p.numel() for p in model.parameters())


def tailoring_step(bg: BlockGraph, seed: int = 0) -> tuple[float, int]:
    """Student forward and backward on random images, random gates, prune ``k`` = half the blocks, slim
    build; returns the slim module's largest difference from the pruned student (relative to the largest
    logit, at least 1) and the blocks kept."""
    torch.manual_seed(seed)
    for p in bg.gm.parameters():  # the pre-trained blocks are frozen, as in a run
        p.requires_grad_(False)
    student_bg = insert_proxies(bg, 3)
    student = build_student(student_bg).train()
    x = torch.randn((4, *bg.g.graph["input_shape"]))
    logits, _ = student(x)
    F.cross_entropy(logits, torch.arange(4) % logits.shape[1]).backward()
    if not all(p.grad is not None for n, p in student.named_parameters() if n.startswith("gates.")):
        raise RuntimeError("a gate of the student got no gradient")
    state = student.state_dict()
    for node in student_bg.block_nodes():
        if gate_target(node) in state:
            state[gate_target(node)] = torch.randn_like(state[gate_target(node)]) * 2
    gated = read_gates(student_bg, state)
    pruned = prune(gated, k=len(gated.universal()) // 2, theta=0.05)
    reference = build_student(pruned).eval()
    probe = torch.randn((2, *bg.g.graph["input_shape"]))
    slim = build_slim(pruned, memory_format=DEPLOYMENT_LAYOUT).eval()
    layout, _ = deployable_layout([slim], probe, "cpu")
    if layout != DEPLOYMENT_LAYOUT:
        slim = build_slim(pruned, memory_format=layout).eval()
    with torch.no_grad():
        want = reference(probe)[0]
        got = slim(probe.to(memory_format=layout))
    scale = max(1.0, float(want.abs().max()))
    return float((got - want).abs().max()) / scale, len(pruned.universal())


def _line(exc: BaseException) -> str:
    if isinstance(exc, UserError):
        return str(exc)
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}"[:300]


def check_model(model: nn.Module, input_shape: Sequence[int], leaf_modules: Sequence[str | type] = ()) -> ModelCheck:
    """Trace ``model`` at ``input_shape`` and run :func:`tailoring_step`; every failure becomes the
    result's one-line ``reason`` rather than an exception."""
    out = ModelCheck()
    start = time.perf_counter()
    try:
        bg = trace(model, input_shape, leaf_modules)
        out.traced, out.blocks = True, len(bg.universal())
        out.macs, out.params = bg.total_macs, bg.total_params
        out.torch_macs, out.torch_params = reference_counts(model, input_shape)
        problem = feature_map_problem(bg)
        if problem:
            raise UserError(problem)
        out.slim_error, out.kept_blocks = tailoring_step(replace_classifier(bg, CLASSES))
        if not out.equal:
            out.reason = f"the slim module differs from the pruned student by {out.slim_error:.2g} (relative)"
    except Exception as exc:  # noqa: BLE001 - every failure is a row of the table, in one line
        out.reason = _line(exc)
    out.seconds = time.perf_counter() - start
    return out
