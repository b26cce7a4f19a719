"""Task packs: the few task-specific tensors of a tailored network, stored apart from the shared blocks.

``universal.pt`` holds the frozen pre-trained network once (its task classifier stubbed out).
``task.pack`` holds the tailored module with every universal submodule replaced by an empty stub,
plus the classes, the preprocessing and the SHA-256 of the universal tensors it was tailored
against. Loading re-attaches the *same* universal module objects to every task.
"""
from __future__ import annotations

import copy
import hashlib
import math
from pathlib import Path

import torch
import torch.fx as fx
import torch.nn as nn
import torch.utils._pytree as pytree
from torch.fx import _pytree as fx_pytree

from archsearch.io.atomic import atomic_torch_save

UNIVERSAL_FORMAT = "archsearch-universal/1"
PACK_FORMAT = "archsearch-task-pack/1"


class Stub(nn.Module):
    """Placeholder for a universal submodule inside a task pack; must be replaced before use."""

    def forward(self, *args: object) -> None:
        raise RuntimeError("this task pack is not attached to its universal blocks; use archsearch.load_tasks")


def tensor_digest(module: nn.Module, skip: tuple[str, ...] = ()) -> str:
    """SHA-256 over names and bytes of every parameter and buffer (minus ``skip`` prefixes)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        if skip and (name + ".").startswith(skip):
            continue
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _stub_out(module: nn.Module, paths: list[str]) -> nn.Module:
    """Shallow structural copy of ``module`` whose ``paths`` are stubs (no tensors are copied twice)."""
    shell = copy.copy(module)
    shell._modules = dict(module._modules)
    for path in paths:
        parent_path, _, leaf = path.rpartition(".")
        parent = shell
        if parent_path:
            for part in parent_path.split("."):
                child = copy.copy(parent._modules[part])
                child._modules = dict(child._modules)
                parent._modules[part] = child
                parent = child
        parent._modules[leaf] = Stub()
    return shell


def write_universal(gm: fx.GraphModule, classifier: str, path: Path) -> str:
    """Save the shared pre-trained network once; returns the SHA-256 of its tensors."""
    digest = tensor_digest(gm, skip=(classifier + ".",))
    atomic_torch_save({"format": UNIVERSAL_FORMAT, "module": _stub_out(gm, [classifier]), "sha256": digest}, path)
    return digest


def universal_paths(tailored: fx.GraphModule, universal: nn.Module) -> list[str]:
    """Module paths the tailored network shares with the universal network (same objects)."""
    shared = {id(m): name for name, m in universal.named_modules() if name}
    return sorted({str(n.target) for n in tailored.graph.nodes
                   if n.op == "call_module" and shared.get(id(tailored.get_submodule(n.target))) == n.target})


def forward_namespace() -> dict:
    """The globals generated fx code refers to; a pack's forward is executed in these."""
    return {"torch": torch, "inf": math.inf, "nan": math.nan, "NoneType": type(None), "device": torch.device,
            "fx_pytree": fx_pytree, "pytree": pytree}


def _plain_container(tailored: fx.GraphModule, paths: list[str]) -> nn.Module | None:
    """The tailored network's module tree as a plain nn.Module (universal parts stubbed), or None
    when its code needs globals beyond :func:`forward_namespace`.

    Loading a pickled GraphModule regenerates and re-traces its code (tens of milliseconds); a
    plain module plus the forward's source loads in a few, which is what makes a task switch cheap.
    """
    if not set(tailored.graph.python_code("self").globals) <= set(forward_namespace()):
        return None
    container = nn.Module()
    container._modules = dict(tailored._modules)
    for name, param in tailored._parameters.items():
        container.register_parameter(name, param)
    for name, buf in tailored._buffers.items():
        container.register_buffer(name, buf)
    return _stub_out(container, paths)


def write_pack(tailored: fx.GraphModule, universal: nn.Module, classifier: str, universal_sha256: str,
               path: Path, meta: dict) -> int:
    """Save a task pack (tailored module minus its universal blocks); returns its size in bytes."""
    paths = [p for p in universal_paths(tailored, universal) if not (p + ".").startswith(classifier + ".")]
    plain = _plain_container(tailored, paths)
    body = ({"module": _stub_out(tailored, paths)} if plain is None
            else {"modules": plain, "forward_source": tailored.code})
    pack = {"format": PACK_FORMAT, **body, "universal_paths": paths, "universal_sha256": universal_sha256, **meta}
    atomic_torch_save(pack, path)
    return path.stat().st_size
