"""The device a command was asked to run on, checked before any work starts."""
from __future__ import annotations

import torch

from archsearch.errors import UserError


def check_device(device: str) -> None:
    """One clear line when ``device`` names a GPU this machine's torch cannot see."""
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device} was asked for but torch sees no CUDA GPU here; use --device cpu")
