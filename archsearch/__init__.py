"""archsearch: tailor a pre-trained residual network to a new task (NetTailor).

The Python API (:mod:`archsearch.api`), imported on first use so that ``import archsearch`` stays light:

- ``archsearch.tailor(model, train, test=None, *, example_input=..., **options) -> Tailored``: the whole method.
- The steps as passes over a BlockGraph: ``trace``, ``insert_proxies``, ``expected_complexity``, ``prune``,
  ``build``.
- ``source_model``: a network by name (``"torchvision:resnet50"``, ``"timm:resnet50d"``, a backbone, a file) with
  its input size and normalisation.
- ``load_tasks``: many tailored tasks sharing one set of universal blocks.
- ``import_torchvision``: torchvision's models also where its compiled operators do not load.

The pipeline itself, over a ``TailorConfig`` (what the command line fills), is
:func:`archsearch.pipeline.run.tailor`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch.nn as nn

    from archsearch.api import Tailored, build, expected_complexity, insert_proxies, prune, source_model, tailor, trace
    from archsearch.runtime.tasks import Task
    from archsearch.sources.zoo import import_torchvision

__version__ = "0.1.0"
__all__ = ["Tailored", "build", "expected_complexity", "import_torchvision", "insert_proxies", "load_tasks", "prune",
           "source_model", "tailor", "trace"]

_LAZY = {"Tailored": "archsearch.api", "build": "archsearch.api", "expected_complexity": "archsearch.api",
         "insert_proxies": "archsearch.api", "prune": "archsearch.api", "source_model": "archsearch.api",
         "trace": "archsearch.api", "tailor": "archsearch.api",
         "import_torchvision": "archsearch.sources.zoo"}


def load_tasks(universal: str | Path | nn.Module, packs: list[str | Path], *, trust_pickle: bool = False) -> list[Task]:
    """Load shared universal blocks once and one module per task pack (see :mod:`archsearch.runtime.tasks`;
    imported on call, so ``import archsearch`` stays light). ``trust_pickle=True`` also reads the
    pickled formats (a user's own layer classes, older runs): only for files you trust."""
    from archsearch.runtime.tasks import load_tasks as _load_tasks

    return _load_tasks(universal, packs, trust_pickle=trust_pickle)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'archsearch' has no attribute {name!r}")
