"""Losses of the student: cross-entropy, expected complexity and the teacher term Omega."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def teacher_term(student_logits: torch.Tensor, student_feats: dict[str, torch.Tensor],
                 teacher_logits: torch.Tensor, teacher_feats: dict[str, torch.Tensor]) -> torch.Tensor:
    """Omega: mean squared error to the teacher, averaged over every shared block output and the logits.

    Averaging (not summing) over points keeps gamma2's meaning the same for deep and shallow nets.
    """
    terms = [F.mse_loss(student_logits, teacher_logits)]
    terms += [F.mse_loss(student_feats[n], teacher_feats[n]) for n in student_feats if n in teacher_feats]
    return torch.stack(terms).mean()
