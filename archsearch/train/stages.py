"""The three training stages of NetTailor: teacher fine-tune, student, retrain after pruning."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from archsearch.train.complexity import Complexity
from archsearch.graph.blockgraph import BlockGraph
from archsearch.passes.codegen import GATES, is_task_specific, task_prefixes
from archsearch.passes.fold_bn import fold_frozen_batchnorms
from archsearch.train.losses import teacher_term
from archsearch.train.distributed import SINGLE, Dist, all_reduce_sum
from archsearch.train.loop import Length, Stage


def freeze_universal(student: fx.GraphModule, bg: BlockGraph) -> None:
    """Only task-specific parameters train; universal blocks keep their pre-trained weights."""
    prefixes = task_prefixes(bg)
    for name, p in student.named_parameters():
        p.requires_grad_(is_task_specific(name, prefixes))


def student_mode_setter(student: fx.GraphModule, bg: BlockGraph) -> Callable[[bool], None]:
    """``set_mode(on)`` that trains task-specific modules and keeps universal ones in eval mode,
    so batch-norm statistics of the shared blocks never move."""
    prefixes = task_prefixes(bg)

    def set_mode(on: bool) -> None:
        for name, m in student.named_modules():
            m.training = on and (name == "" or is_task_specific(name, prefixes))

    return set_mode


def split_params(module: nn.Module, prefixes: tuple[str, ...]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Trainable parameters under ``prefixes`` and the others, each in a stable order."""
    inside, outside = [], []
    for name, p in module.named_parameters():
        if p.requires_grad:
            (inside if is_task_specific(name, prefixes) else outside).append(p)
    return inside, outside


def frozen_statistics_mode(module: nn.Module) -> Callable[[bool], None]:
    """``set_mode(on)`` that trains every module but keeps batch norms in eval mode: their statistics
    stay the pre-trained ones. What a teacher falls back to when fine-tuning wrecked it (moving
    statistics on a very different domain make its starting classifier meaningless at once)."""
    def set_mode(on: bool) -> None:
        module.train(on)
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    return set_mode


def teacher_stage(teacher: fx.GraphModule, classifier: str, length: Length, lr: float, head_lr: float,
                  checkpoint: Path, score: Callable[[], float] | None = None,
                  chance_loss: float | None = None) -> Stage:
    """Fine-tune every weight of a copy of the pre-trained network with a new classifier: the
    pre-trained weights at ``lr``, the classifier (new for the task) at ``head_lr``. ``chance_loss``
    (ln of the number of classes) tells a wrecked epoch from a dip (``Stage.chance_loss``)."""
    def step(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        logits, _ = model(x)
        return F.cross_entropy(logits, y), logits, {}

    head, body = split_params(teacher, (classifier + ".",))
    groups = [{"params": body, "lr": lr, "weight_decay": 1e-4, "clip": True},  # clipped after a restart
              {"params": head, "lr": head_lr, "weight_decay": 1e-4}]
    return Stage("teacher", teacher, [g for g in groups if g["params"]], step, length, checkpoint, score=score,
                 name="teacher", calm_mode=frozen_statistics_mode(teacher), chance_loss=chance_loss)


def low_precision_dtype(device: torch.device) -> torch.dtype | None:
    """bfloat16 where this device computes it natively (oneDNN on CPU, CUDA), else None."""
    if device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


class OmegaTeacher(nn.Module):
    """The frozen teacher as Omega's target: inference only, batch-norms folded, bfloat16 where native.

    Its forward pass is a third of a student step in float32. Omega regresses the student onto
    these outputs, so they need no more precision than a target: bfloat16 (relative error about
    1e-4 in mean square on ResNet-20) runs them about three times faster on a CPU with native
    bfloat16. ``fp32=True`` keeps them in float32.
    """

    def __init__(self, teacher: fx.GraphModule, fp32: bool = False) -> None:
        super().__init__()
        self.teacher = copy.deepcopy(teacher).eval().requires_grad_(False)
        fold_frozen_batchnorms(self.teacher)
        self.fp32 = fp32

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        dtype = None if self.fp32 else low_precision_dtype(x.device)
        with torch.no_grad(), torch.autocast(x.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            return self.teacher(x)


def student_stage(key: str, student: fx.GraphModule, bg: BlockGraph, teacher: OmegaTeacher, *,
                  length: Length, lr: float, head_lr: float, gate_lr: float, gamma1: float, gamma2: float,
                  checkpoint: Path, score: Callable[[], float] | None = None, name: str = "",
                  chance_loss: float | None = None) -> Stage:
    """Train proxies, gates and classifier on CE + gamma1 * E[C] + gamma2 * Omega (the classifier at
    ``head_lr``, proxies at ``lr``)."""
    freeze_universal(student, bg)
    set_mode = student_mode_setter(student, bg)
    set_mode(False)
    fold_frozen_batchnorms(student)
    complexity = Complexity(bg)

    def step(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        logits, feats = model(x)
        t_logits, t_feats = teacher(x)
        ce = F.cross_entropy(logits, y)
        omega = teacher_term(logits, feats, t_logits, t_feats)
        loss = ce + gamma2 * omega
        extra = {"ce": float(ce.detach()), "omega": float(omega.detach())}
        if gamma1:
            ec = complexity(complexity.alphas(student))
            loss = loss + gamma1 * ec
            extra["E[C]"] = float(ec.detach())
        return loss, logits, extra

    gates = [p for n, p in student.named_parameters() if n.startswith(GATES)]
    head, _ = split_params(student, (bg.g.graph["classifier"] + ".",))
    taken = {id(p) for p in [*gates, *head]}
    others = [p for p in student.parameters() if p.requires_grad and id(p) not in taken]
    groups = [{"params": others, "lr": lr, "weight_decay": 1e-4}, {"params": head, "lr": head_lr, "weight_decay": 1e-4},
              {"params": gates, "lr": gate_lr, "weight_decay": 0.0}]
    return Stage(key, student, [g for g in groups if g["params"]], step, length, checkpoint, score=score,
                 state_prefixes=task_prefixes(bg), set_mode=set_mode, name=name or key,
                 start_is_candidate=not gamma1,  # a student kept at its start would have learnt no gate
                 score_is_accuracy=not gamma1,  # the student's score is minus its objective
                 chance_loss=chance_loss)


@torch.no_grad()
def validation_objective(student: fx.GraphModule, bg: BlockGraph, teacher: OmegaTeacher, loader, device: str, *,
                         gamma1: float, gamma2: float, d: Dist = SINGLE) -> float:
    """The student's objective, CE + gamma2 * Omega + gamma1 * E[C], on data it does not train on.

    What the student stage keeps the best state of: its validation accuracy alone would prefer the
    epochs before the gates moved."""
    ce_sum = omega_sum = 0.0
    count = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits, feats = student(x)
        t_logits, t_feats = teacher(x)
        ce_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        omega_sum += float(teacher_term(logits, feats, t_logits, t_feats)) * int(y.numel())
        count += int(y.numel())
    ce_sum, omega_sum, count = all_reduce_sum(d, [ce_sum, omega_sum, count], device)
    complexity = Complexity(bg) if gamma1 else None
    ec = float(complexity(complexity.alphas(student))) if complexity else 0.0
    return (ce_sum + gamma2 * omega_sum) / max(count, 1) + gamma1 * ec
