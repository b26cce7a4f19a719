"""Training checkpoints: a dict saved atomically, loaded back on the CPU.

Loading uses ``weights_only=True`` by default: a checkpoint holds tensors, numbers, strings and
containers of them (state dicts, optimizer state, progress counters), and such a file cannot run
code when read.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from archsearch.errors import UserError
from archsearch.io.atomic import atomic_torch_save


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Save ``state`` to ``path`` atomically (an interrupted run keeps the previous checkpoint)."""
    if not isinstance(state, dict):
        raise TypeError(f"a checkpoint is a dict, not {type(state).__name__}")
    atomic_torch_save(state, path)


def load_checkpoint(path: str | os.PathLike[str], *, weights_only: bool = True) -> dict[str, Any]:
    """Load a checkpoint dict onto the CPU; a missing, corrupt or foreign file is a UserError."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"checkpoint {p} not found; check the path or start without it")
    try:
        state = torch.load(p, map_location="cpu", weights_only=weights_only)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError,
            zipfile.BadZipFile, AttributeError, ImportError, KeyError) as exc:
        text = str(exc).strip()
        if "Weights only load failed" in text:
            raise UserError(f"{p} holds objects other than tensors, numbers, strings and containers, so it "
                            f"is no archsearch checkpoint; delete it and run again") from exc
        reason = text.split(". ")[0].splitlines()[0][:120] if text else ""
        reason = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
        raise UserError(f"{p} is not a readable checkpoint ({reason}); it may be truncated or "
                        f"corrupt: delete it and run again") from exc
    if not isinstance(state, dict):
        raise UserError(f"{p} holds a {type(state).__name__}, not a checkpoint dict; give a file "
                        f"written by save_checkpoint")
    return state
