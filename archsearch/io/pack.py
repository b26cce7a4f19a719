"""Task packs: the few task-specific tensors of a tailored network, stored apart from the shared blocks.

``universal.pt`` holds the frozen pre-trained network once (its task classifier stubbed out).
``task.pack`` holds only data: the task's tensors (folded proxies, gate-folded biases, classifier),
the tailored network's generated forward code, which universal modules it calls, the classes, the
preprocessing and the SHA-256 of the universal tensors it was tailored against. Loading builds a
light container around the *same* universal module objects; no nn.Module is unpickled, so a task
switch costs a few milliseconds and a pack loads with ``weights_only=True``.

A network whose task-specific part cannot be written as tensors plus code (a classifier that is
neither Linear nor Conv2d) falls back to format 1: the tailored module pickled with its universal
submodules stubbed out.
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
from archsearch.nn.pointwise import pointwise_sum

UNIVERSAL_FORMAT = "archsearch-universal/1"
PACK_FORMAT = "archsearch-task-pack/2"
PACK_FORMAT_MODULE = "archsearch-task-pack/1"


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
    """The globals generated fx code refers to; a pack's forward is executed in these. fx names a
    function of ours by its dotted path with underscores."""
    own = {f"{fn.__module__}.{fn.__name__}".replace(".", "_"): fn for fn in (pointwise_sum,)}
    return {"torch": torch, "inf": math.inf, "nan": math.nan, "NoneType": type(None), "device": torch.device,
            "fx_pytree": fx_pytree, "pytree": pytree, **own}


def universal_attrs(tailored: fx.GraphModule, universal: nn.Module) -> list[str]:
    """Tensor attributes the tailored code reads that are the universal network's own tensors."""
    out = []
    for n in tailored.graph.nodes:
        if n.op != "get_attr":
            continue
        try:
            mine, theirs = _attr(tailored, n.target), _attr(universal, n.target)
        except AttributeError:
            continue
        if mine is theirs:
            out.append(str(n.target))
    return sorted(set(out))


def _attr(module: nn.Module, path: str) -> object:
    obj: object = module
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _flat_task_tensors(tailored: fx.GraphModule, shared_attrs: list[str]) -> tuple[dict[str, torch.Tensor], str]:
    """The task's tensors under flat attribute names, and the forward code that reads them so.

    Flat names let the runtime hang every task tensor on one container instead of building a tree
    of nn.Modules (each costs tens of microseconds, and a task switch would pay for all of them).
    """
    graph = copy.deepcopy(tailored.graph)
    tensors: dict[str, torch.Tensor] = {}
    names: dict[str, str] = {}
    for n in graph.nodes:
        if n.op != "get_attr" or n.target in shared_attrs:
            continue
        if n.target not in names:
            flat = "task_" + str(n.target).replace(".", "_")
            while flat in tensors:
                flat += "_"
            names[n.target] = flat
            tensors[flat] = _attr(tailored, n.target).detach()
        n.target = names[n.target]
    return tensors, graph.python_code("self").src


def pack_tensors(tensors: dict[str, torch.Tensor]) -> dict:
    """Task tensors as one flat buffer plus an index (name, shape, offset) when they share a dtype.

    Unpickling cost grows with the number of tensors (``weights_only`` loading rebuilds each one in
    Python), and a task switch is mostly that cost; one buffer makes it a few hundred microseconds.
    """
    if len({t.dtype for t in tensors.values()}) != 1:
        return {"tensors": {k: t.clone() for k, t in tensors.items()}}
    index, offset = [], 0
    for name, t in tensors.items():
        index.append([name, list(t.shape), offset])
        offset += t.numel()
    data = torch.cat([t.reshape(-1) for t in tensors.values()]) if tensors else torch.zeros(0)
    return {"tensor_data": data, "tensor_index": index}


def unpack_tensors(pack: dict) -> dict[str, torch.Tensor]:
    """The task tensors of a pack, as views of its one buffer (see :func:`pack_tensors`)."""
    if "tensors" in pack:
        return pack["tensors"]
    data = pack["tensor_data"]
    out = {}
    for name, shape, offset in pack["tensor_index"]:
        numel = math.prod(shape)
        out[name] = data[offset:offset + numel].view(shape)
    return out


def write_pack(tailored: fx.GraphModule, universal: nn.Module, classifier: str, universal_sha256: str,
               path: Path, meta: dict) -> int:
    """Save a task pack (the tailored network minus its universal blocks); returns its size in bytes."""
    paths = [p for p in universal_paths(tailored, universal) if not (p + ".").startswith(classifier + ".")]
    shared_attrs = [a for a in universal_attrs(tailored, universal) if not (a + ".").startswith(classifier + ".")]
    own_modules = {str(n.target) for n in tailored.graph.nodes if n.op == "call_module"} - set(paths)
    code_globals = set(tailored.graph.python_code("self").globals)
    if own_modules or not code_globals <= set(forward_namespace()):
        body = {"format": PACK_FORMAT_MODULE, "module": _stub_out(tailored, paths)}
    else:
        tensors, source = _flat_task_tensors(tailored, shared_attrs)
        body = {"format": PACK_FORMAT, **pack_tensors(tensors), "forward_source": source,
                "universal_attrs": shared_attrs}
    atomic_torch_save({**body, "universal_paths": paths, "universal_sha256": universal_sha256, **meta}, path)
    return path.stat().st_size
