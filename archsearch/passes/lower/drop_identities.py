"""Lowering pass: modules that pass maps through unchanged in evaluation leave the slim module.

Drop-path, stochastic depth and dropout modules are kept whole when a model is traced (while
training they draw at random). The slim module only ever evaluates, where they are identities, and
keeping them would tie ``tailored.pt`` to the library that defines them (torchvision's
StochasticDepth, timm's DropPath): it could no longer be loaded with torch alone. Whether a module
passes maps through is measured on the module itself, not read from a list of known classes.
"""
from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn

PROBE_SHAPE = (2, 8, 5, 5)  # any feature map: the modules this pass removes do not look at shapes


def passes_through(module: nn.Module) -> bool:
    """True for a module without parameters or buffers whose evaluation returns its very input (the
    same tensor, or a view of all of it): dropping it changes nothing, in-place operations after it
    included. A module that returns an equal copy (a 1x1 pooling, a zero padding) is kept: after it,
    an in-place operation writes the copy, not a map other nodes read."""
    if next(module.parameters(), None) is not None or next(module.buffers(), None) is not None:
        return False
    was_training = module.training
    module.eval()
    x = torch.randn(PROBE_SHAPE, generator=torch.Generator().manual_seed(0))
    probe = x.clone()
    try:
        with torch.no_grad():
            y = module(probe)
    except Exception:  # a module that cannot take any map is no identity
        return False
    finally:
        module.train(was_training)
    if not isinstance(y, torch.Tensor) or y.shape != x.shape or y.stride() != probe.stride():
        return False
    return y.data_ptr() == probe.data_ptr() and torch.equal(y, x)


def drop_identities(gm: fx.GraphModule) -> int:
    """In place: every one-argument module call that :func:`passes_through` is replaced by its argument,
    and the modules no longer called are deleted from ``gm`` (only from it: the shared modules of the
    source network stay where they are). Returns the count."""
    dropped = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs or not isinstance(node.args[0], fx.Node):
            continue
        if passes_through(gm.get_submodule(node.target)):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
            dropped += 1
    if dropped:
        gm.graph.lint()
        gm.delete_all_unused_submodules()
        gm.recompile()
    return dropped
