"""Losses of the student: cross-entropy, expected complexity and the teacher term Omega."""
from __future__ import annotations

import torch


def relative_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error divided by the teacher's mean energy there (a constant of the step).

    Scale-free: multiplying a network's activations by 100 leaves it unchanged, so gamma2 weighs the
    teacher term the same on any model (a raw mean squared error grew with the square of the scale).
    """
    target = teacher.detach().float()
    energy = target.pow(2).mean().clamp_min(1e-12)
    return (student.float() - target).pow(2).mean() / energy


def teacher_term(student_logits: torch.Tensor, student_feats: dict[str, torch.Tensor],
                 teacher_logits: torch.Tensor, teacher_feats: dict[str, torch.Tensor]) -> torch.Tensor:
    """Omega: the relative squared error to the teacher, averaged over every shared block output and
    the logits. Averaging (not summing) over points keeps gamma2's meaning the same for deep and
    shallow nets."""
    terms = [relative_mse(student_logits, teacher_logits)]
    terms += [relative_mse(student_feats[n], teacher_feats[n]) for n in student_feats if n in teacher_feats]
    return torch.stack(terms).mean()
