"""archsearch: tailor a pre-trained residual network to a new task (NetTailor)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch.nn as nn

    from archsearch.runtime import Task

__version__ = "0.1.0"


def load_tasks(universal: str | Path | nn.Module, packs: list[str | Path], *, trust_pickle: bool = False) -> list[Task]:
    """Load shared universal blocks once and one module per task pack (see :mod:`archsearch.runtime`;
    imported on call, so ``import archsearch`` stays light). ``trust_pickle=True`` also reads the
    pickled formats (a user's own layer classes, older runs): only for files you trust."""
    from archsearch.runtime import load_tasks as _load_tasks

    return _load_tasks(universal, packs, trust_pickle=trust_pickle)
