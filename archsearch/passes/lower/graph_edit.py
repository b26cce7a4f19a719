"""Small edits every lowering pass makes on a GraphModule: tensors in place of modules, and cleanup."""
from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn as nn


def set_tensor(gm: fx.GraphModule, target: str, value: torch.Tensor) -> None:
    """Store ``value`` at dotted path ``target`` of ``gm`` as a frozen parameter (the slim network only
    evaluates), creating the plain ``nn.Module`` containers on the way; a module there is replaced."""
    parent_path, _, name = target.rpartition(".")
    parent = gm
    for part in parent_path.split(".") if parent_path else []:
        child = getattr(parent, part, None)
        if not isinstance(child, nn.Module):
            child = nn.Module()
            setattr(parent, part, child)
        parent = child
    if name in parent._modules:
        del parent._modules[name]
    param = value if isinstance(value, nn.Parameter) else nn.Parameter(value.detach(), requires_grad=False)
    if name in parent._parameters or not hasattr(parent, name):
        parent.register_parameter(name, param)
    else:
        raise ValueError(f"cannot store a tensor at '{target}': the name is taken")


def writable(gm: fx.GraphModule, target: str) -> bool:
    """Whether the tensor at ``target`` belongs to ``gm`` alone: it sits in ``gm`` itself or in a plain
    container (made by fx or by these passes), not in a module the network shares (a universal block
    whose code reads its weights with ``get_attr``), which a pass must never change."""
    parent_path = target.rpartition(".")[0]
    try:
        parent = gm.get_submodule(parent_path) if parent_path else gm
    except AttributeError:
        return False
    return parent is gm or type(parent) is nn.Module


def own_container(gm: fx.GraphModule, target: str) -> None:
    """Put a fresh, empty ``nn.Module`` at ``target`` in ``gm`` in place of the module there, so that
    tensors stored under it never land on a module the network shares with others (a student's
    layers, universal blocks)."""
    parent_path, _, name = target.rpartition(".")
    parent = gm.get_submodule(parent_path) if parent_path else gm
    parent._modules[name] = nn.Module()


def get_tensor(gm: fx.GraphModule, node: fx.Node) -> torch.Tensor | None:
    """The tensor a ``get_attr`` node reads (None for any other node)."""
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        return None
    obj = gm
    for part in node.target.split("."):
        obj = getattr(obj, part)
    return obj if isinstance(obj, torch.Tensor) else None


def add_chain(graph: fx.Graph, terms: list[fx.Node]) -> fx.Node:
    """``terms[0] + terms[1] + ...`` as ``operator.add`` nodes, left to right (the first term alone)."""
    total = terms[0]
    for term in terms[1:]:
        total = graph.call_function(operator.add, (total, term))
    return total


def swap(gm: fx.GraphModule, old: fx.Node, new: fx.Node) -> None:
    """``new`` (the same value) in place of ``old`` for every user, ``old`` erased; ``old``'s marks (a
    node's sum, its shape) move to ``new``."""
    new.meta.update(old.meta)
    old.replace_all_uses_with(new)
    gm.graph.erase_node(old)


def finish(gm: fx.GraphModule, count: int) -> int:
    """A pass's end: ``gm`` tidied where the pass changed anything; returns ``count``."""
    if count:
        tidy(gm)
    return count


def tidy(gm: fx.GraphModule) -> None:
    """Remove dead nodes, the tensors the passes stored that nothing reads any more, and the modules
    nothing calls or reads (from ``gm`` only: a module it shares is never changed); check and recompile."""
    gm.graph.eliminate_dead_code()
    read = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    called = {n.target for n in gm.graph.nodes if n.op == "call_module"}

    def is_called(path: str) -> bool:
        parts = path.split(".") if path else []
        return any(".".join(parts[:i]) in called for i in range(1, len(parts) + 1))

    for path, module in list(gm.named_modules()):
        if type(module) is not nn.Module or is_called(path):  # only the passes' own holders lose tensors
            continue
        for name in list(module._parameters):
            if (f"{path}.{name}" if path else name) not in read:
                del module._parameters[name]
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()
