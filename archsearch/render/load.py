"""Where pictures come from: a run directory, an ``architecture.json``, a tailored ``.pt`` module,
or a network's untrained student."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from archsearch.errors import UserError
from archsearch.io.run_folder import architecture_file
from archsearch.render.layout import parse

if TYPE_CHECKING:
    import torch.nn as nn


def student_architecture(model: nn.Module, input_shape: Iterable[int], leaf_modules: Iterable[str | type],
                         skips: int | str, name: str) -> dict:
    """The architecture dict of ``model``'s untrained student: every candidate proxy, gates at their
    initial values (what ``archsearch render --backbone/--model`` draws)."""
    from archsearch.graph.serialize import architecture_dict
    from archsearch.graph.trace import trace
    from archsearch.passes.insert_proxies import insert_proxies

    return architecture_dict(insert_proxies(trace(model, tuple(input_shape), tuple(leaf_modules)), skips), None, name)


def load_architecture(target: str | Path) -> dict:
    """The architecture dict of a run directory, an ``architecture.json`` file or a tailored ``.pt`` module."""
    p = Path(target)
    hint = "give a run directory, its architecture.json or a tailored .pt module"
    if not p.exists():
        raise UserError(f"{p}: no such file or directory; {hint}")
    if p.is_dir():
        p = architecture_file(p, hint)
    if p.suffix.lower() in (".pt", ".pth"):
        arch = _from_module(p)
    else:
        try:
            arch = json.loads(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise UserError(f"{p} is not a JSON file; {hint}") from None
        except json.JSONDecodeError as exc:
            raise UserError(f"{p} is not valid JSON (line {exc.lineno}: {exc.msg}); {hint}") from None
        except OSError as exc:
            raise UserError(f"cannot read {p}: {exc.strerror or exc}") from None
    parse(arch, str(p))
    return arch


def _from_module(p: Path) -> dict:
    import torch

    from archsearch.graph.serialize import ARCHITECTURE_ATTR

    try:
        obj = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:  # unpickling runs arbitrary code paths; every failure means "not readable"
        raise UserError(f"cannot load {p} as a torch module ({type(exc).__name__}: {exc})") from None
    text = getattr(obj, ARCHITECTURE_ATTR, None)
    if not isinstance(text, str):
        raise UserError(f"{p} carries no architecture description (attribute '{ARCHITECTURE_ATTR}'): "
                        "render its run directory or architecture.json instead")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{p}: its architecture description is not valid JSON ({exc.msg})") from None
